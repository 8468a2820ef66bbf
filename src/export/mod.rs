//! Container root filesystems from an OS image, streamed entry by entry (nothing is unpacked):
//!
//! - `garden-rootfs`: a gzip tar of `rootfs/` (the tree) and `metadata.json` (`user`, `env`),
//!   the layout of a Cloud Foundry stack package;
//! - `docker`: a plain root tar (`./` entries) that `docker import` takes, with the `--change`
//!   flags that give it the same settings;
//! - `oci`: an OCI image layout directory with one gzip layer, byte-identical for the same OS
//!   image and settings.
//!
//! Owners, modes, mtimes, links and xattrs pass through unchanged. Device nodes stay in the
//! garden tree (grootfs skips them itself) and are dropped from docker and OCI layers: every
//! runtime mounts its own /dev, and a layer with device nodes cannot be unpacked rootless.
//! Outputs are written under a temporary name and renamed when complete.

pub mod oci;
pub mod platform;
pub mod settings;
mod source;
mod stream;
mod tar_out;

use std::collections::HashSet;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tar::EntryType;

use crate::output::PendingOutput;
use crate::progress::Reporter;
pub use settings::ImageSettings;
use source::{Facts, Item};
use stream::{Compressor, OutCompression};
use tar_out::TarOut;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Cloud Foundry stack: `rootfs/` + `metadata.json`, gzip.
    GardenRootfs,
    /// A root tarball for `docker import` (.tar, .tar.gz/.tgz or .tar.zst).
    Docker,
    /// An OCI image layout directory.
    Oci,
}

