//! Paths inside a root tree, resolved on the host side the way a process chrooted into the tree
//! would resolve them: `openat2(2)` with `RESOLVE_IN_ROOT`, so `..` stops at the tree's root and
//! a symlink (absolute or relative) lands inside the tree, never on the host.
//!
//! The builder runs as root on trees it must not trust (OS images from S3): any host-side read,
//! write or delete of a path inside a tree goes through here. `root.join("usr/sbin/x")` followed
//! by an ordinary `open` would follow an image's `usr -> /etc` onto the host's files.
//!
//! What it must never do: follow a symlink out of the tree, follow the last component of a path
//! it creates or deletes, or open a FIFO or a device while reading (a FIFO would block forever,
//! `/dev/zero` would never end).
//!
//! Needs Linux 5.6 (openat2) and `/proc` mounted (to reopen an `O_PATH` handle for reading).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

/// A failed operation on a path inside a tree; names the tree, the path and what was tried.
#[derive(Debug, thiserror::Error)]
pub enum InRootError {
    #[error("{op} {} in the tree {}: {source}", .path.display(), .root.display())]
    Io {
        op: &'static str,
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} in the tree {} is {kind}, not a regular file: refusing to read it", .path.display(), .root.display())]
    NotRegular {
        root: PathBuf,
        path: PathBuf,
        kind: FileKind,
    },
    #[error("{} in the tree {} is larger than {limit} bytes: refusing to read it", .path.display(), .root.display())]
    TooLarge {
        root: PathBuf,
        path: PathBuf,
        limit: u64,
    },
    #[error("{} in the tree {} is {kind}, not {wanted}: refusing to write there (remove it from the tree)", .path.display(), .root.display())]
    WrongKind {
        root: PathBuf,
        path: PathBuf,
        kind: FileKind,
        wanted: &'static str,
    },
    #[error("{} is not a path of a file inside a tree (it must name an entry, not `.`, `..` or `/`)", .path.display())]
    NoName { path: PathBuf },
}

impl InRootError {
    /// The path leads nowhere: the entry, or one of its parents, does not exist (or a parent
    /// is not a directory).
    pub fn is_not_found(&self) -> bool {
        matches!(self, InRootError::Io { source, .. }
            if matches!(source.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory))
    }
}

pub type Result<T> = std::result::Result<T, InRootError>;

/// What an entry is, for error messages and checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn from_mode(mode: u32) -> FileKind {
        match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => FileKind::Directory,
            SFlag::S_IFLNK => FileKind::Symlink,
            SFlag::S_IFIFO => FileKind::Fifo,
            SFlag::S_IFSOCK => FileKind::Socket,
            SFlag::S_IFCHR => FileKind::CharDevice,
            SFlag::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Regular => "a regular file",
            FileKind::Directory => "a directory",
            FileKind::Symlink => "a symlink",
            FileKind::Fifo => "a FIFO",
            FileKind::Socket => "a socket",
            FileKind::CharDevice => "a character device",
            FileKind::BlockDevice => "a block device",
        })
    }
}

/// An open root tree. Every path given to its methods is relative to the tree (a leading `/`
/// is ignored) and is resolved inside it.
#[derive(Debug)]
pub struct TreeRoot {
    dir: OwnedFd,
    path: PathBuf,
}

/// The kernel answers EAGAIN when a rename or mount races with a RESOLVE_IN_ROOT lookup.
const RETRIES: usize = 16;

fn resolve_in_root(dir: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut attempt = 0;
    loop {
        match openat2(dir, path, how) {
            Err(Errno::EAGAIN) if attempt < RETRIES => attempt += 1,
            other => return other,
        }
    }
}

/// `path` relative to the tree: `/etc/x` and `etc/x` are the same entry.
fn relative(path: &Path) -> &Path {
    path.strip_prefix("/").unwrap_or(path)
}

/// A path that names the open fd, for syscalls that take no fd (mount(2) targets). Resolving
/// it jumps straight to the fd's file, whatever the tree's symlinks say now.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

