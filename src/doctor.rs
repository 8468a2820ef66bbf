//! `doctor`: checks the host for what builds need and says what to install.

use std::path::Path;

pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
    /// What to do when it fails.
    pub fix: &'static str,
    pub required: bool,
}

pub fn run_checks(work_parent: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    let root = nix::unistd::geteuid().is_root();
    checks.push(Check {
        name: "root",
        ok: root,
        detail: format!("euid {}", nix::unistd::geteuid()),
        fix: "run as root (sudo): chroot, mounts and namespaces need it",
        required: true,
    });
    let mm = which::which("mmdebstrap").is_ok();
    let deb = which::which("debootstrap").is_ok();
    checks.push(Check {
        name: "bootstrapper",
        ok: mm || deb,
        detail: if mm {
            "mmdebstrap".into()
        } else if deb {
            "debootstrap (mmdebstrap preferred)".into()
        } else {
            "none".into()
        },
        fix: "apt-get install -y mmdebstrap",
        required: true,
    });
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
        || Path::new("/sys/module/overlay").exists();
    checks.push(Check {
        name: "overlayfs",
        ok: overlay,
        detail: if overlay {
            "available".into()
        } else {
            "not in /proc/filesystems".into()
        },
        fix: "modprobe overlay (needed for stage layers)",
        required: false,
    });
    let loops = Path::new("/dev/loop-control").exists();
    checks.push(Check {
        name: "loop devices",
        ok: loops,
        detail: if loops {
            "/dev/loop-control".into()
        } else {
            "missing".into()
        },
        fix: "modprobe loop (needed for disk images)",
        required: false,
    });
    let qemu = which::which("qemu-img").is_ok();
    checks.push(Check {
        name: "qemu-img",
        ok: qemu,
        detail: if qemu {
            "installed".into()
        } else {
            "missing".into()
        },
        fix: "apt-get install -y qemu-utils (needed for stemcell disk formats)",
        required: false,
    });
    let free = nix::sys::statvfs::statvfs(work_parent)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    const NEEDED: u64 = 10 << 30;
    checks.push(Check {
        name: "free disk",
        ok: free >= NEEDED,
        detail: format!(
            "{:.1} GiB free at {}",
            free as f64 / (1u64 << 30) as f64,
            work_parent.display()
        ),
        fix: "free at least 10 GiB there or pass another --work-dir",
        required: true,
    });
    checks
}

/// Prints the checks; returns whether every required one passed.
pub fn print(checks: &[Check]) -> anyhow::Result<bool> {
    let mut all = true;
    for check in checks {
        let mark = if check.ok {
            "ok  "
        } else if check.required {
            "FAIL"
        } else {
            "warn"
        };
        crate::outln!("{mark} {:<13} {}", check.name, check.detail)?;
        if !check.ok {
            crate::outln!("     fix: {}", check.fix)?;
            all &= !check.required;
        }
    }
    Ok(all)
}
