//! Fixtures for integration tests: a temp stages dir with the real bash prelude, a tiny
//! busybox root to use as the base, a work dir, and the built binary to run against them.
#![allow(dead_code)]

pub mod s3_server;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_stemcell-builder"))
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const APPLETS: &[&str] = &[
    "sh", "ls", "cat", "echo", "mkdir", "sleep", "touch", "id", "hostname", "ps", "grep", "wc",
    "test", "true", "false", "env", "stat", "readlink", "rm", "mount", "head", "tail", "printf",
    "kill", "sed", "chroot", "mknod", "ip", "insmod", "date", "unshare", "umount", "ln", "dd",
];

/// A root tree with busybox-static and its applets: enough for stages that run shell code.
pub fn busybox_root(root: &Path) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (apt-get install busybox-static)");
    for dir in ["bin", "etc", "usr/sbin", "tmp", "root"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
    fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("etc/resolv.conf"), "").unwrap();
    fs::write(root.join("etc/hostname"), "tiny\n").unwrap();
}

pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("sb-test-")
            .tempdir()
            .unwrap();
        let fixture = Fixture { dir };
        let lib = fixture.stages().join("lib");
        fs::create_dir_all(&lib).unwrap();
        for file in [
            "prelude_common.bash",
            "prelude_apply.bash",
            "prelude_config.bash",
        ] {
            fs::copy(repo().join("stages/lib").join(file), lib.join(file)).unwrap();
        }
        busybox_root(&fixture.base());
        fs::create_dir_all(fixture.out_dir()).unwrap();
        fixture
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn stages(&self) -> PathBuf {
        self.path().join("stages")
    }
    pub fn base(&self) -> PathBuf {
        self.path().join("base")
    }
    pub fn work(&self) -> PathBuf {
        self.path().join("work")
    }
    pub fn chroot(&self) -> PathBuf {
        self.work().join("chroot")
    }
    /// A stage's layer (`NN-name`, or `00-base`): what the stage wrote, as an overlay upper dir.
    pub fn layer(&self, slug: &str) -> PathBuf {
        self.work().join("layers").join(slug)
    }
    pub fn out_dir(&self) -> PathBuf {
        self.path().join("out")
    }
    pub fn output(&self) -> PathBuf {
        self.out_dir().join("os-image.tgz")
    }

    /// Writes collections.yml with one collection `test` holding `stages`.
    pub fn collection(&self, stages: &[&str]) {
        let body = format!("collections:\n  test: [{}]\n", stages.join(", "));
        fs::write(self.stages().join("collections.yml"), body).unwrap();
    }

    /// A stage whose apply.sh runs `body` after the prelude.
    pub fn stage(&self, name: &str, body: &str) {
        self.script(name, "apply.sh", "prelude_apply.bash", body);
    }

    pub fn config(&self, name: &str, body: &str) {
        self.script(name, "config.sh", "prelude_config.bash", body);
    }

    fn script(&self, name: &str, file: &str, prelude: &str, body: &str) {
        let dir = self.stages().join(name);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(file);
        let text =
            format!("#!/usr/bin/env bash\nsource \"$(dirname \"$0\")/../lib/{prelude}\"\n{body}\n");
        fs::write(&path, text).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `build-os-image` on the busybox base with the `test` collection, plus `extra` flags.
    pub fn build_command(&self, extra: &[&str]) -> Command {
        self.build_command_in(&self.work(), extra)
    }

    /// `build_command` with another work dir.
    pub fn build_command_in(&self, work: &Path, extra: &[&str]) -> Command {
        self.build_command_with(work, None, extra)
    }

    /// `build_command` in `work`, with the layer cache in `cache` (`--no-cache` when None).
    pub fn build_command_with(&self, work: &Path, cache: Option<&Path>, extra: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.arg("build-os-image")
            .arg("--stages-dir")
            .arg(self.stages())
            .arg("--collection")
            .arg("test")
            .arg("--base")
            .arg(self.base())
            .arg("--work-dir")
            .arg(work)
            .arg("--output")
            .arg(self.output());
        match cache {
            Some(cache) => cmd.arg("--cache-dir").arg(cache),
            None => cmd.arg("--no-cache"),
        };
        cmd.args(extra)
            .env_remove("resume_from")
            .env_remove("OS_NAME")
            .env_remove("OS_VERSION");
        cmd
    }

    /// `pack`s the base tree into `NAME` beside it: an OS image for `build-stemcell`.
    pub fn pack_base(&self, name: &str) -> PathBuf {
        let image = self.path().join(name);
        let out = Command::new(bin())
            .arg("pack")
            .arg(self.base())
            .arg(&image)
            .output()
            .unwrap();
        assert!(out.status.success(), "pack: {}", text(&out.stderr));
        image
    }

    /// `build-stemcell` of a warden stemcell from `image` with the `test` collection, the
    /// agent `agent` and the layer cache in `cache`, into the fixture's work and out dirs.
    pub fn stemcell_command(&self, image: &Path, agent: &Path, cache: &Path) -> Command {
        let mut cmd = Command::new(bin());
        cmd.args(["build-stemcell", "--iaas", "warden", "--version", "1.2"])
            .args(["--os", "debian-trixie", "--collection", "test"])
            .arg("--os-image")
            .arg(image)
            .arg("--agent")
            .arg(agent)
            .arg("--stages-dir")
            .arg(self.stages())
            .arg("--work-dir")
            .arg(self.work())
            .arg("--output-dir")
            .arg(self.out_dir())
            .arg("--cache-dir")
            .arg(cache)
            .env_remove("resume_from")
            .env_remove("IAAS")
            .env_remove("OS_NAME")
            .env_remove("OS_VERSION");
        cmd
    }

    pub fn build(&self, extra: &[&str]) -> Output {
        self.build_command(extra).output().unwrap()
    }
}