impl TreeRoot {
    /// Opens the tree at `path` (the caller's own path: its symlinks are followed).
    pub fn open(path: &Path) -> Result<TreeRoot> {
        let dir = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| InRootError::Io {
            op: "opening",
            root: path.to_path_buf(),
            path: PathBuf::from("/"),
            source: e.into(),
        })?;
        Ok(TreeRoot {
            dir,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, op: &'static str, path: &Path, source: impl Into<io::Error>) -> InRootError {
        InRootError::Io {
            op,
            root: self.path.clone(),
            path: Path::new("/").join(relative(path)),
            source: source.into(),
        }
    }

    /// An `O_PATH` handle on the entry (symlinks followed inside the tree): a mount target, or
    /// something to `fstat`.
    pub fn open_path(&self, path: &Path) -> Result<OwnedFd> {
        resolve_in_root(self.dir.as_fd(), relative(path), OFlag::O_PATH)
            .map_err(|e| self.error("resolving", path, e))
    }

    /// A directory of the tree, opened for `*at` calls.
    pub fn open_dir(&self, path: &Path) -> Result<OwnedFd> {
        resolve_in_root(
            self.dir.as_fd(),
            relative(path),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        )
        .map_err(|e| self.error("opening the directory", path, e))
    }

    /// What the entry is (symlinks followed inside the tree), or `None` when it does not exist.
    pub fn kind(&self, path: &Path) -> Result<Option<FileKind>> {
        match self.open_path(path) {
            Ok(fd) => {
                let stat = fstat(&fd).map_err(|e| self.error("stat", path, e))?;
                Ok(Some(FileKind::from_mode(stat.st_mode)))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The contents of a regular file (symlinks followed inside the tree), refusing FIFOs,
    /// devices, sockets and anything longer than `limit` bytes.
    pub fn read_file(&self, path: &Path, limit: u64) -> Result<Vec<u8>> {
        let handle = self.open_path(path)?;
        self.read_regular(&handle, path, limit)
    }

    fn read_regular(&self, handle: &OwnedFd, path: &Path, limit: u64) -> Result<Vec<u8>> {
        let stat = fstat(handle).map_err(|e| self.error("stat", path, e))?;
        let kind = FileKind::from_mode(stat.st_mode);
        if kind != FileKind::Regular {
            return Err(InRootError::NotRegular {
                root: self.path.clone(),
                path: Path::new("/").join(relative(path)),
                kind,
            });
        }
        // The O_PATH handle pins the inode; reopening it through /proc reads that very file.
        let file = std::fs::File::open(fd_path(handle))
            .map_err(|e| self.error("opening for reading", path, e))?;
        let mut contents = Vec::new();
        file.take(limit + 1)
            .read_to_end(&mut contents)
            .map_err(|e| self.error("reading", path, e))?;
        if contents.len() as u64 > limit {
            return Err(InRootError::TooLarge {
                root: self.path.clone(),
                path: Path::new("/").join(relative(path)),
                limit,
            });
        }
        Ok(contents)
    }

    /// The directory holding `path` (resolved inside the tree) and the entry's own name, which
    /// is never followed by the operations on it.
    pub fn entry(&self, path: &Path) -> Result<Entry<'_>> {
        let rel = relative(path);
        let name = match rel.components().next_back() {
            Some(Component::Normal(name)) => name.to_os_string(),
            _ => {
                return Err(InRootError::NoName {
                    path: path.to_path_buf(),
                })
            }
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let dir = self.open_dir(parent)?;
        Ok(Entry {
            root: self,
            dir,
            name,
            path: Path::new("/").join(rel),
        })
    }

    /// Creates a new regular file with `contents` and `mode`; fails if anything exists there.
    pub fn create_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        self.entry(path)?.create_file(contents, mode)
    }

    /// Creates a directory; `false` when one is already there.
    pub fn create_dir(&self, path: &Path, mode: u32) -> Result<bool> {
        self.entry(path)?.create_dir(mode)
    }

    /// Writes `contents` as the regular file `path` (mode `mode`), replacing a regular file
    /// there by rename, so a reader sees the old or the new file, never half of one. Refuses
    /// anything else at that name, a symlink included: the write never leaves the tree, never
    /// lands on a device and never blocks on a FIFO.
    pub fn write_file(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        let entry = self.entry(path)?;
        match entry.kind()? {
            None | Some(FileKind::Regular) => {}
            Some(kind) => return Err(entry.wrong_kind(kind, "a regular file")),
        }
        let mut temp_name = OsString::from(".");
        temp_name.push(&entry.name);
        temp_name.push(".stemcell-builder-new");
        let temp = Entry {
            root: self,
            dir: entry
                .dir
                .try_clone()
                .map_err(|e| self.error("dup", path, e))?,
            name: temp_name,
            path: entry.path.clone(),
        };
        // A leftover of an interrupted write (or anything planted there) goes; unlink removes
        // a symlink itself and never a directory.
        temp.remove_file()?;
        temp.create_file(contents, mode)?;
        nix::fcntl::renameat(
            &entry.dir,
            temp.name.as_os_str(),
            &entry.dir,
            entry.name.as_os_str(),
        )
        .map_err(|e| self.error("renaming into place", path, e))
    }

    /// Creates `path` and its missing parents as directories (`mode`), each resolved inside the
    /// tree; refuses a component that is there but is not a directory.
    pub fn create_dir_all(&self, path: &Path, mode: u32) -> Result<()> {
        let mut sofar = PathBuf::new();
        for component in relative(path).components() {
            let Component::Normal(name) = component else {
                continue;
            };
            sofar.push(name);
            let entry = self.entry(&sofar)?;
            entry.create_dir(mode)?;
            // What stands there now, followed inside the tree (a link to a directory of the
            // tree is fine), must be a directory.
            match self.kind(&sofar)? {
                Some(FileKind::Directory) => {}
                Some(kind) => return Err(entry.wrong_kind(kind, "a directory")),
                None => return Err(entry.wrong_kind(FileKind::Symlink, "a directory")),
            }
        }
        Ok(())
    }

    /// Removes the entry itself (a symlink is removed, not what it points to); `false` when
    /// there was nothing to remove. Never removes a directory.
    pub fn remove_file(&self, path: &Path) -> Result<bool> {
        match self.entry(path) {
            Ok(entry) => entry.remove_file(),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for TreeRoot {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }
}

/// One name in one directory of a tree. The directory is held open, so later operations hit
/// the same directory even if the tree's paths change meanwhile.
#[derive(Debug)]
pub struct Entry<'a> {
    root: &'a TreeRoot,
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

impl Entry<'_> {
    pub fn name(&self) -> &OsStr {
        &self.name
    }

    /// What the entry itself is (a symlink is a symlink), or `None` when absent.
    pub fn kind(&self) -> Result<Option<FileKind>> {
        match fstatat(
            &self.dir,
            self.name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(stat) => Ok(Some(FileKind::from_mode(stat.st_mode))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.root.error("stat", &self.path, e)),
        }
    }

    fn wrong_kind(&self, kind: FileKind, wanted: &'static str) -> InRootError {
        InRootError::WrongKind {
            root: self.root.path.clone(),
            path: self.path.clone(),
            kind,
            wanted,
        }
    }

    pub fn create_file(&self, contents: &[u8], mode: u32) -> Result<()> {
        // O_EXCL: never through an existing entry, a symlink included.
        let fd = openat(
            &self.dir,
            self.name.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        )
        .map_err(|e| self.root.error("creating", &self.path, e))?;
        // The umask may have cut the mode; the caller asked for exactly this one.
        nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
            .map_err(|e| self.root.error("chmod", &self.path, e))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(contents)
            .map_err(|e| self.root.error("writing", &self.path, e))
    }

    pub fn create_dir(&self, mode: u32) -> Result<bool> {
        match nix::sys::stat::mkdirat(
            &self.dir,
            self.name.as_os_str(),
            Mode::from_bits_truncate(mode),
        ) {
            Ok(()) => Ok(true),
            Err(Errno::EEXIST) => Ok(false),
            Err(e) => Err(self.root.error("creating the directory", &self.path, e)),
        }
    }

    /// The entry's contents if it is itself a regular file (a symlink is not followed).
    pub fn read_file(&self, limit: u64) -> Result<Vec<u8>> {
        let handle = openat(
            &self.dir,
            self.name.as_os_str(),
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.root.error("opening", &self.path, e))?;
        self.root.read_regular(&handle, &self.path, limit)
    }

    pub fn remove_file(&self) -> Result<bool> {
        match unlinkat(&self.dir, self.name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.root.error("removing", &self.path, e)),
        }
    }
}

/// The contents of the regular file `path` inside the tree at `root`, or `None` when the tree
/// has no such file: what the tree itself would read (its dpkg database, its os-release), never
/// the host's file a symlink names, never a FIFO or a device, never more than `limit` bytes.
pub fn read_if_exists(root: &Path, path: &str, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
    let tree = TreeRoot::open(root)?;
    match tree.read_file(Path::new(path), limit) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(InRootError::Io { source, .. }) if source.raw_os_error() == Some(libc::ELOOP) => {
            anyhow::bail!(
                "{} is a symlink loop inside the tree: the tree is broken or hostile",
                root.join(path).display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    /// A tree and, beside it, a "host" directory that nothing may touch.
    fn tree_and_host() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let host = dir.path().join("host");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::create_dir_all(host.join("sbin")).unwrap();
        fs::write(host.join("secret"), "host secret").unwrap();
        (dir, tree, host)
    }

    #[test]
    fn absolute_and_relative_symlinks_resolve_inside_the_tree() {
        let (_dir, tree, host) = tree_and_host();
        symlink(host.join("secret"), tree.join("etc/abs")).unwrap();
        symlink("../../../../../../host/secret", tree.join("etc/rel")).unwrap();
        let root = TreeRoot::open(&tree).unwrap();
        for link in ["etc/abs", "/etc/rel"] {
            let err = root.read_file(Path::new(link), 1024).unwrap_err();
            assert!(err.is_not_found(), "{link}: {err}");
        }
        // The same absolute target, present inside the tree, is what is read.
        let inside = tree.join(host.join("secret").strip_prefix("/").unwrap());
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::write(&inside, "tree's own").unwrap();
        assert_eq!(
            root.read_file(Path::new("etc/abs"), 1024).unwrap(),
            b"tree's own"
        );
    }

    #[test]
    fn create_and_remove_through_a_symlinked_parent_stay_in_the_tree() {
        let (_dir, tree, host) = tree_and_host();
        symlink(&host, tree.join("usr")).unwrap();
        fs::write(host.join("sbin/policy-rc.d"), "host's own").unwrap();
        let root = TreeRoot::open(&tree).unwrap();
        let err = root
            .create_file(Path::new("usr/sbin/policy-rc.d"), b"x", 0o755)
            .unwrap_err();
        assert!(err.is_not_found(), "{err}");
        assert!(!root.remove_file(Path::new("usr/sbin/policy-rc.d")).unwrap());
        assert_eq!(
            fs::read_to_string(host.join("sbin/policy-rc.d")).unwrap(),
            "host's own"
        );
        assert_eq!(fs::read_dir(host.join("sbin")).unwrap().count(), 1);
    }

    #[test]
    fn create_never_follows_the_last_component_and_remove_removes_the_link() {
        let (_dir, tree, host) = tree_and_host();
        symlink(host.join("secret"), tree.join("etc/file")).unwrap();
        let root = TreeRoot::open(&tree).unwrap();
        assert!(root
            .create_file(Path::new("etc/file"), b"overwritten", 0o644)
            .is_err());
        let entry = root.entry(Path::new("etc/file")).unwrap();
        assert_eq!(entry.kind().unwrap(), Some(FileKind::Symlink));
        assert!(matches!(
            entry.read_file(100),
            Err(InRootError::NotRegular {
                kind: FileKind::Symlink,
                ..
            })
        ));
        assert!(root.remove_file(Path::new("etc/file")).unwrap());
        assert_eq!(
            fs::read_to_string(host.join("secret")).unwrap(),
            "host secret"
        );
        root.create_file(Path::new("etc/file"), b"new", 0o640)
            .unwrap();
        let meta = fs::symlink_metadata(tree.join("etc/file")).unwrap();
        assert!(meta.is_file());
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
            0o640
        );
    }

    #[test]
    fn write_file_replaces_a_regular_file_and_refuses_links_fifos_and_devices() {
        let (_dir, tree, host) = tree_and_host();
        let root = TreeRoot::open(&tree).unwrap();
        fs::write(tree.join("etc/fstab"), "old").unwrap();
        root.write_file(Path::new("/etc/fstab"), b"new", 0o644)
            .unwrap();
        assert_eq!(fs::read_to_string(tree.join("etc/fstab")).unwrap(), "new");
        root.write_file(Path::new("etc/hostname"), b"h", 0o600)
            .unwrap();
        assert_eq!(fs::read_to_string(tree.join("etc/hostname")).unwrap(), "h");
        // A link to the host (absolute or climbing), a FIFO, a device, a directory: refused,
        // the host file unchanged, nothing left beside the entry.
        symlink(host.join("secret"), tree.join("etc/abs")).unwrap();
        symlink("../../host/secret", tree.join("etc/rel")).unwrap();
        nix::unistd::mkfifo(&tree.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        nix::sys::stat::mknod(
            &tree.join("etc/null"),
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(1, 3),
        )
        .unwrap();
        fs::create_dir(tree.join("etc/dir")).unwrap();
        for (name, kind) in [
            ("etc/abs", FileKind::Symlink),
            ("etc/rel", FileKind::Symlink),
            ("etc/fifo", FileKind::Fifo),
            ("etc/null", FileKind::CharDevice),
            ("etc/dir", FileKind::Directory),
        ] {
            let err = root
                .write_file(Path::new(name), b"overwritten", 0o644)
                .unwrap_err();
            assert!(
                matches!(&err, InRootError::WrongKind { kind: k, .. } if *k == kind),
                "{name}: {err}"
            );
            assert!(err.to_string().contains("refusing to write"), "{err}");
        }
        assert_eq!(
            fs::read_to_string(host.join("secret")).unwrap(),
            "host secret"
        );
        let names: Vec<_> = fs::read_dir(tree.join("etc"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn create_dir_all_stays_in_the_tree_and_refuses_what_is_not_a_directory() {
        let (_dir, tree, host) = tree_and_host();
        let root = TreeRoot::open(&tree).unwrap();
        root.create_dir_all(Path::new("etc/default/grub.d"), 0o755)
            .unwrap();
        assert!(tree.join("etc/default/grub.d").is_dir());
        // boot -> /host: resolved inside the tree, where /host does not exist.
        symlink(&host, tree.join("boot")).unwrap();
        assert!(root.create_dir_all(Path::new("boot/efi"), 0o755).is_err());
        assert!(!host.join("efi").exists());
        fs::write(tree.join("etc/file"), "x").unwrap();
        let err = root
            .create_dir_all(Path::new("etc/file/sub"), 0o755)
            .unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn reading_refuses_fifos_devices_and_oversized_files() {
        let (_dir, tree, _host) = tree_and_host();
        nix::unistd::mkfifo(&tree.join("etc/fifo"), Mode::from_bits_truncate(0o644)).unwrap();
        symlink("/dev/zero", tree.join("etc/zero")).unwrap();
        fs::write(tree.join("etc/big"), vec![b'x'; 100]).unwrap();
        let root = TreeRoot::open(&tree).unwrap();
        let fifo = root.read_file(Path::new("etc/fifo"), 10).unwrap_err();
        assert!(
            matches!(
                fifo,
                InRootError::NotRegular {
                    kind: FileKind::Fifo,
                    ..
                }
            ),
            "{fifo}"
        );
        // /dev/zero of the tree, not the host's: absent here.
        assert!(root
            .read_file(Path::new("etc/zero"), 10)
            .unwrap_err()
            .is_not_found());
        let big = root.read_file(Path::new("etc/big"), 99).unwrap_err();
        assert!(
            matches!(big, InRootError::TooLarge { limit: 99, .. }),
            "{big}"
        );
        assert_eq!(
            root.read_file(Path::new("etc/big"), 100).unwrap().len(),
            100
        );
        assert!(big.to_string().contains("/etc/big in the tree"), "{big}");
    }

    #[test]
    fn dot_dot_stops_at_the_root_and_names_are_required() {
        let (_dir, tree, _host) = tree_and_host();
        let root = TreeRoot::open(&tree).unwrap();
        assert_eq!(
            root.kind(Path::new("../../../etc")).unwrap(),
            Some(FileKind::Directory)
        );
        assert!(matches!(
            root.entry(Path::new("/")),
            Err(InRootError::NoName { .. })
        ));
        assert!(matches!(
            root.entry(Path::new("etc/..")),
            Err(InRootError::NoName { .. })
        ));
        assert!(root.create_dir(Path::new("proc"), 0o555).unwrap());
        assert!(!root.create_dir(Path::new("proc"), 0o555).unwrap());
    }
}
