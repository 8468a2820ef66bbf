//! Unpacks an OS image into a directory. An OS image may come from S3 or from someone else,
//! so this is an attack surface: the checksum is verified before anything is written; names,
//! link targets and pax headers are bounded ([`super::members`]); every entry is created
//! relative to a directory descriptor opened without following symlinks, so nothing lands
//! outside the target; entries that are not plain file-system objects are refused, and device
//! nodes are made only under `dev/` unless the caller asks for all of them. Errors quote entry
//! names escaped and cut short, on one line.
//!
//! Directories get their owner, mode, xattrs and mtime once their contents are written (when
//! the archive moves past them), so a read-only directory can still be filled and its mtime is
//! the archived one.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, Result};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;
use tar::{Archive, EntryType};

use super::members::{Member, Members, ReadError, Tracked};
use super::quote::quote;
use super::Interrupted;

/// Which device nodes `unpack` creates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum DevicePolicy {
    /// Only under `dev/`; a device node anywhere else is refused (an OS image has no reason to
    /// carry one, and a world-writable block device for the host's disk is an attack).
    #[default]
    Dev,
    /// Every device node the archive holds (for images you trust).
    All,
    /// None: device nodes are skipped and counted.
    None,
}

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Skip the `.sha256` sidecar check (the caller verified the bytes another way).
    pub skip_checksum: bool,
    pub devices: DevicePolicy,
}

#[derive(Debug, Default)]
pub struct UnpackSummary {
    pub entries: u64,
    pub checksum_verified: bool,
    /// Device nodes not created (`DevicePolicy::None`).
    pub skipped_devices: u64,
}

/// Unpacks `archive` into `target` (created when missing). When it fails or is interrupted, a
/// target it created is removed again; a directory the caller gave is left as it is, and the
/// error says it holds a partial tree.
pub fn unpack(archive: &Path, target: &Path, options: &UnpackOptions) -> Result<UnpackSummary> {
    check_input(archive)?;
    let mut summary = UnpackSummary::default();
    if !options.skip_checksum {
        summary.checksum_verified = crate::checksum::verify_sidecar(archive)?;
    }
    let file = File::open(archive)
        .map_err(|e| crate::fsutil::io_error(e, "cannot open OS image", archive))?;
    unpack_from(file, archive, target, options.devices, summary)
}

/// Unpacks an archive from an open reader (compression detected), e.g. a cache entry whose
/// checksum the caller verified on the same file handle; `name` names it in errors.
pub fn unpack_reader(
    reader: impl Read + Send + 'static,
    name: &Path,
    target: &Path,
    devices: DevicePolicy,
) -> Result<UnpackSummary> {
    unpack_from(reader, name, target, devices, UnpackSummary::default())
}

fn unpack_from(
    file: impl Read + Send + 'static,
    archive: &Path,
    target: &Path,
    devices: DevicePolicy,
    mut summary: UnpackSummary,
) -> Result<UnpackSummary> {
    let created = target.symlink_metadata().is_err();
    fs::create_dir_all(target).map_err(|e| crate::fsutil::io_error(e, "creating", target))?;
    let result = (|| -> Result<(), Failure> {
        let root = rustix::fs::open(
            target,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Failure::Io(anyhow!("cannot open {}: {e}", target.display())))?;
        let decoded = super::decompressed(file)
            .map_err(|e| Failure::Io(crate::fsutil::io_error(e, "reading", archive)))?;
        let mut extractor = Extractor {
            root,
            target,
            parent: None,
            pending: vec![],
            devices,
            skipped_devices: 0,
            buf: vec![0; 256 << 10],
            as_root: nix::unistd::geteuid().is_root(),
        };
        summary.entries = extractor.run(decoded)?;
        summary.skipped_devices = extractor.skipped_devices;
        Ok(())
    })();
    let Err(failure) = result else {
        return Ok(summary);
    };
    let left = if created {
        match crate::fsutil::remove_tree(target) {
            Ok(()) => format!("removed {}", target.display()),
            Err(e) => format!(
                "{} is partial and could not be removed ({e:#})",
                target.display()
            ),
        }
    } else {
        format!(
            "{} holds a partial tree: empty it before unpacking again",
            target.display()
        )
    };
    let interrupted =
        matches!(failure, Failure::Interrupted) || crate::stage::process::interrupted();
    Err(if interrupted {
        anyhow!(Interrupted {
            what: format!(
                "unpacking {} into {}; {left}",
                archive.display(),
                target.display()
            )
        })
    } else {
        failure.into_error(archive, &left)
    })
}