/// Asserts a build succeeded, showing its output when it did not.
pub fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "build failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The duration report's status for `slug` (`01-one`): the words after the duration.
pub fn status(out: &Output, slug: &str) -> String {
    let stdout = text(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{slug} ")))
        .unwrap_or_else(|| panic!("no report line for {slug}:\n{stdout}"));
    line.split_whitespace()
        .skip(2)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Mount points at or below `dir` in the host's mount table.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1).map(str::to_string))
        .filter(|m| m.starts_with(&prefix))
        .collect()
}

/// PIDs of processes whose command line contains `needle`.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut pids = vec![];
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline)
                .replace('\0', " ")
                .contains(needle)
            {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Polls `check` for up to `seconds`.
pub fn eventually(seconds: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    check()
}

/// The default OS image (debian-trixie, the real stages), built once per test run and shared by
/// the test binaries that need one: reused when it is newer than the binary under test. Tests
/// of one binary ask for it concurrently: the first builds it, the others wait.
pub fn default_os_image() -> (PathBuf, String) {
    static IMAGE: std::sync::OnceLock<(PathBuf, String)> = std::sync::OnceLock::new();
    IMAGE.get_or_init(build_default_os_image).clone()
}

fn build_default_os_image() -> (PathBuf, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("os-image-e2e");
    let image = dir.join("os-image.tgz");
    let report = dir.join("build-report.txt");
    // Fresh: newer than the binary and than every stage and asset it was built from.
    let inputs = [bin(), repo().join("stages"), repo().join("assets/os")]
        .iter()
        .filter_map(|p| newest_mtime(p))
        .max();
    let fresh = |p: &Path| match (fs::metadata(p).and_then(|m| m.modified()), inputs) {
        (Ok(built), Some(inputs)) => built > inputs,
        _ => false,
    };
    if fresh(&image) && report.exists() {
        return (image, fs::read_to_string(&report).unwrap());
    }
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let out = Command::new(bin())
        .arg("build-os-image")
        .arg("--work-dir")
        .arg(dir.join("work"))
        .arg("--output")
        .arg(&image)
        .current_dir(repo())
        .env_remove("resume_from")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "build-os-image failed:\n{}",
        text(&out.stderr)
    );
    fs::write(&report, &out.stdout).unwrap();
    (image, text(&out.stdout))
}

