//! `disk-image`: a bootable disk from a root tree. A sparse raw file with one MBR partition,
//! ext4 labelled `root`, the tree copied in, GRUB (BIOS) installed from the tree's own grub-pc,
//! then converted with qemu-img to the IaaS's format. With EFI firmware: GPT, an EFI system
//! partition (FAT32 labelled `EFI`, mounted on /boot/efi) before the root partition, and GRUB
//! for x86_64-efi from the tree's grub-efi-amd64, at the removable-media path firmware boots
//! without NVRAM entries (EFI/BOOT/BOOTX64.EFI).
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

/// How the disk boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Firmware {
    /// MBR, GRUB for i386-pc (grub-pc in the tree).
    Bios,
    /// GPT with an EFI system partition, GRUB for x86_64-efi (grub-efi-amd64 in the tree).
    Efi,
}

/// The EFI system partition's size.
const ESP_MIB: u64 = 256;

#[derive(Debug, Clone)]
pub struct DiskPlan {
    pub tree: PathBuf,
    pub out_dir: PathBuf,
    pub format: DiskFormat,
    /// Disk size; default: the tree's size with room to grow, at least 2 GiB.
    pub size_mib: Option<u64>,
    pub firmware: Firmware,
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
    // After the unshare, which a threaded process cannot do: the handler runs on a thread.
    crate::stage::process::install_interrupt_handler();
    if !plan.tree.is_dir() {
        bail!(
            "tree {} is not a directory: pass the root tree to put on the disk",
            plan.tree.display()
        );
    }
    // BIOS: grub-install itself brings its i386-pc modules; EFI: the image is made from the
    // x86_64-efi modules, which only grub-efi-amd64-bin brings.
    let tree = crate::inroot::TreeRoot::open(&plan.tree)?;
    let has = |path: &str, kind| tree.kind(Path::new(path)).ok().flatten() == Some(kind);
    let grub = has("usr/sbin/grub-install", crate::inroot::FileKind::Regular);
    let missing = match plan.firmware {
        Firmware::Bios => (!grub).then_some(("/usr/sbin/grub-install", "grub-pc")),
        Firmware::Efi => (!grub
            || !has(
                "usr/lib/grub/x86_64-efi",
                crate::inroot::FileKind::Directory,
            ))
        .then_some((
            "/usr/sbin/grub-install with /usr/lib/grub/x86_64-efi",
            "grub-efi-amd64-bin",
        )),
    };
    if let Some((what, package)) = missing {
        bail!(
            "{} has no {what}: install {package} in the tree first (the system_grub stage does)",
            plan.tree.display()
        );
    }
    if let Some(size) = plan.size_mib {
        check_size(&plan.tree, size, plan.firmware)?;
    }
    fs::create_dir_all(&plan.out_dir)
        .map_err(|e| crate::fsutil::io_error(e, "creating", &plan.out_dir))?;
    let efi = plan.firmware == Firmware::Efi;
    let size_mib = plan
        .size_mib
        .unwrap_or_else(|| default_size_mib(&plan.tree) + if efi { ESP_MIB } else { 0 });
    let scratch = tempfile::Builder::new()
        .prefix(".disk-")
        .tempdir_in(&plan.out_dir)?;
    let raw = scratch.path().join("root.raw");

