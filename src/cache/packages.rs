//! The package cache: the `.deb` files the bootstrap and the stages' apt downloaded, kept in
//! the cache dir so the next build downloads only what changed, and the package lists of each
//! set of apt sources, so a build can run `--offline`.
//!
//! A package is `CACHE/packages/SHA256.deb` with its record `SHA256.json` beside it (the
//! cache's common record, plus the package's name, version, architecture, apt's file name and
//! its SHA512 for archives whose index names that hash). It goes into a tree only when apt asked
//! for exactly it (same file name, so same name, version and architecture, and the index's hash
//! from `apt-get --print-uris`), and only after its content was hashed again while it was
//! copied: a file that no longer matches is removed from the cache and from the tree, and apt
//! downloads it. Files are copied into trees, never linked, so nothing that runs in a chroot
//! can change the cache. Every path in a tree is resolved inside the tree (`crate::inroot`);
//! the last component is never followed, so a symlink planted in a tree's apt archive is
//! skipped, not read.
//!
//! Package lists are a cache entry of their own kind (`CACHE/apt-lists/KEY.tar.zst`, KEY from
//! the architecture and the tree's apt sources): an online build refreshes them, `--offline`
//! installs from them.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256, Sha512};

use super::{now, Cache, Kind, Lookup};
use crate::inroot::TreeRoot;

/// Where apt keeps downloaded packages, inside a tree.
pub const ARCHIVES: &str = "var/cache/apt/archives";
/// Where apt keeps package lists, inside a tree.
pub const LISTS: &str = "var/lib/apt/lists";

/// `KEY.json` of a package: the fields every record has (so `cache ls` and `cache prune` read
/// it like any other), then the package's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Its key is the sha256 of the `.deb`, its name `NAME VERSION ARCH` (as `cache ls` shows
    /// it).
    #[serde(flatten)]
    pub entry: super::Record,
    pub package: String,
    pub version: String,
    pub arch: String,
    /// apt's file name (`NAME_VERSION_ARCH.deb`, an epoch's `:` written `%3a`).
    pub file: String,
    pub sha512: String,
}

/// The index's hash of a package, as `apt-get --print-uris` prints it (the strongest the index
/// has: SHA256 on Debian, SHA512 on Ubuntu).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexHash {
    Sha256(String),
    Sha512(String),
}

/// A package apt is about to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub file: String,
    pub hash: Option<IndexHash>,
    pub bytes: u64,
}

impl Wanted {
    /// `name version (arch)`, as an error names it.
    pub fn describe(&self) -> String {
        match parse_file_name(&self.file) {
            Some((name, version, arch)) => format!("{name} {version} ({arch})"),
            None => self.file.clone(),
        }
    }
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Provided {
    pub files: u64,
    pub bytes: u64,
    /// Cached files whose content no longer matched their key: removed from the cache.
    pub dropped: Vec<String>,
    /// Wanted but not in the cache (apt downloads them, or `--offline` stops on them).
    pub missing: Vec<Wanted>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stored {
    pub files: u64,
    pub bytes: u64,
}

/// The package cache of a cache dir (`--cache-dir`).
pub struct PackageCache {
    cache: Cache,
}

impl PackageCache {
    pub fn new(cache_dir: &Path) -> Self {
        Self {
            cache: Cache::new(cache_dir),
        }
    }

    /// `CACHE/packages`.
    pub fn dir(&self) -> PathBuf {
        self.cache.root().join(Kind::Package.dir())
    }

    fn deb_path(&self, key: &str) -> PathBuf {
        self.cache.archive_path(Kind::Package, key)
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir().join(format!("{key}.json"))
    }

    fn read_record(&self, key: &str) -> Option<PackageRecord> {
        let bytes = std::fs::read(self.record_path(key)).ok()?;
        serde_json::from_slice::<PackageRecord>(&bytes)
            .ok()
            .filter(|r| r.entry.key == key && r.entry.sha256 == key)
    }

    /// Every package record (not verified), sorted by apt's file name.
    pub fn records(&self) -> Vec<PackageRecord> {
        let Ok(entries) = std::fs::read_dir(self.dir()) else {
            return vec![];
        };
        let mut out: Vec<PackageRecord> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let key = name.to_str()?.strip_suffix(".json")?;
                super::check_key(key).ok()?;
                self.read_record(key)
            })
            .collect();
        out.sort_by(|a, b| a.file.cmp(&b.file).then(a.entry.key.cmp(&b.entry.key)));
        out
    }

