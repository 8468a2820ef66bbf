//! One build pipeline for OS images and stemcells alike: a base source, one settings contract,
//! the stage loop, and a packager that turns the finished tree into the artifact.
//!
//! ```text
//!  check inputs ─► lock work dir ─► base (bootstrap, tree, OS image, S3) ─► settings
//!     ─► stages (config.sh all, apply.sh from the resume point) ─► packager ─► report
//! ```
//!
//! Everything that can be wrong with the input is found before the work dir is touched.

pub mod base_source;
pub mod bootstrap;
pub mod lock;
pub mod settings;
pub mod workspace;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use crate::os::OsDefinition;
use crate::progress::Reporter;
use crate::stage::collection::{self, Collection};
use crate::stage::report::Report;
use crate::stage::{run_stages, RunPlan};
pub use base_source::BaseSource;
use settings::{BuildSettings, Masker, OsIdentity, Override};
use workspace::Workspace;

/// Which OS the build is for.
#[derive(Debug, Clone)]
pub enum OsSource {
    /// An OS definition chosen by `--os` (an OS image build).
    Definition(OsDefinition),
    /// What the tree says (`/etc/os-release`), unless `NAME-VERSION` is given; a definition of
    /// the same OS from the assets, when there is one, adds suite details (a stemcell build).
    FromTree {
        given: Option<(String, String)>,
        assets_dir: PathBuf,
    },
}

/// The architecture the build is for.
#[derive(Debug, Clone)]
pub enum ArchSource {
    /// `--arch`, or the host's.
    Given(String),
    /// dpkg's architecture in the tree, else `fallback` (the host's).
    FromTree { fallback: String },
}

/// What a build needs, as plain data: the CLI makes one, the pipeline runs it.
#[derive(Debug, Clone)]
pub struct BuildPlan {
    pub work_dir: PathBuf,
    pub stages_dir: PathBuf,
    pub collection: String,
    pub resume_from: Option<String>,
    pub base: BaseSource,
    pub os: OsSource,
    pub arch: ArchSource,
    pub mirror: Option<String>,
    pub overrides: Vec<Override>,
    /// The command line that started the build (argv), for the resume hint.
    pub argv: Vec<String>,
}

/// Turns the finished tree into the artifact (an OS image, a stemcell).
pub trait Packager {
    /// The report's name for the packaging step.
    fn step_name(&self) -> &'static str;
    /// The packager's own inputs, checked before anything runs.
    fn check(&self) -> Result<()>;
    /// Runs on every build, resumed or not, before the stages (e.g. copy the agent in).
    fn prepare(&self, workspace: &Workspace, resuming: bool) -> Result<()>;
    /// Settings only this kind of build gives stages, decided by its flags. `work` is the work
    /// dir (absolute); this runs once before the work dir exists, to check `--set` early.
    fn settings(&self, work: &Path, os: &OsIdentity, settings: &mut BuildSettings) -> Result<()>;
    /// Writes the artifact from the finished tree; returns its path.
    fn package(
        &self,
        workspace: &Workspace,
        os: &OsIdentity,
        settings: &BuildSettings,
        reporter: &Reporter,
    ) -> Result<PathBuf>;
}

pub fn run(plan: &BuildPlan, packager: &dyn Packager, reporter: &Reporter) -> Result<PathBuf> {
    // Everything that can be wrong with the input, before the work dir is touched.
    let collection = collection::load_collection(&plan.stages_dir, &plan.collection)?;
    let start_at = match &plan.resume_from {
        Some(name) => collection::position_of(&collection.stages, name)?,
        None => 0,
    };
    packager.check()?;
    workspace::check_usable(&plan.work_dir)?;
    let work = workspace::absolute(&plan.work_dir);
    if plan.resume_from.is_none() {
        plan.base.check(&work)?;
    }
    // A `--set` of a name the builder decides is refused before anything runs: the names do
    // not depend on the OS the tree turns out to hold.
    let probe_os = match &plan.os {
        OsSource::Definition(def) => OsIdentity::from_definition(def),
        OsSource::FromTree { .. } => OsIdentity::from_release("os", "version", None),
    };
    let mut probe = contract_settings(plan, &probe_os, "");
    packager.settings(&work, &probe_os, &mut probe)?;
    probe.apply_overrides(&plan.overrides)?;

    let workspace = Workspace::open(&plan.work_dir)?;
    let mut report = Report::default();
    let result = (|| -> Result<PathBuf> {
        if plan.resume_from.is_some() {
            workspace.require_base()?;
        } else {
            let started = Instant::now();
            workspace.reset()?;
            let status = plan.base.provide(&workspace, reporter)?;
            workspace.mark_base_done()?;
            report.add(plan.base.step_name(), started.elapsed(), status);
        }
        packager.prepare(&workspace, plan.resume_from.is_some())?;

        let os = os_identity(&plan.os, &workspace.chroot)?;
        let arch = match &plan.arch {
            ArchSource::Given(arch) => arch.clone(),
            ArchSource::FromTree { fallback } => {
                dpkg_arch(&workspace.chroot).unwrap_or_else(|| fallback.clone())
            }
        };
        let mut settings = contract_settings(plan, &os, &arch);
        packager.settings(&workspace.work, &os, &mut settings)?;
        settings.declare_secrets(&collection.secret_settings);
        settings.apply_overrides(&plan.overrides)?;

        let (resume_command, resume_note) = resume_command(&plan.argv, &settings);
        let run = RunPlan {
            stages: &collection.stages,
            start_at,
            work: workspace.work.clone(),
            chroot: workspace.chroot.clone(),
            stages_dir: plan.stages_dir.clone(),
            settings: &settings,
            resume_command,
            resume_note,
            mask: Masker::new(settings.secret_values()),
        };
        run_stages(&run, reporter, &mut report)?;

        let started = Instant::now();
        crate::chroot::policy_rc::remove_stale(&workspace.chroot)?;
        let output = packager.package(&workspace, &os, &settings, reporter)?;
        report.add(packager.step_name(), started.elapsed(), "ok");
        Ok(output)
    })();
    print!("{}", report.render());
    let output = result?;
    println!("wrote {}", output.display());
    Ok(output)
}

