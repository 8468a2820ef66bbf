//! `disk-image`: a bootable disk from a root tree. A sparse raw file with one MBR partition,
//! ext4 labelled `root`, the tree copied in, GRUB (BIOS) installed from the tree's own grub-pc,
//! then converted with qemu-img to the IaaS's format.
//!
//! It works in a mount namespace of its own, so its mounts die with it, and its loop device
//! has the autoclear flag: on every path, a failure or a SIGKILL included, neither a mount nor
//! a loop device outlives it.

pub mod loopdev;
mod ovf;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::progress::Reporter;
use loopdev::LoopDevice;

/// Disk formats (the `files` format of warden stemcells is a tarball, not a disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DiskFormat {
    /// `root.img`, raw.
    Raw,
    /// `root.img` in qcow2.
    Qcow2,
    /// `image.ovf`, `image.mf` and `image-disk1.vmdk` (streamOptimized).
    Ovf,
    /// `root.vhd`, fixed size (what Azure takes).
    Vhd,
}

#[derive(Debug, Clone)]
pub struct DiskPlan {
    pub tree: PathBuf,
    pub out_dir: PathBuf,
    pub format: DiskFormat,
    /// Disk size; default: the tree's size with room to grow, at least 2 GiB.
    pub size_mib: Option<u64>,
}

/// The files `format` produces, in the order they go into a stemcell's `image`.
pub fn output_files(format: DiskFormat) -> &'static [&'static str] {
    match format {
        DiskFormat::Raw | DiskFormat::Qcow2 => &["root.img"],
        DiskFormat::Vhd => &["root.vhd"],
        DiskFormat::Ovf => &["image.ovf", "image.mf", "image-disk1.vmdk"],
    }
}

/// Must run in a single-threaded process: it unshares its mount namespace.
pub fn build(plan: &DiskPlan, reporter: &Reporter) -> Result<Vec<PathBuf>> {
    crate::sandbox::own_mount_namespace()?;
    if !plan.tree.join("usr/sbin/grub-install").exists() {
        bail!(
            "{} has no /usr/sbin/grub-install: install grub-pc in the tree first (the system_grub stage does)",
            plan.tree.display()
        );
    }
    fs::create_dir_all(&plan.out_dir)
        .map_err(|e| crate::fsutil::io_error(e, "creating", &plan.out_dir))?;
    let size_mib = plan
        .size_mib
        .unwrap_or_else(|| default_size_mib(&plan.tree));
    let scratch = tempfile::Builder::new()
        .prefix(".disk-")
        .tempdir_in(&plan.out_dir)?;
    let raw = scratch.path().join("root.raw");

    let step = reporter.step(&format!("disk {size_mib} MiB"));
    let started = Instant::now();
    make_partitioned_file(&raw, size_mib)?;
    {
        let mut device = LoopDevice::attach(&raw)?;
        let partition = device.add_partitions()?;
        step.line(&format!("{} on {}", partition.display(), raw.display()));
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "root"])
                .arg(&partition),
            "mkfs.ext4",
        )?;
        let target = scratch.path().join("mnt");
        fs::create_dir(&target)?;
        mount(
            Some(&partition),
            &target,
            Some("ext4"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mount -t ext4 {} {}", partition.display(), target.display()))?;
        let mounted = Mounted(target.clone());
        step.line("copying the tree");
        run(
            Command::new("cp")
                .args(["-a", "--preserve=all"])
                .arg(format!("{}/.", plan.tree.display()))
                .arg(&target),
            "cp -a",
        )?;
        fs::write(target.join("etc/fstab"), "# written by stemcell-builder disk-image\nLABEL=root / ext4 defaults,errors=remount-ro 0 1\n")?;
        // grub-mkconfig would name the build host's loop partition as root= (it cannot see a
        // by-uuid link without udev); the label is what the booted VM will have.
        let grub_d = target.join("etc/default/grub.d");
        fs::create_dir_all(&grub_d)?;
        fs::write(
            grub_d.join("90-root-label.cfg"),
            "# written by stemcell-builder disk-image\nGRUB_DEVICE=LABEL=root\nGRUB_DISABLE_LINUX_UUID=true\n",
        )?;
        step.line("installing GRUB");
        install_grub(&target, &device.path, &partition)?;
        drop(mounted);
        drop(device);
    }
    step.finish("partitioned, ext4, GRUB installed", started.elapsed());

    let step = reporter.step(&format!("convert to {:?}", plan.format));
    let started = Instant::now();
    let staged = convert(&raw, scratch.path(), plan.format, size_mib)?;
    // Final names only once every file is complete.
    let mut outputs = vec![];
    for file in staged {
        let name = file.file_name().expect("a file name").to_owned();
        let destination = plan.out_dir.join(name);
        fs::rename(&file, &destination)
            .with_context(|| format!("moving {} into place", destination.display()))?;
        outputs.push(destination);
    }
    step.finish("done", started.elapsed());
    Ok(outputs)
}