    /// Copies cached packages into the tree's apt archive: with `wanted` (from `apt-get
    /// --print-uris`), exactly those whose file name and index hash match a cached one; without
    /// (a bootstrap, which cannot say beforehand), the newest cached version of each package of
    /// `arch` or `all`, which the bootstrapper's apt checks against its index before it uses
    /// one. Each file is hashed while it is copied: one that no longer matches its key is
    /// removed from the tree and from the cache.
    pub fn provide(&self, root: &Path, wanted: Option<&[Wanted]>, arch: &str) -> Result<Provided> {
        let tree = open_tree(root)?;
        let mut provided = Provided::default();
        let records = self.records();
        let candidates: Vec<(PackageRecord, Option<Wanted>)> = match wanted {
            Some(wanted) => {
                let by_sha512: HashMap<&str, &PackageRecord> =
                    records.iter().map(|r| (r.sha512.as_str(), r)).collect();
                let by_sha256: HashMap<&str, &PackageRecord> = records
                    .iter()
                    .map(|r| (r.entry.sha256.as_str(), r))
                    .collect();
                let mut out = vec![];
                for want in wanted {
                    let found = match &want.hash {
                        Some(IndexHash::Sha256(h)) => by_sha256.get(h.as_str()),
                        Some(IndexHash::Sha512(h)) => by_sha512.get(h.as_str()),
                        None => None,
                    };
                    match found {
                        // The same bytes under another name would be another package to apt.
                        Some(record) if record.file == want.file => {
                            out.push(((*record).clone(), Some(want.clone())))
                        }
                        _ => provided.missing.push(want.clone()),
                    }
                }
                out
            }
            None => newest_per_package(records, arch)
                .into_iter()
                .map(|r| (r, None))
                .collect(),
        };
        if candidates.is_empty() {
            return Ok(provided);
        }
        let archives = open_or_make_dir(&tree, ARCHIVES)?;
        for (record, want) in candidates {
            let Ok(mut source) = File::open(self.deb_path(&record.entry.key)) else {
                provided.missing.extend(want);
                continue;
            };
            let shown = root.join(ARCHIVES).join(&record.file);
            let (bytes, digest) = copy_into(&mut source, &archives, &record.file, &shown)?;
            if digest != record.entry.key {
                let _ = unlinkat(&archives, record.file.as_str(), UnlinkatFlags::NoRemoveDir);
                self.drop_entry(&record.entry.key)?;
                provided.dropped.push(record.file);
                provided.missing.extend(want);
                continue;
            }
            provided.files += 1;
            provided.bytes += bytes;
            self.touch(&record.entry.key)?;
        }
        Ok(provided)
    }