#[derive(Debug, Clone)]
pub struct ExportPlan {
    pub image: PathBuf,
    pub format: ExportFormat,
    pub output: PathBuf,
    pub settings: ImageSettings,
    /// OCI: the `org.opencontainers.image.ref.name`; docker: the name in the import command.
    pub tag: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ExportSummary {
    pub output: PathBuf,
    pub entries: u64,
    pub dropped_devices: u64,
    pub checksum_verified: bool,
    /// docker: the `docker import` command line that applies the settings.
    pub docker_import: Option<String>,
    pub oci: Option<oci::OciSummary>,
}

/// The OCI tag when `--tag` is not given.
pub const DEFAULT_TAG: &str = "latest";
/// The docker image name when `--tag` is not given.
pub const DEFAULT_DOCKER_NAME: &str = "os-image:latest";

pub fn export(plan: &ExportPlan, reporter: &Reporter) -> Result<ExportSummary> {
    check_plan(plan)?;
    let total = std::fs::metadata(&plan.image).map(|m| m.len()).unwrap_or(0);
    let step = reporter.bytes(&format!("export {}", plan.image.display()), total);
    let started = Instant::now();
    let mut progress = |read: u64| step.position(read);
    let summary = match plan.format {
        ExportFormat::GardenRootfs | ExportFormat::Docker => tarball(plan, &mut progress),
        ExportFormat::Oci => oci::write_layout(plan, &mut progress),
    }
    .map_err(|e| crate::fsutil::explain_disk_full(e, &plan.output))?;
    step.finish(&format!("{} entries", summary.entries), started.elapsed());
    Ok(summary)
}

/// Everything about the flags that can be wrong, before the image is read.
fn check_plan(plan: &ExportPlan) -> Result<()> {
    if let Some(tag) = &plan.tag {
        let ok = !tag.is_empty()
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:/@".contains(&b));
        if !ok {
            bail!("--tag {tag:?}: use letters, digits and . _ - : / @ (e.g. --tag debian-trixie)");
        }
    }
    if plan.format == ExportFormat::Docker {
        docker_compression(&plan.output)?;
    }
    Ok(())
}

/// How entry names are written.
#[derive(Clone, Copy)]
enum Naming {
    /// `./etc/passwd` (docker, OCI).
    Root,
    /// `rootfs/etc/passwd` (garden).
    Garden,
}

impl Naming {
    fn name(self, rel: &[u8], dir: bool) -> Vec<u8> {
        let mut out = match self {
            Naming::Root => b"./".to_vec(),
            Naming::Garden => b"rootfs/".to_vec(),
        };
        out.extend_from_slice(rel);
        if dir && !rel.is_empty() {
            out.push(b'/');
        }
        out
    }
}

/// What copying the entries gave.
struct Copied {
    facts: Facts,
    dropped_devices: u64,
}

/// Streams the OS image's entries into `out` under `naming`, dropping device nodes (and hard
/// links to them) when asked.
fn copy_entries<W: Write>(
    image: &Path,
    out: &mut TarOut<W>,
    naming: Naming,
    drop_devices: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Copied> {
    let mut dropped: HashSet<Vec<u8>> = HashSet::new();
    let mut visit = |item: &Item, data: &mut dyn Read| -> Result<()> {
        let is_device = matches!(item.kind, EntryType::Char | EntryType::Block);
        let links_to_dropped =
            item.kind == EntryType::Link && item.link.as_ref().is_some_and(|l| dropped.contains(l));
        if drop_devices && (is_device || links_to_dropped) {
            dropped.insert(item.rel.clone());
            return Ok(());
        }
        let link = match item.kind {
            EntryType::Link => item.link.as_ref().map(|l| naming.name(l, false)),
            _ => item.link.clone(),
        };
        let entry = Item {
            rel: naming.name(&item.rel, item.kind == EntryType::Directory),
            link,
            ..item.clone()
        };
        if item.kind == EntryType::Regular {
            out.append(&entry, ExactReader::new(data, item.size))?;
        } else {
            out.append(&entry, io::empty())?;
        }
        Ok(())
    };
    let facts = source::read_os_image(image, &mut visit, progress)?;
    Ok(Copied {
        facts,
        dropped_devices: dropped.len() as u64,
    })
}

/// garden-rootfs and docker: one tar file.
fn tarball(plan: &ExportPlan, progress: &mut dyn FnMut(u64)) -> Result<ExportSummary> {
    let (naming, compression, drop_devices) = match plan.format {
        ExportFormat::GardenRootfs => (Naming::Garden, OutCompression::Gzip, false),
        _ => (Naming::Root, docker_compression(&plan.output)?, true),
    };
    let pending = PendingOutput::new(&plan.output)?;
    let writer = BufWriter::with_capacity(1 << 20, pending.file()?);
    let mut out = TarOut::new(Compressor::new(writer, compression)?);
    let copied = copy_entries(&plan.image, &mut out, naming, drop_devices, progress)
        .with_context(|| format!("writing {}", plan.output.display()))?;
    let facts = &copied.facts;
    plan.settings
        .check_user(facts.file("etc/passwd"), facts.file("etc/group"))?;
    if plan.format == ExportFormat::GardenRootfs {
        let metadata = garden_metadata(&plan.settings);
        out.append_file(b"metadata.json", created(facts), &metadata)?;
    }
    let mut writer = out.finish()?.finish()?;
    writer
        .flush()
        .map_err(|e| crate::fsutil::io_error(e, "writing", &plan.output))?;
    drop(writer);
    let output = pending.commit()?;
    let docker_import = (plan.format == ExportFormat::Docker).then(|| {
        docker_import_command(
            &plan.settings,
            default_cmd(&plan.settings, facts).as_deref(),
            &output,
            plan.tag.as_deref().unwrap_or(DEFAULT_DOCKER_NAME),
        )
    });
    Ok(ExportSummary {
        output,
        entries: facts.entries,
        dropped_devices: copied.dropped_devices,
        checksum_verified: facts.checksum_verified,
        docker_import,
        oci: None,
    })
}

/// `metadata.json` of a garden rootfs: `{"user": ..., "env": [...]}` (user `root` by default).
fn garden_metadata(settings: &ImageSettings) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Metadata<'a> {
        user: &'a str,
        env: &'a [String],
    }
    let mut text = serde_json::to_vec_pretty(&Metadata {
        user: settings.user.as_deref().unwrap_or("root"),
        env: &settings.env,
    })
    .expect("plain strings serialize");
    text.push(b'\n');
    text
}

/// The docker output's compression, from its name.
fn docker_compression(output: &Path) -> Result<OutCompression> {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.ends_with(".tar") {
        Ok(OutCompression::None)
    } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
        Ok(OutCompression::Gzip)
    } else if name.ends_with(".tar.zst") {
        Ok(OutCompression::Zstd)
    } else {
        bail!(
            "{}: name the docker tarball .tar, .tar.gz (or .tgz) or .tar.zst; the name says its compression",
            output.display()
        )
    }
}

/// The command a container runs when neither `--cmd` nor `--entrypoint` is given: the
/// tree's shell, when it has one.
fn default_cmd(settings: &ImageSettings, facts: &Facts) -> Option<Vec<String>> {
    if settings.cmd.is_some() || settings.entrypoint.is_some() {
        return settings.cmd.clone();
    }
    ["bin/sh", "usr/bin/sh"]
        .into_iter()
        .find(|p| facts.has(p))
        .map(|p| vec![format!("/{p}")])
}