/// One clear line for an archive path that cannot be an OS image.
fn check_input(archive: &Path) -> Result<()> {
    let meta = match fs::metadata(archive) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            anyhow::bail!("OS image {} does not exist", archive.display())
        }
        Err(e) => return Err(crate::fsutil::io_error(e, "cannot read OS image", archive)),
    };
    if meta.is_dir() {
        anyhow::bail!(
            "{} is a directory, not an OS image: pass the image file",
            archive.display()
        );
    }
    if meta.is_file() && meta.len() == 0 {
        anyhow::bail!(
            "{} is empty, not an OS image: build or download it again",
            archive.display()
        );
    }
    Ok(())
}

/// What stopped an unpack, rendered with the archive's name by [`Failure::into_error`].
enum Failure {
    /// An entry the tool will not create: (entry name, why).
    Refused(Vec<u8>, String),
    Stream(ReadError),
    Interrupted,
    /// The target side failed (disk full, permissions, a filesystem without xattrs).
    Io(anyhow::Error),
}

impl Failure {
    fn into_error(self, archive: &Path, left: &str) -> anyhow::Error {
        let archive = archive.display();
        match self {
            Failure::Refused(name, why) => anyhow!(
                "refusing to unpack {archive}: entry '{}' {why}; the OS image is corrupt or hostile ({left})",
                quote(&name)
            ),
            Failure::Stream(ReadError::Hostile(why)) => anyhow!(
                "refusing to unpack {archive}: {why}; the OS image is corrupt or hostile ({left})"
            ),
            Failure::Stream(ReadError::NotTar(why)) => anyhow!(
                "{archive} is not an OS image (a gzip, zstd or plain tar archive): {why} ({left})"
            ),
            Failure::Stream(ReadError::Truncated(why)) if why == "it holds no tar header" => {
                anyhow!("{archive} holds no entries: not an OS image ({left})")
            }
            Failure::Stream(ReadError::Truncated(why)) => anyhow!(
                "{archive} is truncated: {why}; download or build it again ({left})"
            ),
            Failure::Stream(ReadError::Corrupt(why)) => anyhow!(
                "{archive} is corrupt: {why}; download or build it again ({left})"
            ),
            Failure::Stream(e @ ReadError::TooLarge(_)) => {
                anyhow!("{archive}: {e} ({left})")
            }
            Failure::Interrupted => anyhow!(Interrupted {
                what: format!("unpacking {archive}; {left}")
            }),
            Failure::Io(e) => anyhow!("unpacking {archive}: {e:#} ({left})"),
        }
    }
}

/// Archived metadata of a directory, applied once its contents are in place.
struct PendingDir {
    relative: PathBuf,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

struct Extractor<'t> {
    /// The target directory; every entry is created relative to it.
    root: OwnedFd,
    target: &'t Path,
    /// The last parent directory used, kept open: entries come sorted, siblings together.
    parent: Option<(PathBuf, OwnedFd)>,
    /// Directories whose metadata waits for their contents, outermost first.
    pending: Vec<PendingDir>,
    devices: DevicePolicy,
    skipped_devices: u64,
    buf: Vec<u8>,
    /// Owners are only restored by root (as GNU tar does).
    as_root: bool,
}

type Step<T> = std::result::Result<T, Failure>;

