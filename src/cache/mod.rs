//! The build cache under `--cache-dir`: content-addressed entries of several kinds (bootstrapped
//! bases, stage layers, apt package lists, packages), each `CACHE/KIND/KEY.tar.zst` (our own
//! archive format, which keeps owners, devices, xattrs, overlay whiteouts and opaque dirs; a
//! package is its `.deb` as apt downloaded it, see [`packages`]) with a record `KEY.json` beside
//! it: the archive's sha256 and size, when it was made and last used, and
//! (for layers) the inputs its key hashes, which explain a later miss.
//!
//! An entry is written under a temporary name and renamed, then its record is written the same
//! way: an archive without a record (a crash in between, an older version's file) is never
//! used. An entry whose archive does not match its record is removed and rebuilt, never used.
//! Store, delete and prune hold `CACHE/.lock`; readers verify the archive on the handle they
//! unpack from, so a concurrent rename cannot slip another file under them.

pub mod listing;
pub mod packages;

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::archive::{self, Compression, PackOptions};
use crate::layers::key::LayerInputs;

pub use listing::{prune, render_list, Listed, PrunePolicy};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bootstrapped base (mmdebstrap/debootstrap output).
    Base,
    /// The upper dir of one stage run on one parent.
    Layer,
    /// apt's package lists for one set of sources and one architecture.
    Lists,
    /// One downloaded `.deb` (see [`packages`]).
    Package,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Base, Kind::Layer, Kind::Lists, Kind::Package];

    /// The directory of this kind's entries.
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Base => "base",
            Kind::Layer => "layers",
            Kind::Lists => "apt-lists",
            Kind::Package => "packages",
        }
    }

    /// The name `cache ls` shows.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Base => "base",
            Kind::Layer => "layer",
            Kind::Lists => "lists",
            Kind::Package => "package",
        }
    }

    /// How an entry's data file ends: our archive, or a package as apt downloaded it.
    pub fn suffix(self) -> &'static str {
        match self {
            Kind::Package => ".deb",
            _ => ".tar.zst",
        }
    }
}

/// What `KEY.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub kind: String,
    pub key: String,
    /// The stage's name, or the base's suite and arch.
    pub name: String,
    /// sha256 of `KEY.tar.zst`.
    pub sha256: String,
    pub bytes: u64,
    /// Seconds since the epoch.
    pub created: u64,
    pub last_used: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<LayerInputs>,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Hit(Record),
    Missing,
    /// The entry was there but broken (why): removed when its record proved it damaged, left
    /// to be replaced when it has no record.
    Corrupt(String),
}