/// The newest modification time of a file or of anything below a directory.
fn newest_mtime(path: &Path) -> Option<std::time::SystemTime> {
    let meta = fs::symlink_metadata(path).ok()?;
    let mut newest = meta.modified().ok()?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).ok()?.flatten() {
            if let Some(t) = newest_mtime(&entry.path()) {
                newest = newest.max(t);
            }
        }
    }
    Some(newest)
}

/// `len` bytes that no compressor or dedup can shrink (xorshift noise), the same for a seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The tree a build left in `work`, to read after it ended: with layers (the default), a
/// read-only overlay of every layer there (a failed stage's on top) mounted on a temp dir for
/// as long as this lives; after a `--no-layers` build, `work/chroot` itself.
pub struct MergedTree {
    path: PathBuf,
    mounted: Option<tempfile::TempDir>,
}

impl MergedTree {
    pub fn new(work: &Path) -> Self {
        let layers = work.join("layers");
        if !layers.is_dir() {
            return Self {
                path: work.join("chroot"),
                mounted: None,
            };
        }
        let mut names: Vec<String> = std::fs::read_dir(&layers)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.len() > 3 && n.as_bytes()[..2].iter().all(u8::is_ascii_digit))
            .collect();
        names.sort();
        names.reverse();
        if names.len() == 1 {
            return Self {
                path: layers.join(&names[0]),
                mounted: None,
            };
        }
        let target = tempfile::tempdir().unwrap();
        let lowers: Vec<String> = names
            .iter()
            .map(|n| layers.join(n).display().to_string())
            .collect();
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o"])
            .arg(format!(
                "ro,lowerdir={},index=off,metacopy=off,redirect_dir=off,xino=off",
                lowers.join(":")
            ))
            .arg(target.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mounting the layers: {}",
            text(&out.stderr)
        );
        Self {
            path: target.path().to_path_buf(),
            mounted: Some(target),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: &str) -> PathBuf {
        self.path.join(rel)
    }
}

impl Drop for MergedTree {
    fn drop(&mut self) {
        if self.mounted.is_some() {
            let _ = Command::new("umount").arg(&self.path).status();
        }
    }
}

/// Says on the test run's own stderr that a test (or part of one) could not run here, and why.
/// Written to the descriptor, not through `println!`, which the test harness captures and
/// hides for a passing test.
pub fn skip(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIP {what}: {why}");
}

