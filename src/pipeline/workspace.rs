//! The work directory of one build: locked for the build's lifetime, holding `chroot/`,
//! `layers/` (see `crate::layers`), `logs/`, `settings/` and, without layers, a marker that the
//! base is complete, which resuming needs.
//!
//! A build deletes and rewrites what it keeps there, so it only ever works in a directory it
//! made itself: a new or empty one, which it marks as its own, or one that carries that mark.
//! `--work-dir .` in a source checkout is refused, not emptied. Everything in it is private to
//! root (0700): an OS image from elsewhere may carry device nodes and setuid files, and no local
//! user may reach them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::lock::WorkDirLock;
use crate::fsutil::{create_owned_dir, create_private_dir};

const BASE_DONE: &str = ".base-complete";
/// The mark of a work dir this tool made.
pub const MARKER: &str = ".stemcell-builder-work-dir";

pub struct Workspace {
    pub work: PathBuf,
    pub chroot: PathBuf,
    _lock: WorkDirLock,
}

/// Checks, without changing anything, that `dir` may be used as a work dir: it does not exist,
/// is empty, or carries our marker.
pub fn check_usable(dir: &Path) -> Result<()> {
    if dir.as_os_str().is_empty() {
        bail!("--work-dir is empty: pass a directory for the build's chroot, logs and settings");
    }
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(crate::fsutil::io_error(e, "reading", dir)),
        Ok(_) => {}
    }
    let meta = std::fs::metadata(dir).map_err(|e| crate::fsutil::io_error(e, "reading", dir))?;
    if !meta.is_dir() {
        bail!(
            "work dir {} is not a directory: pass a new or empty directory to --work-dir",
            dir.display()
        );
    }
    if dir
        .join(MARKER)
        .symlink_metadata()
        .is_ok_and(|m| m.is_file())
    {
        return Ok(());
    }
    // Our own lock file alone (a build that was killed before it marked the dir) is not content.
    let empty = std::fs::read_dir(dir)
        .map_err(|e| crate::fsutil::io_error(e, "listing", dir))?
        .flatten()
        .all(|e| e.file_name() == ".lock");
    if !empty {
        bail!(
            "work dir {} is not empty and was not made by stemcell-builder (no {MARKER} in it): a build deletes what it keeps there, so pass a new or empty directory to --work-dir",
            dir.display()
        );
    }
    Ok(())
}

/// `dir` made absolute without requiring it to exist (its parent may not exist either).
pub fn absolute(dir: &Path) -> PathBuf {
    if let Ok(real) = dir.canonicalize() {
        return real;
    }
    let absolute = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(parent), Some(name)) => self::absolute(parent).join(name),
        _ => absolute,
    }
}

impl Workspace {
    /// Creates or adopts, then locks, the work dir; a second build on it is refused.
    pub fn open(dir: &Path) -> Result<Self> {
        check_usable(dir)?;
        create_private_dir(dir)?;
        let work = dir.canonicalize()?;
        let lock = super::lock::lock_work_dir(&work)?;
        // Checked again under the lock: another build may have filled it meanwhile.
        check_usable(&work)?;
        std::fs::write(
            work.join(MARKER),
            "this directory is a stemcell-builder work dir: builds delete and rewrite what is in it\n",
        )
        .with_context(|| format!("marking {}", work.display()))?;
        crate::stage::process::install_interrupt_handler();
        Ok(Self {
            chroot: work.join("chroot"),
            work,
            _lock: lock,
        })
    }

    /// Forgets the previous build: chroot, logs, settings and the base marker, and the layers
    /// unless `keep_layers` (a layered build decides itself which of them it can reuse).
    pub fn reset(&self, keep_layers: bool) -> Result<()> {
        for dir in ["chroot", "logs", "settings"] {
            crate::fsutil::remove_tree(&self.work.join(dir))?;
        }
        if !keep_layers {
            crate::fsutil::remove_tree(&self.work.join("layers"))?;
        }
        let _ = std::fs::remove_file(self.work.join(BASE_DONE));
        create_owned_dir(&self.work.join("logs"))?;
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

    /// A directory of the work dir the tool owns (`inputs`, `disk`, `stemcell`), made private.
    pub fn private_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.work.join(name);
        create_owned_dir(&dir)?;
        Ok(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_new_empty_or_marked_dirs_are_usable() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_usable(&dir.path().join("new")).is_ok());
        assert!(check_usable(dir.path()).is_ok(), "empty");
        std::fs::write(dir.path().join("precious"), "x").unwrap();
        let err = check_usable(dir.path()).unwrap_err().to_string();
        assert!(err.contains("not made by stemcell-builder"), "{err}");
        std::fs::write(dir.path().join(MARKER), "").unwrap();
        assert!(check_usable(dir.path()).is_ok(), "marked");
        assert!(check_usable(Path::new("")).is_err());
        assert!(
            check_usable(&dir.path().join("precious")).is_err(),
            "a file"
        );
    }

    #[test]
    fn absolute_paths_of_missing_dirs() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(absolute(&dir.path().join("a/b")), real.join("a/b"));
    }
}
