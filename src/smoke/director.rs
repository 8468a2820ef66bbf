//! Our side of the agent's protocol: what the BOSH director sends over NATS
//! (bosh-agent handler/request.go, agent/action/runner.go): a request
//! `{"protocol": 3, "method": M, "arguments": [...], "reply_to": SUBJECT}` on `agent.<id>`, an
//! answer `{"value": ...}` or `{"exception": {"message": ...}}` on the reply subject. Long
//! actions answer `{"agent_task_id": ID, "state": "running"}` at once and are polled with
//! `get_task` once a second, as the director polls them.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use super::nats::CertificateFiles;

pub struct Director {
    client: async_nats::Client,
    agent_id: String,
    inbox: String,
    requests: u64,
}

impl Director {
    pub async fn connect(
        address: std::net::SocketAddr,
        files: &CertificateFiles,
        agent_id: &str,
    ) -> Result<Director> {
        // The S3 SDK links rustls with aws-lc-rs and we with ring: with two providers built
        // in, rustls asks the process to name one (a second call is a no-op).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = async_nats::ConnectOptions::new()
            .require_tls(true)
            .add_root_certificates(files.ca.clone())
            .add_client_certificate(
                files.director_certificate.clone(),
                files.director_key.clone(),
            )
            .connection_timeout(Duration::from_secs(10))
            .connect(format!("tls://{address}"))
            .await
            .with_context(|| format!("connecting to nats-server at {address} with TLS"))?;
        Ok(Director {
            client,
            agent_id: agent_id.to_string(),
            inbox: format!("director.{}", std::process::id()),
            requests: 0,
        })
    }

    /// One request and its answer's `value`, within `wait`; an `exception` is an error.
    pub async fn call(&mut self, method: &str, arguments: Value, wait: Duration) -> Result<Value> {
        self.requests += 1;
        let reply_to = format!("{}.{}.{}", self.inbox, self.agent_id, self.requests);
        let mut answers = self.client.subscribe(reply_to.clone()).await?;
        let request = json!({
            "protocol": 3,
            "method": method,
            "arguments": arguments,
            "reply_to": reply_to,
        });
        self.client
            .publish(
                format!("agent.{}", self.agent_id),
                serde_json::to_vec(&request)?.into(),
            )
            .await?;
        self.client.flush().await?;
        let message = tokio::time::timeout(wait, answers.next())
            .await
            .map_err(|_| anyhow!("the agent did not answer {method} within {wait:?}"))?
            .ok_or_else(|| anyhow!("the NATS connection closed while waiting for {method}"))?;
        let answer: Value = serde_json::from_slice(&message.payload)
            .with_context(|| format!("the agent's answer to {method} is not JSON"))?;
        value_of(method, answer)
    }

    /// `call`, and when the agent runs the action as a task, `get_task` until it ends, all
    /// within `wait`.
    pub async fn call_to_end(
        &mut self,
        method: &str,
        arguments: Value,
        wait: Duration,
    ) -> Result<Value> {
        let deadline = Instant::now() + wait;
        let mut value = self.call(method, arguments, wait).await?;
        while let Some(task) = running_task(&value) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("{method} (task {task}) still runs after {wait:?}");
            }
            tokio::time::sleep(Duration::from_secs(1).min(left)).await;
            value = self
                .call("get_task", json!([task]), left.max(Duration::from_secs(1)))
                .await
                .with_context(|| format!("{method} (task {task})"))?;
        }
        Ok(value)
    }

    /// Asks `ping` until the agent answers `pong` (it connects once it has bootstrapped).
    pub async fn wait_for_pong(&mut self, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        loop {
            match self.call("ping", json!([]), Duration::from_secs(3)).await {
                Ok(Value::String(pong)) if pong == "pong" => return Ok(()),
                Ok(other) => bail!("ping answered {other}, not \"pong\""),
                Err(err) if Instant::now() >= deadline => {
                    return Err(err.context(format!("no pong within {wait:?}")))
                }
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }
}

fn value_of(method: &str, answer: Value) -> Result<Value> {
    if let Some(exception) = answer.get("exception") {
        let message = exception
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("(no message)");
        bail!("{method}: the agent answered with an exception: {message}");
    }
    answer
        .get("value")
        .cloned()
        .ok_or_else(|| anyhow!("{method}: the answer has neither value nor exception: {answer}"))
}

/// The task id of an answer that says the action still runs.
fn running_task(value: &Value) -> Option<String> {
    let task = value.get("agent_task_id")?.as_str()?;
    (value.get("state").and_then(Value::as_str) == Some("running")).then(|| task.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_values_exceptions_or_running_tasks() {
        assert_eq!(
            value_of("ping", json!({"value": "pong"})).unwrap(),
            json!("pong")
        );
        let err = value_of("stop", json!({"exception": {"message": "monit failed"}})).unwrap_err();
        assert!(err.to_string().contains("monit failed"), "{err}");
        assert!(value_of("x", json!({})).is_err());
        assert_eq!(
            running_task(&json!({"agent_task_id": "t1", "state": "running"})).as_deref(),
            Some("t1")
        );
        assert_eq!(running_task(&json!("stopped")), None);
    }
}
