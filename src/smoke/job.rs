//! The job `smoke` deploys through the agent, as a release job reaches a VM: a rendered
//! templates archive (gzip tar of `smoke/...`) holding a monit file in the `vcap` group, a
//! control script and a `pre-start` script, handed to the agent with `upload_blob` and
//! installed with `apply` (bosh-agent agent/applier, rendered_templates_archive_spec.go).

use anyhow::Result;
use serde_json::{json, Value};
use sha1::Digest;

pub const BLOB_ID: &str = "smoke-rendered-templates";
pub const JOB: &str = "smoke";

const MONIT: &str = r#"check process smoke
  with pidfile /var/vcap/sys/run/smoke/smoke.pid
  start program "/var/vcap/jobs/smoke/bin/ctl start"
  stop program "/var/vcap/jobs/smoke/bin/ctl stop"
  group vcap
"#;

const CTL: &str = r#"#!/bin/bash
# The smoke job: one long sleep, with a pidfile for monit.
run=/var/vcap/sys/run/smoke
case $1 in
  start)
    mkdir -p "$run"
    nohup sleep 1000000 >/dev/null 2>&1 &
    echo $! >"$run/smoke.pid"
    ;;
  stop)
    kill "$(cat "$run/smoke.pid")" 2>/dev/null || true
    rm -f "$run/smoke.pid"
    ;;
esac
"#;

const PRE_START: &str = r#"#!/bin/bash
# run_script pre-start: leaves a mark the agent's caller can see in the job's log.
echo "smoke pre-start ran"
"#;

/// The archive's bytes and their SHA-1 (the digest the apply spec carries).
pub fn rendered_templates() -> Result<(Vec<u8>, String)> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    {
        let mut tar = tar::Builder::new(&mut gz);
        for (path, body, mode) in [
            ("smoke/monit", MONIT, 0o644),
            ("smoke/bin/ctl", CTL, 0o755),
            ("smoke/bin/pre-start", PRE_START, 0o755),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(mode);
            header.set_mtime(0);
            header.set_cksum();
            tar.append_data(&mut header, path, body.as_bytes())?;
        }
        tar.finish()?;
    }
    let bytes = gz.finish()?;
    let sha1 = hex::encode(sha1::Sha1::digest(&bytes));
    Ok((bytes, sha1))
}

/// `upload_blob`'s argument: the archive itself, base64, with its digest.
pub fn upload_argument(bytes: &[u8], sha1: &str) -> Value {
    use base64::Engine;
    json!([{
        "blob_id": BLOB_ID,
        "checksum": sha1,
        "payload": base64::engine::general_purpose::STANDARD.encode(bytes),
    }])
}

/// The apply spec that installs the job (a non-empty configuration hash, or the agent only
/// saves the spec).
pub fn apply_spec(sha1: &str) -> Value {
    json!([{
        "deployment": "smoke",
        "name": "smoke",
        "id": "smoke-0",
        "index": 0,
        "az": "z1",
        "job": {"name": JOB, "templates": [{"name": JOB, "version": "1"}]},
        "packages": {},
        "networks": {},
        "configuration_hash": format!("smoke-{sha1}"),
        "rendered_templates_archive": {"blobstore_id": BLOB_ID, "sha1": sha1},
        "properties": {"logging": {"max_log_file_size": ""}},
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_archive_holds_the_job_and_its_digest_is_its_sha1() {
        let (bytes, sha1) = rendered_templates().unwrap();
        let mut names = vec![];
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        for entry in archive.entries().unwrap() {
            names.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            ["smoke/monit", "smoke/bin/ctl", "smoke/bin/pre-start"]
        );
        assert_eq!(sha1.len(), 40);
        assert_eq!(
            apply_spec(&sha1)[0]["rendered_templates_archive"]["sha1"],
            sha1
        );
    }
}