impl Extractor<'_> {
    fn run(&mut self, stream: impl Read) -> Step<u64> {
        // Nothing an OS image holds comes near this; it bounds a stream of zeros.
        let (tracked, state) = Tracked::new(stream, u64::MAX);
        let mut tar = Archive::new(tracked);
        let mut members = Members::new(&mut tar, state, u64::MAX).map_err(Failure::Stream)?;
        let mut count = 0;
        while let Some(member) = members.next() {
            if crate::stage::process::interrupted() {
                return Err(Failure::Interrupted);
            }
            let member = member.map_err(Failure::Stream)?;
            self.member(member, &members)?;
            count += 1;
        }
        if count == 0 {
            return Err(Failure::Stream(ReadError::Truncated(
                "it holds no tar header".into(),
            )));
        }
        while let Some(dir) = self.pending.pop() {
            self.apply(dir)?;
        }
        Ok(count)
    }

    fn member<R: Read>(&mut self, mut m: Member<'_, R>, members: &Members<'_, R>) -> Step<()> {
        let refuse = |why: &str| Failure::Refused(m.name.clone(), why.to_string());
        let relative = confine(&m.name).map_err(refuse)?;
        match m.kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {}
            other => {
                return Err(refuse(&format!(
                    "has type {other:?}, which a root filesystem never needs"
                )))
            }
        }
        if m.uid >= u64::from(u32::MAX) || m.gid >= u64::from(u32::MAX) {
            return Err(refuse("has an owner beyond what Linux allows"));
        }
        // Directories the archive has moved past get their metadata now.
        while let Some(top) = self.pending.last() {
            if is_inside(&relative, &top.relative) {
                break;
            }
            let dir = self.pending.pop().expect("checked");
            self.apply(dir)?;
        }
        if relative.as_os_str().is_empty() {
            if m.kind != EntryType::Directory {
                return Err(refuse("names the target itself but is not a directory"));
            }
            self.pending.push(PendingDir {
                relative,
                mode: m.mode,
                uid: m.uid,
                gid: m.gid,
                mtime: m.mtime,
                xattrs: m.xattrs,
            });
            return Ok(());
        }
        let name = relative.file_name().expect("a normal last component");
        let parent_path = relative.parent().unwrap_or(Path::new(""));
        let parent = self.parent(parent_path, &m.name)?;
        let dest = || self.target.join(&relative);
        match m.kind {
            EntryType::Directory => {
                match rustix::fs::mkdirat(&parent, name, Mode::from_bits_retain(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => match lstat_at(&parent, name) {
                        Some(FileType::Directory) => {}
                        Some(FileType::Symlink) => {
                            return Err(refuse(
                                "is a directory where the archive already placed a symlink",
                            ))
                        }
                        _ => {
                            unlink(&parent, name)
                                .map_err(|e| io_failure(e, "replacing", &dest()))?;
                            rustix::fs::mkdirat(&parent, name, Mode::from_bits_retain(0o700))
                                .map_err(|e| io_failure(e, "creating", &dest()))?;
                        }
                    },
                    Err(e) => return Err(io_failure(e, "creating", &dest())),
                }
                self.pending.push(PendingDir {
                    relative,
                    mode: m.mode,
                    uid: m.uid,
                    gid: m.gid,
                    mtime: m.mtime,
                    xattrs: m.xattrs,
                });
            }
            EntryType::Regular | EntryType::Continuous => {
                self.make_room(&parent, name, &m.name)?;
                let fd = rustix::fs::openat(
                    &parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_bits_retain(0o600),
                )
                .map_err(|e| io_failure(e, "creating", &dest()))?;
                let mut file = File::from(fd);
                let mut written = 0u64;
                loop {
                    if crate::stage::process::interrupted() {
                        return Err(Failure::Interrupted);
                    }
                    let n = match m.entry.read(&mut self.buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) => return Err(Failure::Stream(members.stream_error(&e))),
                    };
                    file.write_all(&self.buf[..n])
                        .map_err(|e| Failure::Io(crate::fsutil::io_error(e, "writing", &dest())))?;
                    written += n as u64;
                }
                if written != m.size {
                    return Err(Failure::Stream(ReadError::Truncated(format!(
                        "it ends inside entry '{}'",
                        quote(&m.name)
                    ))));
                }
                // Owner before mode (chown clears setuid), xattrs after both (chown clears
                // file capabilities), the time last.
                self.finish_fd(file.as_fd(), &m, &dest())?;
            }
            EntryType::Symlink => {
                let target = m.link.clone().unwrap_or_default();
                if target.is_empty() {
                    return Err(refuse("is a symlink to nothing"));
                }
                self.make_room(&parent, name, &m.name)?;
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, name)
                    .map_err(|e| io_failure(e, "creating", &dest()))?;
                self.finish_at(&parent, name, &m, &dest(), false)?;
            }
            EntryType::Link => {
                let link = m.link.clone().unwrap_or_default();
                let source = confine(&link)
                    .map_err(|why| refuse(&format!("hard-links to a path that {why}")))?;
                let (Some(source_name), Some(source_parent)) =
                    (source.file_name(), source.parent())
                else {
                    return Err(refuse("hard-links to the target directory itself"));
                };
                let source_dir = self.open_dir(source_parent, false).map_err(|e| match e {
                    Failure::Refused(_, why) => {
                        Failure::Refused(m.name.clone(), format!("hard-links to a path that {why}"))
                    }
                    other => other,
                })?;
                if source == relative {
                    return Err(refuse("hard-links to itself"));
                }
                self.make_room(&parent, name, &m.name)?;
                match rustix::fs::linkat(&source_dir, source_name, &parent, name, AtFlags::empty())
                {
                    Ok(()) => {}
                    Err(Errno::NOENT) => {
                        return Err(refuse(&format!(
                            "hard-links to ./{}, which the archive has not created before it",
                            quote(source.as_os_str().as_bytes())
                        )))
                    }
                    Err(Errno::PERM) => return Err(refuse("hard-links to a directory")),
                    Err(e) => return Err(io_failure(e, "linking", &dest())),
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let (file_type, what) = match m.kind {
                    EntryType::Char => (FileType::CharacterDevice, "a character device"),
                    EntryType::Block => (FileType::BlockDevice, "a block device"),
                    _ => (FileType::Fifo, "a FIFO"),
                };
                let device = m.kind != EntryType::Fifo;
                if device {
                    match self.devices {
                        DevicePolicy::All => {}
                        DevicePolicy::None => {
                            self.skipped_devices += 1;
                            return Ok(());
                        }
                        DevicePolicy::Dev => {
                            if !under_dev(&relative) {
                                return Err(refuse(&format!(
                                    "is {what} outside dev/ (pass --devices all to create it anyway, for an image you trust)"
                                )));
                            }
                        }
                    }
                }
                let header = m.entry.header();
                let dev = if device {
                    let major = header.device_major().ok().flatten().unwrap_or(0);
                    let minor = header.device_minor().ok().flatten().unwrap_or(0);
                    rustix::fs::makedev(major, minor)
                } else {
                    0
                };
                self.make_room(&parent, name, &m.name)?;
                rustix::fs::mknodat(&parent, name, file_type, Mode::from_bits_retain(0o600), dev)
                    .map_err(|e| io_failure(e, "creating", &dest()))?;
                self.finish_at(&parent, name, &m, &dest(), true)?;
            }
            _ => unreachable!("types checked above"),
        }
        Ok(())
    }

    /// Removes what an earlier entry of the same name left (the archive wins), but never a
    /// directory: replacing one would drop what the archive put in it.
    fn make_room(&self, parent: &OwnedFd, name: &OsStr, entry: &[u8]) -> Step<()> {
        match lstat_at(parent, name) {
            None => Ok(()),
            Some(FileType::Directory) => Err(Failure::Refused(
                entry.to_vec(),
                "would replace a directory the archive already created".into(),
            )),
            Some(_) => unlink(parent, name)
                .map_err(|e| io_failure(e, "replacing", &self.target.join(Path::new(name)))),
        }
    }

    /// A descriptor for the directory `relative` inside the target (created when missing and
    /// `create`), reached without following any symlink.
    fn open_dir(&self, relative: &Path, create: bool) -> Step<OwnedFd> {
        let mut current =
            rustix::io::dup(&self.root).map_err(|e| io_failure(e, "opening", self.target))?;
        let mut walked = PathBuf::new();
        for component in relative.components() {
            let Component::Normal(part) = component else {
                continue;
            };
            walked.push(part);
            let open = |dir: &OwnedFd| {
                rustix::fs::openat(
                    dir,
                    part,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            let next = match open(&current) {
                Ok(fd) => fd,
                Err(Errno::NOENT) if create => {
                    // A parent the archive never listed: made like GNU tar makes it.
                    match rustix::fs::mkdirat(&current, part, Mode::from_bits_retain(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(io_failure(e, "creating", &self.target.join(&walked)))
                        }
                    }
                    open(&current)
                        .map_err(|e| io_failure(e, "opening", &self.target.join(&walked)))?
                }
                Err(Errno::NOENT) => {
                    return Err(Failure::Refused(
                        vec![],
                        format!(
                            "./{}, which does not exist",
                            quote(walked.as_os_str().as_bytes())
                        ),
                    ))
                }
                Err(Errno::NOTDIR | Errno::LOOP) => {
                    let why = if lstat_at(&current, part) == Some(FileType::Symlink) {
                        format!(
                            "would be written through the symlink ./{}",
                            quote(walked.as_os_str().as_bytes())
                        )
                    } else {
                        format!(
                            "would be written below ./{}, which is not a directory",
                            quote(walked.as_os_str().as_bytes())
                        )
                    };
                    return Err(Failure::Refused(vec![], why));
                }
                Err(e) => return Err(io_failure(e, "opening", &self.target.join(&walked))),
            };
            current = next;
        }
        Ok(current)
    }

    /// The parent directory of an entry, reusing the last one when it is the same.
    fn parent(&mut self, relative: &Path, entry: &[u8]) -> Step<OwnedFd> {
        if let Some((path, fd)) = &self.parent {
            if path == relative {
                return rustix::io::dup(fd).map_err(|e| io_failure(e, "opening", self.target));
            }
        }
        let fd = self.open_dir(relative, true).map_err(|e| match e {
            Failure::Refused(_, why) => Failure::Refused(entry.to_vec(), why),
            other => other,
        })?;
        let copy = rustix::io::dup(&fd).map_err(|e| io_failure(e, "opening", self.target))?;
        self.parent = Some((relative.to_path_buf(), copy));
        Ok(fd)
    }

    /// Owner, mode, xattrs and time of a regular file, through its descriptor.
    fn finish_fd<R: Read>(&self, fd: BorrowedFd<'_>, m: &Member<'_, R>, dest: &Path) -> Step<()> {
        if self.as_root {
            rustix::fs::fchown(fd, Some(uid(m.uid)), Some(gid(m.gid)))
                .map_err(|e| io_failure(e, "setting the owner of", dest))?;
        }
        rustix::fs::fchmod(fd, Mode::from_bits_retain(m.mode & 0o7777))
            .map_err(|e| io_failure(e, "setting the mode of", dest))?;
        for (name, value) in &m.xattrs {
            rustix::fs::fsetxattr(fd, OsStr::from_bytes(name), value, XattrFlags::empty())
                .map_err(|e| xattr_failure(e, name, dest))?;
        }
        rustix::fs::futimens(fd, &times(m.mtime))
            .map_err(|e| io_failure(e, "setting the time of", dest))
    }

    /// The same for what cannot be opened safely (symlinks, device nodes, FIFOs): through the
    /// parent's descriptor, never following the entry itself.
    fn finish_at<R: Read>(
        &self,
        parent: &OwnedFd,
        name: &OsStr,
        m: &Member<'_, R>,
        dest: &Path,
        chmod: bool,
    ) -> Step<()> {
        if self.as_root {
            rustix::fs::chownat(
                parent,
                name,
                Some(uid(m.uid)),
                Some(gid(m.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|e| io_failure(e, "setting the owner of", dest))?;
        }
        if chmod {
            // Not a symlink: the node was made a moment ago in a directory only we write to.
            rustix::fs::chmodat(
                parent,
                name,
                Mode::from_bits_retain(m.mode & 0o7777),
                AtFlags::empty(),
            )
            .map_err(|e| io_failure(e, "setting the mode of", dest))?;
        }
        for (key, value) in &m.xattrs {
            // The parents were walked without symlinks; l* does not follow the last one.
            rustix::fs::lsetxattr(dest, OsStr::from_bytes(key), value, XattrFlags::empty())
                .map_err(|e| xattr_failure(e, key, dest))?;
        }
        rustix::fs::utimensat(parent, name, &times(m.mtime), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| io_failure(e, "setting the time of", dest))
    }

    fn apply(&self, dir: PendingDir) -> Step<()> {
        let dest = self.target.join(&dir.relative);
        let fd = if dir.relative.as_os_str().is_empty() {
            rustix::io::dup(&self.root).map_err(|e| io_failure(e, "opening", &dest))?
        } else {
            let parent = self.open_dir(dir.relative.parent().unwrap_or(Path::new("")), false)?;
            rustix::fs::openat(
                &parent,
                dir.relative.file_name().expect("a directory name"),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io_failure(e, "opening", &dest))?
        };
        if self.as_root {
            rustix::fs::fchown(&fd, Some(uid(dir.uid)), Some(gid(dir.gid)))
                .map_err(|e| io_failure(e, "setting the owner of", &dest))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_bits_retain(dir.mode & 0o7777))
            .map_err(|e| io_failure(e, "setting the mode of", &dest))?;
        for (name, value) in &dir.xattrs {
            rustix::fs::fsetxattr(&fd, OsStr::from_bytes(name), value, XattrFlags::empty())
                .map_err(|e| xattr_failure(e, name, &dest))?;
        }
        rustix::fs::futimens(&fd, &times(dir.mtime))
            .map_err(|e| io_failure(e, "setting the time of", &dest))
    }
}

fn uid(raw: u64) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(raw as u32)
}

fn gid(raw: u64) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(raw as u32)
}

fn times(mtime: i64) -> Timestamps {
    let at = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: at,
        last_modification: at,
    }
}

