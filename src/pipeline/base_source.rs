//! Where a build's tree (layer 0) comes from: a bootstrapped base (cached), a directory, an OS
//! image file, an OS image in S3, a root tarball or host binaries (src/rootfs). Each is checked
//! before anything runs, and none may overlap the work dir, whose chroot is deleted before the
//! base is put there.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};

use super::bootstrap::{self, BaseSpec, BootstrapChoice, Bootstrapper};
use super::workspace::Workspace;
use crate::archive::{self, Compression, PackOptions, UnpackOptions};
use crate::progress::Reporter;
use crate::s3::{S3Options, S3Url};

#[derive(Debug, Clone)]
pub enum BaseSource {
    /// mmdebstrap/debootstrap, through the base cache when there is one.
    Bootstrap {
        spec: BaseSpec,
        tool: BootstrapChoice,
        cache_dir: Option<PathBuf>,
        /// `--offline`: the newest cached base of this kind, never a bootstrap.
        offline: bool,
    },
    /// A directory copied as it is (`--base DIR`).
    Tree(PathBuf),
    /// An OS image file, verified by its `.sha256` when it has one.
    Image(PathBuf),
    /// An OS image in S3, downloaded into the work dir and verified by its sha256.
    S3 {
        url: S3Url,
        options: S3Options,
        /// `--offline`: the copy an earlier build of this work dir downloaded, never S3.
        offline: bool,
    },
    /// Any root tarball (`--base tarball:PATH`, e.g. `docker export`'s), gzip, zstd or plain.
    Tarball(PathBuf),
    /// Host programs and the libraries they load (`--base binaries:bash,ls`).
    Binaries(Vec<String>),
}

