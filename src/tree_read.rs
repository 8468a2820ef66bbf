//! Reads one small regular file of a root tree from the host side (the dpkg database,
//! os-release) the way the tree itself would see it: every path component, symlinks included,
//! resolved inside the tree (`openat2` with `RESOLVE_IN_ROOT`), so `/etc/os-release ->
//! ../usr/lib/os-release` works and a link to the host's own files reads the tree's instead.
//! Only regular files are read, and only up to a bound: a FIFO must not hang the builder and a
//! link to `/dev/zero` must not eat its memory. Never follows a symlink out of the tree.

use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};

/// The bytes of `relative` (e.g. `var/lib/dpkg/status`) inside `root`, or `None` when the tree
/// has no such file. Refuses anything but a regular file of at most `limit` bytes.
pub fn read_in_root(root: &Path, relative: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    let shown = root.join(relative);
    let root_fd = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("cannot open the tree {}", root.display()))?;
    // O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    let mut attempts = 0;
    let fd = loop {
        match rustix::fs::openat2(&root_fd, relative, flags, Mode::empty(), resolve) {
            Ok(fd) => break fd,
            // The kernel asks for a retry when a rename raced the lookup.
            Err(rustix::io::Errno::AGAIN) if attempts < 8 => attempts += 1,
            Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(None),
            Err(rustix::io::Errno::LOOP) => bail!(
                "{} is a symlink loop inside the tree: the tree is broken or hostile",
                shown.display()
            ),
            Err(rustix::io::Errno::NOSYS) => bail!(
                "reading {} needs openat2 (Linux 5.6 or newer)",
                shown.display()
            ),
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("cannot open {}", shown.display()))
            }
        }
    };
    let stat = rustix::fs::fstat(&fd).with_context(|| format!("reading {}", shown.display()))?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        bail!(
            "{} is not a regular file (a {}): the tree is broken or hostile",
            shown.display(),
            describe(kind)
        );
    }
    let size = stat.st_size as u64;
    if size > limit {
        bail!(
            "{} is {size} bytes, more than the {limit} such a file may have: the tree is broken or hostile",
            shown.display()
        );
    }
    let mut data = Vec::with_capacity(size as usize);
    std::fs::File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", shown.display()))?;
    if data.len() as u64 > limit {
        bail!(
            "{} grew past {limit} bytes while it was read",
            shown.display()
        );
    }
    Ok(Some(data))
}

fn describe(kind: FileType) -> &'static str {
    match kind {
        FileType::Directory => "directory",
        FileType::Symlink => "symlink",
        FileType::Fifo => "FIFO",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "special file",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_resolve_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        std::fs::write(root.join("usr/lib/os-release"), "ID=tree\n").unwrap();
        symlink("../usr/lib/os-release", root.join("etc/os-release")).unwrap();
        assert_eq!(
            read_in_root(&root, "etc/os-release", 100).unwrap().unwrap(),
            b"ID=tree\n"
        );
        // An absolute link names the tree's own file, never the host's.
        std::fs::write(dir.path().join("host-file"), "ID=host\n").unwrap();
        symlink(dir.path().join("host-file"), root.join("etc/abs")).unwrap();
        assert!(read_in_root(&root, "etc/abs", 100).unwrap().is_none());
        symlink("/usr/lib/os-release", root.join("etc/abs-in-tree")).unwrap();
        assert_eq!(
            read_in_root(&root, "etc/abs-in-tree", 100)
                .unwrap()
                .unwrap(),
            b"ID=tree\n"
        );
        // `..` stops at the tree's root.
        symlink("../../../../../../../../etc/hostname", root.join("etc/up")).unwrap();
        assert!(read_in_root(&root, "etc/up", 100).unwrap().is_none());
    }

    #[test]
    fn fifos_devices_and_big_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        nix::unistd::mkfifo(
            &root.join("fifo"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = read_in_root(root, "fifo", 100).unwrap_err().to_string();
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
        std::fs::write(root.join("big"), vec![b'x'; 101]).unwrap();
        let err = read_in_root(root, "big", 100).unwrap_err().to_string();
        assert!(err.contains("101 bytes"), "{err}");
        assert!(read_in_root(root, "missing/file", 100).unwrap().is_none());
        std::fs::create_dir(root.join("dir")).unwrap();
        let err = read_in_root(root, "dir", 100).unwrap_err().to_string();
        assert!(err.contains("directory"), "{err}");
    }
}