    let step = reporter.step(&format!("disk {size_mib} MiB"));
    let started = Instant::now();
    make_partitioned_file(&raw, size_mib, plan.firmware)?;
    {
        let mut device = LoopDevice::attach(&raw)?;
        let first = device.add_partitions()?;
        // With EFI the ESP comes first and the root partition second.
        let (esp, partition) = if efi {
            (
                Some(first),
                wait_for(PathBuf::from(format!("{}p2", device.path.display())))?,
            )
        } else {
            (None, first)
        };
        step.line(&format!("{} on {}", partition.display(), raw.display()));
        run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "root"])
                .arg(&partition),
            "mkfs.ext4",
        )?;
        let target = scratch.path().join("mnt");
        fs::create_dir(&target)?;
        // nodev, nosuid: a device node or setuid file the tree holds means nothing while the
        // builder works on the copy (GRUB's sandbox binds it nodev,nosuid again).
        mount(
            Some(&partition),
            &target,
            Some("ext4"),
            MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .with_context(|| format!("mount -t ext4 {} {}", partition.display(), target.display()))?;
        let mounted = Mounted(target.clone());
        if let Some(esp) = &esp {
            run(
                Command::new("mkfs.vfat")
                    .args(["-F", "32", "-n", "EFI"])
                    .arg(esp),
                "mkfs.vfat (apt-get install -y dosfstools)",
            )?;
        }
        step.line("copying the tree");
        run(
            Command::new("cp")
                .args(["-a", "--preserve=all"])
                .arg(format!("{}/.", plan.tree.display()))
                .arg(&target),
            "cp -a",
        )?;
        write_boot_files(&target, efi)
            .with_context(|| format!("the disk's copy of {}", plan.tree.display()))?;
        step.line("installing GRUB");
        let efi_image = install_grub(&target, &device.path, &partition, esp.is_some())?;
        if let Some(esp) = &esp {
            // No FAT mount needed (nor possible on every host): mtools writes the partition.
            let image = scratch.path().join("BOOTX64.EFI");
            fs::write(&image, &efi_image)?;
            let esp_arg = esp.display().to_string();
            run(
                Command::new("mmd").args(["-i", &esp_arg, "::/EFI", "::/EFI/BOOT"]),
                "mmd (apt-get install -y mtools)",
            )?;
            run(
                Command::new("mcopy")
                    .args(["-i", &esp_arg])
                    .arg(&image)
                    .arg("::/EFI/BOOT/BOOTX64.EFI"),
                "mcopy (apt-get install -y mtools)",
            )?;
        }
        drop(mounted);
        drop(device);
    }
    step.finish("partitioned, ext4, GRUB installed", started.elapsed());

    let step = reporter.step(&format!("convert to {:?}", plan.format));
    let started = Instant::now();
    let staged = convert(&raw, scratch.path(), plan.format, size_mib, efi)?;
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

/// The files the disk needs beyond the tree's, written into the copy through in-root
/// resolution: the copy is the tree's, so its `etc/fstab` may be a link to a host file, a
/// device or a FIFO. Each is refused in one line rather than followed, opened or waited on.
fn write_boot_files(target: &Path, efi: bool) -> Result<()> {
    let root = crate::inroot::TreeRoot::open(target)?;
    let mut fstab = String::from("# written by stemcell-builder disk-image\nLABEL=root / ext4 defaults,errors=remount-ro 0 1\n");
    if efi {
        fstab.push_str("LABEL=EFI /boot/efi vfat umask=0077,nofail 0 1\n");
        root.create_dir_all(Path::new("boot/efi"), 0o755)?;
    }
    root.create_dir_all(Path::new("etc"), 0o755)?;
    root.write_file(Path::new("etc/fstab"), fstab.as_bytes(), 0o644)?;
    // grub-mkconfig would name the build host's loop partition as root= (it cannot see a
    // by-uuid link without udev); the label is what the booted VM will have.
    root.create_dir_all(Path::new("etc/default/grub.d"), 0o755)?;
    root.write_file(
        Path::new("etc/default/grub.d/90-root-label.cfg"),
        b"# written by stemcell-builder disk-image\nGRUB_DEVICE=LABEL=root\nGRUB_DISABLE_LINUX_UUID=true\n",
        0o644,
    )?;
    Ok(())
}

