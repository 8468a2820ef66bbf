//! Multipart uploads this tool started, recorded on disk from creation until they complete or
//! are aborted. A later upload to the same key aborts only the uploads an earlier run of ours
//! left open (its process is gone), never another job's live upload of the same key.
//!
//! A record names the owner by pid and the pid's start time, so a reused pid is not mistaken
//! for the owner. Records hold no credentials.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingUpload {
    /// The endpoint the upload went to (`None`: AWS), so stores are never mixed up.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub key: String,
    pub upload_id: String,
    pub pid: u32,
    /// The owner's start time (clock ticks since boot, /proc/PID/stat field 22).
    pub pid_start: u64,
}

/// The directory of records (`STATE/multipart/`), created 0700 on first use.
#[derive(Debug, Clone)]
pub struct PendingUploads {
    dir: PathBuf,
}

impl PendingUploads {
    pub fn new(state_dir: &Path) -> Self {
        Self {
            dir: state_dir.join("multipart"),
        }
    }

    /// An upload of this process, recorded before its first part is sent.
    pub fn record(
        &self,
        endpoint: Option<&str>,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> Result<PendingUpload> {
        let pid = std::process::id();
        let upload = PendingUpload {
            endpoint: endpoint.map(str::to_string),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            pid,
            pid_start: process_start(pid).unwrap_or(0),
        };
        create_private_dir(&self.dir)?;
        let path = self.path_of(&upload);
        crate::output::write_atomically(&path, &serde_json::to_vec_pretty(&upload)?)
            .with_context(|| format!("recording the multipart upload in {}", path.display()))?;
        Ok(upload)
    }

    /// Forgets an upload that completed or was aborted.
    pub fn forget(&self, upload: &PendingUpload) {
        let _ = fs::remove_file(self.path_of(upload));
    }

    /// Recorded uploads to this key whose owner is no longer running.
    pub fn abandoned(&self, endpoint: Option<&str>, bucket: &str, key: &str) -> Vec<PendingUpload> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| fs::read(e.path()).ok())
            .filter_map(|bytes| serde_json::from_slice::<PendingUpload>(&bytes).ok())
            .filter(|u| u.endpoint.as_deref() == endpoint && u.bucket == bucket && u.key == key)
            .filter(|u| !owner_alive(u))
            .collect()
    }

    fn path_of(&self, upload: &PendingUpload) -> PathBuf {
        let mut hasher = Sha256::new();
        for part in [
            upload.endpoint.as_deref().unwrap_or(""),
            &upload.bucket,
            &upload.key,
            &upload.upload_id,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        self.dir
            .join(format!("{}.json", &hex::encode(hasher.finalize())[..32]))
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| crate::fsutil::io_error(e, "creating", dir))
}

fn owner_alive(upload: &PendingUpload) -> bool {
    match process_start(upload.pid) {
        Some(start) => start == upload.pid_start,
        None => false,
    }
}

/// Field 22 of /proc/PID/stat (after the parenthesised command name, which may hold spaces).
fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_live_upload_is_not_abandoned_a_dead_ones_is() {
        let state = tempfile::tempdir().unwrap();
        let pending = PendingUploads::new(state.path());
        let mine = pending.record(None, "b", "k", "live").unwrap();
        assert!(
            pending.abandoned(None, "b", "k").is_empty(),
            "this process is alive"
        );

        // A record whose owner's start time no longer matches: the pid was reused.
        let mut dead = mine.clone();
        dead.upload_id = "dead".into();
        dead.pid_start += 1;
        fs::write(pending.path_of(&dead), serde_json::to_vec(&dead).unwrap()).unwrap();
        let found = pending.abandoned(None, "b", "k");
        assert_eq!(found, vec![dead.clone()]);
        assert!(pending.abandoned(Some("http://other"), "b", "k").is_empty());
        assert!(pending.abandoned(None, "b", "other-key").is_empty());

        pending.forget(&dead);
        pending.forget(&mine);
        assert_eq!(
            fs::read_dir(state.path().join("multipart"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn start_time_of_this_process_is_read() {
        assert!(process_start(std::process::id()).is_some_and(|t| t > 0));
    }
}
