//! `inspect`: reads a stemcell tarball as a director would and checks it: exactly the six
//! members in order, a manifest with everything a director needs, `sha1` matching `image`,
//! an `image` holding what its format promises, and SBOMs that parse as what they claim.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};

use super::manifest::StemcellManifest;
use super::tarball::MEMBERS;

pub struct Inspection {
    pub manifest: StemcellManifest,
    pub manifest_text: String,
    pub image_files: Vec<String>,
    pub packages: usize,
}

fn open(path: &Path) -> Result<tar::Archive<flate2::read::MultiGzDecoder<BufReader<File>>>> {
    let file =
        File::open(path).with_context(|| format!("cannot open stemcell {}", path.display()))?;
    Ok(tar::Archive::new(flate2::read::MultiGzDecoder::new(
        BufReader::new(file),
    )))
}

pub fn inspect(path: &Path) -> Result<Inspection> {
    let broken = |why: String| anyhow::anyhow!("{} is not a valid stemcell: {why}", path.display());
    let mut names = vec![];
    let mut manifest_text = String::new();
    let mut image_sha1 = String::new();
    let mut packages = 0;
    let mut archive = open(path)?;
    for entry in archive
        .entries()
        .map_err(|e| broken(format!("not a gzip tar ({e})")))?
    {
        let mut entry = entry.map_err(|e| broken(format!("unreadable ({e})")))?;
        let name = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        match name.as_str() {
            "stemcell.MF" => {
                entry.read_to_string(&mut manifest_text)?;
            }
            "image" => {
                let mut hasher = Sha1::new();
                std::io::copy(&mut entry, &mut hasher)?;
                image_sha1 = hex::encode(hasher.finalize());
            }
            "packages.txt" => {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                packages = text.lines().count();
            }
            "sbom.spdx.json" | "sbom.cdx.json" => {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                let doc: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| broken(format!("{name} is not JSON ({e})")))?;
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
        names.push(name);
    }
    if names != MEMBERS {
        bail!(broken(format!(
            "members are [{}], expected [{}] in that order",
            names.join(", "),
            MEMBERS.join(", ")
        )));
    }
    let manifest: StemcellManifest = serde_yaml_ng::from_str(&manifest_text)
        .map_err(|e| broken(format!("stemcell.MF is malformed ({e})")))?;
    let problems = manifest.problems();
    if !problems.is_empty() {
        bail!(broken(format!("stemcell.MF: {}", problems.join("; "))));
    }
    if manifest.sha1 != image_sha1 {
        bail!(broken(format!(
            "stemcell.MF says sha1 {} but image has {image_sha1}",
            manifest.sha1
        )));
    }
    let image_files = image_listing(path)?;
    let expected = expected_image_files(&manifest);
    if let Some(missing) = expected
        .iter()
        .find(|f| !image_files.iter().any(|n| n == *f))
    {
        bail!(broken(format!(
            "image has no {missing} (format {})",
            manifest.stemcell_formats.join(", ")
        )));
    }
    Ok(Inspection {
        manifest,
        manifest_text,
        image_files,
        packages,
    })
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

/// The entry names inside `image` (a second pass: the first one only hashed it).
fn image_listing(path: &Path) -> Result<Vec<String>> {
    let mut archive = open(path)?;
    for entry in archive.entries()? {
        let entry = entry?;
        if entry.path()?.to_string_lossy().trim_start_matches("./") == "image" {
            let mut inner = tar::Archive::new(flate2::read::MultiGzDecoder::new(entry));
            let mut names = vec![];
            for item in inner
                .entries()
                .with_context(|| format!("{}: image is not a gzip tar", path.display()))?
            {
                let item =
                    item.with_context(|| format!("{}: image is truncated", path.display()))?;
                names.push(String::from_utf8_lossy(&item.path_bytes()).into_owned());
            }
            return Ok(names);
        }
    }
    bail!("{} has no image", path.display())
}
