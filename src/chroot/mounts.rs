//! The sequence of mounts that makes a root tree usable, as data, so it can be tested without
//! root; `apply` performs it. Every error names source, target, fstype and flags.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Mount a filesystem of `fstype`.
    Fs {
        fstype: &'static str,
        target: PathBuf,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Bind `source` onto `target`, then remount read-only when asked.
    Bind {
        source: PathBuf,
        target: PathBuf,
        read_only: bool,
    },
    /// Bind a whole tree with everything mounted below it (the host's /dev for disk work).
    RecursiveBind { source: PathBuf, target: PathBuf },
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The mounts for `root`, in order. `resolv` is the host's resolv.conf, bound only where the
/// tree has a regular file to bind it onto (never through a symlink that may point outside).
pub fn plan_mounts(root: &Path, resolv: Option<&Path>, host_dev: bool) -> Result<Vec<MountOp>> {
    for dir in ["proc", "sys", "dev"] {
        let path = root.join(dir);
        if path.symlink_metadata().is_err() {
            fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        }
    }
    let mut ops = vec![
        MountOp::Fs {
            fstype: "proc",
            target: root.join("proc"),
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
        },
        MountOp::Fs {
            fstype: "sysfs",
            target: root.join("sys"),
            flags: NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
            data: None,
        },
    ];
    ops.push(if host_dev {
        MountOp::RecursiveBind {
            source: "/dev".into(),
            target: root.join("dev"),
        }
    } else {
        MountOp::Fs {
            fstype: "tmpfs",
            target: root.join("dev"),
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755,size=65536k".into()),
        }
    });
    if let Some(resolv) = resolv {
        let target = root.join("etc/resolv.conf");
        if target
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_file())
        {
            ops.push(MountOp::Bind {
                source: resolv.to_path_buf(),
                target,
                read_only: true,
            });
        }
    }
    Ok(ops)
}

pub fn apply(ops: &[MountOp]) -> Result<()> {
    for op in ops {
        match op {
            MountOp::Fs {
                fstype,
                target,
                flags,
                data,
            } => mount(
                Some(*fstype),
                target,
                Some(*fstype),
                *flags,
                data.as_deref(),
            )
            .with_context(|| {
                format!(
                    "mount -t {fstype} {fstype} {} (flags {flags:?}, data {data:?})",
                    target.display()
                )
            })?,
            MountOp::Bind {
                source,
                target,
                read_only,
            } => {
                bind(source, target, *read_only)?;
            }
            MountOp::RecursiveBind { source, target } => {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
                mount(Some(source), target, None::<&str>, flags, None::<&str>).with_context(
                    || format!("mount --rbind {} {}", source.display(), target.display()),
                )?;
            }
        }
    }
    Ok(())
}

pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("mount --bind {} {}", source.display(), target.display()))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
            .with_context(|| format!("remount read-only {} (flags {flags:?})", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_sys_dev_in_order_and_sys_read_only() {
        let root = tempfile::tempdir().unwrap();
        let ops = plan_mounts(root.path(), None, false).unwrap();
        let kinds: Vec<_> = ops
            .iter()
            .map(|op| match op {
                MountOp::Fs { fstype, .. } => *fstype,
                MountOp::Bind { .. } => "bind",
                MountOp::RecursiveBind { .. } => "rbind",
            })
            .collect();
        assert_eq!(kinds, ["proc", "sysfs", "tmpfs"]);
        assert!(matches!(&ops[1], MountOp::Fs { flags, .. } if flags.contains(MsFlags::MS_RDONLY)));
        assert!(root.path().join("proc").is_dir() && root.path().join("dev").is_dir());
        let with_host_dev = plan_mounts(root.path(), None, true).unwrap();
        assert!(
            matches!(&with_host_dev[2], MountOp::RecursiveBind { source, .. } if source == Path::new("/dev"))
        );
    }

    #[test]
    fn resolv_conf_bound_read_only_onto_a_regular_file_only() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        let host = Path::new("/etc/hostname");
        assert_eq!(
            plan_mounts(root.path(), Some(host), false).unwrap().len(),
            3,
            "no target file: no bind"
        );

        std::os::unix::fs::symlink("/etc/passwd", root.path().join("etc/resolv.conf")).unwrap();
        assert_eq!(
            plan_mounts(root.path(), Some(host), false).unwrap().len(),
            3,
            "never bind through a symlink"
        );

        fs::remove_file(root.path().join("etc/resolv.conf")).unwrap();
        fs::write(root.path().join("etc/resolv.conf"), "").unwrap();
        let ops = plan_mounts(root.path(), Some(host), false).unwrap();
        assert_eq!(
            ops.last().unwrap(),
            &MountOp::Bind {
                source: host.into(),
                target: root.path().join("etc/resolv.conf"),
                read_only: true
            }
        );
    }
}