/// The stage list a plan resolves to (for `list-stages`).
pub fn resolve_collection(stages_dir: &Path, name: &str) -> Result<Collection> {
    Ok(collection::load_collection(stages_dir, name)?)
}

fn contract_settings(plan: &BuildPlan, os: &OsIdentity, arch: &str) -> BuildSettings {
    settings::contract(os, arch, plan.mirror.as_deref())
}

fn os_identity(source: &OsSource, tree: &Path) -> Result<OsIdentity> {
    match source {
        OsSource::Definition(def) => Ok(OsIdentity::from_definition(def)),
        OsSource::FromTree { given, assets_dir } => {
            let (name, version) = match given {
                Some(pair) => pair.clone(),
                None => crate::os::os_release(tree)?,
            };
            let definition = OsDefinition::load(assets_dir, &format!("{name}-{version}")).ok();
            Ok(OsIdentity::from_release(
                &name,
                &version,
                definition.as_ref(),
            ))
        }
    }
}

fn dpkg_arch(root: &Path) -> Option<String> {
    crate::packages::installed(root)
        .ok()?
        .into_iter()
        .find(|p| p.name == "dpkg")
        .map(|p| p.arch)
}

/// The command line that started the build, shell-quoted, without `--resume-from` and without
/// the values of secret settings (`--set KEY=VALUE` becomes `--set KEY`, which reads `$KEY`);
/// the note says which variables to export first (those, and bare `--set KEY`s).
pub fn resume_command(argv: &[String], settings: &BuildSettings) -> (String, String) {
    let mut words: Vec<String> = Vec::new();
    let mut hidden: Vec<String> = Vec::new();
    let mut iter = argv.iter().peekable();
    while let Some(arg) = iter.next() {
        if arg == "--resume-from" {
            iter.next();
            continue;
        }
        if arg.starts_with("--resume-from=") {
            continue;
        }
        let (prefix, pair) = if arg == "--set" {
            words.push(arg.clone());
            match iter.next() {
                Some(pair) => ("", pair.as_str()),
                None => break,
            }
        } else if let Some(pair) = arg.strip_prefix("--set=") {
            ("--set=", pair)
        } else {
            words.push(arg.clone());
            continue;
        };
        match pair.split_once('=') {
            Some((key, _)) if settings.is_secret(key) => {
                words.push(format!("{prefix}{key}"));
                hidden.push(key.to_string());
            }
            // A bare KEY read its value from the environment: it must be exported again.
            None => {
                words.push(format!("{prefix}{pair}"));
                hidden.push(pair.to_string());
            }
            _ => words.push(format!("{prefix}{pair}")),
        }
    }
    let note = if hidden.is_empty() {
        String::new()
    } else {
        format!(
            " (after `export {}`: secret values are not shown)",
            hidden.join(" ")
        )
    };
    (shell_words::join(words), note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_command_drops_old_resume_flags_and_secret_values() {
        let argv: Vec<String> = [
            "sb",
            "build-os-image",
            "--resume-from",
            "x",
            "--set",
            "a=b c",
            "--resume-from=y",
            "--set",
            "bosh_users_password=hunter2",
            "--set=api_key=k3y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (cmd, note) = resume_command(&argv, &BuildSettings::default());
        assert_eq!(
            cmd,
            "sb build-os-image --set 'a=b c' --set bosh_users_password '--set=api_key'"
        );
        assert!(!cmd.contains("hunter2") && !cmd.contains("k3y"));
        assert!(
            note.contains("export bosh_users_password api_key"),
            "{note}"
        );
    }
}
