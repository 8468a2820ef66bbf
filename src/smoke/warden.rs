//! A warden stemcell run as the warden CPI runs one (bosh-warden-cpi vm/warden_creator.go): the
//! stemcell's root tree as a privileged container with new mount, PID, UTS, IPC and network
//! namespaces, `/var/vcap/data` and `/warden-cpi-dev` bound in from the host, the agent's
//! settings in `/var/vcap/bosh/warden-cpi-agent-env.json`, and the CPI's start command, which
//! ends in `exec env -i /usr/sbin/runsvdir-start`. Its network is a veth pair made from inside
//! the container's namespace, so both ends go when the container does.
//!
//! The container runs under this binary's hidden `container` subcommand (a fresh, single-
//! threaded process that can fork a PID-namespace init), which stops before anything of the
//! tree runs until the caller has given it its network.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use anyhow::{bail, Context, Result};
use nix::sched::CloneFlags;

/// What the CPI runs in the container (it umounts the files garden bound in; there are none
/// here, and the failures do not stop the script).
const START: &str = "umount /etc/resolv.conf
umount /etc/hosts
umount /etc/hostname
rm -rf /var/vcap/data/sys
mkdir -p /var/vcap/data/sys
exec env -i /usr/sbin/runsvdir-start";

/// The addresses of one container's veth pair: the host's end and the container's, a /30.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub host: Ipv4Addr,
    pub container: Ipv4Addr,
}

impl Addresses {
    /// A /30 in 10.244.0.0/16 picked by `seed`, not used on this host yet.
    pub fn pick(seed: u32) -> Result<Addresses> {
        let used = std::fs::read_to_string("/proc/net/fib_trie").unwrap_or_default();
        for i in 0..16_000u32 {
            let n = (seed.wrapping_add(i)) % 16_000;
            let base = u32::from(Ipv4Addr::new(10, 244, 0, 0)) + n * 4;
            let host = Ipv4Addr::from(base + 1);
            if !used.contains(&host.to_string()) {
                return Ok(Addresses {
                    host,
                    container: Ipv4Addr::from(base + 2),
                });
            }
        }
        bail!("no free /30 in 10.244.0.0/16 for the container's network")
    }
}

/// A started container, held before its tree runs anything until `start`.
pub struct Container {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The container's init, as this host numbers it.
    pub init_pid: u32,
    pub addresses: Addresses,
}

impl Container {
    /// Starts the container of `root` (the stemcell's tree), binding `data` on /var/vcap/data
    /// and `persistent` on /warden-cpi-dev, and gives it its network. Its output goes to `log`.
    pub fn create(
        root: &Path,
        data: &Path,
        persistent: &Path,
        log: &Path,
        addresses: Addresses,
    ) -> Result<Container> {
        let exe = std::env::current_exe().context("locating the stemcell-builder binary")?;
        let mut command = Command::new(exe);
        command
            .arg("container")
            .arg("--log")
            .arg(log)
            .arg("--bind")
            .arg(bind_arg(data, "/var/vcap/data"))
            .arg("--bind")
            .arg(bind_arg(persistent, "/warden-cpi-dev"))
            .arg(root)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        crate::sandbox::die_with_parent(&mut command);
        let mut child = command.spawn().context("starting the container")?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .context("reading the container's init pid")?;
        let Some(init_pid) = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            let _ = child.kill();
            bail!("the container did not start: it said {line:?}");
        };
        let stdin = child.stdin.take();
        let container = Container {
            child,
            stdin,
            init_pid,
            addresses,
        };
        container.give_network()?;
        Ok(container)
    }

    /// eth0 inside, its peer on the host: made in the container's namespace with the peer
    /// sent to ours, so the pair dies with the container whatever happens to this process.
    fn give_network(&self) -> Result<()> {
        let host_end = format!("sbs{}", self.init_pid);
        let netns = format!("--net=/proc/{}/ns/net", self.init_pid);
        let me = std::process::id().to_string();
        let a = self.addresses;
        let inside = |args: &[&str]| -> Result<()> {
            let mut all = vec![netns.as_str(), "ip"];
            all.extend_from_slice(args);
            run("nsenter", &all)
        };
        inside(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", &host_end, "netns", &me,
        ])?;
        inside(&["link", "set", "lo", "up"])?;
        inside(&["addr", "add", &format!("{}/30", a.container), "dev", "eth0"])?;
        inside(&["link", "set", "eth0", "up"])?;
        inside(&["route", "add", "default", "via", &a.host.to_string()])?;
        run(
            "ip",
            &["addr", "add", &format!("{}/30", a.host), "dev", &host_end],
        )?;
        run("ip", &["link", "set", &host_end, "up"])?;
        Ok(())
    }

    /// Lets the container's tree run: the CPI's start command.
    pub fn start(&mut self) -> Result<()> {
        let mut stdin = self
            .stdin
            .take()
            .context("the container was started already")?;
        stdin.write_all(b"go\n").context("starting the container")?;
        Ok(())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // The init dies with the `container` process (PDEATHSIG), and the kernel takes every
        // process, mount and the network namespace of the container with it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bind_arg(host: &Path, inside: &str) -> OsString {
    let mut arg = host.as_os_str().to_os_string();
    arg.push(":");
    arg.push(inside);
    arg
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    super::run_tool(
        Command::new(program).args(args),
        &format!("{program} {}", args.join(" ")),
    )
}

/// The hidden `container` subcommand: runs the CPI's start command in `root` under a new
/// PID-namespace init with new mount, UTS, IPC and network namespaces. The init says
/// `ready PID` (its PID on the host) on stdout and waits for a line on stdin before it makes
/// the tree its root and starts anything in it.
pub fn container_main(root: &Path, binds: &[(PathBuf, PathBuf)], log: &Path) -> Result<i32> {
    let log_file =
        std::fs::File::create(log).map_err(|e| crate::fsutil::io_error(e, "creating", log))?;
    let mut command = Command::new("/bin/bash");
    command
        .args(["-c", START])
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let root = root.to_path_buf();
    let binds = binds.to_vec();
    crate::sandbox::run_isolated(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWNET,
        move || enter(&root, &binds),
        command,
        None,
    )
}

fn enter(root: &Path, binds: &[(PathBuf, PathBuf)]) -> Result<()> {
    // /proc is still the host's here, so /proc/self names this init as the host numbers it.
    let pid = std::fs::read_link("/proc/self").context("reading /proc/self")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready {}", pid.display())?;
    stdout.flush()?;
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    if go.trim() != "go" {
        bail!("the caller did not start the container");
    }
    crate::chroot::enter_privileged(root, binds)
}
