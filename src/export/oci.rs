//! An OCI image layout (image-spec v1.1) from an OS image: `oci-layout`, `index.json`, and under
//! `blobs/sha256/` one gzip layer, the config and the manifest. The layer is the OS image's tree
//! streamed into a tar (device nodes dropped) and gzip-compressed in content-defined blocks,
//! hashed on the way in (its `diff_id`) and out (its digest). JSON is written with sorted keys
//! and no spaces, and `created` is `SOURCE_DATE_EPOCH` or the tree's newest mtime, so the same
//! OS image and flags give the same bytes. The layout is built in a temporary directory beside
//! the output and renamed into place when complete.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, HistoryBuilder,
    ImageConfigurationBuilder, ImageIndexBuilder, ImageManifestBuilder, MediaType,
    OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
};
use serde::Serialize;

use super::platform::{self, Platform};
use super::source::Facts;
use super::stream::{Compressor, Digesting, OutCompression};
use super::tar_out::TarOut;
use super::{copy_entries, created, default_cmd, ExportPlan, ExportSummary, Naming, DEFAULT_TAG};

/// The ref name annotation `skopeo`, `podman` and `umoci` resolve `oci:DIR:TAG` with.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

#[derive(Debug, Clone)]
pub struct OciSummary {
    pub tag: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub layer_digest: String,
    pub diff_id: String,
    pub layer_size: u64,
    pub platform: Platform,
}

pub fn write_layout(plan: &ExportPlan, progress: &mut dyn FnMut(u64)) -> Result<ExportSummary> {
    let out_dir = &plan.output;
    check_out_dir(out_dir)?;
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out_dir
        .file_name()
        .with_context(|| format!("{} is not a directory name", out_dir.display()))?
        .to_string_lossy()
        .into_owned();
    let temp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".partial")
        .tempdir_in(&parent)
        .map_err(|e| crate::fsutil::io_error(e, "creating a temporary directory in", &parent))?;
    let blobs = temp.path().join("blobs/sha256");
    fs::create_dir_all(&blobs).map_err(|e| crate::fsutil::io_error(e, "creating", &blobs))?;

    // The layer: tar -> sha256 (diff_id) -> gzip -> sha256 (digest) -> file.
    let layer_temp = blobs.join(".layer.partial");
    let file = fs::File::create(&layer_temp)
        .map_err(|e| crate::fsutil::io_error(e, "creating", &layer_temp))?;
    let compressed = Digesting::new(BufWriter::with_capacity(1 << 20, file));
    let uncompressed = Digesting::new(Compressor::new(compressed, OutCompression::Gzip)?);
    let mut tar = TarOut::new(uncompressed);
    let copied = copy_entries(&plan.image, &mut tar, Naming::Root, true, progress)
        .with_context(|| format!("writing the layer of {}", out_dir.display()))?;
    let facts = &copied.facts;
    plan.settings
        .check_user(facts.file("etc/passwd"), facts.file("etc/group"))?;
    let (gzip, diff_id, _) = tar.finish()?.into_parts();
    let (mut file, layer_digest, layer_size) = gzip.finish()?.into_parts();
    file.flush()
        .map_err(|e| crate::fsutil::io_error(e, "writing", &layer_temp))?;
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    fs::rename(&layer_temp, blobs.join(&layer_digest))
        .map_err(|e| crate::fsutil::io_error(e, "renaming", &layer_temp))?;

    let platform = image_platform(facts, &plan.image)?;
    let created_at = rfc3339(created(facts))?;
    let config = image_config(plan, facts, &platform, &created_at, &diff_id)?;
    let (config_digest, config_size) = write_blob(&blobs, &config)?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(
            MediaType::ImageConfig,
            &config_digest,
            config_size,
        )?)
        .layers(vec![descriptor(
            MediaType::ImageLayerGzip,
            &layer_digest,
            layer_size,
        )?])
        .build()?;
    let (manifest_digest, manifest_size) = write_blob(&blobs, &canonical(&manifest)?)?;
    let tag = plan.tag.clone().unwrap_or_else(|| DEFAULT_TAG.to_string());
    let mut manifest_descriptor =
        descriptor(MediaType::ImageManifest, &manifest_digest, manifest_size)?;
    manifest_descriptor.set_annotations(Some([(REF_NAME.to_string(), tag.clone())].into()));
    manifest_descriptor.set_platform(Some(oci_platform(&platform)?));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_descriptor])
        .build()?;
    write_file(&temp.path().join("index.json"), &canonical(&index)?)?;
    let layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    write_file(&temp.path().join("oci-layout"), &canonical(&layout)?)?;

    // A directory can only be renamed onto an empty one; check_out_dir made sure it is.
    let staged = temp.keep();
    fs::set_permissions(&staged, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    if let Err(e) = fs::rename(&staged, out_dir) {
        let _ = fs::remove_dir_all(&staged);
        return Err(crate::fsutil::io_error(e, "renaming into", out_dir));
    }
    Ok(ExportSummary {
        output: out_dir.clone(),
        entries: facts.entries,
        dropped_devices: copied.dropped_devices,
        checksum_verified: facts.checksum_verified,
        docker_import: None,
        oci: Some(OciSummary {
            tag,
            manifest_digest: format!("sha256:{manifest_digest}"),
            config_digest: format!("sha256:{config_digest}"),
            layer_digest: format!("sha256:{layer_digest}"),
            diff_id: format!("sha256:{diff_id}"),
            layer_size,
            platform,
        }),
    })
}

