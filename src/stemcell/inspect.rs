//! `inspect`: reads a stemcell tarball as a director would and checks it: exactly the six
//! members in order, a manifest with everything a director needs, `sha1` matching `image`,
//! an `image` holding what its format promises, and SBOMs that parse as what they claim.
//!
//! A stemcell may come from anywhere, so every read is bounded before it starts: members by
//! their declared size (the manifest 1 MiB, the lists 16 MiB, each SBOM 64 MiB), the whole
//! decompressed stream by what the file's size allows (a stemcell is mostly the already
//! compressed `image`, so it barely expands; a compression bomb does), names and pax headers
//! by [`crate::archive::members`], and the manifest's nesting before libyaml sees it (its
//! scanner slows down quadratically with depth). What is only counted is streamed.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use sha1::{Digest, Sha1};

use super::manifest::StemcellManifest;
use super::tarball::MEMBERS;
use crate::archive::members::{Members, ReadError, Tracked};
use crate::archive::quote::quote;

/// `stemcell.MF` is about 1 KB.
pub const MAX_MANIFEST: u64 = 1 << 20;
/// `packages.txt` and `dev_tools_file_list.txt`: tens of KB in a real stemcell.
pub const MAX_LIST: u64 = 16 << 20;
/// Each SBOM: hundreds of KB in a real stemcell.
pub const MAX_SBOM: u64 = 64 << 20;
/// Flow (`[`, `{`) plus block nesting allowed in the manifest; a real one has 2.
pub const MAX_NESTING: usize = 32;
/// Decompressed bytes allowed per byte of the file, on top of [`SLACK`].
const EXPANSION: u64 = 2;
const SLACK: u64 = 64 << 20;
/// Inside `image`, the expected files come first or early; a raw disk of zeros expands a lot,
/// so this only stops the search, never a real image.
const IMAGE_EXPANSION: u64 = 64;

pub struct Inspection {
    pub manifest: StemcellManifest,
    pub manifest_text: String,
    /// What `image` holds that its format promises.
    pub image_holds: Vec<&'static str>,
    pub packages: u64,
}

/// The stemcell's gzip: ours inflates in parallel, anyone else's serially.
type Stream = crate::archive::gzip::ParallelGzipReader;

fn open(
    path: &Path,
) -> Result<(
    tar::Archive<Tracked<Stream>>,
    std::rc::Rc<crate::archive::members::StreamState>,
    u64,
)> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("stemcell {} does not exist", path.display())
        }
        Err(e) => return Err(crate::fsutil::io_error(e, "cannot read stemcell", path)),
    };
    if meta.is_dir() {
        bail!(
            "{} is a directory, not a stemcell: pass the stemcell tarball",
            path.display()
        );
    }
    if meta.len() == 0 {
        bail!("{} is empty, not a stemcell", path.display());
    }
    let file =
        File::open(path).map_err(|e| crate::fsutil::io_error(e, "cannot open stemcell", path))?;
    let limit = meta.len().saturating_mul(EXPANSION).saturating_add(SLACK);
    let (tracked, state) = Tracked::new(
        crate::archive::gzip::decoder(file, crate::archive::decode_threads()),
        limit,
    );
    Ok((tar::Archive::new(tracked), state, limit))
}

