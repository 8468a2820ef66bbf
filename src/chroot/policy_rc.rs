//! `usr/sbin/policy-rc.d` exiting 101 tells invoke-rc.d (and so every maintainer script) not to
//! start daemons: a package installed in the chroot must never start a service on the host.
//!
//! The file is written and removed from the host side, so both go through [`TreeRoot`]: an image
//! whose `usr` or `usr/sbin` is a symlink to a host directory gets the file inside the tree (or
//! not at all), never in the host's directory, and the clean-up never deletes the host's own.

use std::path::Path;

use anyhow::{Context, Result};

use crate::inroot::{Entry, FileKind, TreeRoot};

pub const CONTENT: &str = "#!/bin/sh\n# written by stemcell-builder chroot-exec: no daemon starts in a build chroot\nexit 101\n";

const PATH: &str = "usr/sbin/policy-rc.d";

/// Removes the file again when dropped, if we created it.
pub struct PolicyRcGuard<'a> {
    entry: Option<Entry<'a>>,
}

/// Writes the policy into the tree unless the tree has no `usr/sbin` (it then runs no
/// maintainer scripts) or already has a policy of its own (kept as it is).
pub fn install(root: &TreeRoot) -> Result<PolicyRcGuard<'_>> {
    let entry = match root.entry(Path::new(PATH)) {
        Ok(entry) => entry,
        Err(e) if e.is_not_found() => return Ok(PolicyRcGuard { entry: None }),
        Err(e) => return Err(e).context("looking for usr/sbin to block daemons"),
    };
    if entry.kind()?.is_some() {
        return Ok(PolicyRcGuard { entry: None });
    }
    entry
        .create_file(CONTENT.as_bytes(), 0o755)
        .context("blocking daemons in the chroot")?;
    Ok(PolicyRcGuard { entry: Some(entry) })
}

/// Removes a policy-rc.d that a killed chroot-exec left behind (only ours: a regular file with
/// our exact content).
pub fn remove_stale(root: &Path) -> Result<()> {
    let tree = TreeRoot::open(root)?;
    let entry = match tree.entry(Path::new(PATH)) {
        Ok(entry) => entry,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_if_ours(&entry)?;
    Ok(())
}

fn remove_if_ours(entry: &Entry<'_>) -> Result<bool> {
    if entry.kind()? != Some(FileKind::Regular) {
        return Ok(false);
    }
    if entry.read_file(CONTENT.len() as u64 + 1).ok().as_deref() != Some(CONTENT.as_bytes()) {
        return Ok(false);
    }
    Ok(entry.remove_file()?)
}

impl Drop for PolicyRcGuard<'_> {
    fn drop(&mut self) {
        if let Some(entry) = &self.entry {
            let _ = remove_if_ours(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    #[test]
    fn written_into_usr_sbin_and_removed_with_the_guard() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        let root = TreeRoot::open(dir.path()).unwrap();
        let file = dir.path().join(PATH);
        {
            let _guard = install(&root).unwrap();
            assert_eq!(fs::read_to_string(&file).unwrap(), CONTENT);
        }
        assert!(!file.exists());
    }

    #[test]
    fn a_tree_policy_of_its_own_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        fs::write(dir.path().join(PATH), "#!/bin/sh\nexit 0\n").unwrap();
        let root = TreeRoot::open(dir.path()).unwrap();
        drop(install(&root).unwrap());
        remove_stale(dir.path()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(PATH)).unwrap(),
            "#!/bin/sh\nexit 0\n"
        );
    }

    #[test]
    fn symlinks_to_the_host_are_never_written_through_or_cleaned_up() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        fs::create_dir_all(host.join("sbin")).unwrap();
        // The host's own file, with our content: exactly what the old clean-up deleted.
        fs::write(host.join("sbin/policy-rc.d"), CONTENT).unwrap();
        for layout in ["usr", "usr/sbin", "usr/sbin/policy-rc.d"] {
            let tree = dir
                .path()
                .join(format!("tree-{}", layout.replace('/', "-")));
            let link = tree.join(layout);
            fs::create_dir_all(link.parent().unwrap()).unwrap();
            let target = match layout {
                "usr" => host.clone(),
                "usr/sbin" => host.join("sbin"),
                _ => host.join("sbin/policy-rc.d"),
            };
            symlink(&target, &link).unwrap();
            let root = TreeRoot::open(&tree).unwrap();
            drop(install(&root).unwrap());
            remove_stale(&tree).unwrap();
            assert_eq!(
                fs::read_to_string(host.join("sbin/policy-rc.d")).unwrap(),
                CONTENT,
                "{layout}"
            );
            assert_eq!(
                fs::read_dir(host.join("sbin")).unwrap().count(),
                1,
                "{layout}"
            );
        }
    }
}
