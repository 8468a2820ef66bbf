//! The OS image artifact: the packager of `build-os-image` (and `pack`): the archive of the
//! tree with its `.sha256` and `.packages.txt` sidecars.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::archive::{self, Compression, PackOptions, PackSummary};
use crate::checksum::{self, HashingWriter};
use crate::output::PendingOutput;
use crate::pipeline::settings::{BuildSettings, OsIdentity};
use crate::pipeline::workspace::Workspace;
use crate::pipeline::Packager;
use crate::progress::Reporter;

/// `build-os-image`'s packager: the archive and its sidecars.
#[derive(Debug, Clone)]
pub struct OsImagePackager {
    pub output: PathBuf,
    pub compression: Compression,
}

impl Packager for OsImagePackager {
    fn step_name(&self) -> &'static str {
        "archive"
    }

    fn check(&self) -> Result<()> {
        if self.output.as_os_str().is_empty() {
            bail!("--output is empty: pass the OS image's file name, e.g. --output os-image.tgz");
        }
        if let Some(parent) = self.output.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                bail!(
                    "output directory {} does not exist: create it or choose another --output",
                    parent.display()
                );
            }
        }
        Ok(())
    }

    fn prepare(&self, _: &Workspace, _: bool) -> Result<()> {
        Ok(())
    }

    fn settings(&self, _: &Path, _: &OsIdentity, _: &mut BuildSettings) -> Result<()> {
        Ok(())
    }

    fn package(
        &self,
        workspace: &Workspace,
        _: &OsIdentity,
        _: &BuildSettings,
        reporter: &Reporter,
    ) -> Result<PathBuf> {
        // The blocks of the last archive stay in the work dir: a rebuild that changed one
        // stage recompresses only the blocks around its changes.
        let blocks = workspace.work.join("archive-blocks");
        Ok(write_os_image(
            &workspace.chroot,
            &self.output,
            self.compression,
            Some(&blocks),
            reporter,
        )?
        .image)
    }
}

/// What `write_os_image` produced.
pub struct OsImageFiles {
    pub image: PathBuf,
    pub sha256: String,
    pub summary: PackSummary,
}

/// Packs `tree` to `output` with `output.packages.txt` and `output.sha256`, each written under
/// a temporary name. The image is renamed into place first and the sidecars after it, the
/// checksum last: a failure or SIGKILL in between leaves a new image beside an older sidecar
/// (or none), which every reader recognises by its older mtime (`checksum::verify_sidecar`),
/// never an old image beside a new checksum. `block_store` keeps gzip's compressed blocks for the
/// next pack of a similar tree (it never changes the output).
pub fn write_os_image(
    tree: &Path,
    output: &Path,
    compression: Compression,
    block_store: Option<&Path>,
    reporter: &Reporter,
) -> Result<OsImageFiles> {
    // Read first: a broken or hostile dpkg database fails before anything is archived.
    let listed = crate::packages::render(&crate::packages::installed(tree)?);
    let (image, digest, summary) = pack_pending(tree, output, compression, block_store, reporter)?;
    let mut packages_path = output.as_os_str().to_owned();
    packages_path.push(".packages.txt");
    let mut packages = PendingOutput::new(Path::new(&packages_path))?;
    packages.write_all(listed.as_bytes())?;
    let sidecar = checksum::sidecar_path(output);
    let mut sha = PendingOutput::new(&sidecar)?;
    sha.write_all(checksum::sidecar_line(&digest, output).as_bytes())?;
    if crate::stage::process::interrupted() {
        bail!(archive::Interrupted {
            what: format!(
                "packing {} into {}: nothing was written",
                tree.display(),
                output.display()
            )
        });
    }
    let image_path = image
        .commit()
        .with_context(|| format!("finishing {}", output.display()))?;
    packages.commit()?;
    sha.commit()?;
    Ok(OsImageFiles {
        image: image_path,
        sha256: digest,
        summary,
    })
}

/// Packs `tree` into `output` alone (no sidecars), e.g. a stemcell's `image`. Returns the sha256.
pub fn pack_tree(
    tree: &Path,
    output: &Path,
    compression: Compression,
    block_store: Option<&Path>,
    reporter: &Reporter,
) -> Result<String> {
    let (image, digest, _) = pack_pending(tree, output, compression, block_store, reporter)?;
    image
        .commit()
        .with_context(|| format!("finishing {}", output.display()))?;
    Ok(digest)
}

/// Packs `tree` under a temporary name beside `output`, hashing as it writes; the caller
/// commits it once everything that goes with it is written.
fn pack_pending(
    tree: &Path,
    output: &Path,
    compression: Compression,
    block_store: Option<&Path>,
    reporter: &Reporter,
) -> Result<(PendingOutput, String, PackSummary)> {
    refuse_output_inside(tree, output)?;
    let image = PendingOutput::new(output)?;
    let (writer, hasher) =
        HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, image.file()?));
    let step = reporter.bytes(&format!("archive {}", output.display()), du(tree));
    let started = Instant::now();
    let options = PackOptions {
        compression,
        block_store: block_store.map(Path::to_path_buf),
        ..PackOptions::default()
    };
    let summary =
        archive::pack(tree, writer, &options, &mut |done| step.position(done)).map_err(|e| {
            if e.is::<archive::Interrupted>() {
                // The partial file is removed when `image` drops, before this is printed.
                return anyhow::Error::new(archive::Interrupted {
                    what: format!(
                        "packing {} into {}: nothing was written, the partial file is removed",
                        tree.display(),
                        output.display()
                    ),
                });
            }
            crate::fsutil::explain_disk_full(
                e.context(format!("writing {}", output.display())),
                output,
            )
        })?;
    let reused = if summary.reused_blocks > 0 {
        format!(
            ", {} of {} gzip blocks reused",
            summary.reused_blocks, summary.gzip_blocks
        )
    } else {
        String::new()
    };
    step.finish(
        &format!("{} entries{reused}", summary.entries),
        started.elapsed(),
    );
    Ok((image, checksum::finish_digest(&hasher), summary))
}

/// An output inside the tree would be archived into itself (its own temp file, half written).
fn refuse_output_inside(tree: &Path, output: &Path) -> Result<()> {
    let tree_real = tree
        .canonicalize()
        .with_context(|| format!("cannot read {}", tree.display()))?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // A missing directory is reported by PendingOutput with its own fix.
    if let Ok(dir) = dir.canonicalize() {
        if dir.starts_with(&tree_real) {
            bail!(
                "refusing to write {} inside {}, the tree it archives: write it outside the tree",
                output.display(),
                tree.display()
            );
        }
    }
    Ok(())
}

/// Bytes of regular files below `dir` (for the progress bar only).
fn du(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}