impl BaseSource {
    /// The report's name for the step.
    pub fn step_name(&self) -> &'static str {
        match self {
            BaseSource::Bootstrap { .. }
            | BaseSource::Tree(_)
            | BaseSource::Tarball(_)
            | BaseSource::Binaries(_) => "00-base",
            BaseSource::Image(_) | BaseSource::S3 { .. } => "00-os-image",
        }
    }

    /// Everything that can be wrong with the source, found before anything runs. `work` is the
    /// work dir (absolute; it need not exist yet).
    pub fn check(&self, work: &Path) -> Result<()> {
        let (given, flag) = match self {
            BaseSource::Bootstrap { tool, .. } => return Bootstrapper::choose(*tool).map(drop),
            BaseSource::S3 { .. } => return Ok(()),
            BaseSource::Binaries(names) => return crate::rootfs::binaries::plan(names).map(drop),
            BaseSource::Tree(path) => (path, "--base"),
            BaseSource::Tarball(path) => (path, "--base tarball:"),
            BaseSource::Image(path) => (path, "the OS image"),
        };
        let Ok(real) = given.canonicalize() else {
            bail!(match self {
                BaseSource::Image(_) => format!(
                    "OS image {} does not exist: build one with build-os-image, or pass s3://BUCKET/KEY",
                    given.display()
                ),
                _ => format!(
                    "--base {} does not exist: pass an existing directory or OS image file",
                    given.display()
                ),
            });
        };
        if real == Path::new("/") {
            bail!("{flag} / is the host's root, not a base tree: pass a directory holding one");
        }
        if real.starts_with(work) || (real.is_dir() && work.starts_with(&real)) {
            bail!(
                "{flag} {} overlaps the work dir {}, whose chroot is deleted before the base is put there: pass a base outside it, or another --work-dir",
                given.display(),
                work.display()
            );
        }
        match self {
            BaseSource::Tree(_) if !real.is_dir() => bail!(
                "--base {} is neither a directory nor an OS image file",
                given.display()
            ),
            BaseSource::Image(_) if !real.is_file() => bail!(
                "OS image {} is not a file: build one with build-os-image or pass s3://BUCKET/KEY",
                given.display()
            ),
            BaseSource::Tarball(_) => crate::rootfs::tarball::check(&real),
            _ => Ok(()),
        }
    }

    /// The base's layer key: what its content is a function of. A bootstrapped base's is its
    /// cache key (suite, arch, packages, mirror, ..., the UTC day); an OS image's is its
    /// sha256 (one from S3 is fetched first, when it changed); a directory's is a walk of its
    /// metadata (`layers::key::tree_metadata`), which any write to it changes.
    pub fn layer_key(&self, workspace: &Workspace, reporter: &Reporter) -> Result<String> {
        Ok(match self {
            BaseSource::Bootstrap {
                spec,
                tool,
                cache_dir,
                offline,
            } => format!(
                "base-{}",
                bootstrap::base_key(
                    spec,
                    Bootstrapper::choose(*tool)?,
                    cache_dir.as_deref(),
                    *offline
                )?
            ),
            BaseSource::Tree(dir) => format!("tree-{}", crate::layers::key::tree_metadata(dir)?),
            BaseSource::Image(image) => format!("image-{}", crate::checksum::sha256_file(image)?),
            BaseSource::S3 { .. } => {
                let local = self.fetch(workspace, reporter)?;
                format!("image-{}", crate::checksum::sha256_file(&local)?)
            }
            BaseSource::Tarball(tarball) => {
                format!("tarball-{}", crate::checksum::sha256_file(tarball)?)
            }
            BaseSource::Binaries(names) => {
                // What the root is made of: each file copied (by path and content) and the
                // loader's directories; a library upgraded on the host changes the key.
                use sha2::Digest;
                let plan = crate::rootfs::binaries::plan(names)?;
                let mut hasher = sha2::Sha256::new();
                for file in &plan.files {
                    hasher.update(file.as_bytes());
                    hasher.update([0]);
                    hasher.update(crate::checksum::sha256_file(Path::new(file))?.as_bytes());
                    hasher.update([0]);
                }
                for dir in &plan.conf_dirs {
                    hasher.update(dir.as_bytes());
                    hasher.update([0]);
                }
                format!("binaries-{}", hex::encode(hasher.finalize()))
            }
        })
    }

    /// An OS image in S3, downloaded into the work dir when it changed; its local path.
    fn fetch(&self, workspace: &Workspace, reporter: &Reporter) -> Result<PathBuf> {
        let BaseSource::S3 {
            url,
            options,
            offline,
        } = self
        else {
            bail!("only an S3 base is fetched");
        };
        let inputs = workspace.private_dir("inputs")?;
        let local = inputs.join("os-image.tgz");
        // Which URL the copy is of: another URL's copy is never taken for this one.
        let source = inputs.join("os-image.source");
        let fetched_from = std::fs::read_to_string(&source).unwrap_or_default();
        if *offline {
            // The sidecar is written by a complete, verified download; unpacking checks the
            // copy against it.
            let sidecar = crate::checksum::sidecar_path(&local);
            if fetched_from.trim_end() == url.to_string() && local.is_file() && sidecar.is_file() {
                return Ok(local);
            }
            bail!(
                "--offline: {url} was not downloaded into this work dir ({}) by an earlier build: build once without --offline, or pass a local OS image file",
                inputs.display()
            );
        }
        // Until this download is complete, the copy is of no URL: a build stopped halfway
        // must not leave another URL's name on it.
        match std::fs::remove_file(&source) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(crate::fsutil::io_error(e, "removing", &source)),
        }
        let mut download =
            crate::s3::download::DownloadPlan::new(url.clone(), local.clone(), options.clone());
        download.if_changed = true;
        crate::s3::download::download(&download, reporter)?;
        crate::output::write_atomically(&source, format!("{url}\n").as_bytes())?;
        Ok(local)
    }

    /// Puts the base into `target` (which must not exist: the workspace's chroot, or the base
    /// layer); returns the report's status.
    pub fn provide(
        &self,
        workspace: &Workspace,
        target: &Path,
        reporter: &Reporter,
    ) -> Result<&'static str> {
        let chroot = target;
        match self {
            BaseSource::Bootstrap {
                spec,
                tool,
                cache_dir,
                offline,
            } => {
                let source = bootstrap::provide(
                    spec,
                    Bootstrapper::choose(*tool)?,
                    cache_dir.as_deref(),
                    *offline,
                    chroot,
                    &workspace.log("00-base.log"),
                    reporter,
                )?;
                Ok(match source {
                    bootstrap::BaseOrigin::Cache(_) => "ok (cache)",
                    bootstrap::BaseOrigin::Bootstrapped(_) => "ok",
                })
            }
            BaseSource::Tree(dir) => {
                copy_tree(dir, chroot, &workspace.work)?;
                Ok("ok (given)")
            }
            BaseSource::Image(image) => unpack_image(image, chroot, reporter),
            BaseSource::S3 { .. } => {
                let local = self.fetch(workspace, reporter)?;
                unpack_image(&local, chroot, reporter)
            }
            BaseSource::Tarball(path) => {
                let step = reporter.step("unpack base tarball");
                let started = Instant::now();
                let (entries, verified) = crate::rootfs::tarball::provide(path, chroot)?;
                step.finish(&format!("{entries} entries"), started.elapsed());
                Ok(if verified {
                    "ok (sha256 verified)"
                } else {
                    "ok"
                })
            }
            BaseSource::Binaries(names) => {
                let step = reporter.step("copy host binaries");
                let started = Instant::now();
                let plan = crate::rootfs::binaries::plan(names)?;
                std::fs::create_dir_all(chroot)
                    .map_err(|e| crate::fsutil::io_error(e, "creating", chroot))?;
                let copied = crate::rootfs::binaries::build(&plan, chroot)?;
                step.finish(&format!("{copied} files"), started.elapsed());
                Ok("ok (host binaries)")
            }
        }
    }
}

