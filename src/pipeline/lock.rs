//! One build per work dir. An flock is released by the kernel when its holder dies, even by
//! SIGKILL, so a stale lock can never block the next build.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use anyhow::{Context, Result};
use nix::fcntl::{Flock, FlockArg};

pub struct WorkDirLock {
    _lock: Flock<File>,
}

pub fn lock_work_dir(work: &Path) -> Result<WorkDirLock> {
    let path = work.join(".lock");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening lock {}", path.display()))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            lock.set_len(0)?;
            lock.rewind()?;
            write!(lock, "{}", std::process::id())?;
            Ok(WorkDirLock { _lock: lock })
        }
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            anyhow::bail!(
                "work dir {} is in use by another build (pid {}): wait for it to finish or pass another --work-dir",
                work.display(),
                holder.trim()
            )
        }
        Err((_, errno)) => Err(errno).with_context(|| format!("locking {}", path.display())),
    }
}