fn lstat_at(dir: &OwnedFd, name: &OsStr) -> Option<FileType> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| FileType::from_raw_mode(st.st_mode))
}

fn unlink(dir: &OwnedFd, name: &OsStr) -> rustix::io::Result<()> {
    rustix::fs::unlinkat(dir, name, AtFlags::empty())
}

fn io_failure(err: Errno, action: &str, path: &Path) -> Failure {
    Failure::Io(crate::fsutil::io_error(io::Error::from(err), action, path))
}

fn xattr_failure(err: Errno, name: &[u8], path: &Path) -> Failure {
    let name = quote(name);
    if err == Errno::NOTSUP || err == Errno::OPNOTSUPP {
        Failure::Io(anyhow!(
            "cannot set xattr {name} on {}: the filesystem does not support it; unpack onto ext4 or xfs",
            path.display()
        ))
    } else {
        Failure::Io(anyhow!(
            "cannot set xattr {name} on {}: {err}",
            path.display()
        ))
    }
}

/// Whether `relative` lies below `dev/` (not `dev` itself).
fn under_dev(relative: &Path) -> bool {
    relative != Path::new("dev") && relative.starts_with("dev")
}

/// Whether `path` lies strictly below `dir` (every path lies below the target's root, "").
fn is_inside(path: &Path, dir: &Path) -> bool {
    path != dir && path.starts_with(dir)
}