fn unpack_image(image: &Path, chroot: &Path, reporter: &Reporter) -> Result<&'static str> {
    let step = reporter.step("unpack OS image");
    let started = Instant::now();
    let unpacked = archive::unpack(image, chroot, &UnpackOptions::default())?;
    step.finish(&format!("{} entries", unpacked.entries), started.elapsed());
    Ok(if unpacked.checksum_verified {
        "ok (sha256 verified)"
    } else {
        "ok"
    })
}

/// A directory is copied through our own archive code, so it keeps everything a root tree
/// carries (owners, devices, xattrs, hard links) and never follows the tree's symlinks.
fn copy_tree(given: &Path, chroot: &Path, scratch: &Path) -> Result<()> {
    let temp = tempfile::NamedTempFile::new_in(scratch)?;
    let options = PackOptions {
        compression: Compression::Zstd,
        zstd_level: 1,
        ..PackOptions::default()
    };
    archive::pack(
        given,
        std::io::BufWriter::new(temp.reopen()?),
        &options,
        &mut |_| {},
    )?;
    archive::unpack(
        temp.path(),
        chroot,
        &UnpackOptions {
            skip_checksum: true,
            ..UnpackOptions::default()
        },
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_overlapping_the_work_dir_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dir = dir.path().canonicalize().unwrap();
        let work = dir.join("work");
        std::fs::create_dir_all(work.join("chroot")).unwrap();
        let err = BaseSource::Tree(work.join("chroot"))
            .check(&work)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlaps the work dir"), "{err}");
        assert!(
            BaseSource::Tree(dir.clone()).check(&work).is_err(),
            "a parent of it"
        );
        assert!(BaseSource::Tree("/".into()).check(&work).is_err());
        std::fs::create_dir(dir.join("base")).unwrap();
        assert!(BaseSource::Tree(dir.join("base")).check(&work).is_ok());
        assert!(
            BaseSource::Image(dir.join("base")).check(&work).is_err(),
            "not a file"
        );
        assert!(BaseSource::Tree(dir.join("missing")).check(&work).is_err());
    }
}
