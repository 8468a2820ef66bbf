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

/// Unpacks an archive from an open reader (compression detected), e.g. a cache entry whose
/// checksum the caller verified on the same file handle. `name` names it in errors.
pub fn unpack_reader(reader: impl Read, target: &Path, name: &Path) -> Result<UnpackSummary> {
    let mut summary = UnpackSummary::default();
    let mut reader = BufReader::with_capacity(1 << 20, reader);
    let (kind, magic) = Compression::sniff(&mut reader)?;
    let stream = io::Cursor::new(magic).chain(reader);
    let decoded: Box<dyn Read> = match kind {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::new(stream)?),
        None => Box::new(stream),
    };
    fs::create_dir_all(target).map_err(|e| crate::fsutil::io_error(e, "creating", target))?;
    let target = target.canonicalize()?;
    unpack_stream(decoded, &target, name, &mut summary)?;
    Ok(summary)
}

fn unpack_stream(
    stream: impl Read,
    target: &Path,
    archive: &Path,
    summary: &mut UnpackSummary,
) -> Result<()> {
    let mut tar = Archive::new(stream);
    let refuse = |name: &str, why: &str| {
        anyhow::anyhow!(
            "refusing to unpack {}: entry '{name}' {why}; the OS image is corrupt or hostile",
            archive.display()
        )
    };
    let truncated = || format!("reading {} (truncated or not a tar?)", archive.display());
    // Directory mtimes are set last: writing their contents would change them again.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    // Raw entries: long names and pax records are read here, because the tar crate splits pax
    // records at newlines, which loses binary xattr values (file capabilities, overlayfs ids)
    // that contain one.
    let mut pax: Option<Vec<u8>> = None;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    for entry in tar
        .entries()
        .with_context(|| format!("reading {}", archive.display()))?
        .raw(true)
    {
        let mut entry = entry.with_context(truncated)?;
        let kind = entry.header().entry_type();
        match kind {
            EntryType::XHeader => {
                pax = Some(read_all(&mut entry).with_context(truncated)?);
                continue;
            }
            EntryType::GNULongName => {
                long_name = Some(without_nul(read_all(&mut entry).with_context(truncated)?));
                continue;
            }
            EntryType::GNULongLink => {
                long_link = Some(without_nul(read_all(&mut entry).with_context(truncated)?));
                continue;
            }
            // Global records (a comment, a charset) say nothing a tree needs.
            EntryType::XGlobalHeader => continue,
            _ => {}
        }
        let header_name = entry.header().path_bytes().into_owned();
        let records = parse_pax(pax.take().as_deref().unwrap_or_default())
            .map_err(|why| refuse(&String::from_utf8_lossy(&header_name), why))?;
        let record = |key: &[u8]| {
            records
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        let raw = long_name
            .take()
            .or_else(|| record(b"path"))
            .unwrap_or(header_name);
        let link = long_link
            .take()
            .or_else(|| record(b"linkpath"))
            .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
        let xattrs: Vec<(&[u8], &[u8])> = records
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(b"SCHILY.xattr.")?, v.as_slice())))
            .collect();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let relative = confine(&raw).map_err(|why| refuse(&name, why))?;
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
        let header = entry.header().clone();
        let (uid, gid) = (u32::try_from(header.uid()?)?, u32::try_from(header.gid()?)?);
        let mode = header.mode()?;
        let mtime = header.mtime()?;
        let existing = destination.symlink_metadata().ok();
        if relative.as_os_str().is_empty() {
            // `./` itself: the root directory's owner, mode, xattrs and time.
            set_owner_mode(target, uid, gid, mode)?;
            set_xattrs(target, &xattrs)?;
            dir_times.push((target.to_path_buf(), mtime));
            summary.entries += 1;
            continue;
        }
        let is_dir = existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && (kind != EntryType::Directory) == is_dir {
            return Err(refuse(
                &name,
                "replaces a directory with a non-directory, or the other way round",
            ));
        }
        match kind {
            EntryType::Directory => {
                if existing.is_none() {
                    fs::create_dir_all(&destination)
                        .map_err(|e| crate::fsutil::io_error(e, "creating", &destination))?;
                }
                set_owner_mode(&destination, uid, gid, mode)?;
                set_xattrs(&destination, &xattrs)?;
                dir_times.push((destination, mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                replace(&destination, existing.is_some())?;
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&destination)
                    .map_err(|e| crate::fsutil::io_error(e, "creating", &destination))?;
                let expected = header.size()?;
                let copied = io::copy(&mut entry, &mut file)
                    .map_err(|e| crate::fsutil::io_error(e, "unpacking", &destination))?;
                if copied != expected {
                    return Err(anyhow::anyhow!(truncated()));
                }
                // Owner before mode (chown clears setuid), xattrs last (chown and writes
                // clear file capabilities).
                set_owner_mode(&destination, uid, gid, mode)?;
                set_xattrs(&destination, &xattrs)?;
                set_time(&destination, mtime)?;
            }
            EntryType::Symlink => {
                let target_text = link
                    .filter(|l| !l.is_empty())
                    .ok_or_else(|| refuse(&name, "is a symlink without a target"))?;
                replace(&destination, existing.is_some())?;
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target_text), &destination)
                    .map_err(|e| {
                        crate::fsutil::io_error(e, "creating the symlink", &destination)
                    })?;
                nix::unistd::fchownat(
                    nix::fcntl::AT_FDCWD,
                    &destination,
                    Some(uid.into()),
                    Some(gid.into()),
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .with_context(|| format!("chown {}", destination.display()))?;
                set_xattrs(&destination, &xattrs)?;
                set_time(&destination, mtime)?;
            }
            EntryType::Link => {
                let link = link.unwrap_or_default();
                let link_rel = confine(&link)
                    .map_err(|why| refuse(&name, &format!("hard-links to a path that {why}")))?;
                check_no_symlink_on_the_way(target, &link_rel)
                    .map_err(|why| refuse(&name, &why))?;
                replace(&destination, existing.is_some())?;
                // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
                fs::hard_link(target.join(&link_rel), &destination)
                    .map_err(|e| crate::fsutil::io_error(e, "hard-linking", &destination))?;
            }
            _ => {
                // Devices and fifos: the real nodes (/dev/null, an overlay whiteout).
                make_node(&header, kind, &destination)?;
                set_xattrs(&destination, &xattrs)?;
            }
        }
        summary.entries += 1;
    }
    for (dir, mtime) in dir_times.iter().rev() {
        set_time(dir, *mtime)?;
    }
    Ok(())
}

