//! The smoke run's NATS: Debian's `nats-server`, listening on one address of this machine with
//! mutual TLS (the agent refuses anything else), its config, certificates and log in the run's
//! scratch dir. It dies with the builder (SIGKILL on the builder's death included).

use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::certs::NatsCertificates;

pub struct NatsServer {
    child: Child,
    pub address: SocketAddr,
    pub log: PathBuf,
}

/// Where each certificate and key of `certs` was written.
pub struct CertificateFiles {
    pub ca: PathBuf,
    pub director_certificate: PathBuf,
    pub director_key: PathBuf,
}

impl NatsServer {
    /// Starts nats-server on `host` (a free port) with `certs`; returns once it accepts
    /// connections.
    pub fn start(
        host: std::net::IpAddr,
        certs: &NatsCertificates,
        dir: &Path,
    ) -> Result<(NatsServer, CertificateFiles)> {
        let binary = which::which("nats-server").map_err(|_| {
            anyhow::anyhow!("nats-server is not installed: apt-get install -y nats-server")
        })?;
        fs::create_dir_all(dir)?;
        let write = |name: &str, text: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            super::write_private(&path, text.as_bytes())?;
            Ok(path)
        };
        let files = CertificateFiles {
            ca: write("ca.pem", &certs.ca)?,
            director_certificate: write("director.pem", &certs.director.certificate)?,
            director_key: write("director.key", &certs.director.private_key)?,
        };
        let server_cert = write("server.pem", &certs.server.certificate)?;
        let server_key = write("server.key", &certs.server.private_key)?;
        let port = TcpListener::bind((host, 0))
            .with_context(|| format!("no free port on {host} for nats-server"))?
            .local_addr()?
            .port();
        let address = SocketAddr::new(host, port);
        let config = write(
            "nats.conf",
            &format!(
                "listen: \"{address}\"\nmax_payload: 8MB\ntls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 10\n}}\n",
                server_cert.display(),
                server_key.display(),
                files.ca.display()
            ),
        )?;
        let log = dir.join("nats-server.log");
        let log_file = fs::File::create(&log)?;
        let mut command = Command::new(binary);
        command
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        crate::sandbox::die_with_parent(&mut command);
        let mut child = command.spawn().context("starting nats-server")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "nats-server exited ({status}) before it listened on {address}: see {}",
                    log.display()
                );
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!(
                    "nats-server did not listen on {address} within 20 s: see {}",
                    log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((
            NatsServer {
                child,
                address,
                log,
            },
            files,
        ))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real nats-server (Debian's, which CI installs) with the run's certificates: our
    /// director connects with its client certificate; a client whose certificate another CA
    /// signed is refused.
    #[test]
    fn nats_server_takes_only_clients_with_the_runs_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let certs = super::super::certs::make(&["127.0.0.1".into()], "agent-1").unwrap();
        let (server, files) = NatsServer::start(
            std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            &certs,
            &dir.path().join("nats"),
        )
        .unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let director =
                super::super::director::Director::connect(server.address, &files, "agent-1").await;
            assert!(director.is_ok(), "{:#}", director.err().unwrap());
            // A client certificate of another CA: the server's verify refuses it.
            let stranger = super::super::certs::make(&["127.0.0.1".into()], "agent-1").unwrap();
            let other = dir.path().join("other");
            fs::create_dir_all(&other).unwrap();
            let cert = other.join("c.pem");
            let key = other.join("c.key");
            fs::write(&cert, &stranger.director.certificate).unwrap();
            fs::write(&key, &stranger.director.private_key).unwrap();
            let refused = async_nats::ConnectOptions::new()
                .require_tls(true)
                .add_root_certificates(files.ca.clone())
                .add_client_certificate(cert, key)
                .connection_timeout(Duration::from_secs(5))
                .connect(format!("tls://{}", server.address));
            let refused = tokio::time::timeout(Duration::from_secs(20), refused).await;
            assert!(
                !matches!(refused, Ok(Ok(_))),
                "a stranger's certificate was accepted"
            );
        });
        let log = fs::read_to_string(&server.log).unwrap();
        assert!(log.contains("TLS"), "{log}");
    }
}
