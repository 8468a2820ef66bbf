//! `build-os-image`: base, OS stages in the chroot, then the archive with its sidecars.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::archive::{self, Compression, PackOptions, PackSummary, UnpackOptions};
use crate::base::{self, BaseSpec};
use crate::checksum::{self, HashingWriter};
use crate::collections::{self, Stage};
use crate::os::OsDefinition;
use crate::output::PendingOutput;
use crate::progress::Reporter;
use crate::settings::BuildSettings;
use crate::stage::report::Report;
use crate::stage::{run_stages, RunPlan};

#[derive(Debug, Clone)]
pub struct OsImagePlan {
    pub os: OsDefinition,
    pub collection: Option<String>,
    pub arch: String,
    pub mirror: Option<String>,
    pub keyring: Option<PathBuf>,
    pub work_dir: PathBuf,
    pub stages_dir: PathBuf,
    pub output: PathBuf,
    pub resume_from: Option<String>,
    pub overrides: Vec<String>,
    pub cache_dir: Option<PathBuf>,
    /// Start from this tree or OS image instead of bootstrapping.
    pub base: Option<PathBuf>,
    pub compression: Compression,
    pub bootstrapper: base::BootstrapChoice,
    pub resume_command: String,
}

impl OsImagePlan {
    pub fn collection_name(&self) -> &str {
        self.collection.as_deref().unwrap_or(&self.os.collection)
    }

    pub fn stages(&self) -> Result<Vec<Stage>> {
        Ok(collections::load_collection(
            &self.stages_dir,
            self.collection_name(),
        )?)
    }

    pub fn settings(&self) -> Result<BuildSettings> {
        let mut s = BuildSettings::default();
        s.set("os", &self.os.name)?;
        s.set("os_name", &self.os.os_name)?;
        s.set("os_version", &self.os.os_version)?;
        s.set("os_suite", &self.os.suite)?;
        s.set("arch", &self.arch)?;
        s.set("variant", &self.os.variant)?;
        s.set("mirror", self.mirror.clone().unwrap_or_default())?;
        s.set("os_components", self.os.components.join(" "))?;
        s.set("os_packages", self.os.packages.join(" "))?;
        // The reference builder's names, so its stages read naturally here.
        s.set("stemcell_operating_system", &self.os.os_name)?;
        s.set("stemcell_operating_system_version", &self.os.os_version)?;
        s.set("DISTRIB_CODENAME", &self.os.suite)?;
        s.set("stemcell_version", "0000")?;
        s.apply_overrides(&self.overrides)?;
        Ok(s)
    }
}

pub fn build(plan: &OsImagePlan, reporter: &Reporter) -> Result<()> {
    // Everything that can be wrong with the input is found before anything runs.
    let stages = plan.stages()?;
    let start_at = match &plan.resume_from {
        Some(name) => collections::position_of(&stages, name)?,
        None => 0,
    };
    let settings = plan.settings()?;
    let keyring = plan.os.resolve_keyring(plan.keyring.as_deref())?;
    if let Some(parent) = plan.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            bail!(
                "output directory {} does not exist: create it or choose another --output",
                parent.display()
            );
        }
    }
    let bootstrapper = match (&plan.base, &plan.resume_from) {
        (None, None) => Some(base::Bootstrapper::choose(plan.bootstrapper)?),
        _ => None,
    };
    let workspace = crate::workspace::Workspace::open(&plan.work_dir)?;
    let (work, chroot) = (&workspace.work, &workspace.chroot);
    let mut report = Report::default();

    let result = (|| -> Result<()> {
        if plan.resume_from.is_some() {
            workspace.require_base()?;
        } else {
            let started = Instant::now();
            workspace.reset()?;
            let status = match &plan.base {
                Some(given) => {
                    copy_base(given, chroot)?;
                    "ok (given)"
                }
                None => match base::provide(
                    &BaseSpec {
                        suite: plan.os.suite.clone(),
                        arch: plan.arch.clone(),
                        variant: plan.os.variant.clone(),
                        components: plan.os.components.clone(),
                        mirror: plan.mirror.clone(),
                        keyring: keyring.clone(),
                        packages: plan.os.packages.clone(),
                        bootstrapper: bootstrapper.expect("chosen when bootstrapping"),
                    },
                    plan.cache_dir.as_deref(),
                    chroot,
                    &workspace.log("00-base.log"),
                    reporter,
                )? {
                    base::BaseSource::Cache(_) => "ok (cache)",
                    base::BaseSource::Bootstrapped(_) => "ok",
                },
            };
            workspace.mark_base_done()?;
            report.add("00-base", started.elapsed(), status);
        }
        let run = RunPlan {
            stages: &stages,
            start_at,
            work: work.clone(),
            chroot: chroot.clone(),
            stages_dir: plan.stages_dir.canonicalize()?,
            settings: &settings,
            resume_command: plan.resume_command.clone(),
        };
        run_stages(&run, reporter, &mut report)?;
        let started = Instant::now();
        crate::chroot::policy_rc::remove_stale(chroot)?;
        write_os_image(chroot, &plan.output, plan.compression, reporter)?;
        report.add("archive", started.elapsed(), "ok");
        Ok(())
    })();
    print!("{}", report.render());
    result?;
    println!("wrote {}", plan.output.display());
    Ok(())
}

/// `--base`: a directory is copied (preserving everything, through our own archive code),
/// a file is unpacked as an OS image.
fn copy_base(given: &Path, chroot: &Path) -> Result<()> {
    if given.is_dir() {
        let scratch = chroot.parent().unwrap_or(Path::new("/tmp"));
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
    } else if given.is_file() {
        archive::unpack(given, chroot, &UnpackOptions::default()).map(drop)
    } else {
        bail!(
            "--base {} is neither a directory nor an OS image file",
            given.display()
        )
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
/// never an old image beside a new checksum.
pub fn write_os_image(
    tree: &Path,
    output: &Path,
    compression: Compression,
    reporter: &Reporter,
) -> Result<OsImageFiles> {
    // Read first: a broken or hostile dpkg database fails before anything is archived.
    let listed = crate::packages::render(&crate::packages::installed(tree)?);
    let (image, digest, summary) = pack_pending(tree, output, compression, reporter)?;
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
    reporter: &Reporter,
) -> Result<String> {
    let (image, digest, _) = pack_pending(tree, output, compression, reporter)?;
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
    step.finish(&format!("{} entries", summary.entries), started.elapsed());
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
