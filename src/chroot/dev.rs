//! A minimal `/dev` on the tmpfs that `mounts` put at `ROOT/dev`: the host's harmless character
//! devices bound in (mknod inside a chroot would work too, but binding keeps the host's
//! permissions and works where mknod is denied), a private devpts instance and `shm`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, MsFlags};

const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

pub fn populate(dev: &Path) -> Result<()> {
    for name in DEVICES {
        let target = dev.join(name);
        fs::write(&target, b"").with_context(|| format!("creating {}", target.display()))?;
        super::mounts::bind(&Path::new("/dev").join(name), &target, false)?;
    }
    let pts = dev.join("pts");
    fs::create_dir(&pts).with_context(|| format!("creating {}", pts.display()))?;
    // newinstance: the chroot's ptys are its own, invisible to the host's devpts.
    let data = "newinstance,ptmxmode=0666,mode=0620,gid=5";
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(data),
    )
    .with_context(|| format!("mount -t devpts devpts {} -o {data}", pts.display()))?;
    let shm = dev.join("shm");
    fs::create_dir(&shm).with_context(|| format!("creating {}", shm.display()))?;
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    )
    .with_context(|| format!("mount -t tmpfs shm {}", shm.display()))?;
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        symlink(target, dev.join(link))
            .with_context(|| format!("symlink {}", dev.join(link).display()))?;
    }
    Ok(())
}