    /// Keeps the `.deb` files in the tree's apt archive that the cache does not hold yet.
    pub fn store(&self, root: &Path) -> Result<Stored> {
        let mut stored = Stored::default();
        let tree = open_tree(root)?;
        let archives = match tree.open_dir(Path::new(ARCHIVES)) {
            Ok(dir) => dir,
            Err(e) if e.is_not_found() => return Ok(stored),
            Err(e) => return Err(e.into()),
        };
        let dir = self.dir();
        crate::fsutil::create_owned_dir(&dir)?;
        for name in entry_names(&archives)? {
            let Some(file) = name.to_str() else { continue };
            let Some((package, version, arch)) = parse_file_name(file) else {
                continue;
            };
            let Some(mut source) = open_regular_at(&archives, &name)? else {
                continue;
            };
            let temp = tempfile::Builder::new()
                .prefix(".incoming.")
                .suffix(".partial")
                .tempfile_in(&dir)
                .map_err(|e| crate::fsutil::io_error(e, "writing into", &dir))?;
            let mut sha256 = Sha256::new();
            let mut sha512 = Sha512::new();
            let bytes = {
                let mut writer = io::BufWriter::with_capacity(1 << 20, temp.as_file());
                let bytes = copy_hashing(&mut source, &mut writer, &mut sha256, Some(&mut sha512))
                    .map_err(|e| {
                        crate::fsutil::io_error(e, "caching", &root.join(ARCHIVES).join(file))
                    })?;
                writer
                    .flush()
                    .map_err(|e| crate::fsutil::io_error(e, "writing into", &dir))?;
                bytes
            };
            let key = hex::encode(sha256.finalize());
            if self.read_record(&key).is_some() && self.deb_path(&key).exists() {
                continue;
            }
            let now = now();
            let record = PackageRecord {
                entry: super::Record {
                    kind: Kind::Package.name().into(),
                    key: key.clone(),
                    name: format!("{package} {version} {arch}"),
                    sha256: key.clone(),
                    bytes,
                    created: now,
                    last_used: now,
                    inputs: None,
                },
                package,
                version,
                arch,
                file: file.to_string(),
                sha512: hex::encode(sha512.finalize()),
            };
            let _lock = self.cache.lock()?;
            let deb = self.deb_path(&key);
            let _ = std::fs::remove_file(self.record_path(&key));
            let persisted = temp
                .persist(&deb)
                .map_err(|e| crate::fsutil::io_error(e.error, "renaming into", &deb))?;
            use std::os::unix::fs::PermissionsExt;
            persisted.set_permissions(std::fs::Permissions::from_mode(0o644))?;
            write_record(&self.record_path(&key), &record)?;
            stored.files += 1;
            stored.bytes += bytes;
        }
        Ok(stored)
    }

    fn touch(&self, key: &str) -> Result<()> {
        let _lock = self.cache.lock()?;
        if let Some(mut record) = self.read_record(key) {
            record.entry.last_used = now();
            write_record(&self.record_path(key), &record)?;
        }
        Ok(())
    }

    fn drop_entry(&self, key: &str) -> Result<()> {
        let _lock = self.cache.lock()?;
        let _ = std::fs::remove_file(self.record_path(key));
        let _ = std::fs::remove_file(self.deb_path(key));
        Ok(())
    }

    /// Puts the cached package lists for the tree's apt sources into the tree; false when the
    /// cache has none for them.
    pub fn restore_lists(&self, root: &Path, arch: &str) -> Result<bool> {
        let key = lists_key(root, arch)?;
        let scratch = scratch_dir(self.cache.root())?;
        let unpacked = scratch.path().join("lists");
        match self.cache.restore(Kind::Lists, &key, &unpacked)? {
            Lookup::Hit(_) => {}
            Lookup::Missing | Lookup::Corrupt(_) => return Ok(false),
        }
        let tree = open_tree(root)?;
        let lists = open_or_make_dir(&tree, LISTS)?;
        let mut names: Vec<_> = std::fs::read_dir(&unpacked)?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let Some(text) = name.to_str().filter(|n| is_list_name(n)) else {
                continue;
            };
            let mut source = File::open(unpacked.join(&name))?;
            copy_into(&mut source, &lists, text, &root.join(LISTS).join(text))?;
        }
        Ok(true)
    }

    /// Keeps the tree's package lists for its apt sources (replacing what the cache had for
    /// them); returns how many files.
    pub fn save_lists(&self, root: &Path, arch: &str) -> Result<u64> {
        let key = lists_key(root, arch)?;
        let tree = open_tree(root)?;
        let lists = match tree.open_dir(Path::new(LISTS)) {
            Ok(dir) => dir,
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let scratch = scratch_dir(self.cache.root())?;
        let staging = scratch.path().join("lists");
        std::fs::create_dir(&staging)?;
        let mut count = 0;
        for name in entry_names(&lists)? {
            let Some(text) = name.to_str().filter(|n| is_list_name(n)) else {
                continue;
            };
            let Some(mut source) = open_regular_at(&lists, &name)? else {
                continue;
            };
            let mut out = File::create(staging.join(text))?;
            io::copy(&mut source, &mut out)?;
            count += 1;
        }
        if count > 0 {
            self.cache.store(
                Kind::Lists,
                &key,
                &format!("apt lists {arch}"),
                None,
                &staging,
            )?;
        }
        Ok(count)
    }
}