/// After Ctrl-C or SIGTERM (the handler killed the running child): an error, so every guard
/// unwinds: the mount, the loop device and the scratch dir with its half-made disk.
fn stop_if_interrupted() -> Result<()> {
    if crate::stage::process::interrupted() {
        bail!("disk-image interrupted: nothing was written to the output dir");
    }
    Ok(())
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

/// The largest disk asked for: 16 TiB, past any IaaS's root disk and far from overflowing.
const MAX_SIZE_MIB: u64 = 16 << 20;

/// `--size-mib` must hold the tree (and the EFI partition), and be a size a disk can have.
fn check_size(tree: &Path, size_mib: u64, firmware: Firmware) -> Result<()> {
    let esp = if firmware == Firmware::Efi {
        ESP_MIB
    } else {
        0
    };
    // The tree, ext4's own metadata (inode tables and reserve, about 10%), its journal and the
    // 1 MiB before the first partition: a floor, not a promise the copy fits.
    let needed = crate::fsutil::disk_usage_mib(tree).unwrap_or(0) * 11 / 10 + esp + 16;
    if size_mib > MAX_SIZE_MIB {
        bail!("--size-mib {size_mib} is more than {MAX_SIZE_MIB} (16 TiB): pass a smaller size");
    }
    if size_mib < needed {
        bail!(
            "--size-mib {size_mib} cannot hold {} (it needs at least {needed} MiB): pass a larger size or leave it out",
            tree.display()
        );
    }
    Ok(())
}

fn default_size_mib(tree: &Path) -> u64 {
    let used_mib = crate::fsutil::disk_usage_mib(tree).unwrap_or(1024);
    ((used_mib * 3 / 2 + 512).div_ceil(256) * 256).max(2048)
}

/// A partition node appears asynchronously after partx.
fn wait_for(node: PathBuf) -> Result<PathBuf> {
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    while !node.exists() {
        if Instant::now() > deadline {
            bail!("{} did not appear after partx -a", node.display());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(node)
}

fn make_partitioned_file(raw: &Path, size_mib: u64, firmware: Firmware) -> Result<()> {
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
    sfdisk.stdin.take().unwrap().write_all(match firmware {
        Firmware::Bios => b"label: dos\nstart=2048, type=83, bootable\n".as_slice(),
        // The ESP (type U) then the root partition (type L) to the end.
        Firmware::Efi => b"label: gpt\nstart=2048, size=256MiB, type=U\ntype=L\n".as_slice(),
    })?;
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
/// With `efi`, returns GRUB's EFI image (for the ESP's removable-media path EFI/BOOT/BOOTX64.EFI,
/// which firmware boots with no NVRAM entry): built in the tree by grub-mkimage, with an early
/// config that finds the root partition by its label and reads /boot/grub from it, where the
/// modules are copied.
fn install_grub(root: &Path, disk: &Path, partition: &Path, efi: bool) -> Result<Vec<u8>> {
    let exe = std::env::current_exe()?;
    // grub.cfg is root's alone (the reference's STIG V-38583/V-38579/V-38581).
    let config =
        "update-grub >&2 && chown root:root /boot/grub/grub.cfg && chmod 0600 /boot/grub/grub.cfg";
    let script = if efi {
        format!(
            "mkdir -p /boot/grub/x86_64-efi && cp /usr/lib/grub/x86_64-efi/*.mod /usr/lib/grub/x86_64-efi/*.lst /boot/grub/x86_64-efi/ \
             && printf 'search --no-floppy --label root --set=root\\nset prefix=($root)/boot/grub\\n' >/boot/grub/early-efi.cfg \
             && {config} \
             && grub-mkimage -O x86_64-efi -o /boot/grub/x86_64-efi/BOOTX64.EFI -c /boot/grub/early-efi.cfg -p /boot/grub \
                part_gpt part_msdos ext2 fat search search_label search_fs_uuid normal configfile linux echo gzio all_video \
             && cat /boot/grub/x86_64-efi/BOOTX64.EFI"
        )
    } else {
        format!(
            "grub-install --target=i386-pc --boot-directory=/boot --modules='part_msdos ext2' {disk} >&2 && {config}",
            disk = disk.display()
        )
    };
    let mut command = Command::new(exe);
    // If we are killed, GRUB's chroot (and its hold on our mount) must go too.
    crate::sandbox::die_with_parent(&mut command);
    command
        .arg("chroot-exec")
        .arg("--device")
        .arg(disk)
        .arg("--device")
        .arg(partition);
    let out = crate::stage::process::output_interruptible(
        command
            .arg(root)
            .args(["--", "/bin/sh", "-ec", &script])
            .stdin(Stdio::null()),
    )
    .context("running chroot-exec for GRUB")?;
    stop_if_interrupted()?;
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
    Ok(if efi { out.stdout } else { vec![] })
}

fn convert(
    raw: &Path,
    dir: &Path,
    format: DiskFormat,
    size_mib: u64,
    efi: bool,
) -> Result<Vec<PathBuf>> {
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
            // compat 0.10, as the reference's openstack stemcells: OpenStack clouds with an
            // older qemu cannot open the 1.1 format qemu-img writes by default.
            qemu(
                &["-O", "qcow2", "-o", "compat=0.10"],
                &dir.join("root.qcow2"),
            )?;
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
                ovf::descriptor(size_mib << 20, fs::metadata(&vmdk)?.len(), efi),
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
    let out = crate::stage::process::output_interruptible(command.stdin(Stdio::null()))
        .with_context(|| format!("running {what}"))?;
    stop_if_interrupted()?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
