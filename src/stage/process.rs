//! Runs one child (a stage script, the bootstrapper) inside a sandbox, with its output teed to
//! a log file and to the console, keeping the last lines for the failure message.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use anyhow::{Context, Result};

use super::mask::Masker;
use crate::progress::Step;

pub const TAIL_LINES: usize = 20;

/// Set by the Ctrl-C/SIGTERM handler; the running child is killed so the build stops at once.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static CURRENT_CHILD: AtomicI32 = AtomicI32::new(0);

/// Installs the handler once; safe to call again.
pub fn install_interrupt_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            INTERRUPTED.store(true, Ordering::SeqCst);
            let pid = CURRENT_CHILD.load(Ordering::SeqCst);
            if pid > 0 {
                // The sandbox's init dies with it (PDEATHSIG) and takes the whole stage along.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        });
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Runs `command` to its end with its output captured, as `Command::output` does, but as the
/// child the Ctrl-C/SIGTERM handler kills: an interrupted command ends at once and the caller,
/// seeing [`interrupted`], cleans up what it made.
pub fn output_interruptible(command: &mut Command) -> std::io::Result<std::process::Output> {
    let child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    CURRENT_CHILD.store(child.id() as i32, Ordering::SeqCst);
    let out = child.wait_with_output();
    CURRENT_CHILD.store(0, Ordering::SeqCst);
    out
}

pub struct Outcome {
    pub code: i32,
    pub tail: VecDeque<String>,
}

/// `program args…` wrapped in the hidden `sandbox` subcommand of this binary.
pub fn sandboxed(program: &Path, args: &[&std::ffi::OsStr]) -> Result<Command> {
    sandboxed_with(program, args, &[])
}

/// `sandboxed`, with options for the sandbox itself (e.g. the overlay it mounts first).
pub fn sandboxed_with(
    program: &Path,
    args: &[&std::ffi::OsStr],
    sandbox_options: &[std::ffi::OsString],
) -> Result<Command> {
    let exe = std::env::current_exe().context("locating the stemcell-builder binary")?;
    let mut command = Command::new(exe);
    command
        .arg("sandbox")
        .args(sandbox_options)
        .arg("--")
        .arg(program)
        .args(args);
    crate::sandbox::die_with_parent(&mut command);
    Ok(command)
}

/// Runs `command`, appending its output to `log` (created when `truncate`, mode 0600). Every
/// line is masked (secrets as `***`) before it reaches the log, the console or the tail.
pub fn run_logged(
    mut command: Command,
    log: &Path,
    truncate: bool,
    step: &Step,
    mask: &Masker,
) -> Result<Outcome> {
    let mut log_file = open_log(log, truncate)?;
    // The command line only: its environment holds the build's settings, secrets included.
    let words: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|w| w.to_string_lossy().into_owned())
        .collect();
    writeln!(
        log_file,
        "### {} {}",
        crate::progress::timestamp(),
        mask.mask(&shell_words::join(words))
    )?;
    let (reader, writer) = std::io::pipe().context("creating a pipe")?;
    command
        .stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {:?}", command.get_program()))?;
    drop(command); // closes our copies of the pipe's write end, so EOF comes when the child ends
    CURRENT_CHILD.store(child.id() as i32, Ordering::SeqCst);

    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .context("reading stage output")?;
        if n == 0 {
            break;
        }
        let raw = String::from_utf8_lossy(&buf);
        let text = mask.mask(&raw);
        // The bytes as they came, unless a secret had to be cut out of them.
        let logged = match &text {
            std::borrow::Cow::Borrowed(_) => buf.as_slice(),
            std::borrow::Cow::Owned(masked) => masked.as_bytes(),
        };
        log_file
            .write_all(logged)
            .map_err(|e| crate::fsutil::io_error(e, "writing", log))?;
        // apt draws progress with carriage returns: show the last frame only.
        let line = text
            .trim_end_matches(['\n', '\r'])
            .rsplit('\r')
            .next()
            .unwrap_or("")
            .to_string();
        step.line(&line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait().context("waiting for stage")?;
    CURRENT_CHILD.store(0, Ordering::SeqCst);
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    writeln!(
        log_file,
        "### {} exit status {code}",
        crate::progress::timestamp()
    )?;
    Ok(Outcome { code, tail })
}

fn open_log(log: &Path, truncate: bool) -> Result<File> {
    if let Some(dir) = log.parent() {
        crate::fsutil::create_private_dir(dir)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .write(true)
        .append(!truncate)
        .truncate(truncate)
        .mode(0o600)
        .open(log)
        .map_err(|e| crate::fsutil::io_error(e, "opening log", log))
}