fn read_all(entry: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    entry.read_to_end(&mut data)?;
    Ok(data)
}

fn without_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// One pax record: key and value, raw bytes.
type PaxRecord = (Vec<u8>, Vec<u8>);

/// A pax header's records (`LEN key=value\n`, where LEN counts the whole record): parsed by
/// length, so values may hold any byte, newlines included.
fn parse_pax(mut data: &[u8]) -> std::result::Result<Vec<PaxRecord>, &'static str> {
    const MALFORMED: &str = "has a malformed pax header";
    let mut records = Vec::new();
    while !data.is_empty() && !data.iter().all(|b| *b == 0) {
        let space = data.iter().position(|b| *b == b' ').ok_or(MALFORMED)?;
        let len: usize = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|n| n.parse().ok())
            .ok_or(MALFORMED)?;
        if len <= space + 1 || len > data.len() {
            return Err(MALFORMED);
        }
        let record = data[space + 1..len].strip_suffix(b"\n").ok_or(MALFORMED)?;
        let equals = record.iter().position(|b| *b == b'=').ok_or(MALFORMED)?;
        records.push((record[..equals].to_vec(), record[equals + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(records)
}

/// Makes way for an entry that replaces an earlier one of the same name (never a directory:
/// the caller refused that).
fn replace(path: &Path, exists: bool) -> Result<()> {
    if exists {
        fs::remove_file(path).with_context(|| format!("replacing {}", path.display()))?;
    }
    Ok(())
}

fn set_owner_mode(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<()> {
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
        .with_context(|| format!("chown {}", path.display()))?;
    fs::set_permissions(
        path,
        std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
    )
    .with_context(|| format!("chmod {}", path.display()))
}

fn set_time(path: &Path, mtime: u64) -> Result<()> {
    let time = filetime::FileTime::from_unix_time(mtime as i64, 0);
    filetime::set_symlink_file_times(path, time, time)
        .with_context(|| format!("setting mtime of {}", path.display()))
}

/// Sets xattrs on `path` itself (never through a symlink).
fn set_xattrs(path: &Path, xattrs: &[(&[u8], &[u8])]) -> Result<()> {
    for (name, value) in xattrs {
        let name = std::ffi::OsStr::from_bytes(name);
        xattr::set(path, name, value)
            .with_context(|| format!("setting xattr {name:?} on {}", path.display()))?;
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
    fn pax_records_are_read_by_length_so_values_may_hold_newlines() {
        let value = b"a\nb\x00c";
        let mut data = Vec::new();
        for (key, value) in [
            (&b"SCHILY.xattr.trusted.x"[..], &value[..]),
            (b"path", b"./p"),
        ] {
            let body = key.len() + value.len() + 3;
            let len = body + (body + 2).to_string().len();
            data.extend_from_slice(format!("{len} ").as_bytes());
            data.extend_from_slice(key);
            data.push(b'=');
            data.extend_from_slice(value);
            data.push(b'\n');
        }
        let records = parse_pax(&data).unwrap();
        assert_eq!(records[0].1, value);
        assert_eq!(records[1], (b"path".to_vec(), b"./p".to_vec()));
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"x").is_err());
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
