//! A VM stemcell (raw or qcow2 disk) booted as an OpenStack-like IaaS boots it: the stemcell's
//! disk as the first virtio disk, an empty ephemeral disk as the second, and a config drive
//! (FAT labelled `CONFIG-2`, `ec2/latest/user-data` holding the agent's settings and
//! `ec2/latest/meta-data.json` its SSH key, as our openstack agent.json reads them) as the
//! third, in `qemu-system-x86_64` with user-mode networking: the guest reaches this machine's
//! loopback as 10.0.2.2 (where nats-server listens) and its sshd is forwarded to a loopback
//! port here. qemu dies with the builder.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};

use super::run_tool;

/// How qemu runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// TCG (software emulation): slower, works everywhere. Chosen unless `kvm` is asked for:
    /// on some hosts `/dev/kvm` opens and qemu reports KVM enabled, yet the guest hangs.
    Tcg,
    /// KVM (needs a working /dev/kvm).
    Kvm,
}

/// The guest's view of this machine (slirp's gateway alias for the host's loopback).
pub const HOST_FROM_GUEST: &str = "10.0.2.2";
/// slirp's DNS address, which the agent's network settings name.
pub const GUEST_DNS: &str = "10.0.2.3";

pub struct Vm {
    child: Child,
    pub ssh_port: u16,
    pub console: PathBuf,
}

/// The config drive: the agent's settings as user data, the SSH key as meta data.
pub fn config_drive(dir: &Path, user_data: &[u8], meta_data: &[u8]) -> Result<PathBuf> {
    let image = dir.join("config-drive.img");
    let file = fs::File::create(&image)?;
    file.set_len(16 << 20)?;
    drop(file);
    let image_arg = image.display().to_string();
    run_tool(
        Command::new("mkfs.vfat").args(["-n", "CONFIG-2", &image_arg]),
        "mkfs.vfat (apt-get install -y dosfstools)",
    )?;
    run_tool(
        Command::new("mmd").args(["-i", &image_arg, "::/ec2", "::/ec2/latest"]),
        "mmd (apt-get install -y mtools)",
    )?;
    for (name, bytes) in [("user-data", user_data), ("meta-data.json", meta_data)] {
        let local = dir.join(name);
        super::write_private(&local, bytes)?;
        run_tool(
            Command::new("mcopy")
                .args(["-i", &image_arg])
                .arg(&local)
                .arg(format!("::/ec2/latest/{name}")),
            "mcopy",
        )?;
        fs::remove_file(&local)?;
    }
    Ok(image)
}

impl Vm {
    /// Boots `disk` (format `format`: raw or qcow2) with an ephemeral disk and `drive`.
    pub fn boot(dir: &Path, disk: &Path, format: &str, drive: &Path, accel: Accel) -> Result<Vm> {
        let qemu = which::which("qemu-system-x86_64").map_err(|_| {
            anyhow::anyhow!(
                "qemu-system-x86_64 is not installed: apt-get install -y qemu-system-x86"
            )
        })?;
        let ephemeral = dir.join("ephemeral.qcow2");
        run_tool(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&ephemeral)
                .arg("4G"),
            "qemu-img create",
        )?;
        let ssh_port = TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        let console = dir.join("console.log");
        let drive_arg = |path: &Path, format: &str, extra: &str| {
            format!("file={},if=virtio,format={format}{extra}", path.display())
        };
        let mut command = Command::new(qemu);
        command
            .args([
                "-m", "2048", "-smp", "2", "-display", "none", "-monitor", "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console.display()))
            .args([
                "-accel",
                match accel {
                    Accel::Tcg => "tcg",
                    Accel::Kvm => "kvm",
                },
            ])
            .arg("-drive")
            .arg(drive_arg(disk, format, ""))
            .arg("-drive")
            .arg(drive_arg(&ephemeral, "qcow2", ""))
            .arg("-drive")
            .arg(drive_arg(drive, "raw", ",readonly=on"))
            .arg("-netdev")
            .arg(format!("user,id=n0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22"))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("qemu.stderr"))?);
        crate::sandbox::die_with_parent(&mut command);
        let child = command.spawn().context("starting qemu-system-x86_64")?;
        Ok(Vm {
            child,
            ssh_port,
            console,
        })
    }

    /// The console's last lines (what the guest printed), for a failure report.
    pub fn console_tail(&self, lines: usize) -> Vec<String> {
        super::tail_of(&self.console, lines)
    }

    /// Whether qemu is still running; its error output when it is not.
    pub fn check_running(&mut self, dir: &Path) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let stderr = fs::read_to_string(dir.join("qemu.stderr")).unwrap_or_default();
            bail!("qemu exited ({status}): {}", stderr.trim());
        }
        Ok(())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