/// Unmounts (lazily, so a failure never leaves it busy) when dropped; the namespace would take
/// it anyway when the process ends, but the loop device must be free before it detaches.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        nix::unistd::sync();
        let _ = umount2(&self.0, MntFlags::MNT_DETACH);
    }
}

fn default_size_mib(tree: &Path) -> u64 {
    let used_mib = crate::fsutil::disk_usage_mib(tree).unwrap_or(1024);
    ((used_mib * 3 / 2 + 512).div_ceil(256) * 256).max(2048)
}

fn make_partitioned_file(raw: &Path, size_mib: u64) -> Result<()> {
    let file = fs::File::create(raw).map_err(|e| crate::fsutil::io_error(e, "creating", raw))?;
    file.set_len(size_mib << 20)
        .map_err(|e| crate::fsutil::io_error(e, "sizing", raw))?;
    drop(file);
    // One bootable Linux partition from 1 MiB to the end; the gap before it holds GRUB's core.
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("running sfdisk: apt-get install -y fdisk")?;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, type=83, bootable\n")?;
    let out = sfdisk.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "sfdisk {} failed: {}",
            raw.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// GRUB runs in the tree's sandbox with exactly two host devices: the loop disk it writes its
/// boot code to and the partition it finds /boot on (grub-probe maps the mounted filesystem to
/// a node in /dev). No extra capability: writing to a block device needs none.
fn install_grub(root: &Path, disk: &Path, partition: &Path) -> Result<()> {
    let exe = std::env::current_exe()?;
    let script = format!(
        // grub.cfg is root's alone (the reference's STIG V-38583/V-38579/V-38581).
        "grub-install --target=i386-pc --boot-directory=/boot --modules='part_msdos ext2' {disk} && update-grub \
         && chown root:root /boot/grub/grub.cfg && chmod 0600 /boot/grub/grub.cfg",
        disk = disk.display()
    );
    let mut command = Command::new(exe);
    // If we are killed, GRUB's chroot (and its hold on our mount) must go too.
    crate::sandbox::die_with_parent(&mut command);
    let out = command
        .arg("chroot-exec")
        .arg("--device")
        .arg(disk)
        .arg("--device")
        .arg(partition)
        .arg(root)
        .args(["--", "/bin/sh", "-ec", &script])
        .output()
        .context("running chroot-exec for GRUB")?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!("installing GRUB into the disk failed:\n{}", tail.join("\n"));
    }
    Ok(())
}

fn convert(raw: &Path, dir: &Path, format: DiskFormat, size_mib: u64) -> Result<Vec<PathBuf>> {
    let qemu = |args: &[&str], out: &Path| -> Result<()> {
        run(
            Command::new("qemu-img")
                .arg("convert")
                .args(args)
                .arg(raw)
                .arg(out),
            "qemu-img convert",
        )
    };
    Ok(match format {
        DiskFormat::Raw => {
            let out = dir.join("root.img");
            fs::rename(raw, &out)?;
            vec![out]
        }
        DiskFormat::Qcow2 => {
            let out = dir.join("root.img");
            qemu(&["-O", "qcow2"], &dir.join("root.qcow2"))?;
            fs::rename(dir.join("root.qcow2"), &out)?;
            vec![out]
        }
        DiskFormat::Vhd => {
            let out = dir.join("root.vhd");
            // Azure takes fixed VHDs whose size is a whole number of MiB: force_size keeps ours.
            qemu(&["-O", "vpc", "-o", "subformat=fixed,force_size"], &out)?;
            vec![out]
        }
        DiskFormat::Ovf => {
            let vmdk = dir.join("image-disk1.vmdk");
            qemu(&["-O", "vmdk", "-o", "subformat=streamOptimized"], &vmdk)?;
            let ovf_path = dir.join("image.ovf");
            fs::write(
                &ovf_path,
                ovf::descriptor(size_mib << 20, fs::metadata(&vmdk)?.len()),
            )?;
            let manifest = format!(
                "SHA256(image.ovf)= {}\nSHA256(image-disk1.vmdk)= {}\n",
                crate::checksum::sha256_file(&ovf_path)?,
                crate::checksum::sha256_file(&vmdk)?
            );
            let mf = dir.join("image.mf");
            fs::write(&mf, manifest)?;
            vec![ovf_path, mf, vmdk]
        }
    })
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
