//! SHA-256 digests of artifacts and the `NAME.sha256` sidecar (sha256sum format, so
//! `sha256sum -c` works on it).
//!
//! A sidecar is always written after its artifact (`os_image::write_os_image`, the S3
//! download): a valid pair has a sidecar at least as new as the file it describes. A sidecar
//! older than its file is what an interrupted rebuild leaves (new image, old checksum); a
//! reader never takes its digest as the truth: it hashes the file, and on a mismatch says the
//! sidecar is stale rather than the file corrupt.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

pub fn sidecar_path(artifact: &Path) -> PathBuf {
    let mut name = artifact.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

/// The sidecar's line: `HEX  FILENAME`.
pub fn sidecar_line(digest: &str, artifact: &Path) -> String {
    let name = artifact
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    format!("{digest}  {name}\n")
}

/// The digest in a sidecar's text: a bare digest or sha256sum's `HEX  NAME`.
pub fn parse_sidecar(text: &str) -> Option<String> {
    let digest = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    (digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then_some(digest)
}

/// A sidecar is one line; anything larger is not one.
const MAX_SIDECAR: u64 = 64 << 10;

/// Reads the digest from a sidecar file (a regular file of at most 64 KiB).
pub fn read_sidecar(path: &Path) -> Result<String> {
    let file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_SIDECAR {
        bail!(
            "{} is not a checksum file: regenerate it with `sha256sum`",
            path.display()
        );
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIDECAR)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    match parse_sidecar(&text) {
        Some(digest) => Ok(digest),
        None => bail!(
            "{} does not hold a sha256 digest: regenerate it with `sha256sum`",
            path.display()
        ),
    }
}

/// Checks `artifact` against its sidecar when one exists. Returns whether a check was made.
pub fn verify_sidecar(artifact: &Path) -> Result<bool> {
    if sidecar_path(artifact).symlink_metadata().is_err() {
        return Ok(false);
    }
    let actual = sha256_file(artifact)?;
    check_sidecar(artifact, &actual)
}

/// Compares `actual` (the artifact's digest, already computed) with the sidecar beside it,
/// when there is one. Returns whether a sidecar was there. A mismatch with a sidecar older
/// than the artifact is named as a stale sidecar, with its fix.
pub fn check_sidecar(artifact: &Path, actual: &str) -> Result<bool> {
    let sidecar = sidecar_path(artifact);
    if sidecar.symlink_metadata().is_err() {
        return Ok(false);
    }
    let expected = read_sidecar(&sidecar)?;
    if expected == actual {
        return Ok(true);
    }
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(file_time), Some(sidecar_time)) = (modified(artifact), modified(&sidecar)) {
        if sidecar_time < file_time {
            bail!(
                "{} is older than {} and does not match it: it describes an earlier file (a build or copy stopped between the two); rebuild {}, or if this file is right, run `sha256sum {} > {}`",
                sidecar.display(),
                artifact.display(),
                artifact.display(),
                artifact.display(),
                sidecar.display()
            );
        }
    }
    bail!(
        "checksum mismatch for {}: {} says {expected}, the file has {actual}; download or build it again",
        artifact.display(),
        sidecar.display()
    )
}

/// A writer that hashes what passes through; the digest is shared so it can be read after the
/// writer has moved into a compressor thread.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Arc<Mutex<Sha256>>,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> (Self, Arc<Mutex<Sha256>>) {
        let hasher = Arc::new(Mutex::new(Sha256::new()));
        (
            Self {
                inner,
                hasher: hasher.clone(),
            },
            hasher,
        )
    }
}

pub fn finish_digest(hasher: &Arc<Mutex<Sha256>>) -> String {
    hex::encode(hasher.lock().expect("hasher poisoned").clone().finalize())
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher
            .lock()
            .expect("hasher poisoned")
            .update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