/// The entry's path relative to the target; refuses absolute paths and `..`.
fn confine(raw: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    let path = Path::new(OsStr::from_bytes(raw));
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("is an absolute path"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confine_refuses_escapes() {
        assert_eq!(confine(b"./etc/passwd").unwrap(), Path::new("etc/passwd"));
        assert_eq!(confine(b"./").unwrap(), Path::new(""));
        assert!(confine(b"/etc/passwd").is_err());
        assert!(confine(b"./usr/../../etc").is_err());
    }

    #[test]
    fn devices_go_under_dev_only() {
        assert!(under_dev(Path::new("dev/null")));
        assert!(under_dev(Path::new("dev/pts/ptmx")));
        assert!(!under_dev(Path::new("dev")));
        assert!(!under_dev(Path::new("devices/sda")));
        assert!(!under_dev(Path::new("home/dev/sda")));
    }

    #[test]
    fn directories_are_left_in_order() {
        assert!(is_inside(Path::new("etc/passwd"), Path::new("etc")));
        assert!(is_inside(Path::new("etc"), Path::new("")));
        assert!(!is_inside(Path::new("etc"), Path::new("etc")));
        assert!(!is_inside(Path::new("etcetera"), Path::new("etc")));
        assert!(!is_inside(Path::new(""), Path::new("")));
    }
}
