//! `stemcell-builder audit TARGET`: checks an OS image, a stemcell or a root directory against
//! the hardening the reference builder's specs demand. The checks are data
//! (`assets/checks/*.yml`, see `checks`); archives are unpacked with the safe unpacker into a
//! temp dir that is removed afterwards; the tree is read statically (never through a symlink
//! out of it), and only `command` checks run anything: inside the tree, through chroot-exec.
//! It never changes a directory it is given, except that chroot-exec places its daemon blocker
//! there while a command runs, which is why commands run on directories only when asked.

pub mod agent_settings;
pub mod checks;
pub mod eval;
pub mod mutate;
pub mod report;
mod tree;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::archive::members::{Members, Tracked};

use checks::{Check, TargetKind};
use eval::{Evaluator, Exec};
use report::{CheckResult, Report};

/// When `command` checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Commands {
    /// On unpacked archives (our own copy), not on a directory given as TARGET.
    Auto,
    /// Always (a directory TARGET gets chroot-exec's temporary policy-rc.d).
    Run,
    /// Never: such checks are skipped.
    Skip,
}

#[derive(Debug, Clone)]
pub struct AuditPlan {
    pub target: PathBuf,
    pub checks_dir: PathBuf,
    /// For a directory (an archive says what it is): default os-image.
    pub kind: Option<TargetKind>,
    /// For a stemcell directory (a stemcell tarball names its IaaS).
    pub iaas: Option<String>,
    pub commands: Commands,
    /// The stemcell-builder binary whose chroot-exec runs `command` checks.
    pub builder: PathBuf,
    /// Where archives are unpacked (a temp dir inside it, removed afterwards).
    pub scratch_dir: PathBuf,
}

/// A tree ready to audit: the unpacked copy (removed on drop) or the directory given.
pub struct Target {
    pub root: PathBuf,
    pub kind: TargetKind,
    pub iaas: Option<String>,
    pub unpacked: bool,
    _temp: Option<tempfile::TempDir>,
}

pub fn run(plan: &AuditPlan) -> Result<Report> {
    let all = checks::load_dir(&plan.checks_dir)?;
    // Ctrl-C and SIGTERM stop the audit after the step at hand; the temp dir goes with it.
    crate::stage::process::install_interrupt_handler();
    let target = open_target(plan)?;
    if crate::stage::process::interrupted() {
        bail!("interrupted while unpacking {}", plan.target.display());
    }
    let exec = exec_policy(plan, &target);
    Ok(audit_tree(
        &target.root,
        &plan.target.display().to_string(),
        target.kind,
        target.iaas.as_deref(),
        &all,
        exec,
    ))
}

/// The checks that apply to a kind (and IaaS), in file order.
pub fn applicable<'a>(all: &'a [Check], kind: TargetKind, iaas: Option<&str>) -> Vec<&'a Check> {
    all.iter()
        .filter(|c| c.applies_to.includes(kind, iaas))
        .collect()
}

/// Evaluates the applicable checks on a root tree.
pub fn audit_tree(
    root: &Path,
    name: &str,
    kind: TargetKind,
    iaas: Option<&str>,
    all: &[Check],
    exec: Exec,
) -> Report {
    let results = match tree::Tree::open(root) {
        Ok(tree) => {
            let mut evaluator = Evaluator::new(&tree, exec);
            let checks = applicable(all, kind, iaas);
            // A failure to run them shows in each command check's own result.
            let _ = evaluator.run_commands(&checks);
            checks
                .into_iter()
                .map(|check| {
                    let outcome = evaluator.evaluate(check);
                    CheckResult {
                        id: check.id.clone(),
                        tag: check.tag.clone(),
                        title: check.title.clone(),
                        status: outcome.status,
                        detail: outcome.detail,
                    }
                })
                .collect()
        }
        Err(e) => vec![CheckResult {
            id: "tree".into(),
            tag: None,
            title: "the tree can be read".into(),
            status: eval::Status::Fail,
            detail: format!("cannot open {}: {e}", root.display()),
        }],
    };
    Report {
        target: name.to_string(),
        kind,
        iaas: iaas.map(str::to_string),
        results,
    }
}

fn exec_policy(plan: &AuditPlan, target: &Target) -> Exec {
    let run = match plan.commands {
        Commands::Skip => return Exec::Skip("command checks skipped (--commands skip)".into()),
        Commands::Run => true,
        Commands::Auto => target.unpacked,
    };
    if !run {
        return Exec::Skip(
            "runs a command in the tree: on a directory only with --commands run".into(),
        );
    }
    if !nix::unistd::geteuid().is_root() {
        return Exec::Skip(
            "runs a command in the tree through chroot-exec, which needs root".into(),
        );
    }
    Exec::With(plan.builder.clone())
}