/// The image's creation time: `SOURCE_DATE_EPOCH`, else the newest mtime in the tree, so the
/// same OS image always gives the same image.
fn created(facts: &Facts) -> u64 {
    crate::archive::source_date_epoch().unwrap_or(facts.newest_mtime)
}

/// `docker import --change ... FILE NAME`, shell-quoted.
fn docker_import_command(
    settings: &ImageSettings,
    cmd: Option<&[String]>,
    file: &Path,
    name: &str,
) -> String {
    let mut changes: Vec<String> = Vec::new();
    for pair in &settings.env {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        changes.push(format!("ENV {key}={}", dockerfile_quote(value)));
    }
    if let Some(user) = &settings.user {
        changes.push(format!("USER {user}"));
    }
    if let Some(dir) = &settings.workdir {
        changes.push(format!("WORKDIR {dir}"));
    }
    if let Some(entrypoint) = &settings.entrypoint {
        changes.push(format!(
            "ENTRYPOINT {}",
            serde_json::to_string(entrypoint).unwrap_or_default()
        ));
    }
    if let Some(cmd) = cmd {
        changes.push(format!(
            "CMD {}",
            serde_json::to_string(cmd).unwrap_or_default()
        ));
    }
    let mut words = vec!["docker".to_string(), "import".to_string()];
    for change in changes {
        words.push("--change".into());
        words.push(change);
    }
    words.push(file.display().to_string());
    words.push(name.to_string());
    shell_words::join(words)
}

/// A Dockerfile ENV value: bare when it has nothing a Dockerfile parses, else double-quoted.
fn dockerfile_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/:._-,+@%=".contains(&b));
    if plain {
        value.to_string()
    } else {
        let escaped = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$");
        format!("\"{escaped}\"")
    }
}

/// Reads exactly `len` bytes, failing instead of writing a short entry.
struct ExactReader<'r> {
    inner: &'r mut dyn Read,
    left: u64,
}

impl<'r> ExactReader<'r> {
    fn new(inner: &'r mut dyn Read, left: u64) -> Self {
        Self { inner, left }
    }
}

impl Read for ExactReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the OS image ends inside a file (truncated)",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_rooted_per_format() {
        assert_eq!(Naming::Root.name(b"", true), b"./");
        assert_eq!(Naming::Root.name(b"etc", true), b"./etc/");
        assert_eq!(Naming::Garden.name(b"", true), b"rootfs/");
        assert_eq!(
            Naming::Garden.name(b"etc/passwd", false),
            b"rootfs/etc/passwd"
        );
    }

    #[test]
    fn docker_import_command_carries_every_setting() {
        let settings = ImageSettings::parse(
            &["GREETING=hello world".into()],
            Some("vcap"),
            None,
            Some("/bin/bash -l"),
            Some("/home/vcap"),
        )
        .unwrap();
        let cmd = docker_import_command(
            &settings,
            settings.cmd.as_deref(),
            Path::new("/tmp/os.tar"),
            "trixie:1",
        );
        assert_eq!(
            cmd,
            "docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
             --change 'ENV GREETING=\"hello world\"' --change 'USER vcap' --change 'WORKDIR /home/vcap' \
             --change 'CMD [\"/bin/bash\",\"-l\"]' /tmp/os.tar trixie:1"
        );
        let parsed = shell_words::split(&cmd).unwrap();
        assert_eq!(parsed[5], "ENV GREETING=\"hello world\"");
    }

    #[test]
    fn docker_output_names_say_their_compression() {
        assert_eq!(
            docker_compression(Path::new("a.tar")).unwrap(),
            OutCompression::None
        );
        assert_eq!(
            docker_compression(Path::new("a.tgz")).unwrap(),
            OutCompression::Gzip
        );
        assert_eq!(
            docker_compression(Path::new("a.tar.zst")).unwrap(),
            OutCompression::Zstd
        );
        assert!(docker_compression(Path::new("a.zip")).is_err());
    }

    #[test]
    fn garden_metadata_has_user_then_env() {
        let settings = ImageSettings::parse(&["A=1".into()], None, None, None, None).unwrap();
        let text = String::from_utf8(garden_metadata(&settings)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["user"], "root");
        assert_eq!(value["env"][1], "A=1");
        assert!(text.find("\"user\"").unwrap() < text.find("\"env\"").unwrap());
    }
}