/// Writes a small gzip tar whose first entry is a GNU long name of 128 MiB: a reader that holds
/// names whole (the tar crate) would hold all of it.
pub fn write_long_name_bomb(path: &Path) {
    use std::io::Write;
    const HUGE: u64 = 128 << 20;
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(HUGE);
    header.set_cksum();
    gz.write_all(header.as_bytes()).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..(HUGE >> 20) {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
}

/// Runs the binary with `args` under GNU time: (exit code, stderr, its own peak RSS in KiB).
/// A child spawned straight from the test process would report that process's peak instead
/// (vfork shares its memory map until exec); GNU time forks from a small process.
pub fn run_with_peak_rss(args: &[&std::ffi::OsStr], scratch: &Path) -> (i32, String, i64) {
    let rss_file = scratch.join("peak-rss");
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%M", "-o"])
        .arg(&rss_file)
        .arg(bin())
        .args(args)
        .stdout(std::process::Stdio::null())
        .output()
        .expect("GNU time is installed (apt-get install time)");
    let rss = fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (out.status.code().unwrap_or(-1), text(&out.stderr), rss)
}

/// tests/support/sandbox_probe.c, compiled statically once (again when the source changes).
pub fn sandbox_probe() -> &'static Path {
    static PROBE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PROBE.get_or_init(|| {
        let source = repo().join("tests/support/sandbox_probe.c");
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sandbox_probe");
        let modified = |p: &Path| fs::metadata(p).and_then(|m| m.modified()).ok();
        if modified(&out) > modified(&source) {
            return out;
        }
        // Test binaries run at once may compile it together: each writes its own file and
        // renames it into place.
        let partial = out.with_extension(std::process::id().to_string());
        let gcc = Command::new("gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&partial)
            .arg(&source)
            .output()
            .expect("gcc runs (apt-get install gcc libc6-dev)");
        assert!(
            gcc.status.success(),
            "gcc -static sandbox_probe.c: {}",
            text(&gcc.stderr)
        );
        fs::rename(&partial, &out).unwrap();
        out
    })
}

/// A busybox tree with the probe at /bin/probe.
pub fn probe_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    busybox_root(&root);
    fs::copy(sandbox_probe(), root.join("bin/probe")).unwrap();
    root
}

/// What a command did when run as from an interactive terminal: the caller's own pty is its
/// controlling terminal (a new session, as a login shell's), and what waits in that terminal's
/// input queue afterwards is what the caller's shell would read and run next.
pub struct UnderTerminal {
    pub status: std::process::ExitStatus,
    /// What the command wrote to the terminal (with stdio on it), or to its pipes.
    pub output: String,
    /// Bytes waiting in the terminal's input queue after the command ended.
    pub injected: Vec<u8>,
}

/// Runs `cmd` with a fresh pty as its controlling terminal; with `stdio_on_tty` its stdin,
/// stdout and stderr are that terminal, else stdin is /dev/null and the others are pipes (the
/// terminal is then reachable only through /dev/tty). `input` is typed into the terminal first.
pub fn under_terminal(cmd: &mut Command, stdio_on_tty: bool, input: &[u8]) -> UnderTerminal {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = pty.slave.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if stdio_on_tty {
                for fd in 0..3 {
                    libc::dup2(slave, fd);
                }
            }
            Ok(())
        });
    }
    if !stdio_on_tty {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap();
    // Piped output is read as it comes, so a command that writes much never blocks on it.
    let readers: Vec<std::thread::JoinHandle<Vec<u8>>> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut pipe| {
        std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = pipe.read_to_end(&mut all);
            all
        })
    })
    .collect();
    let mut master = fs::File::from(pty.master);
    master.write_all(input).unwrap();
    let mut output = Vec::new();
    let mut buf = [0u8; 4096];
    let master_fd = master.as_raw_fd();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    let status = loop {
        let mut fds = [libc::pollfd {
            fd: master_fd,
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, 100) };
        if ready > 0 && fds[0].revents & libc::POLLIN != 0 {
            if let Ok(n) = master.read(&mut buf) {
                output.extend_from_slice(&buf[..n]);
            }
            continue;
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the command under the terminal hangs"
        );
    };
    for reader in readers {
        output.extend(reader.join().unwrap());
    }
    // What the terminal would hand its next reader: non-blocking reads of the slave side.
    let reader = pty.slave;
    nix::fcntl::fcntl(
        &reader,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut reader = fs::File::from(reader);
    let mut injected = Vec::new();
    while let Ok(n) = reader.read(&mut buf) {
        if n == 0 {
            break;
        }
        injected.extend_from_slice(&buf[..n]);
    }
    UnderTerminal {
        status,
        output: String::from_utf8_lossy(&output).into_owned(),
        injected,
    }
}

/// A block device node `b 7 0` (the host's first loop device) at `path`: what a hostile tree
/// plants where the builder expects a file.
pub fn loop_device_node(path: &Path) {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        nix::sys::stat::makedev(7, 0),
    )
    .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}