/// The file that makes a directory a cache of ours (see [`Cache::check_ours`]).
pub const MARKER: &str = ".stemcell-builder-cache";

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn archive_path(&self, kind: Kind, key: &str) -> PathBuf {
        self.root
            .join(kind.dir())
            .join(format!("{key}{}", kind.suffix()))
    }

    fn record_path(&self, kind: Kind, key: &str) -> PathBuf {
        self.root.join(kind.dir()).join(format!("{key}.json"))
    }

    /// Fails unless the root is a cache a build of ours wrote to (it holds [`MARKER`]): `cache
    /// ls` and `cache prune` read and delete only there, never in a directory someone pointed
    /// `--cache-dir` at by mistake, and never through a symlinked kind directory.
    pub fn check_ours(&self) -> Result<()> {
        let root = self.root.display();
        match std::fs::metadata(&self.root) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "cache dir {root} does not exist: nothing is cached there yet (pass the --cache-dir your builds use)"
            ),
            Err(e) => return Err(crate::fsutil::io_error(e, "cannot read cache dir", &self.root)),
            Ok(meta) if !meta.is_dir() => {
                bail!("cache dir {root} is not a directory: pass the --cache-dir your builds use")
            }
            Ok(_) => {}
        }
        if !self
            .root
            .join(MARKER)
            .symlink_metadata()
            .is_ok_and(|m| m.is_file())
        {
            bail!(
                "{root} is not a stemcell-builder cache (it has no {MARKER}, which a build writes when it first stores there): refusing to read or prune it; pass the --cache-dir your builds use"
            );
        }
        for kind in Kind::ALL {
            let dir = self.root.join(kind.dir());
            if dir.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
                bail!(
                    "{} is not a directory (a symlink?): refusing to read or prune through it; remove it and let the next build make it again",
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// The cache's lock, held while entries are renamed in, deleted or pruned. Taking it marks
    /// the root as a cache of ours.
    pub(crate) fn lock(&self) -> Result<Flock<File>> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| crate::fsutil::io_error(e, "creating", &self.root))?;
        let marker = self.root.join(MARKER);
        if marker.symlink_metadata().is_err() {
            std::fs::write(
                &marker,
                "stemcell-builder's cache: `stemcell-builder cache ls` shows it, `cache prune` bounds it\n",
            )
            .map_err(|e| crate::fsutil::io_error(e, "creating", &marker))?;
        }
        let path = self.root.join(".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| errno)
            .with_context(|| format!("locking {}", path.display()))
    }

    fn read_record(&self, kind: Kind, key: &str) -> Result<Option<(Record, Vec<u8>)>, String> {
        let path = self.record_path(kind, key);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(record) if record.key == key => Ok(Some((record, bytes))),
            Ok(_) => Err(format!("{} names another key", path.display())),
            Err(e) => Err(format!("{} is malformed: {e}", path.display())),
        }
    }

    /// Opens the entry and checks it against its record; returns the handle it verified.
    fn open_verified(&self, kind: Kind, key: &str) -> Result<Result<(Record, File), Lookup>> {
        check_key(key)?;
        let archive = self.archive_path(kind, key);
        let (record, raw) = match self.read_record(kind, key) {
            Ok(Some(found)) => found,
            // An archive without a record is half-written or not ours to trust: not used, and
            // replaced when this key is stored.
            Ok(None) if archive.exists() => {
                return Ok(Err(Lookup::Corrupt(format!(
                    "{} has no record beside it: half-written, or from an older version",
                    archive.display()
                ))))
            }
            Ok(None) => return Ok(Err(Lookup::Missing)),
            Err(why) => return Ok(Err(self.discard(kind, key, None, why)?)),
        };
        let mut file = match File::open(&archive) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let why = format!("{} is missing", archive.display());
                return Ok(Err(self.discard(kind, key, Some(&raw), why)?));
            }
            Err(e) => return Err(crate::fsutil::io_error(e, "opening", &archive)),
        };
        let size = file.metadata()?.len();
        if size != record.bytes {
            let why = format!(
                "{} has {size} bytes, its record says {}",
                archive.display(),
                record.bytes
            );
            return Ok(Err(self.discard(kind, key, Some(&raw), why)?));
        }
        let digest =
            sha256_reader(&mut file).with_context(|| format!("reading {}", archive.display()))?;
        if digest != record.sha256 {
            let why = format!(
                "{} has sha256 {digest}, its record says {}",
                archive.display(),
                record.sha256
            );
            return Ok(Err(self.discard(kind, key, Some(&raw), why)?));
        }
        file.rewind()?;
        Ok(Ok((record, file)))
    }

    /// Removes a broken entry (unless another build replaced its record meanwhile).
    fn discard(&self, kind: Kind, key: &str, seen: Option<&[u8]>, why: String) -> Result<Lookup> {
        let _lock = self.lock()?;
        let record = self.record_path(kind, key);
        let current = std::fs::read(&record).ok();
        if current.as_deref() == seen || seen.is_none() {
            let _ = std::fs::remove_file(&record);
            let _ = std::fs::remove_file(self.archive_path(kind, key));
        }
        Ok(Lookup::Corrupt(why))
    }

    /// Checks an entry without unpacking it.
    pub fn lookup(&self, kind: Kind, key: &str) -> Result<Lookup> {
        Ok(match self.open_verified(kind, key)? {
            Ok((record, _)) => Lookup::Hit(record),
            Err(lookup) => lookup,
        })
    }

    /// Unpacks the entry into `target` (which must not exist) when it is there and intact.
    pub fn restore(&self, kind: Kind, key: &str, target: &Path) -> Result<Lookup> {
        let (record, file) = match self.open_verified(kind, key)? {
            Ok(found) => found,
            Err(lookup) => return Ok(lookup),
        };
        let archive = self.archive_path(kind, key);
        if let Err(err) = archive::unpack_reader(
            file,
            &archive,
            target,
            // Layers hold overlayfs whiteouts (0:0 character devices) anywhere in the tree;
            // the entry is ours and its checksum was verified on this very file handle.
            archive::DevicePolicy::All,
        ) {
            let _ = crate::fsutil::remove_tree(target);
            return Err(err.context(format!(
                "restoring {} (`stemcell-builder cache prune` or deleting it rebuilds it)",
                archive.display()
            )));
        }
        self.touch(kind, key)?;
        Ok(Lookup::Hit(record))
    }

    /// Records that the entry was used now (for `cache ls` and `prune`).
    pub fn touch(&self, kind: Kind, key: &str) -> Result<()> {
        let _lock = self.lock()?;
        if let Ok(Some((mut record, _))) = self.read_record(kind, key) {
            record.last_used = now();
            write_record(&self.record_path(kind, key), &record)?;
        }
        Ok(())
    }

    /// Packs `tree` as the entry `key` (replacing one of the same key).
    pub fn store(
        &self,
        kind: Kind,
        key: &str,
        name: &str,
        inputs: Option<&LayerInputs>,
        tree: &Path,
    ) -> Result<Record> {
        check_key(key)?;
        let dir = self.root.join(kind.dir());
        crate::fsutil::create_owned_dir(&dir)?;
        let archive = self.archive_path(kind, key);
        let pending = crate::output::PendingOutput::new(&archive)?;
        let (writer, hasher) = crate::checksum::HashingWriter::new(
            std::io::BufWriter::with_capacity(1 << 20, pending.file()?),
        );
        let options = PackOptions {
            compression: Compression::Zstd,
            zstd_level: 3,
            // The layer as it is: a cached entry must restore what the stage made.
            source_date_epoch: None,
            ..PackOptions::default()
        };
        archive::pack(tree, writer, &options, &mut |_| {})
            .map_err(|e| crate::fsutil::explain_disk_full(e, &archive))?;
        let sha256 = crate::checksum::finish_digest(&hasher);
        let bytes = std::fs::metadata(pending.path())?.len();
        let now = now();
        let record = Record {
            kind: kind.name().into(),
            key: key.into(),
            name: name.into(),
            sha256,
            bytes,
            created: now,
            last_used: now,
            inputs: inputs.cloned(),
        };
        let _lock = self.lock()?;
        // Record gone first: a reader never pairs the old record with the new archive.
        let _ = std::fs::remove_file(self.record_path(kind, key));
        pending.commit()?;
        write_record(&self.record_path(kind, key), &record)?;
        Ok(record)
    }

    /// Every intact-looking record of a kind (not verified: for explaining misses).
    pub fn records(&self, kind: Kind) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(self.root.join(kind.dir())) else {
            return vec![];
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let key = name.strip_suffix(".json")?;
                self.read_record(kind, key).ok().flatten().map(|(r, _)| r)
            })
            .collect()
    }
}

