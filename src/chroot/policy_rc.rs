//! `usr/sbin/policy-rc.d` exiting 101 tells invoke-rc.d (and so every maintainer script) not to
//! start daemons: a package installed in the chroot must never start a service on the host.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub const CONTENT: &str = "#!/bin/sh\n# written by stemcell-builder chroot-exec: no daemon starts in a build chroot\nexit 101\n";

/// Removes the file again when dropped, if we created it.
pub struct PolicyRcGuard {
    path: Option<PathBuf>,
}

pub fn install(root: &Path) -> Result<PolicyRcGuard> {
    let sbin = root.join("usr/sbin");
    let path = sbin.join("policy-rc.d");
    if !sbin.is_dir() || path.symlink_metadata().is_ok() {
        // A tree without usr/sbin runs no maintainer scripts; an existing policy stays as it is.
        return Ok(PolicyRcGuard { path: None });
    }
    fs::write(&path, CONTENT).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(PolicyRcGuard { path: Some(path) })
}

/// Removes a policy-rc.d that a killed chroot-exec left behind (only ours, by content).
pub fn remove_stale(root: &Path) -> Result<()> {
    let path = root.join("usr/sbin/policy-rc.d");
    if fs::read_to_string(&path).is_ok_and(|c| c == CONTENT) {
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

impl Drop for PolicyRcGuard {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}
