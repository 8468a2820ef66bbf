//! File-system helpers shared by the builder: error messages that name the path and the fix.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Wraps an I/O error with the path and, for a full disk, says so plainly.
pub fn io_error(err: io::Error, action: &str, path: &Path) -> anyhow::Error {
    if is_disk_full(&err) {
        anyhow::anyhow!(
            "no space left on device while {action} {}: free some space there or choose another location",
            path.display()
        )
    } else {
        anyhow::Error::new(err).context(format!("{action} {}", path.display()))
    }
}

/// ENOSPC, also when wrapped (tempfile and friends keep the kind, not the errno).
pub fn is_disk_full(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ENOSPC) || err.kind() == io::ErrorKind::StorageFull
}

/// When any cause in `err` is a full disk, says so about `path` (the file being written), since
/// the innermost error may name a source file or nothing at all.
pub fn explain_disk_full(err: anyhow::Error, path: &Path) -> anyhow::Error {
    let full = err
        .chain()
        .any(|cause| cause.downcast_ref::<io::Error>().is_some_and(is_disk_full))
        || err
            .chain()
            .any(|cause| cause.to_string().contains("No space left on device"));
    if full {
        anyhow::anyhow!(
            "no space left on device while writing {}: free some space there or choose another location",
            path.display()
        )
    } else {
        err
    }
}

/// Mount points at or below `dir`, from /proc/self/mounts.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mounts") else {
        return vec![];
    };
    let prefix = dir.to_string_lossy().trim_end_matches('/').to_string();
    text.lines()
        .filter_map(|line| line.split(' ').nth(1))
        .map(unescape_mount_path)
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// /proc/mounts escapes space, tab, newline and backslash as octal.
fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Removes a tree that the builder owns, refusing when something is still mounted below it
/// (deleting through a bind mount would delete the host's files).
pub fn remove_tree(dir: &Path) -> anyhow::Result<()> {
    let mounts = mounts_below(dir);
    if !mounts.is_empty() {
        anyhow::bail!(
            "refusing to delete {}: {} is still mounted; unmount it (umount -R) first",
            dir.display(),
            mounts[0]
        );
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error(err, "removing", dir)),
    }
}

/// Disk space `dir` takes, in MiB (`du -s`: blocks, not apparent sizes), or None when du fails.
pub fn disk_usage_mib(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("du")
        .args(["-s", "-B1M"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Creates `dir` (and missing parents) with mode 0700, and tightens an existing `dir` to 0700.
/// A directory the tool makes inside one of its roots (a cache's kind dir, a work dir's logs,
/// settings or chroot), 0700: what stands there must be a real directory. A symlink planted
/// there (say `CACHE/layers -> /etc`) is refused in one line and never followed: no mode is
/// changed and nothing is written through it. The root itself is the caller's path and may be
/// a link (see [`create_private_dir`]).
pub fn create_owned_dir(dir: &Path) -> anyhow::Result<()> {
    if let Ok(meta) = dir.symlink_metadata() {
        if !meta.is_dir() {
            anyhow::bail!(
                "{} is {}, not a directory the tool made: refusing to follow or write through it; remove it and run again",
                dir.display(),
                if meta.file_type().is_symlink() { "a symlink" } else { "not a directory" }
            );
        }
    }
    create_private_dir(dir)
}

pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error(e, "creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| io_error(e, "setting the mode of", dir))
}
