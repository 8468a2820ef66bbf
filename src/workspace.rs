//! The work directory of one build: locked for the build's lifetime, holding `chroot/`,
//! `logs/`, `settings/` and a marker that the base (layer 0) is complete, which resuming needs.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::lock::WorkDirLock;

const BASE_DONE: &str = ".base-complete";

pub struct Workspace {
    pub work: PathBuf,
    pub chroot: PathBuf,
    _lock: WorkDirLock,
}

impl Workspace {
    /// Creates and locks the work dir; a second build on it is refused.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| crate::fsutil::io_error(e, "creating", dir))?;
        let work = dir.canonicalize()?;
        let lock = crate::lock::lock_work_dir(&work)?;
        crate::stage::process::install_interrupt_handler();
        Ok(Self {
            chroot: work.join("chroot"),
            work,
            _lock: lock,
        })
    }

    /// Forgets the previous build: chroot, logs, settings and the base marker.
    pub fn reset(&self) -> Result<()> {
        for dir in ["chroot", "logs", "settings"] {
            crate::fsutil::remove_tree(&self.work.join(dir))?;
        }
        let _ = std::fs::remove_file(self.work.join(BASE_DONE));
        std::fs::create_dir_all(self.work.join("logs"))?;
        Ok(())
    }

    pub fn mark_base_done(&self) -> Result<()> {
        std::fs::write(self.work.join(BASE_DONE), b"")?;
        Ok(())
    }

    /// For `--resume-from`: the chroot must be there, as a previous build left it.
    pub fn require_base(&self) -> Result<()> {
        if !self.work.join(BASE_DONE).exists() {
            bail!(
                "nothing to resume in {}: no completed base there; run without --resume-from",
                self.work.display()
            );
        }
        crate::chroot::policy_rc::remove_stale(&self.chroot)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.work.join("logs").join(name)
    }
}