pub fn inspect(path: &Path) -> Result<Inspection> {
    let broken = |why: String| anyhow!("{} is not a valid stemcell: {why}", path.display());
    let read_error = |e: ReadError| {
        match e {
        ReadError::NotTar(why) => anyhow!(
            "{} is not a stemcell (a gzip tar): {why}",
            path.display()
        ),
        ReadError::TooLarge(limit) => broken(format!(
            "it expands to more than {limit} bytes, far more than its size allows (a compression bomb?)"
        )),
        other => broken(other.to_string()),
    }
    };
    let mut names: Vec<String> = vec![];
    let mut manifest_text = String::new();
    let mut image_sha1 = String::new();
    let mut image_size = 0;
    let mut packages = 0;
    let (mut archive, state, limit) = open(path)?;
    let mut members = Members::new(&mut archive, state, limit).map_err(read_error)?;
    while let Some(member) = members.next() {
        let mut member = member.map_err(read_error)?;
        let name = String::from_utf8_lossy(&member.name)
            .trim_start_matches("./")
            .to_string();
        if names.len() == MEMBERS.len() {
            bail!(broken(format!(
                "it has more than the {} members a stemcell has (the next is '{}')",
                MEMBERS.len(),
                quote(name.as_bytes())
            )));
        }
        let expected_member = MEMBERS.contains(&name.as_str());
        if expected_member
            && !matches!(
                member.kind,
                tar::EntryType::Regular | tar::EntryType::Continuous
            )
        {
            bail!(broken(format!("{name} is a {:?}, not a file", member.kind)));
        }
        let bound = |limit: u64| -> Result<()> {
            if member.size > limit {
                bail!(broken(format!(
                    "{name} is {} bytes; more than {limit} bytes is not a stemcell's",
                    member.size
                )));
            }
            Ok(())
        };
        let read_all = |entry: &mut dyn Read, limit: u64| -> Result<Vec<u8>> {
            let mut data = Vec::new();
            entry
                .take(limit)
                .read_to_end(&mut data)
                .map_err(|e| read_error(members.stream_error(&e)))?;
            Ok(data)
        };
        match name.as_str() {
            "stemcell.MF" => {
                bound(MAX_MANIFEST)?;
                let data = read_all(&mut member.entry, MAX_MANIFEST)?;
                manifest_text = String::from_utf8(data)
                    .map_err(|_| broken("stemcell.MF is not UTF-8 text".into()))?;
            }
            "image" => {
                let mut hasher = Sha1::new();
                std::io::copy(&mut member.entry, &mut hasher)
                    .map_err(|e| read_error(members.stream_error(&e)))?;
                image_sha1 = hex::encode(hasher.finalize());
                image_size = member.size;
            }
            "packages.txt" => {
                bound(MAX_LIST)?;
                let mut buf = [0u8; 64 << 10];
                loop {
                    let n = member
                        .entry
                        .read(&mut buf)
                        .map_err(|e| read_error(members.stream_error(&e)))?;
                    if n == 0 {
                        break;
                    }
                    packages += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
                }
            }
            "dev_tools_file_list.txt" => bound(MAX_LIST)?,
            "sbom.spdx.json" | "sbom.cdx.json" => {
                bound(MAX_SBOM)?;
                let data = read_all(&mut member.entry, MAX_SBOM)?;
                // serde_json stops at 128 levels of nesting by itself.
                let doc: serde_json::Value = serde_json::from_slice(&data).map_err(|e| {
                    broken(format!(
                        "{name} is not JSON ({})",
                        quote(e.to_string().as_bytes())
                    ))
                })?;
                let ok = if name == "sbom.spdx.json" {
                    doc["spdxVersion"] == "SPDX-2.3"
                } else {
                    doc["bomFormat"] == "CycloneDX" && doc["specVersion"] == "1.5"
                };
                if !ok {
                    bail!(broken(format!("{name} is not the SBOM it claims to be")));
                }
            }
            _ => {}
        }
        names.push(quote(name.as_bytes()));
    }
    drop(members);
    if names != MEMBERS {
        bail!(broken(format!(
            "members are [{}], expected [{}] in that order",
            names.join(", "),
            MEMBERS.join(", ")
        )));
    }
    check_nesting(&manifest_text).map_err(|why| broken(format!("stemcell.MF {why}")))?;
    let manifest: StemcellManifest = serde_yaml_ng::from_str(&manifest_text).map_err(|e| {
        broken(format!(
            "stemcell.MF is malformed ({})",
            quote(e.to_string().as_bytes())
        ))
    })?;
    let problems = manifest.problems();
    if !problems.is_empty() {
        bail!(broken(format!(
            "stemcell.MF: {}",
            quote(problems.join("; ").as_bytes())
        )));
    }
    if manifest.sha1 != image_sha1 {
        bail!(broken(format!(
            "stemcell.MF says sha1 {} but image has {image_sha1}",
            quote(manifest.sha1.as_bytes())
        )));
    }
    let expected = expected_image_files(&manifest);
    let image_holds = find_in_image(path, image_size, &expected)?;
    Ok(Inspection {
        manifest,
        manifest_text,
        image_holds,
        packages,
    })
}

