//! A minimal `/dev` on the fresh tmpfs that `mounts` put on the tree's `dev`: the host's
//! harmless character devices bound in (the sandbox has no CAP_MKNOD, and binding keeps the
//! host's permissions), a private devpts instance and `shm`, plus any host device the caller
//! asked for by name (the disk stage's loop device and its partition) and nothing else: no
//! host disk is ever reachable from inside.
//!
//! `dev` is a path to the fresh tmpfs (`/proc/self/fd/N`); only this process writes there.

use std::fs;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, MsFlags};

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Checks, on the host, that each of `devices` is a block or character device under `/dev`.
pub fn check_host_devices(devices: &[PathBuf]) -> Result<()> {
    for device in devices {
        let below_dev = device
            .strip_prefix("/dev")
            .ok()
            .filter(|rest| {
                !rest.as_os_str().is_empty()
                    && rest.components().all(|c| matches!(c, Component::Normal(_)))
            })
            .is_some();
        let kind = fs::metadata(device).map(|m| m.file_type());
        let is_device = kind
            .as_ref()
            .is_ok_and(|k| k.is_block_device() || k.is_char_device());
        if !below_dev || !is_device {
            bail!(
                "--device {}: not a device node under /dev; give a device such as /dev/loop0",
                device.display()
            );
        }
    }
    Ok(())
}

pub fn populate(dev: &Path, extra: &[PathBuf]) -> Result<()> {
    let host_dev = Path::new("/dev");
    let mut binds: Vec<(PathBuf, PathBuf)> = DEVICES
        .iter()
        .map(|name| (host_dev.join(name), PathBuf::from(name)))
        .collect();
    for device in extra {
        let relative = device
            .strip_prefix(host_dev)
            .with_context(|| format!("--device {}: not under /dev", device.display()))?;
        binds.push((device.clone(), relative.to_path_buf()));
    }
    for (source, relative) in binds {
        let target = dev.join(&relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating /dev/{}", relative.display()))?;
        }
        fs::write(&target, b"").with_context(|| format!("creating /dev/{}", relative.display()))?;
        mount(
            Some(&source),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| {
            format!(
                "mount --bind {} /dev/{} in the tree",
                source.display(),
                relative.display()
            )
        })?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).context("creating /dev/pts in the tree")?;
    // newinstance: the chroot's ptys are its own, invisible to the host's devpts.
    let data = "newinstance,ptmxmode=0666,mode=0620,gid=5";
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(data),
    )
    .with_context(|| format!("mount -t devpts devpts /dev/pts in the tree -o {data}"))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).context("creating /dev/shm in the tree")?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .context("mount -t tmpfs shm /dev/shm in the tree")?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link)).with_context(|| format!("symlink /dev/{link}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_device_nodes_under_dev_are_accepted() {
        check_host_devices(&[PathBuf::from("/dev/null")]).unwrap();
        for bad in [
            "/etc/passwd",
            "/dev",
            "/dev/../etc/passwd",
            "/dev/nonexistent",
            "/tmp",
        ] {
            let err = check_host_devices(&[PathBuf::from(bad)]).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("--device {bad}: not a device node")),
                "{err}"
            );
        }
    }
}