/// The output must be new, or an empty directory, in an existing directory.
fn check_out_dir(out_dir: &Path) -> Result<()> {
    match fs::symlink_metadata(out_dir) {
        Ok(meta) if meta.is_dir() => {
            let empty = fs::read_dir(out_dir)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                bail!(
                    "{} already exists and is not empty: remove it or choose a new directory for the OCI layout",
                    out_dir.display()
                );
            }
            // rename(2) replaces an empty directory, so it stays until the layout is complete.
            Ok(())
        }
        Ok(_) => bail!(
            "{} already exists and is not a directory: choose a new directory for the OCI layout",
            out_dir.display()
        ),
        Err(_) => {
            if let Some(parent) = out_dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                if !parent.is_dir() {
                    bail!(
                        "output directory {} does not exist: create it or choose another place for the OCI layout",
                        parent.display()
                    );
                }
            }
            Ok(())
        }
    }
}

fn image_platform(facts: &Facts, image: &Path) -> Result<Platform> {
    if let Some(status) = facts.file("var/lib/dpkg/status") {
        let packages = crate::packages::parse_status(&String::from_utf8_lossy(status));
        if let Some(dpkg) = packages.iter().find(|p| p.name == "dpkg") {
            return platform::from_dpkg(&dpkg.arch).with_context(|| {
                format!(
                    "{}: dpkg architecture '{}' has no OCI (Go) name",
                    image.display(),
                    dpkg.arch
                )
            });
        }
    }
    match &facts.elf_header {
        Some(head) => platform::from_elf(head)
            .with_context(|| format!("telling the architecture of {}", image.display())),
        None => bail!(
            "cannot tell the architecture of {}: it has neither a dpkg database nor a program under /usr/bin",
            image.display()
        ),
    }
}

fn image_config(
    plan: &ExportPlan,
    facts: &Facts,
    platform: &Platform,
    created_at: &str,
    diff_id: &str,
) -> Result<Vec<u8>> {
    let settings = &plan.settings;
    let mut config = ConfigBuilder::default().env(settings.env.clone());
    if let Some(user) = &settings.user {
        config = config.user(user.clone());
    }
    if let Some(entrypoint) = &settings.entrypoint {
        config = config.entrypoint(entrypoint.clone());
    }
    if let Some(cmd) = default_cmd(settings, facts) {
        config = config.cmd(cmd);
    }
    if let Some(dir) = &settings.workdir {
        config = config.working_dir(dir.clone());
    }
    let history = HistoryBuilder::default()
        .created(created_at.to_string())
        .created_by("stemcell-builder export --format oci".to_string())
        .comment(format!("OS image sha256:{}", facts.image_sha256))
        .build()?;
    let mut image = ImageConfigurationBuilder::default()
        .created(created_at.to_string())
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::Linux)
        .config(config.build()?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers".to_string())
                .diff_ids(vec![format!("sha256:{diff_id}")])
                .build()?,
        )
        .history(vec![history]);
    if let Some(variant) = &platform.variant {
        image = image.variant(variant.clone());
    }
    canonical(&image.build()?)
}

fn oci_platform(platform: &Platform) -> Result<oci_spec::image::Platform> {
    let mut builder = PlatformBuilder::default()
        .architecture(Arch::from(platform.architecture.as_str()))
        .os(Os::Linux);
    if let Some(variant) = &platform.variant {
        builder = builder.variant(variant.clone());
    }
    Ok(builder.build()?)
}

fn descriptor(media_type: MediaType, hex_digest: &str, size: u64) -> Result<Descriptor> {
    Ok(DescriptorBuilder::default()
        .media_type(media_type)
        .digest(Digest::from_str(&format!("sha256:{hex_digest}"))?)
        .size(size)
        .build()?)
}

/// JSON with its keys sorted and no whitespace: maps (annotations) have no order of their own.
fn canonical(value: &impl Serialize) -> Result<Vec<u8>> {
    // serde_json's Value keeps object keys sorted (BTreeMap without "preserve_order").
    let value = serde_json::to_value(value)?;
    Ok(serde_json::to_vec(&value)?)
}

/// Writes `data` as a blob named by its sha256; returns the digest (hex) and size.
fn write_blob(blobs: &Path, data: &[u8]) -> Result<(String, u64)> {
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(data));
    write_file(&blobs.join(&digest), data)?;
    Ok((digest, data.len() as u64))
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let mut file =
        fs::File::create(path).map_err(|e| crate::fsutil::io_error(e, "creating", path))?;
    file.write_all(data)
        .map_err(|e| crate::fsutil::io_error(e, "writing", path))?;
    file.sync_all()
        .map_err(|e| crate::fsutil::io_error(e, "writing", path))
}

fn rfc3339(seconds: u64) -> Result<String> {
    let time = time::OffsetDateTime::from_unix_timestamp(seconds as i64)
        .with_context(|| format!("{seconds} is not a time"))?;
    Ok(time.format(&time::format_description::well_known::Rfc3339)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_spaces() {
        let mut map = std::collections::HashMap::new();
        for k in ["zeta", "alpha", "mid"] {
            map.insert(k.to_string(), "x".to_string());
        }
        let text = String::from_utf8(canonical(&map).unwrap()).unwrap();
        assert_eq!(text, r#"{"alpha":"x","mid":"x","zeta":"x"}"#);
    }

    #[test]
    fn created_is_rfc3339_utc() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
    }
}
