//! The mounts that make a root tree a sandbox, as data (so the plan is tested without root),
//! and `apply`, which performs them before `pivot_root`.
//!
//! Every target is a path inside the tree, resolved with [`TreeRoot`] (symlinks stay inside the
//! tree) and mounted onto through its `/proc/self/fd/N` handle, so a tree's `proc -> /etc` or
//! `etc -> /host/dir` can never put a mount, or a write, on the host's files. Every error names
//! source, target, fstype and flags.
//!
//! What `/proc` and `/sys` hide follows the defaults of runc (the OCI runtime): kernel memory,
//! keyrings, timers and firmware masked; sysctls, sysrq and IRQ settings read-only.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

use crate::inroot::{fd_path, FileKind, TreeRoot};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// A fresh filesystem of `fstype` on the directory `target` (created when missing).
    Fs {
        fstype: &'static str,
        target: PathBuf,
        flags: MsFlags,
        data: Option<String>,
    },
    /// `target` bound onto itself and remounted read-only; skipped when the kernel has none.
    ReadOnly { target: PathBuf },
    /// `target` hidden: `/dev/null` over a file, an empty read-only tmpfs over a directory;
    /// skipped when absent.
    Mask { target: PathBuf },
    /// The fresh `/dev` (see `dev`), with these host devices bound in as well.
    Dev { devices: Vec<PathBuf> },
    /// The host's file `source` bound read-only onto `target`, only where the tree has a
    /// regular file there (the tree's own, symlinks resolved inside the tree).
    HostFile { source: PathBuf, target: PathBuf },
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// Settings that processes inside could use to change the host: read-only.
pub const PROC_READ_ONLY: &[&str] = &[
    "proc/bus",
    "proc/fs",
    "proc/irq",
    "proc/sys",
    "proc/sysrq-trigger",
];

/// Kernel memory, symbols, keyrings, timers and hardware details: hidden.
pub const MASKED: &[&str] = &[
    "proc/acpi",
    "proc/asound",
    "proc/kcore",
    "proc/keys",
    "proc/kallsyms",
    "proc/kpagecgroup",
    "proc/kpagecount",
    "proc/kpageflags",
    "proc/latency_stats",
    "proc/sched_debug",
    "proc/scsi",
    "proc/timer_list",
    "proc/timer_stats",
    "proc/vmallocinfo",
    "sys/devices/virtual/powercap",
    "sys/firmware",
];

/// The mounts for a tree, in order. `resolv` is the host's resolv.conf; `devices` are host
/// devices the command needs besides the minimal set (the disk stage's loop device).
pub fn plan_mounts(resolv: Option<&Path>, devices: &[PathBuf]) -> Vec<MountOp> {
    let mut ops = vec![MountOp::Fs {
        fstype: "proc",
        target: "proc".into(),
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
    }];
    ops.extend(
        PROC_READ_ONLY
            .iter()
            .map(|p| MountOp::ReadOnly { target: p.into() }),
    );
    // sysfs read-only; without CAP_SYS_ADMIN nothing inside can remount it.
    ops.push(MountOp::Fs {
        fstype: "sysfs",
        target: "sys".into(),
        flags: NOSUID_NODEV_NOEXEC | MsFlags::MS_RDONLY,
        data: None,
    });
    ops.extend(MASKED.iter().map(|p| MountOp::Mask { target: p.into() }));
    ops.push(MountOp::Dev {
        devices: devices.to_vec(),
    });
    if let Some(resolv) = resolv {
        ops.push(MountOp::HostFile {
            source: resolv.to_path_buf(),
            target: "etc/resolv.conf".into(),
        });
    }
    ops
}

pub fn apply(ops: &[MountOp], root: &TreeRoot) -> Result<()> {
    for op in ops {
        match op {
            MountOp::Fs {
                fstype,
                target,
                flags,
                data,
            } => {
                let fd = directory(root, target)?;
                mount_on(
                    Some(*fstype),
                    &fd,
                    target,
                    Some(*fstype),
                    *flags,
                    data.as_deref(),
                )?;
            }
            MountOp::ReadOnly { target } => {
                let Some(fd) = existing(root, target)? else {
                    continue;
                };
                bind(&fd_path(&fd), &fd, target)?;
                remount_read_only(root, target, NOSUID_NODEV_NOEXEC)?;
            }
            MountOp::Mask { target } => {
                let Some(fd) = existing(root, target)? else {
                    continue;
                };
                let stat = nix::sys::stat::fstat(&fd)
                    .with_context(|| format!("stat /{} in the tree", target.display()))?;
                if stat.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    let flags = MsFlags::MS_RDONLY | NOSUID_NODEV_NOEXEC;
                    mount_on(Some("tmpfs"), &fd, target, Some("tmpfs"), flags, None)?;
                } else {
                    bind(Path::new("/dev/null"), &fd, target)?;
                }
            }
            MountOp::Dev { devices } => {
                let fd = directory(root, Path::new("dev"))?;
                let flags = MsFlags::MS_NOSUID;
                let data = Some("mode=0755,size=65536k");
                mount_on(
                    Some("tmpfs"),
                    &fd,
                    Path::new("dev"),
                    Some("tmpfs"),
                    flags,
                    data,
                )?;
                // The tmpfs now sits on top of the fd's directory: open it afresh.
                let dev = root.open_dir(Path::new("dev"))?;
                super::dev::populate(&fd_path(&dev), devices)?;
            }
            MountOp::HostFile { source, target } => {
                if root.kind(target)? != Some(FileKind::Regular) {
                    continue;
                }
                let fd = root.open_path(target)?;
                bind(source, &fd, target)?;
                remount_read_only(root, target, NOSUID_NODEV_NOEXEC)?;
            }
        }
    }
    Ok(())
}

