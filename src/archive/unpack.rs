//! Unpacks an OS image into a directory. An OS image may come from S3 or from someone else,
//! so this is an attack surface: the checksum is verified before anything is written, and
//! entries that would land outside the target, or that are not plain file-system objects, are
//! refused with the entry's name.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};
use tar::{Archive, EntryType};

use super::Compression;

#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Skip the `.sha256` sidecar check (the caller verified the bytes another way).
    pub skip_checksum: bool,
}

#[derive(Debug, Default)]
pub struct UnpackSummary {
    pub entries: u64,
    pub checksum_verified: bool,
}

pub fn unpack(archive: &Path, target: &Path, options: &UnpackOptions) -> Result<UnpackSummary> {
    let mut summary = UnpackSummary::default();
    if !options.skip_checksum {
        summary.checksum_verified = crate::checksum::verify_sidecar(archive)?;
    }
    let file = File::open(archive)
        .with_context(|| format!("cannot open OS image {}", archive.display()))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (kind, magic) = Compression::sniff(&mut reader)?;
    let stream = io::Cursor::new(magic).chain(reader);
    let decoded: Box<dyn Read> = match kind {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::new(stream)?),
        None => Box::new(stream),
    };
    fs::create_dir_all(target).map_err(|e| crate::fsutil::io_error(e, "creating", target))?;
    let target = target.canonicalize()?;
    unpack_stream(decoded, &target, archive, &mut summary)?;
    Ok(summary)
}

fn unpack_stream(
    stream: impl Read,
    target: &Path,
    archive: &Path,
    summary: &mut UnpackSummary,
) -> Result<()> {
    let mut tar = Archive::new(stream);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(true);
    tar.set_overwrite(true);
    let refuse = |name: &str, why: &str| {
        anyhow::anyhow!(
            "refusing to unpack {}: entry '{name}' {why}; the OS image is corrupt or hostile",
            archive.display()
        )
    };
    // Directory mtimes are set last: writing their contents would change them again.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    for entry in tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?
    {
        let mut entry = entry
            .with_context(|| format!("reading {} (truncated or not a tar?)", archive.display()))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let relative = confine(&raw).map_err(|why| refuse(&name, why))?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::Regular
            | EntryType::Continuous
            | EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo => {}
            other => {
                return Err(refuse(
                    &name,
                    &format!("has type {other:?}, which a root filesystem never needs"),
                ))
            }
        }
        let destination = target.join(&relative);
        check_no_symlink_on_the_way(target, &relative).map_err(|why| refuse(&name, &why))?;
        if kind == EntryType::Link {
            let link = entry.link_name_bytes().unwrap_or_default().into_owned();
            let link_rel = confine(&link)
                .map_err(|why| refuse(&name, &format!("hard-links to a path that {why}")))?;
            check_no_symlink_on_the_way(target, &link_rel).map_err(|why| refuse(&name, &why))?;
            if destination.symlink_metadata().is_ok() {
                fs::remove_file(&destination).ok();
            }
        }
        let existing = destination.symlink_metadata().ok();
        if relative.as_os_str().is_empty() {
            // `./` itself: the root directory's owner, mode and time.
            let header = entry.header();
            let (uid, gid) = (u32::try_from(header.uid()?)?, u32::try_from(header.gid()?)?);
            nix::unistd::chown(target, Some(uid.into()), Some(gid.into()))?;
            fs::set_permissions(
                target,
                std::os::unix::fs::PermissionsExt::from_mode(header.mode()?),
            )?;
            dir_times.push((target.to_path_buf(), header.mtime()?));
        } else {
            if kind == EntryType::Directory
                && existing
                    .as_ref()
                    .is_some_and(|m| m.file_type().is_symlink())
            {
                return Err(refuse(
                    &name,
                    "is a directory where the archive already placed a symlink",
                ));
            }
            if kind == EntryType::Directory {
                dir_times.push((destination.clone(), entry.header().mtime()?));
            }
            if matches!(kind, EntryType::Char | EntryType::Block | EntryType::Fifo) {
                // The tar crate writes these as empty regular files; a root filesystem needs
                // the real nodes (/dev/null, /dev/console).
                make_node(entry.header(), kind, &destination)?;
            } else {
                entry
                    .unpack_in(target)
                    .map_err(|e| crate::fsutil::io_error(e, "unpacking", &destination))?;
            }
        }
        summary.entries += 1;
    }
    for (dir, mtime) in dir_times.iter().rev() {
        let time = filetime::FileTime::from_unix_time(*mtime as i64, 0);
        filetime::set_symlink_file_times(dir, time, time)
            .with_context(|| format!("setting mtime of {}", dir.display()))?;
    }
    Ok(())
}

fn make_node(header: &tar::Header, kind: EntryType, path: &Path) -> Result<()> {
    use nix::sys::stat::{mknod, Mode, SFlag};
    if path.symlink_metadata().is_ok() {
        fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| crate::fsutil::io_error(e, "creating", parent))?;
    }
    let (flag, dev) = match kind {
        EntryType::Char => (SFlag::S_IFCHR, device(header)?),
        EntryType::Block => (SFlag::S_IFBLK, device(header)?),
        _ => (SFlag::S_IFIFO, 0),
    };
    let mode = header.mode()?;
    mknod(path, flag, Mode::from_bits_truncate(mode), dev)
        .with_context(|| format!("mknod {} ({flag:?}, mode {mode:o})", path.display()))?;
    let (uid, gid) = (u32::try_from(header.uid()?)?, u32::try_from(header.gid()?)?);
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(uid.into()),
        Some(gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("chown {}", path.display()))?;
    // mknod honours the umask; the archive's mode is the truth.
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    let time = filetime::FileTime::from_unix_time(header.mtime()? as i64, 0);
    filetime::set_symlink_file_times(path, time, time)?;
    Ok(())
}

fn device(header: &tar::Header) -> Result<libc::dev_t> {
    let major = header.device_major()?.unwrap_or(0);
    let minor = header.device_minor()?.unwrap_or(0);
    Ok(libc::makedev(major, minor))
}

/// The entry's path relative to the target; refuses absolute paths and `..`.
fn confine(raw: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    let path = Path::new(std::ffi::OsStr::from_bytes(raw));
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

/// Refuses a path whose parent directories, inside the target, include a symlink: writing
/// through it could land anywhere (the archive never needs this: it stores links, not their
/// contents).
fn check_no_symlink_on_the_way(target: &Path, relative: &Path) -> std::result::Result<(), String> {
    let mut current = target.to_path_buf();
    let parents: Vec<_> = relative.components().collect();
    for component in parents.iter().take(parents.len().saturating_sub(1)) {
        current.push(component);
        if let Ok(meta) = current.symlink_metadata() {
            if meta.file_type().is_symlink() {
                let rel = current.strip_prefix(target).unwrap_or(&current);
                return Err(format!(
                    "would be written through the symlink ./{}",
                    rel.display()
                ));
            }
        } else {
            break;
        }
    }
    Ok(())
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
    fn symlinked_parent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc")).unwrap();
        let err = check_no_symlink_on_the_way(dir.path(), Path::new("etc/passwd")).unwrap_err();
        assert!(err.contains("./etc"), "{err}");
        assert!(check_no_symlink_on_the_way(dir.path(), Path::new("etc")).is_ok());
    }
}
