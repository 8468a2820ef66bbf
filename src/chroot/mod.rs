//! `chroot-exec`: runs one command inside a root tree with its own mount, PID, UTS and IPC
//! namespaces, a fresh `/dev`, `proc`, read-only `sysfs`, the host's `resolv.conf` read-only,
//! daemons blocked by `policy-rc.d`, and a clean environment.
//!
//! It never unmounts anything: every mount lives in a namespace that dies with the command.

mod dev;
pub mod inroot;
pub mod mounts;
pub mod policy_rc;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;

pub use mounts::{plan_mounts, MountOp};

/// What `chroot-exec` needs; built by the CLI.
#[derive(Debug, Clone)]
pub struct ChrootCommand {
    pub root: PathBuf,
    pub command: Vec<OsString>,
    /// Bind the host's resolv.conf (read-only) so apt can resolve names.
    pub resolv_conf: bool,
    /// Bind the host's whole /dev instead of a minimal one (GRUB on a loop device needs it).
    pub host_dev: bool,
}

/// Proxy settings survive the environment reset: builds behind a proxy need them for apt.
const PASSED_THROUGH: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
];

const CHROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The environment a command sees inside the chroot.
pub fn clean_environment(host: impl Fn(&str) -> Option<OsString>) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = vec![
        ("PATH".into(), CHROOT_PATH.into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
        ("HOME".into(), "/root".into()),
    ];
    for name in PASSED_THROUGH {
        if let Some(value) = host(name) {
            env.push(((*name).into(), value));
        }
    }
    env
}

/// Runs the command; returns its exit code (128 + signal when it was killed).
pub fn exec(request: &ChrootCommand) -> Result<i32> {
    let root = request
        .root
        .canonicalize()
        .with_context(|| format!("chroot {} does not exist", request.root.display()))?;
    if !root.is_dir() || root == Path::new("/") {
        bail!("chroot {} must be a directory other than /", root.display());
    }
    let Some((program, args)) = request.command.split_first() else {
        bail!("chroot-exec needs a command after the root, e.g. `chroot-exec ROOT -- /bin/sh -c 'id'`");
    };
    let host_resolv = Path::new("/etc/resolv.conf");
    let resolv = (request.resolv_conf && host_resolv.exists()).then_some(host_resolv);
    let ops = plan_mounts(&root, resolv, request.host_dev)?;
    let host_dev = request.host_dev;

    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(clean_environment(|k| std::env::var_os(k)));

    let tree = inroot::TreeRoot::open(&root)?;
    let guard = policy_rc::install(&tree)?;
    let chroot_root = root.clone();
    let result = crate::sandbox::run_isolated(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
        move || {
            mounts::apply(&ops)?;
            if !host_dev {
                dev::populate(&chroot_root.join("dev"))?;
            }
            nix::unistd::chroot(&chroot_root)
                .with_context(|| format!("chroot({})", chroot_root.display()))?;
            std::env::set_current_dir("/").context("chdir / inside the chroot")?;
            Ok(())
        },
        command,
    );
    drop(guard);
    result
}
