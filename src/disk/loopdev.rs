//! Loop devices with the kernel's autoclear flag: the device detaches itself when its last user
//! closes it, so even a SIGKILLed builder (whose mounts die with its mount namespace) leaves no
//! loop device behind. Partitions are added with `partx` because the kernel's own partition scan
//! does not run on every host (it did not on ours).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
const LO_FLAGS_PARTSCAN: u32 = 8;

#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device; detached (partitions first) when dropped.
pub struct LoopDevice {
    device: File,
    pub path: PathBuf,
    partitions: bool,
}

impl LoopDevice {
    pub fn attach(image: &Path) -> Result<Self> {
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .with_context(|| format!("opening {}", image.display()))?;
        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/loop-control")
            .context("opening /dev/loop-control: is the loop module loaded (modprobe loop)?")?;
        // Another process may take the free device first: try again a few times.
        for _ in 0..10 {
            // SAFETY: plain ioctl on an owned fd; returns a device number or -1.
            let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
            if number < 0 {
                return Err(std::io::Error::last_os_error())
                    .context("LOOP_CTL_GET_FREE on /dev/loop-control");
            }
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let mut name = [0u8; 64];
            let text = image.as_os_str().as_encoded_bytes();
            let n = text.len().min(63);
            name[..n].copy_from_slice(&text[..n]);
            let config = LoopConfig {
                fd: backing.as_raw_fd() as u32,
                block_size: 0,
                info: LoopInfo64 {
                    lo_device: 0,
                    lo_inode: 0,
                    lo_rdevice: 0,
                    lo_offset: 0,
                    lo_sizelimit: 0,
                    lo_number: 0,
                    lo_encrypt_type: 0,
                    lo_encrypt_key_size: 0,
                    lo_flags: LO_FLAGS_AUTOCLEAR | LO_FLAGS_PARTSCAN,
                    lo_file_name: name,
                    lo_crypt_name: [0; 64],
                    lo_encrypt_key: [0; 32],
                    lo_init: [0; 2],
                },
                reserved: [0; 8],
            };
            // SAFETY: LOOP_CONFIGURE reads a struct loop_config that outlives the call.
            let rc = unsafe {
                libc::ioctl(
                    device.as_raw_fd(),
                    LOOP_CONFIGURE,
                    &config as *const LoopConfig,
                )
            };
            if rc == 0 {
                return Ok(LoopDevice {
                    device,
                    path,
                    partitions: false,
                });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EBUSY) {
                return Err(err).with_context(|| {
                    format!("LOOP_CONFIGURE {} with {}", path.display(), image.display())
                });
            }
        }
        bail!(
            "no free loop device for {}: detach unused ones (losetup -D) and try again",
            image.display()
        )
    }

    /// Adds the partition nodes (`/dev/loopNp1`, …) and returns the first partition's path.
    pub fn add_partitions(&mut self) -> Result<PathBuf> {
        let first = PathBuf::from(format!("{}p1", self.path.display()));
        if !first.exists() {
            let out = Command::new("partx")
                .arg("-a")
                .arg(&self.path)
                .output()
                .context("running partx (util-linux)")?;
            if !out.status.success() && !first.exists() {
                bail!(
                    "partx -a {} failed: {}",
                    self.path.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        self.partitions = true;
        // devtmpfs creates the node asynchronously.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !first.exists() {
            if Instant::now() > deadline {
                bail!("{} did not appear after partx -a", first.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(first)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if self.partitions {
            let _ = Command::new("partx").arg("-d").arg(&self.path).output();
        }
        // SAFETY: ioctl on an owned fd. Autoclear would detach on close anyway; clearing now
        // makes the release immediate and visible to the caller.
        unsafe {
            libc::ioctl(self.device.as_raw_fd(), LOOP_CLR_FD, 0);
        }
    }
}