fn write_record(path: &Path, record: &Record) -> Result<()> {
    let mut text = serde_json::to_vec_pretty(record)?;
    text.push(b'\n');
    crate::output::write_atomically(path, &text)
}

/// Keys become file names: hex digests, or a base's `SUITE-ARCH-HEX`.
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        || key.starts_with('.')
    {
        bail!("cache key {key:?} is not a plain name");
    }
    Ok(())
}

fn sha256_reader(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> PathBuf {
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), "layer\n").unwrap();
        tree
    }

    #[test]
    fn a_stored_entry_restores_and_a_damaged_one_is_removed_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let tree = tree(dir.path());
        let record = cache
            .store(Kind::Layer, "abc123", "stage", None, &tree)
            .unwrap();
        assert_eq!(record.name, "stage");
        let target = dir.path().join("restored");
        assert!(matches!(
            cache.restore(Kind::Layer, "abc123", &target).unwrap(),
            Lookup::Hit(_)
        ));
        assert_eq!(
            std::fs::read_to_string(target.join("etc/hostname")).unwrap(),
            "layer\n"
        );

        // Same size, one byte flipped.
        let archive = cache.archive_path(Kind::Layer, "abc123");
        let mut bytes = std::fs::read(&archive).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&archive, &bytes).unwrap();
        let target = dir.path().join("again");
        match cache.restore(Kind::Layer, "abc123", &target).unwrap() {
            Lookup::Corrupt(why) => assert!(why.contains("sha256"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(!target.exists(), "nothing unpacked from a corrupt entry");
        assert!(!archive.exists(), "the corrupt entry is gone");
        assert!(matches!(
            cache.lookup(Kind::Layer, "abc123").unwrap(),
            Lookup::Missing
        ));
    }

    #[test]
    fn an_archive_without_its_record_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let tree = tree(dir.path());
        cache
            .store(Kind::Base, "trixie-amd64-1", "b", None, &tree)
            .unwrap();
        std::fs::remove_file(cache.record_path(Kind::Base, "trixie-amd64-1")).unwrap();
        assert!(matches!(
            cache.lookup(Kind::Base, "trixie-amd64-1").unwrap(),
            Lookup::Corrupt(why) if why.contains("no record")
        ));
        // A truncated archive (its record from a complete one).
        cache
            .store(Kind::Base, "trixie-amd64-1", "b", None, &tree)
            .unwrap();
        let archive = cache.archive_path(Kind::Base, "trixie-amd64-1");
        let bytes = std::fs::read(&archive).unwrap();
        std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            cache.lookup(Kind::Base, "trixie-amd64-1").unwrap(),
            Lookup::Corrupt(_)
        ));
    }

    #[test]
    fn keys_are_plain_names() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(check_key(bad).is_err(), "{bad}");
        }
        assert!(check_key("trixie-amd64-02820fce24921d2d").is_ok());
    }

    #[test]
    fn a_kind_dir_linked_to_a_host_directory_is_refused_and_the_directory_left_as_it_was() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        std::fs::create_dir(&host).unwrap();
        std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&host, root.join(Kind::Layer.dir())).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("etc")).unwrap();
        std::fs::write(tree.join("etc/hostname"), "layer\n").unwrap();
        let cache = Cache::new(&root);
        let err = cache
            .store(Kind::Layer, "k1", "01-x", None, &tree)
            .unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("is a symlink") && !text.contains('\n'),
            "{text}"
        );
        let meta = std::fs::metadata(&host).unwrap();
        assert_eq!(
            meta.permissions().mode() & 0o777,
            0o755,
            "the host dir's mode"
        );
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            0,
            "nothing written there"
        );
    }
}
