//! Runs a command under a fresh PID-namespace init, so that nothing it starts can outlive it.
//!
//! The init process (PID 1 of the new namespace) is tied to its parent with `PR_SET_PDEATHSIG`,
//! and the kernel kills every process of a PID namespace when its init exits. Mount namespaces
//! are created by the init itself, so they are held only by processes that die with it: when the
//! command ends, or the builder is SIGKILLed, every mount and process of the stage goes away.
//!
//! The init starts a new session, so nothing below it has the caller's controlling terminal
//! (`/dev/tty` inside then reaches nothing), and installs the terminal seccomp filter, so no fd
//! on a terminal takes injected input. Where a person needs a terminal, the caller passes a
//! [`Terminal`]: a pty of the command's own, relayed to the caller's.
//!
//! Must only be called from a single-threaded process (`chroot-exec`, or the hidden `sandbox`
//! subcommand the stage runner execs), because it forks.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setsid, ForkResult, Pid};

use crate::terminal::Terminal;

/// Exit status used when the sandbox itself (not the command) failed.
pub const SETUP_FAILED: i32 = 125;

/// Namespaces the init unshares for itself and everything below it.
pub fn stage_namespaces() -> CloneFlags {
    CloneFlags::CLONE_NEWNS
}

/// Runs `command` as the only child of a new PID namespace's init. `setup` runs inside the
/// init after its own namespaces exist and before the command starts (mounts, chroot).
/// Returns the command's exit code, or 128 + signal number. With a `terminal`, the command's
/// terminal fds are its pty, relayed to the caller's while it runs.
pub fn run_isolated(
    namespaces: CloneFlags,
    setup: impl FnOnce() -> Result<()>,
    mut command: Command,
    mut terminal: Option<Terminal>,
) -> Result<i32> {
    if let Some(terminal) = &terminal {
        terminal.attach(&mut command);
    }
    unshare(CloneFlags::CLONE_NEWPID).context("unshare(CLONE_NEWPID) failed: are you root?")?;
    // SAFETY: callers are single-threaded (see module docs); the child only calls
    // async-signal-safe functions until it execs or exits.
    match unsafe { fork() }.context("fork failed")? {
        ForkResult::Child => {
            let code = match init(namespaces, setup, &mut command, &mut terminal) {
                Ok(code) => code,
                Err(err) => {
                    eprintln!("stemcell-builder: {err:#}");
                    SETUP_FAILED
                }
            };
            // The init's exit is what kills any straggler of the namespace.
            std::process::exit(code)
        }
        ForkResult::Parent { child } => {
            if let Some(terminal) = terminal {
                terminal.relay(|| exited(child))?;
            }
            wait_for(child)
        }
    }
}

fn init(
    namespaces: CloneFlags,
    setup: impl FnOnce() -> Result<()>,
    command: &mut Command,
    terminal: &mut Option<Terminal>,
) -> Result<i32> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    // No controlling terminal of the caller's for anything below: a new session has none.
    setsid().context("setsid")?;
    unshare(namespaces).with_context(|| format!("unshare({namespaces:?})"))?;
    if namespaces.contains(CloneFlags::CLONE_NEWNS) {
        make_mounts_private()?;
    }
    setup()?;
    crate::chroot::seccomp::install_terminal_filter()?;
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    // The init holds no end of the pty: the master reads EIO when the command's side is gone.
    *terminal = None;
    let main = Pid::from_raw(child.id() as i32);
    // As PID 1 we also reap orphans the command leaves behind.
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == main => return Ok(code),
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == main => return Ok(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(err) => return Err(err).context("waitpid in sandbox init"),
        }
    }
}

/// Makes every mount of the current (new) mount namespace private: without this, mounts made
/// in it would propagate back to the host's namespace.
pub fn make_mounts_private() -> Result<()> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context("mount --make-rprivate / failed")
}

/// Moves the calling (single-threaded) process into a private mount namespace of its own, so
/// nothing it mounts can outlive it or be seen by the host.
pub fn own_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("unshare(CLONE_NEWNS) failed: are you root?")?;
    make_mounts_private()
}

/// Whether `child` has ended, without reaping it.
fn exited(child: Pid) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    !matches!(waitid(Id::Pid(child), flags), Ok(WaitStatus::StillAlive))
}

fn wait_for(child: Pid) -> Result<i32> {
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(err) => return Err(err).context("waitpid for sandbox init"),
        }
    }
}

/// Makes a child spawned by the builder die with the builder's thread that spawned it.
/// Spawn from the main thread: the death signal follows the spawning thread, not the process.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}
