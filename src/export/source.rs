//! Reads an OS image as a stream of checked entries, without unpacking it. The image is
//! verified by its `.sha256` when it has one; every entry is held to the unpack rules (no
//! absolute names, no `..`, nothing written through a symlink the archive placed, only the
//! entry kinds a root filesystem has), since whatever we pass on is unpacked by someone else.
//! On the way it keeps the few small files an export needs to know about the tree (passwd,
//! group, os-release, the dpkg database) and the ELF header of its first program.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use tar::{Archive, EntryType};

use crate::archive::members::{Member, Members, Tracked};

/// Files whose contents an export reads (relative to the root).
const KEPT_FILES: &[&str] = &[
    "etc/passwd",
    "etc/group",
    "etc/os-release",
    "usr/lib/os-release",
    "var/lib/dpkg/status",
];
const KEPT_LIMIT: u64 = 64 << 20;

/// One checked entry of the OS image.
#[derive(Debug, Clone)]
pub struct Item {
    /// Relative to the root, no `./`, no trailing `/`; empty for the root itself.
    pub rel: Vec<u8>,
    /// Regular, Directory, Symlink, Link, Char, Block or Fifo.
    pub kind: EntryType,
    /// A symlink's target as stored; a hard link's target relative to the root.
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub size: u64,
    pub device: Option<(u32, u32)>,
    /// pax records other than the ones the header fields carry (xattrs).
    pub pax: Vec<(String, Vec<u8>)>,
}

/// What the stream showed about the tree.
#[derive(Debug, Default)]
pub struct Facts {
    pub entries: u64,
    pub newest_mtime: u64,
    /// sha256 of the OS image file.
    pub image_sha256: String,
    pub checksum_verified: bool,
    pub files: HashMap<String, Vec<u8>>,
    /// The ELF header of the first program under usr/bin or bin.
    pub elf_header: Option<Vec<u8>>,
    /// Every entry name (relative), to ask whether the tree has a path.
    pub names: HashSet<Vec<u8>>,
}

impl Facts {
    pub fn file(&self, rel: &str) -> Option<&[u8]> {
        self.files.get(rel).map(Vec::as_slice)
    }

    pub fn has(&self, rel: &str) -> bool {
        self.names.contains(rel.as_bytes())
    }
}