/// The tree being built, never the host's root: the cache reads and writes a tree's apt
/// archive and lists, and `/` would make those the host's.
fn open_tree(root: &Path) -> Result<TreeRoot> {
    let resolved = root
        .canonicalize()
        .with_context(|| format!("tree {} does not exist", root.display()))?;
    if resolved == Path::new("/") {
        bail!(
            "tree {} is the host's root: the package cache works on a tree being built; pass its directory",
            root.display()
        );
    }
    Ok(TreeRoot::open(&resolved)?)
}

/// Removes the `.deb` files from the tree's apt archive (inside the tree; links are removed,
/// never followed), as `apt-get clean` would.
pub fn empty_archive(root: &Path) -> Result<()> {
    let tree = open_tree(root)?;
    let archives = match tree.open_dir(Path::new(ARCHIVES)) {
        Ok(dir) => dir,
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for name in entry_names(&archives)? {
        if name.as_bytes().ends_with(b".deb") {
            match unlinkat(&archives, name.as_os_str(), UnlinkatFlags::NoRemoveDir) {
                Ok(()) | Err(Errno::ENOENT | Errno::EISDIR) => {}
                Err(e) => {
                    return Err(io::Error::from(e)).with_context(|| {
                        format!("removing {}", root.join(ARCHIVES).join(&name).display())
                    })
                }
            }
        }
    }
    Ok(())
}

/// A private scratch directory inside the cache dir (the same filesystem, removed on drop).
fn scratch_dir(root: &Path) -> Result<tempfile::TempDir> {
    crate::fsutil::create_private_dir(root)?;
    tempfile::Builder::new()
        .prefix(".scratch.")
        .tempdir_in(root)
        .map_err(|e| crate::fsutil::io_error(e, "creating a scratch dir in", root))
}

/// apt's list files: `HOST_PATH_Packages`, `..._InRelease`, ...; not `lock`, `partial` or
/// anything with a path in it.
fn is_list_name(name: &str) -> bool {
    name != "lock"
        && !name.starts_with('.')
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.~_%:".contains(&b))
}

/// The newest version of each package of `arch` (or `all`).
fn newest_per_package(records: Vec<PackageRecord>, arch: &str) -> Vec<PackageRecord> {
    let mut newest: BTreeMap<(String, String), PackageRecord> = BTreeMap::new();
    for record in records {
        if record.arch != arch && record.arch != "all" {
            continue;
        }
        let slot = (record.package.clone(), record.arch.clone());
        let newer = match newest.get(&slot) {
            None => true,
            Some(kept) => match (
                record.version.parse::<debversion::Version>(),
                kept.version.parse::<debversion::Version>(),
            ) {
                (Ok(a), Ok(b)) => a > b,
                _ => record.entry.last_used > kept.entry.last_used,
            },
        };
        if newer {
            newest.insert(slot, record);
        }
    }
    newest.into_values().collect()
}

fn write_record(path: &Path, record: &PackageRecord) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(record)?;
    text.push(b'\n');
    crate::output::write_atomically(path, &text)
}

/// `NAME_VERSION_ARCH.deb` → (name, version, arch); apt writes an epoch's `:` as `%3a`.
pub fn parse_file_name(file: &str) -> Option<(String, String, String)> {
    let stem = file.strip_suffix(".deb")?;
    if !file
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"+-.~_%".contains(&b))
    {
        return None;
    }
    let mut parts = stem.split('_');
    let (name, version, arch) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || name.is_empty() || version.is_empty() || arch.is_empty() {
        return None;
    }
    if name.starts_with('.') {
        return None;
    }
    Some((
        name.to_string(),
        version.replace("%3a", ":").replace("%3A", ":"),
        arch.to_string(),
    ))
}

