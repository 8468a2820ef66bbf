//! A pseudo-terminal of the sandboxed command's own, copied to and from the caller's terminal,
//! as `systemd-nspawn` and container runtimes do.
//!
//! A command that held an fd on the caller's terminal could push keystrokes into it
//! (`TIOCSTI`), change its settings or its line discipline, and its injected line would run in
//! the caller's shell as host root after the builder exits. So the command never gets one: when
//! the caller's stdin, stdout or stderr is a terminal, those fds of the command are the slave of
//! a new pty, which is its controlling terminal in a session of its own, and the builder copies
//! bytes between the master and the caller's terminal (which it puts in raw mode while it does,
//! so keys such as Ctrl-C reach the command's terminal rather than the builder). Window size
//! changes are passed on. When none of the three is a terminal nothing is made.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{self, SetArg, Termios};
use nix::unistd::isatty;

/// The command's own pty, made when one of the caller's stdio fds is a terminal.
pub struct Terminal {
    master: OwnedFd,
    slave: Option<OwnedFd>,
    /// Which of the command's fds 0, 1, 2 become the slave: those that are terminals here.
    ttys: [bool; 3],
}

impl Terminal {
    /// A pty for the command when any of this process's fds 0, 1, 2 is a terminal.
    pub fn for_caller() -> Result<Option<Terminal>> {
        let ttys = [0, 1, 2].map(|fd| isatty(borrowed(fd)).unwrap_or(false));
        if !ttys.iter().any(|&t| t) {
            return Ok(None);
        }
        let size = caller_tty(&ttys).and_then(window_size);
        let pty = openpty(size.as_ref(), None).context("openpty for the command's terminal")?;
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                fd,
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .context("marking the pty close-on-exec")?;
        }
        Ok(Some(Terminal {
            master: pty.master,
            slave: Some(pty.slave),
            ttys,
        }))
    }

    /// Makes `command` start in a new session with the slave as its controlling terminal, on
    /// each of its fds 0-2 that is a terminal here (the others stay as they are).
    pub fn attach(&self, command: &mut Command) {
        let slave = self.slave.as_ref().map_or(-1, |s| s.as_raw_fd());
        let ttys = self.ttys;
        // SAFETY: setsid, ioctl and dup2 are async-signal-safe; nothing else runs before exec.
        unsafe {
            command.pre_exec(move || {
                if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (fd, &tty) in ttys.iter().enumerate() {
                    if tty && libc::dup2(slave, fd as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }

    /// In the process that started the command: its own copy of the slave is closed, so the
    /// master reads EIO once every process of the command has gone.
    pub fn close_slave(&mut self) {
        self.slave = None;
    }

    /// Copies between the caller's terminal and the command's until the command's side is
    /// closed (or `done` says the command has ended); restores the caller's terminal.
    pub fn relay(mut self, mut done: impl FnMut() -> bool) -> Result<()> {
        self.close_slave();
        let _raw = if self.ttys[0] {
            RawMode::enter(borrowed(0))?
        } else {
            None
        };
        let caller = caller_tty(&self.ttys);
        let mut size = caller.and_then(window_size);
        let out = if self.ttys[1] {
            Some(1)
        } else if self.ttys[2] {
            Some(2)
        } else {
            None
        };
        let mut master = std::fs::File::from(self.master.try_clone()?);
        let mut stdin_open = self.ttys[0];
        let mut buf = [0u8; 8192];
        loop {
            let mut fds = vec![PollFd::new(self.master.as_fd(), PollFlags::POLLIN)];
            if stdin_open {
                fds.push(PollFd::new(borrowed(0), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::from(200u16)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(err) => return Err(err).context("poll on the command's terminal"),
            }
            let ready = |fd: &PollFd| {
                fd.revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
            };
            let master_ready = ready(&fds[0]);
            let stdin_ready = stdin_open && ready(&fds[1]);
            if master_ready {
                match master.read(&mut buf) {
                    // EIO: every slave fd is closed, the command and all it started are gone.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if let Some(fd) = out {
                            write_all(fd, &buf[..n]);
                        }
                    }
                }
            } else if done() {
                break;
            }
            if stdin_ready {
                let mut stdin = std::io::stdin().lock();
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        if master.write_all(&buf[..n]).is_err() {
                            stdin_open = false;
                        }
                    }
                }
            }
            let now = caller.and_then(window_size);
            if let Some(new) = now.filter(|n| size.is_none_or(|s| !same_size(&s, n))) {
                // The kernel sends SIGWINCH to the command's foreground process group.
                // SAFETY: TIOCSWINSZ reads one Winsize from a valid pointer.
                unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &new) };
                size = Some(new);
            }
        }
        Ok(())
    }
}

fn borrowed(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: fds 0-2 stay open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

fn caller_tty(ttys: &[bool; 3]) -> Option<BorrowedFd<'static>> {
    ttys.iter().position(|&t| t).map(|fd| borrowed(fd as RawFd))
}

fn window_size(fd: BorrowedFd<'_>) -> Option<Winsize> {
    let mut size = Winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one Winsize into a valid pointer.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (rc == 0).then_some(size)
}

fn same_size(a: &Winsize, b: &Winsize) -> bool {
    (a.ws_row, a.ws_col, a.ws_xpixel, a.ws_ypixel) == (b.ws_row, b.ws_col, b.ws_xpixel, b.ws_ypixel)
}

/// Writes to the caller's fd, ignoring a closed one (the command's output is then lost, as it
/// would be on a closed terminal).
fn write_all(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        match nix::unistd::write(borrowed(fd), bytes) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(_) => return,
        }
    }
}

/// The caller's terminal in raw mode, restored when dropped.
struct RawMode {
    fd: BorrowedFd<'static>,
    saved: Termios,
}

impl RawMode {
    fn enter(fd: BorrowedFd<'static>) -> Result<Option<RawMode>> {
        let Ok(saved) = termios::tcgetattr(fd) else {
            return Ok(None);
        };
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).context("setting the terminal raw")?;
        Ok(Some(RawMode { fd, saved }))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSADRAIN, &self.saved);
    }
}