pub fn open_target(plan: &AuditPlan) -> Result<Target> {
    let path = &plan.target;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("audit target {} does not exist", path.display()))?;
    if meta.is_dir() {
        let kind = plan.kind.unwrap_or(TargetKind::OsImage);
        return Ok(Target {
            root: path.clone(),
            kind,
            iaas: plan.iaas.clone(),
            unpacked: false,
            _temp: None,
        });
    }
    if !meta.is_file() {
        bail!(
            "audit target {} is neither a directory nor an archive",
            path.display()
        );
    }
    // Not made here: a mistyped --scratch-dir would be left behind as a new directory.
    if !plan.scratch_dir.is_dir() {
        bail!(
            "--scratch-dir {} is not a directory: create it or pass another",
            plan.scratch_dir.display()
        );
    }
    let temp = tempfile::Builder::new()
        .prefix("stemcell-builder-audit-")
        .tempdir_in(&plan.scratch_dir)
        .with_context(|| format!("creating a temp dir in {}", plan.scratch_dir.display()))?;
    let root = temp.path().join("root");
    let unpack = |archive: &Path, skip_checksum: bool| -> Result<()> {
        crate::archive::unpack(
            archive,
            &root,
            &crate::archive::UnpackOptions {
                skip_checksum,
                ..Default::default()
            },
        )
        .map(drop)
    };
    let (kind, iaas) = if first_entry(path)?.as_deref() == Some("stemcell.MF") {
        if plan.kind == Some(TargetKind::OsImage) {
            bail!(
                "{} is a stemcell, not an OS image: drop --kind",
                path.display()
            );
        }
        let (manifest, image) = extract_stemcell(path, temp.path())?;
        let iaas = manifest["cloud_properties"]["infrastructure"]
            .as_str()
            .map(str::to_string)
            .or_else(|| plan.iaas.clone());
        if let Some(disk) = disk_member(&image)? {
            bail!(
                "{} is a VM stemcell: its image holds a disk ({disk}), which audit does not read; \
                 audit the OS image it was built from, or a warden stemcell",
                path.display()
            );
        }
        unpack(&image, true)?;
        (TargetKind::Stemcell, iaas)
    } else {
        if plan.kind == Some(TargetKind::Stemcell) {
            bail!(
                "{} is an OS image, not a stemcell: drop --kind",
                path.display()
            );
        }
        unpack(path, false)?;
        (TargetKind::OsImage, None)
    };
    Ok(Target {
        root,
        kind,
        iaas,
        unpacked: true,
        _temp: Some(temp),
    })
}

/// The decompressed tar stream of an archive (gzip, zstd or plain: detected).
fn tar_stream(path: &Path) -> Result<Box<dyn Read>> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(
        crate::archive::decompressed(file)
            .with_context(|| format!("reading {}", path.display()))?,
    )
}

/// Walks an archive's members through the bounded reader unpack uses, so a hostile target
/// cannot make audit hold a 512 MiB name or pax header; `visit` returns false to stop early.
/// Returns how many members were visited.
fn walk(path: &Path, mut visit: impl FnMut(&str, &mut dyn Read) -> Result<bool>) -> Result<u64> {
    let not_archive = |e: &dyn std::fmt::Display| {
        anyhow!(
            "{} is not an OS image or a stemcell (a gzip, zstd or plain tar): {e}",
            path.display()
        )
    };
    let (tracked, state) = Tracked::new(tar_stream(path)?, u64::MAX);
    let mut archive = tar::Archive::new(tracked);
    let members = Members::new(&mut archive, state, u64::MAX).map_err(|e| not_archive(&e))?;
    let mut seen = 0;
    for member in members {
        let mut member = member.map_err(|e| not_archive(&e))?;
        seen += 1;
        let name = String::from_utf8_lossy(&member.name)
            .trim_start_matches("./")
            .to_string();
        if !visit(&name, &mut member.entry)? {
            break;
        }
    }
    Ok(seen)
}

fn first_entry(path: &Path) -> Result<Option<String>> {
    let mut first = None;
    if walk(path, |name, _| {
        first = Some(name.to_string());
        Ok(false)
    })? == 0
    {
        bail!("{} is an empty archive", path.display());
    }
    Ok(first)
}

/// The manifest (parsed) and the `image` member (written into `dir`) of a stemcell.
fn extract_stemcell(path: &Path, dir: &Path) -> Result<(serde_yaml_ng::Value, PathBuf)> {
    let mut manifest = None;
    let image = dir.join("image");
    let mut have_image = false;
    walk(path, |name, entry| {
        match name {
            "stemcell.MF" => {
                let mut text = String::new();
                entry.take(1 << 20).read_to_string(&mut text)?;
                manifest = Some(
                    serde_yaml_ng::from_str(&text)
                        .with_context(|| format!("{}: stemcell.MF is not YAML", path.display()))?,
                );
            }
            "image" => {
                let mut out = File::create(&image)?;
                std::io::copy(entry, &mut out)
                    .with_context(|| format!("extracting the image of {}", path.display()))?;
                have_image = true;
            }
            _ => {}
        }
        Ok(true)
    })?;
    match (manifest, have_image) {
        (Some(manifest), true) => Ok((manifest, image)),
        _ => bail!(
            "{} is not a stemcell: it lacks stemcell.MF or image",
            path.display()
        ),
    }
}

/// The disk file a VM stemcell's image holds (`root.img`, `disk.raw`, ...), if any.
fn disk_member(image: &Path) -> Result<Option<String>> {
    let mut disk = None;
    let mut looked = 0;
    walk(image, |name, _| {
        looked += 1;
        if matches!(name, "root.img" | "disk.raw" | "root.vhd" | "image.ovf")
            || name.ends_with(".vmdk")
        {
            disk = Some(name.to_string());
        }
        Ok(disk.is_none() && looked < 8)
    })?;
    Ok(disk)
}