/// The packages `apt-get --print-uris` lists: `'URI' FILE SIZE HASH` per line. apt prints
/// the MD5 there (for old scripts), so the index's SHA256 comes from the `apt-cache show`
/// stanzas of the same packages that follow the URIs in `text` (`pkg_mgr` asks for them in the
/// same chroot run): a package gets the SHA256 of the one stanza of its name, version and
/// architecture; a SHA256 or SHA512 printed on the line itself is taken as it is. A package with
/// no index hash of those kinds, or with several, is never provided.
pub fn parse_print_uris(text: &str) -> Vec<Wanted> {
    let mut index: HashMap<(String, String, String), Vec<String>> = HashMap::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(|v| v.trim().to_string())
            })
        };
        if let (Some(package), Some(version), Some(arch), Some(sha256)) = (
            field("Package"),
            field("Version"),
            field("Architecture"),
            field("SHA256"),
        ) {
            let hashes = index.entry((package, version, arch)).or_default();
            let sha256 = sha256.to_ascii_lowercase();
            if !hashes.contains(&sha256) {
                hashes.push(sha256);
            }
        }
    }
    text.lines()
        .filter(|line| line.starts_with('\''))
        .filter_map(|line| {
            let rest = &line[line[1..].find('\'')? + 2..];
            let mut words = rest.split_whitespace();
            let file = words.next()?.to_string();
            let bytes = words.next()?.parse().ok()?;
            let (name, version, arch) = parse_file_name(&file)?;
            let printed = words.next().and_then(|h| {
                let (kind, hex) = h.split_once(':')?;
                let hex = hex.to_ascii_lowercase();
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                match kind.to_ascii_uppercase().as_str() {
                    "SHA256" if hex.len() == 64 => Some(IndexHash::Sha256(hex)),
                    "SHA512" if hex.len() == 128 => Some(IndexHash::Sha512(hex)),
                    _ => None,
                }
            });
            let hash = printed.or_else(|| match index.get(&(name, version, arch)) {
                Some(hashes) if hashes.len() == 1 => hashes[0]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit())
                    .then(|| IndexHash::Sha256(hashes[0].clone()))
                    .filter(|_| hashes[0].len() == 64),
                _ => None,
            });
            Some(Wanted { file, hash, bytes })
        })
        .collect()
}

/// What decides a tree's package lists: the architecture and the apt sources (read inside the
/// tree).
fn lists_key(root: &Path, arch: &str) -> Result<String> {
    const MAX: u64 = 1 << 20;
    if !arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') || arch.is_empty() {
        bail!("architecture {arch:?} is not a Debian architecture name");
    }
    let mut hasher = Sha256::new();
    hasher.update(b"apt-lists-v1\0");
    hasher.update(arch.as_bytes());
    hasher.update([0]);
    let mut files = vec!["etc/apt/sources.list".to_string()];
    let tree = open_tree(root)?;
    match tree.open_dir(Path::new("etc/apt/sources.list.d")) {
        Ok(dir) => {
            let mut names: Vec<String> = entry_names(&dir)?
                .into_iter()
                .filter_map(|n| n.to_str().map(str::to_string))
                .filter(|n| n.ends_with(".list") || n.ends_with(".sources"))
                .collect();
            names.sort();
            files.extend(
                names
                    .into_iter()
                    .map(|n| format!("etc/apt/sources.list.d/{n}")),
            );
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e.into()),
    }
    for file in files {
        if let Some(bytes) = crate::inroot::read_if_exists(root, &file, MAX)? {
            hasher.update(file.as_bytes());
            hasher.update([0]);
            hasher.update(&bytes);
            hasher.update([0]);
        }
    }
    Ok(format!("{arch}-{}", &hex::encode(hasher.finalize())[..16]))
}

/// A directory of the tree (resolved inside it), made with its parents when missing.
fn open_or_make_dir(tree: &TreeRoot, relative: &str) -> Result<OwnedFd> {
    let mut walked = PathBuf::new();
    for part in relative.split('/') {
        walked.push(part);
        tree.create_dir(&walked, 0o755)?;
    }
    Ok(tree.open_dir(Path::new(relative))?)
}

/// The names in a directory, sorted (`.` and `..` left out).
fn entry_names(dir: &OwnedFd) -> Result<Vec<OsString>> {
    let mut names = vec![];
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// A regular file in `dir`, never through a symlink (the name itself is not followed); `None`
/// for a symlink, a FIFO, a device or anything else.
fn open_regular_at(dir: &OwnedFd, name: &OsStr) -> Result<Option<File>> {
    let fd = match openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ELOOP | Errno::ENOENT | Errno::ENXIO) => return Ok(None),
        Err(e) => return Err(io::Error::from(e).into()),
    };
    let stat = fstat(&fd)?;
    if SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) != SFlag::S_IFREG {
        return Ok(None);
    }
    Ok(Some(File::from(fd)))
}

