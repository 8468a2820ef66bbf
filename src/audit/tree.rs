//! Read-only access to an audited root tree. Every path resolves inside the tree (openat2 with
//! RESOLVE_IN_ROOT), so an absolute symlink in an OS image leads to the tree's own file, never
//! to the host's; only regular files are read, and no more than a bound, so a FIFO or a device
//! node posing as a config file cannot hang or exhaust the audit.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, SFlag};

/// The largest file the audit reads (config files are small; this bounds hostile ones).
const MAX_READ: u64 = 64 << 20;

pub struct Tree {
    root: PathBuf,
    fd: OwnedFd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
    Symlink,
    Other,
}

pub fn kind_of(stat: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Directory,
        SFlag::S_IFLNK => Kind::Symlink,
        _ => Kind::Other,
    }
}

impl Tree {
    pub fn open(root: &Path) -> io::Result<Tree> {
        let root = root.canonicalize()?;
        let fd = File::open(&root)?.into();
        Ok(Tree { root, fd })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn at(&self, path: &str, flags: OFlag, follow: bool) -> io::Result<OwnedFd> {
        let mut flags = flags | OFlag::O_CLOEXEC;
        if !follow {
            flags |= OFlag::O_NOFOLLOW;
        }
        let relative = path.trim_start_matches('/');
        let relative = if relative.is_empty() { "." } else { relative };
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(self.fd.as_fd(), relative, how).map_err(io::Error::from)
    }

    /// The file's status; `follow` resolves a final symlink (inside the tree).
    pub fn stat(&self, path: &str, follow: bool) -> io::Result<FileStat> {
        let fd = self.at(path, OFlag::O_PATH, follow)?;
        fstat(fd.as_fd()).map_err(io::Error::from)
    }

    pub fn exists(&self, path: &str) -> bool {
        self.stat(path, false).is_ok()
    }

    /// A regular file's text (lossy UTF-8), following links inside the tree.
    pub fn read(&self, path: &str) -> io::Result<String> {
        let fd = self.at(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, true)?;
        let stat = fstat(fd.as_fd())?;
        if kind_of(&stat) != Kind::File {
            return Err(io::Error::other(format!("{path} is not a regular file")));
        }
        let mut bytes = vec![];
        File::from(fd).take(MAX_READ).read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Where a path leads inside the tree, every link resolved (`readlink -f`).
    pub fn resolve(&self, path: &str) -> io::Result<String> {
        let fd = self.at(path, OFlag::O_PATH, true)?;
        self.path_of(&fd)
    }

    fn path_of(&self, fd: &OwnedFd) -> io::Result<String> {
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let inside = real
            .strip_prefix(&self.root)
            .map_err(|_| io::Error::other(format!("{} is outside the tree", real.display())))?;
        Ok(format!("/{}", inside.display()))
    }

    /// The target text of a symlink.
    pub fn read_link(&self, path: &str) -> io::Result<PathBuf> {
        let fd = self.at(path, OFlag::O_PATH, false)?;
        nix::fcntl::readlinkat(fd.as_fd(), "")
            .map(PathBuf::from)
            .map_err(io::Error::from)
    }

    /// Names and kinds of a directory's entries (not following them), sorted by name.
    pub fn list(&self, path: &str) -> io::Result<Vec<(String, Kind)>> {
        let dir = self.at(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, true)?;
        let canonical = self.path_of(&dir)?;
        let mut entries = vec![];
        for entry in std::fs::read_dir(self.host(&canonical))? {
            let entry = entry?;
            let kind = match entry.file_type()? {
                t if t.is_symlink() => Kind::Symlink,
                t if t.is_dir() => Kind::Directory,
                t if t.is_file() => Kind::File,
                _ => Kind::Other,
            };
            entries.push((entry.file_name().to_string_lossy().into_owned(), kind));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// The host path of a canonical path inside the tree (one `resolve` returned, or one found
    /// by walking real directories): it has no symlink to follow out.
    fn host(&self, canonical: &str) -> PathBuf {
        self.root.join(canonical.trim_start_matches('/'))
    }

    /// Regular files under `start` (not entering links, staying on its file system, as
    /// `find START -xdev -type f` without -H), with their status.
    /// Where a walk of `start` begins: its canonical path and device, when it is a directory
    /// itself (a link to one is not entered, as find without -H).
    pub fn walk_start(&self, start: &str) -> io::Result<Option<(String, u64)>> {
        let (parent, name) = match start.trim_end_matches('/').rsplit_once('/') {
            Some((parent, name)) if !name.is_empty() => (parent, name),
            _ => ("/", ""),
        };
        let parent = match self.resolve(if parent.is_empty() { "/" } else { parent }) {
            Ok(parent) => parent,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let canonical = if name.is_empty() {
            parent
        } else {
            format!("{}/{name}", parent.trim_end_matches('/'))
        };
        match std::fs::symlink_metadata(self.host(&canonical)) {
            Ok(meta) if meta.is_dir() => Ok(Some((canonical, meta.dev()))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn walk_files(
        &self,
        start: &str,
        found: &mut dyn FnMut(&str, &std::fs::Metadata),
    ) -> io::Result<()> {
        let Some((canonical, device)) = self.walk_start(start)? else {
            return Ok(());
        };
        let host = self.host(&canonical);
        let mut stack = vec![host];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let meta = entry.metadata()?;
                if meta.is_dir() {
                    if meta.dev() == device {
                        stack.push(entry.path());
                    }
                } else if meta.is_file() {
                    let inside = entry
                        .path()
                        .strip_prefix(&self.root)
                        .map(|p| format!("/{}", p.display()))
                        .unwrap_or_default();
                    found(&inside, &meta);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_resolve_inside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "inside\n").unwrap();
        // A link an OS image could carry: to the host's /etc/hostname and to its own /etc.
        symlink("/etc/hostname", root.join("etc/leak")).unwrap();
        symlink("/etc/hosts", root.join("etc/alias")).unwrap();
        let tree = Tree::open(&root).unwrap();
        assert_eq!(tree.read("/etc/alias").unwrap(), "inside\n");
        assert!(tree.read("/etc/leak").is_err(), "never the host's file");
        assert_eq!(tree.resolve("/etc/alias").unwrap(), "/etc/hosts");
        assert_eq!(
            tree.read_link("/etc/leak").unwrap(),
            PathBuf::from("/etc/hostname")
        );
    }

    #[test]
    fn only_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        nix::unistd::mkfifo(&dir.path().join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let tree = Tree::open(dir.path()).unwrap();
        let err = tree.read("/fifo").unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn walks_do_not_enter_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), "").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        let tree = Tree::open(root).unwrap();
        let mut seen = vec![];
        for start in ["/bin", "/usr/bin"] {
            tree.walk_files(start, &mut |p, _| seen.push(p.to_string()))
                .unwrap();
        }
        assert_eq!(seen, ["/usr/bin/tool"]);
    }
}