/// The directory `target` of the tree, created when the tree has nothing there.
fn directory(root: &TreeRoot, target: &Path) -> Result<OwnedFd> {
    if root.kind(target)?.is_none() {
        root.create_dir(target, 0o755)?;
    }
    Ok(root.open_dir(target)?)
}

fn existing(root: &TreeRoot, target: &Path) -> Result<Option<OwnedFd>> {
    match root.open_path(target) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn mount_on(
    source: Option<&str>,
    target: &OwnedFd,
    name: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    mount(source, &fd_path(target), fstype, flags, data).with_context(|| {
        format!(
            "mount -t {} {} /{} in the tree (flags {flags:?}, data {data:?})",
            fstype.unwrap_or("-"),
            source.unwrap_or("-"),
            name.display()
        )
    })
}

/// Binds the host's `source` (or a handle's path) onto the tree's `target`.
pub fn bind(source: &Path, target: &OwnedFd, name: &Path) -> Result<()> {
    mount(
        Some(source),
        &fd_path(target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "mount --bind {} /{} in the tree",
            source.display(),
            name.display()
        )
    })
}

/// Remounts the bind at `target` read-only. The path is resolved again: the handle used for
/// the bind points below the new mount, not at it.
fn remount_read_only(root: &TreeRoot, target: &Path, keep: MsFlags) -> Result<()> {
    let fd = root.open_path(target)?;
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | keep;
    mount(
        None::<&str>,
        &fd_path(&fd),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .with_context(|| {
        format!(
            "remount read-only /{} in the tree (flags {flags:?})",
            target.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(ops: &[MountOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                MountOp::Fs { fstype, .. } => fstype.to_string(),
                MountOp::ReadOnly { target } => format!("ro {}", target.display()),
                MountOp::Mask { target } => format!("mask {}", target.display()),
                MountOp::Dev { .. } => "dev".into(),
                MountOp::HostFile { target, .. } => format!("host {}", target.display()),
            })
            .collect()
    }

    #[test]
    fn proc_then_its_read_only_parts_then_sys_masks_dev_and_resolv() {
        let ops = plan_mounts(Some(Path::new("/etc/resolv.conf")), &[]);
        let kinds = kinds(&ops);
        assert_eq!(kinds[0], "proc");
        let sysfs = kinds.iter().position(|k| k == "sysfs").unwrap();
        assert!(kinds[1..sysfs].iter().all(|k| k.starts_with("ro proc/")));
        for path in ["proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus"] {
            assert!(kinds.contains(&format!("ro {path}")), "{path}");
        }
        for path in ["proc/kcore", "proc/keys", "proc/timer_list", "sys/firmware"] {
            let mask = kinds
                .iter()
                .position(|k| k == &format!("mask {path}"))
                .unwrap();
            assert!(mask > sysfs, "{path} masked after sysfs is mounted");
        }
        assert_eq!(kinds[kinds.len() - 2], "dev");
        assert_eq!(kinds.last().unwrap(), "host etc/resolv.conf");
        assert!(matches!(
            &ops[sysfs],
            MountOp::Fs { flags, .. } if flags.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOSUID)
        ));
    }

    #[test]
    fn targets_are_inside_the_tree_and_devices_pass_through() {
        let devices = vec![PathBuf::from("/dev/loop7")];
        let ops = plan_mounts(None, &devices);
        assert!(!kinds(&ops).iter().any(|k| k.starts_with("host")));
        assert!(ops.contains(&MountOp::Dev { devices }));
        for op in &ops {
            let target = match op {
                MountOp::Fs { target, .. }
                | MountOp::ReadOnly { target }
                | MountOp::Mask { target }
                | MountOp::HostFile { target, .. } => target.clone(),
                MountOp::Dev { .. } => continue,
            };
            assert!(target.is_relative(), "{}", target.display());
        }
    }
}