/// Refuses YAML nested deeper than [`MAX_NESTING`], counted on the raw text: every `[` and
/// `{` (quoted or not: over-counting only refuses absurd manifests, under-counting would let
/// one through), plus each line's indentation and compact `- `/`? ` indicators.
pub fn check_nesting(text: &str) -> std::result::Result<(), String> {
    let mut flow: usize = 0;
    for (number, line) in text.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let mut rest = &line.as_bytes()[indent..];
        let mut compact = 0;
        while rest.len() >= 2 && (rest[0] == b'-' || rest[0] == b'?') && rest[1] == b' ' {
            compact += 1;
            rest = &rest[2..];
            while rest.first() == Some(&b' ') {
                rest = &rest[1..];
            }
        }
        let block = indent / 2 + compact;
        for b in line.bytes() {
            match b {
                b'[' | b'{' => flow += 1,
                b']' | b'}' => flow = flow.saturating_sub(1),
                _ => {}
            }
            if flow + block > MAX_NESTING {
                return Err(format!(
                    "nests deeper than {MAX_NESTING} levels (line {}); a stemcell manifest has 2",
                    number + 1
                ));
            }
        }
        if block > MAX_NESTING {
            return Err(format!(
                "nests deeper than {MAX_NESTING} levels (line {}); a stemcell manifest has 2",
                number + 1
            ));
        }
    }
    Ok(())
}

/// What `image` must contain for the manifest's format.
fn expected_image_files(manifest: &StemcellManifest) -> Vec<&'static str> {
    let format = manifest
        .stemcell_formats
        .first()
        .map(String::as_str)
        .unwrap_or("");
    match format.rsplit('-').next().unwrap_or("") {
        "tar" | "files" => vec!["./etc/os-release"],
        "rawdisk" => vec!["disk.raw"],
        "raw" | "qcow2" => vec!["root.img"],
        "vhd" => vec!["root.vhd"],
        "ovf" => vec!["image.ovf", "image.mf", "image-disk1.vmdk"],
        _ => vec![],
    }
}

/// Reads `image` (a second pass: the first one only hashed it) until every expected file has
/// been seen; fails when one is missing.
fn find_in_image(
    path: &Path,
    image_size: u64,
    expected: &[&'static str],
) -> Result<Vec<&'static str>> {
    let broken = |why: String| anyhow!("{} is not a valid stemcell: {why}", path.display());
    let (mut archive, state, limit) = open(path)?;
    let mut members =
        Members::new(&mut archive, state, limit).map_err(|e| broken(e.to_string()))?;
    let mut found: Vec<&'static str> = vec![];
    for member in members.by_ref() {
        let member = member.map_err(|e| broken(e.to_string()))?;
        if member.name.strip_prefix(b"./").unwrap_or(&member.name) != b"image" {
            continue;
        }
        let inner_limit = image_size
            .saturating_mul(IMAGE_EXPANSION)
            .saturating_add(SLACK);
        let (tracked, inner_state) =
            Tracked::new(flate2::read::MultiGzDecoder::new(member.entry), inner_limit);
        let mut inner = tar::Archive::new(tracked);
        let mut items = Members::new(&mut inner, inner_state, inner_limit)
            .map_err(|e| broken(format!("image is not a gzip tar ({e})")))?;
        while found.len() < expected.len() {
            let Some(item) = items.next() else { break };
            let item = item.map_err(|e| broken(format!("image is unreadable ({e})")))?;
            if let Some(name) = expected
                .iter()
                .find(|n| n.as_bytes() == item.name.as_slice())
            {
                if !found.contains(name) {
                    found.push(name);
                }
            }
        }
        if let Some(missing) = expected.iter().find(|n| !found.contains(n)) {
            bail!(broken(format!("image has no {missing}")));
        }
        return Ok(found);
    }
    bail!("{} has no image", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_counted_before_parsing() {
        assert!(check_nesting("a: 1\nb:\n  c: [1, {d: 2}]\n- x\n").is_ok());
        assert!(check_nesting(&"[".repeat(100)).is_err());
        assert!(check_nesting(&format!("x: {}", "{a: ".repeat(40))).is_err());
        assert!(check_nesting(&format!("x:\n{}y\n", "- ".repeat(40))).is_err());
        assert!(check_nesting(&format!("{}x: 1\n", " ".repeat(100))).is_err());
        // Balanced brackets on many lines never add up.
        assert!(check_nesting(&"x: [1]\n".repeat(10_000)).is_ok());
    }
}