/// Streams `image`'s entries to `visit` (which reads a regular file's data from the reader it
/// gets). `progress` gets the compressed bytes read so far.
pub fn read_os_image(
    image: &Path,
    visit: &mut dyn FnMut(&Item, &mut dyn Read) -> Result<()>,
    progress: &mut dyn FnMut(u64),
) -> Result<Facts> {
    let meta = std::fs::metadata(image).with_context(|| {
        format!(
            "OS image {} does not exist: build one with build-os-image",
            image.display()
        )
    })?;
    if !meta.is_file() {
        bail!("OS image {} is not a file", image.display());
    }
    let mut facts = Facts {
        checksum_verified: crate::checksum::verify_sidecar(image)?,
        ..Facts::default()
    };
    facts.image_sha256 = if facts.checksum_verified {
        crate::checksum::read_sidecar(&crate::checksum::sidecar_path(image))?
    } else {
        crate::checksum::sha256_file(image)?
    };
    let file = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    // Our gzip inflates in parallel (as unpack does) on threads of its own: the bytes read are
    // counted there and reported from here.
    let read = Arc::new(AtomicU64::new(0));
    let counted = CountingReader {
        inner: file,
        read: Arc::clone(&read),
    };
    let decoded = Reporting {
        inner: crate::archive::decompressed(counted)?,
        read,
        progress,
    };
    let not_an_image = |e: &dyn std::fmt::Display| {
        anyhow!(
            "{} is not an OS image (a gzip, zstd or plain tar of a root tree): {}",
            image.display(),
            one_line(&e.to_string())
        )
    };
    let refuse = |name: &[u8], why: &str| {
        anyhow!(
            "refusing to export {}: entry '{}' {why}; the OS image is corrupt or hostile",
            image.display(),
            String::from_utf8_lossy(name)
        )
    };
    let mut symlinks: HashSet<Vec<u8>> = HashSet::new();
    // The bounded member reader unpack uses: a hostile image cannot make an export hold a
    // 512 MiB name or pax header either.
    let (tracked, state) = Tracked::new(decoded, u64::MAX);
    let mut archive = Archive::new(tracked);
    let members = Members::new(&mut archive, state, u64::MAX).map_err(|e| not_an_image(&e))?;
    for member in members {
        let mut member = member.map_err(|e| not_an_image(&e))?;
        let raw = std::mem::take(&mut member.name);
        let rel = confine(&raw).map_err(|why| refuse(&raw, why))?;
        let kind = match member.kind {
            EntryType::Regular | EntryType::Continuous => EntryType::Regular,
            kind @ (EntryType::Directory
            | EntryType::Symlink
            | EntryType::Link
            | EntryType::Char
            | EntryType::Block
            | EntryType::Fifo) => kind,
            other => {
                return Err(refuse(
                    &raw,
                    &format!("has type {other:?}, which a root filesystem never needs"),
                ))
            }
        };
        if let Some(link) = ancestor_in(&rel, &symlinks) {
            return Err(refuse(
                &raw,
                &format!(
                    "would be written through the symlink ./{}",
                    String::from_utf8_lossy(link)
                ),
            ));
        }
        if kind == EntryType::Directory && symlinks.contains(&rel) {
            return Err(refuse(
                &raw,
                "is a directory where the archive already placed a symlink",
            ));
        }
        let link = match kind {
            EntryType::Symlink => {
                symlinks.insert(rel.clone());
                Some(member.link.take().unwrap_or_default())
            }
            EntryType::Link => {
                let target = member.link.take().unwrap_or_default();
                let target_rel = confine(&target)
                    .map_err(|why| refuse(&raw, &format!("hard-links to a path that {why}")))?;
                if target_rel.is_empty() || !facts.names.contains(&target_rel) {
                    return Err(refuse(
                        &raw,
                        "hard-links to a path that is not earlier in the archive",
                    ));
                }
                if let Some(via) = ancestor_in(&target_rel, &symlinks) {
                    return Err(refuse(
                        &raw,
                        &format!(
                            "hard-links through the symlink ./{}",
                            String::from_utf8_lossy(via)
                        ),
                    ));
                }
                Some(target_rel)
            }
            _ => None,
        };
        let item = item_of(&member, rel, kind, link).map_err(|e| not_an_image(&e))?;
        let mut entry = member.entry;
        facts.entries += 1;
        facts.newest_mtime = facts.newest_mtime.max(item.mtime);
        let rel_text = String::from_utf8_lossy(&item.rel).into_owned();
        let keep_all = kind == EntryType::Regular
            && KEPT_FILES.contains(&rel_text.as_str())
            && item.size <= KEPT_LIMIT;
        let want_elf = kind == EntryType::Regular
            && facts.elf_header.is_none()
            && (rel_text.starts_with("usr/bin/") || rel_text.starts_with("bin/"));
        let mut tap = Tap {
            inner: &mut entry,
            keep_all,
            kept: Vec::new(),
            head: Vec::new(),
            want_head: if want_elf { 64 } else { 0 },
        };
        visit(&item, &mut tap).with_context(|| {
            format!(
                "exporting entry ./{} of {}",
                String::from_utf8_lossy(&item.rel),
                image.display()
            )
        })?;
        // Whatever the visitor did not read still counts for the kept files.
        io::copy(&mut tap, &mut io::sink()).map_err(|e| not_an_image(&e))?;
        if keep_all {
            facts.files.insert(rel_text, std::mem::take(&mut tap.kept));
        }
        if want_elf && tap.head.starts_with(b"\x7fELF") {
            facts.elf_header = Some(std::mem::take(&mut tap.head));
        }
        facts.names.insert(item.rel);
    }
    if facts.entries == 0 {
        return Err(not_an_image(&"it holds no entries"));
    }
    Ok(facts)
}

