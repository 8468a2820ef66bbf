//! `--base tarball:PATH`: a root tarball made by any tool (`docker export`, `tar -C root -c .`),
//! gzip, zstd or plain (detected). It is unpacked with the OS image rules (no entry escapes the
//! root, nothing is written through a symlink, only file-system object kinds); a `.sha256`
//! beside it is checked when there is one, and is not required.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::archive::{self, UnpackOptions};

/// Before anything runs: the file exists and starts like a tar archive (after decompression).
pub fn check(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| {
        format!(
            "--base tarball:{} cannot be opened: pass an existing root tarball",
            path.display()
        )
    })?;
    let mut decoded = crate::archive::decompressed(file)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut block = [0u8; 512];
    let complete = decoded.read_exact(&mut block).is_ok();
    if !complete || !is_tar_header(&block) {
        bail!(
            "--base tarball:{} is not a tar archive (plain, gzip or zstd): pass a root tarball such as `docker export` writes",
            path.display()
        );
    }
    Ok(())
}

/// Unpacks the tarball into `chroot`; returns the entries and whether a `.sha256` was checked.
pub fn provide(path: &Path, chroot: &Path) -> Result<(u64, bool)> {
    let summary = archive::unpack(path, chroot, &UnpackOptions::default())
        .with_context(|| format!("--base tarball:{}", path.display()))?;
    Ok((summary.entries, summary.checksum_verified))
}

/// A tar header's checksum field matches its bytes (with the field read as spaces).
fn is_tar_header(block: &[u8; 512]) -> bool {
    let field = &block[148..156];
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let Ok(stored) = u32::from_str_radix(text.trim(), 8) else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                *b as u32
            }
        })
        .sum();
    stored == sum && block.iter().any(|b| *b != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_are_told_from_other_bytes() {
        let mut header = tar::Header::new_gnu();
        header.set_path("etc/passwd").unwrap();
        header.set_size(0);
        header.set_cksum();
        assert!(is_tar_header(header.as_bytes()));
        assert!(!is_tar_header(&[0u8; 512]));
        let mut text = [b'x'; 512];
        text[0] = b'#';
        assert!(!is_tar_header(&text));
    }

    #[test]
    fn check_refuses_what_is_not_a_tarball() {
        let dir = tempfile::tempdir().unwrap();
        let not_tar = dir.path().join("notes.txt");
        std::fs::write(&not_tar, "hello ".repeat(200)).unwrap();
        let err = check(&not_tar).unwrap_err().to_string();
        assert!(err.contains("is not a tar archive"), "{err}");
        assert!(check(&dir.path().join("missing.tar")).is_err());
    }
}