/// Writes `source` as `name` in `dir` (replacing a file of that name; a symlink there is
/// removed, never followed); returns its size and sha256.
fn copy_into(source: &mut File, dir: &OwnedFd, name: &str, shown: &Path) -> Result<(u64, String)> {
    match unlinkat(dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => {}
        Err(e) => {
            return Err(io::Error::from(e))
                .with_context(|| format!("replacing {}", shown.display()))
        }
    }
    let fd = openat(
        dir,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(io::Error::from)
    .with_context(|| format!("creating {}", shown.display()))?;
    let mut out = io::BufWriter::with_capacity(1 << 20, File::from(fd));
    let mut hasher = Sha256::new();
    let bytes = copy_hashing(source, &mut out, &mut hasher, None)
        .map_err(|e| crate::fsutil::io_error(e, "writing", shown))?;
    out.flush()
        .map_err(|e| crate::fsutil::io_error(e, "writing", shown))?;
    Ok((bytes, hex::encode(hasher.finalize())))
}

fn copy_hashing(
    source: &mut impl Read,
    out: &mut impl Write,
    sha256: &mut Sha256,
    mut sha512: Option<&mut Sha512>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha256.update(&buf[..n]);
        if let Some(sha512) = sha512.as_deref_mut() {
            sha512.update(&buf[..n]);
        }
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn the_hosts_root_is_never_a_tree() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(dir.path());
        for root in ["/", "/tmp/.."] {
            let err = cache.provide(Path::new(root), None, "amd64").unwrap_err();
            assert!(err.to_string().contains("is the host's root"), "{err}");
            assert!(cache.store(Path::new(root)).is_err());
            assert!(cache.restore_lists(Path::new(root), "amd64").is_err());
            assert!(cache.save_lists(Path::new(root), "amd64").is_err());
            assert!(empty_archive(Path::new(root)).is_err());
        }
    }

    #[test]
    fn file_names_parse_like_apt_writes_them() {
        assert_eq!(
            parse_file_name("libc6_2.41-12_amd64.deb"),
            Some(("libc6".into(), "2.41-12".into(), "amd64".into()))
        );
        assert_eq!(
            parse_file_name("dpkg_1%3a1.22.21_amd64.deb").unwrap().1,
            "1:1.22.21"
        );
        assert_eq!(parse_file_name("a_b.deb"), None);
        assert_eq!(parse_file_name("a_b_c_d.deb"), None);
        assert_eq!(parse_file_name("../x_1_amd64.deb"), None, "no paths");
        assert_eq!(parse_file_name("x_1_amd64.tar"), None);
    }

    #[test]
    fn print_uris_lines_take_the_sha256_of_the_index_stanza() {
        let sha256 = "ab".repeat(32);
        let other = "ef".repeat(32);
        let sha512 = "CD".repeat(64);
        let text = format!(
            "'http://m.invalid/debian/pool/main/l/linux/linux-image-6.12_6.12.1-1_amd64.deb' linux-image-6.12_6.12.1-1_amd64.deb 1234 MD5Sum:00\n\
            'http://m.invalid/ubuntu/pool/main/g/grub/grub-pc_2.12-1_amd64.deb' grub-pc_2.12-1_amd64.deb 99 SHA512:{sha512}\n\
            'http://m.invalid/debian/pool/main/x/x/x_1_amd64.deb' x_1_amd64.deb 9 MD5Sum:00\n\
            'http://m.invalid/debian/pool/main/d/d/dpkg_1%3a1.2_amd64.deb' dpkg_1%3a1.2_amd64.deb 9 MD5Sum:00\n\
            'http://m.invalid/debian/pool/main/x/x/x_1_amd64.deb' ../x_1_amd64.deb 9 MD5Sum:00\n\
            Package: linux-image-6.12\nVersion: 6.12.1-1\nArchitecture: amd64\nDescription: a\n  kernel\nSHA256: {sha256}\n\n\
            Package: x\nVersion: 1\nArchitecture: amd64\nSHA256: {sha256}\n\n\
            Package: x\nVersion: 1\nArchitecture: amd64\nSHA256: {other}\n\n\
            Package: dpkg\nVersion: 1:1.2\nArchitecture: amd64\nSHA256: {other}\n"
        );
        let wanted = parse_print_uris(&text);
        assert_eq!(wanted.len(), 4, "{wanted:?}");
        assert_eq!(wanted[0].file, "linux-image-6.12_6.12.1-1_amd64.deb");
        assert_eq!(wanted[0].bytes, 1234);
        assert_eq!(wanted[0].hash, Some(IndexHash::Sha256(sha256.clone())));
        assert_eq!(
            wanted[1].hash,
            Some(IndexHash::Sha512(sha512.to_ascii_lowercase()))
        );
        assert_eq!(wanted[2].hash, None, "two index hashes: ambiguous");
        assert_eq!(
            wanted[3].hash,
            Some(IndexHash::Sha256(other.clone())),
            "epoch"
        );
        assert_eq!(wanted[0].describe(), "linux-image-6.12 6.12.1-1 (amd64)");
    }

    fn tree_with_debs(root: &Path, debs: &[(&str, &[u8])]) {
        let archives = root.join(ARCHIVES);
        fs::create_dir_all(&archives).unwrap();
        for (name, content) in debs {
            fs::write(archives.join(name), content).unwrap();
        }
    }

    fn sha(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    fn want(file: &str, content: &[u8]) -> Wanted {
        Wanted {
            file: file.into(),
            hash: Some(IndexHash::Sha256(sha(content))),
            bytes: content.len() as u64,
        }
    }

    #[test]
    fn store_then_provide_gives_exactly_what_apt_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(&dir.path().join("cache"));
        let first = dir.path().join("first");
        tree_with_debs(
            &first,
            &[
                ("a_1_amd64.deb", b"aaaa"),
                ("a_2_amd64.deb", b"aaaa2"),
                ("b_2_all.deb", b"bb"),
                ("c_3_arm64.deb", b"c"),
            ],
        );
        fs::write(first.join(ARCHIVES).join("lock"), b"").unwrap();
        assert_eq!(cache.store(&first).unwrap().files, 4);
        assert_eq!(cache.store(&first).unwrap().files, 0, "already cached");
        let records = cache.records();
        assert_eq!(records.len(), 4);
        assert_eq!(records[0].entry.sha256, sha(b"aaaa"));
        assert_eq!(records[0].entry.name, "a 1 amd64");

        // A bootstrap takes the newest of each package of its architecture.
        let second = dir.path().join("second");
        fs::create_dir_all(&second).unwrap();
        let provided = cache.provide(&second, None, "amd64").unwrap();
        assert_eq!(provided.files, 2);
        assert_eq!(
            fs::read(second.join(ARCHIVES).join("a_2_amd64.deb")).unwrap(),
            b"aaaa2"
        );
        assert!(!second.join(ARCHIVES).join("a_1_amd64.deb").exists());
        assert!(!second.join(ARCHIVES).join("c_3_arm64.deb").exists());

        // apt's wants: the right hash is provided; another hash, another name for the same
        // bytes, and unknown files are missing.
        let third = dir.path().join("third");
        fs::create_dir_all(&third).unwrap();
        let wanted = vec![
            want("a_1_amd64.deb", b"aaaa"),
            want("b_2_all.deb", b"other"),
            want("renamed_1_amd64.deb", b"aaaa"),
            Wanted {
                file: "d_4_amd64.deb".into(),
                hash: None,
                bytes: 1,
            },
        ];
        let provided = cache.provide(&third, Some(&wanted), "amd64").unwrap();
        assert_eq!(provided.files, 1);
        assert_eq!(provided.missing.len(), 3);
        assert!(!third.join(ARCHIVES).join("b_2_all.deb").exists());
        assert!(!third.join(ARCHIVES).join("renamed_1_amd64.deb").exists());
        let linked = fs::metadata(third.join(ARCHIVES).join("a_1_amd64.deb")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(linked.nlink(), 1, "copied, never hard-linked");
    }

    #[test]
    fn a_tampered_cached_deb_is_not_provided_and_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(&dir.path().join("cache"));
        let first = dir.path().join("first");
        tree_with_debs(&first, &[("a_1_amd64.deb", b"aaaa")]);
        cache.store(&first).unwrap();
        let key = sha(b"aaaa");
        fs::write(cache.deb_path(&key), b"AAAA").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        let provided = cache
            .provide(&tree, Some(&[want("a_1_amd64.deb", b"aaaa")]), "amd64")
            .unwrap();
        assert_eq!(provided.files, 0);
        assert_eq!(provided.dropped, vec!["a_1_amd64.deb".to_string()]);
        assert_eq!(provided.missing.len(), 1);
        assert!(!tree.join(ARCHIVES).join("a_1_amd64.deb").exists());
        assert!(!cache.deb_path(&key).exists());
        assert!(!cache.record_path(&key).exists());
    }

    #[test]
    fn symlinks_in_a_tree_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(&dir.path().join("cache"));
        let host = dir.path().join("host-secret_1_amd64.deb");
        fs::write(&host, b"host file").unwrap();
        // A link in the archive to a host file: not read.
        let tree = dir.path().join("tree");
        tree_with_debs(&tree, &[]);
        std::os::unix::fs::symlink(&host, tree.join(ARCHIVES).join("evil_1_amd64.deb")).unwrap();
        assert_eq!(cache.store(&tree).unwrap().files, 0);
        // /var/cache/apt -> a host directory: resolved inside the tree, where it is absent.
        let outside = dir.path().join("outside");
        tree_with_debs(&outside, &[("x_1_amd64.deb", b"x")]);
        let other = dir.path().join("other");
        fs::create_dir_all(other.join("var/cache")).unwrap();
        std::os::unix::fs::symlink(outside.join("var/cache/apt"), other.join("var/cache/apt"))
            .unwrap();
        assert_eq!(cache.store(&other).unwrap().files, 0);
        // Providing replaces a planted link, never writes through it.
        tree_with_debs(&first_tree(dir.path()), &[("a_1_amd64.deb", b"aaaa")]);
        cache.store(&first_tree(dir.path())).unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep").unwrap();
        let planted = dir.path().join("planted");
        tree_with_debs(&planted, &[]);
        std::os::unix::fs::symlink(&victim, planted.join(ARCHIVES).join("a_1_amd64.deb")).unwrap();
        let provided = cache
            .provide(&planted, Some(&[want("a_1_amd64.deb", b"aaaa")]), "amd64")
            .unwrap();
        assert_eq!(provided.files, 1);
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(
            !fs::symlink_metadata(planted.join(ARCHIVES).join("a_1_amd64.deb"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    fn first_tree(dir: &Path) -> PathBuf {
        dir.join("first")
    }

    #[test]
    fn lists_are_kept_per_sources_and_architecture() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PackageCache::new(&dir.path().join("cache"));
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc/apt")).unwrap();
        fs::write(
            tree.join("etc/apt/sources.list"),
            "deb http://m.invalid/debian trixie main\n",
        )
        .unwrap();
        fs::create_dir_all(tree.join(LISTS).join("partial")).unwrap();
        let list = "m_dists_trixie_main_binary-amd64_Packages";
        fs::write(tree.join(LISTS).join(list), "P").unwrap();
        fs::write(tree.join(LISTS).join("lock"), "").unwrap();
        assert!(!cache.restore_lists(&tree, "amd64").unwrap(), "nothing yet");
        assert_eq!(cache.save_lists(&tree, "amd64").unwrap(), 1);

        let other = dir.path().join("other");
        fs::create_dir_all(other.join("etc/apt")).unwrap();
        fs::copy(
            tree.join("etc/apt/sources.list"),
            other.join("etc/apt/sources.list"),
        )
        .unwrap();
        assert!(cache.restore_lists(&other, "amd64").unwrap());
        assert_eq!(
            fs::read_to_string(other.join(LISTS).join(list)).unwrap(),
            "P"
        );
        assert!(!cache.restore_lists(&other, "arm64").unwrap());
        fs::write(
            other.join("etc/apt/sources.list"),
            "deb http://m.invalid/debian bookworm main\n",
        )
        .unwrap();
        assert!(
            !cache.restore_lists(&other, "amd64").unwrap(),
            "other sources"
        );
    }
}