fn item_of<R: Read>(
    member: &Member<'_, R>,
    rel: Vec<u8>,
    kind: EntryType,
    link: Option<Vec<u8>>,
) -> io::Result<Item> {
    let header = member.entry.header();
    Ok(Item {
        rel,
        kind,
        link,
        mode: member.mode,
        uid: member.uid,
        gid: member.gid,
        mtime: member.mtime.max(0) as u64,
        size: if kind == EntryType::Regular {
            member.size
        } else {
            0
        },
        device: match kind {
            EntryType::Char | EntryType::Block => Some((
                header.device_major()?.unwrap_or(0),
                header.device_minor()?.unwrap_or(0),
            )),
            _ => None,
        },
        pax: member
            .xattrs
            .iter()
            .map(|(name, value)| {
                (
                    format!("SCHILY.xattr.{}", String::from_utf8_lossy(name)),
                    value.clone(),
                )
            })
            .collect(),
    })
}

/// A reader's error on one short line: the tar crate quotes the bytes it could not parse,
/// which for a file that is not a tar are whatever the file holds.
fn one_line(message: &str) -> String {
    let first = message
        .split(" when getting ")
        .next()
        .unwrap_or(message)
        .lines()
        .next()
        .unwrap_or("");
    let clean: String = first
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect();
    clean.trim().to_string()
}

/// The entry's path relative to the root; refuses absolute paths and `..`.
pub fn confine(raw: &[u8]) -> std::result::Result<Vec<u8>, &'static str> {
    if raw.first() == Some(&b'/') {
        return Err("is an absolute path");
    }
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err("contains '..'"),
            _ => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(part);
            }
        }
    }
    Ok(out)
}

/// The first proper ancestor of `rel` that is a symlink the archive placed.
fn ancestor_in<'a>(rel: &[u8], symlinks: &'a HashSet<Vec<u8>>) -> Option<&'a [u8]> {
    if symlinks.is_empty() {
        return None;
    }
    rel.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'/')
        .find_map(|(i, _)| symlinks.get(&rel[..i]).map(Vec::as_slice))
}

/// Counts the compressed bytes read, on whichever thread reads them.
struct CountingReader<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The decoded stream, telling `progress` how far the compressed one has been read.
struct Reporting<'p> {
    inner: Box<dyn Read + Send>,
    read: Arc<AtomicU64>,
    progress: &'p mut dyn FnMut(u64),
}

impl Read for Reporting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(self.read.load(Ordering::Relaxed));
        Ok(n)
    }
}

/// Passes an entry's data through, keeping all of it (a file we want) or its first bytes.
struct Tap<'e, R> {
    inner: &'e mut R,
    keep_all: bool,
    kept: Vec<u8>,
    head: Vec<u8>,
    want_head: usize,
}

impl<R: Read> Read for Tap<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.keep_all {
            self.kept.extend_from_slice(&buf[..n]);
        }
        if self.head.len() < self.want_head {
            let take = (self.want_head - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confine_normalises_and_refuses_escapes() {
        assert_eq!(confine(b"./etc/passwd").unwrap(), b"etc/passwd");
        assert_eq!(confine(b"etc//x/").unwrap(), b"etc/x");
        assert_eq!(confine(b"./").unwrap(), b"");
        assert!(confine(b"/etc/passwd").is_err());
        assert!(confine(b"./usr/../../etc").is_err());
    }

    #[test]
    fn reader_errors_are_cut_to_one_line() {
        let raw =
            "numeric field was not a number:  not an  when getting cksum for these are\nnotes";
        assert_eq!(one_line(raw), "numeric field was not a number:  not an");
        assert_eq!(one_line("corrupt deflate stream"), "corrupt deflate stream");
    }

    #[test]
    fn ancestors_through_symlinks_are_found() {
        let links: HashSet<Vec<u8>> = [b"lib".to_vec(), b"usr/x".to_vec()].into();
        assert_eq!(ancestor_in(b"lib/a", &links), Some(&b"lib"[..]));
        assert_eq!(ancestor_in(b"usr/x/y/z", &links), Some(&b"usr/x"[..]));
        assert_eq!(ancestor_in(b"lib", &links), None);
        assert_eq!(ancestor_in(b"usr/xy/z", &links), None);
    }
}
