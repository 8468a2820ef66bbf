//! `chroot-exec`: runs one command inside a root tree as a container runtime would, because the
//! tree may come from anyone (an OS image from S3) and the builder runs as root.
//!
//! The command gets new mount, PID, UTS and IPC namespaces; the tree bound onto itself
//! (`nodev`, `nosuid`) and made `/` with `pivot_root`, the host's root detached; `proc` with
//! kernel files masked and sysctls read-only, `sysfs` read-only, a fresh `/dev` holding only
//! harmless devices (plus those asked for with `--device`); the host's `resolv.conf` read-only;
//! daemons blocked by `policy-rc.d`; a clean environment; capabilities cut to what package
//! installs need, `no_new_privs`, and a seccomp filter. It shares the host's network namespace
//! (apt needs the network) but can not reconfigure it.
//!
//! It never unmounts anything: every mount lives in a namespace that dies with the command. It
//! never follows the tree's symlinks on the host side: every path inside the tree is resolved
//! with [`crate::inroot::TreeRoot`].

mod dev;
pub mod mounts;
mod pivot;
pub mod policy_rc;
pub mod privileges;
pub mod seccomp;

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
    /// Host devices bound into the fresh /dev besides the harmless ones (GRUB's loop device).
    pub devices: Vec<PathBuf>,
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
    dev::check_host_devices(&request.devices)?;
    let host_resolv = Path::new("/etc/resolv.conf");
    let resolv = (request.resolv_conf && host_resolv.exists()).then_some(host_resolv);
    let ops = plan_mounts(resolv, &request.devices);

    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(clean_environment(|k| std::env::var_os(k)))
        .current_dir("/");

    let tree = crate::inroot::TreeRoot::open(&root)?;
    let guard = policy_rc::install(&tree)?;
    let result = crate::sandbox::run_isolated(
        CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC,
        move || enter(&root, &ops),
        command,
        crate::terminal::Terminal::for_caller()?,
    );
    drop(guard);
    result
}

/// Inside the sandbox's init, in its fresh namespaces: builds the tree's mounts, makes the tree
/// `/`, and gives up every privilege the command must not have. The command inherits the lot.
fn enter(root: &Path, ops: &[MountOp]) -> Result<()> {
    let tree = pivot::bind_root(root)?;
    mounts::apply(ops, &tree)?;
    pivot::pivot_into(&tree)?;
    drop(tree);
    close_inherited_fds()?;
    // Not dumpable: the command (same uid, same capabilities) can not ptrace its init.
    nix::sys::prctl::set_dumpable(false).context("prctl(PR_SET_DUMPABLE, 0)")?;
    privileges::drop_to_kept()?;
    seccomp::install()
}

/// For `smoke`'s warden container, inside its init's fresh namespaces: the tree as `/` with
/// `proc`, `sys` and a fresh `/dev` as for any sandbox, the host directories `binds` (host
/// path, path in the tree) bound in, and every privilege kept, as the warden CPI runs a
/// stemcell (a privileged garden container).
pub fn enter_privileged(root: &Path, binds: &[(PathBuf, PathBuf)]) -> Result<()> {
    let tree = pivot::bind_root_privileged(root)?;
    mounts::apply(&plan_mounts(None, &[]), &tree)?;
    for (host, inside) in binds {
        tree.create_dir_all(inside, 0o755)?;
        let target = tree.open_dir(inside)?;
        mounts::bind(host, &target, inside.strip_prefix("/").unwrap_or(inside))?;
    }
    pivot::pivot_into(&tree)?;
    close_inherited_fds()
}

/// Every fd the builder's caller left open (beyond stdin, stdout, stderr) is closed at exec: an
/// fd on a host directory would be a way out of the tree.
fn close_inherited_fds() -> Result<()> {
    // SAFETY: close_range only flags fds of this process close-on-exec.
    let rc = unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as i32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .context("close_range(3.., CLOSE_RANGE_CLOEXEC) (needs Linux 5.11)");
    }
    Ok(())
}
