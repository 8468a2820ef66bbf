//! One build pipeline for OS images and stemcells alike: a base source, one settings contract,
//! the stage loop, and a packager that turns the finished tree into the artifact.
//!
//! ```text
//!  check inputs ─► lock work dir ─► base (bootstrap, tree, OS image, S3) ─► settings
//!     ─► stages (config.sh all, apply.sh from the resume point) ─► packager ─► report
//! ```
//!
//! Everything that can be wrong with the input is found before the work dir is touched.
//!
//! With layers (the default; `crate::layers`), the base is layer 0, each stage's `apply.sh`
//! runs on an overlay mounted inside its sandbox, and the packager reads the merged tree,
//! mounted at `WORK/chroot` in the builder's own private mount namespace (entered before any
//! thread starts, since a threaded process cannot), so no mount ever reaches the host's
//! namespace or outlives the builder. `--no-layers` keeps one plain directory.

pub mod base_source;
pub mod bootstrap;
pub mod lock;
pub mod settings;
pub mod workspace;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::layers::LayerStack;
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
    /// Run each stage on its own overlay layer (`--no-layers` turns this off).
    pub layers: bool,
    /// Where finished layers, apt lists and packages are stored and found (`--cache-dir`;
    /// None with `--no-cache`). Stages' apt shares its package cache.
    pub cache_dir: Option<PathBuf>,
    /// `--offline`: the base, package lists and packages come from the cache alone.
    pub offline: bool,
    /// Stop after this stage; no artifact is written (`--until`).
    pub until: Option<String>,
    /// Open a shell in the failing stage's tree when stdin is a terminal.
    pub shell_on_failure: bool,
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
    /// Inputs every stage's layer key includes besides the settings: files the packager
    /// hands stages by path (the agent binary), as (name, sha256).
    fn layer_inputs(&self) -> Result<Vec<(String, String)>> {
        Ok(vec![])
    }
    /// Writes the artifact from the finished tree; returns its path.
    fn package(
        &self,
        workspace: &Workspace,
        os: &OsIdentity,
        settings: &BuildSettings,
        reporter: &Reporter,
    ) -> Result<PathBuf>;
}

/// Runs the build; returns the artifact's path, or None when `--until` stopped it early.
pub fn run(
    plan: &BuildPlan,
    packager: &dyn Packager,
    reporter: &Reporter,
) -> Result<Option<PathBuf>> {
    // Everything that can be wrong with the input, before the work dir is touched.
    let collection = collection::load_collection(&plan.stages_dir, &plan.collection)?;
    let start_at = match &plan.resume_from {
        Some(name) => collection::position_of(&collection.stages, name)?,
        None => 0,
    };
    let until = match &plan.until {
        Some(name) => {
            let until = collection::position_for(&collection.stages, name, "--until")?;
            if until < start_at {
                bail!(
                    "--until {name} comes before --resume-from {}: pass a stage at or after the resume point",
                    plan.resume_from.as_deref().unwrap_or_default()
                );
            }
            Some(until)
        }
        None => None,
    };
    packager.check()?;
    let packager_inputs = if plan.layers {
        packager.layer_inputs()?
    } else {
        vec![]
    };
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
    if plan.layers {
        crate::layers::enter_private_mount_namespace()?;
    }

    let workspace = Workspace::open(&plan.work_dir)?;
    let mut report = Report::default();
    let result = (|| -> Result<Option<PathBuf>> {
        let mut stack = if plan.layers {
            let cache = plan.cache_dir.as_deref().map(crate::cache::Cache::new);
            let mut stack = LayerStack::open(&workspace.work, cache)?;
            stack.probe()?;
            if plan.resume_from.is_some() {
                stack.resume(&collection.stages, start_at)?;
            } else {
                let started = Instant::now();
                workspace.reset(true)?;
                let key = plan.base.layer_key(&workspace, reporter)?;
                if stack.reuse_base(&key) {
                    report.add(
                        plan.base.step_name(),
                        started.elapsed(),
                        "cached (work dir)",
                    );
                } else {
                    stack.clear()?;
                    let status = plan.base.provide(&workspace, &stack.base_dir(), reporter)?;
                    stack.base_done(&key)?;
                    report.add(plan.base.step_name(), started.elapsed(), status);
                }
            }
            crate::fsutil::create_owned_dir(&workspace.chroot)?;
            Some(stack)
        } else {
            if plan.resume_from.is_some() {
                workspace.require_base()?;
            } else {
                let started = Instant::now();
                workspace.reset(false)?;
                let status = plan.base.provide(&workspace, &workspace.chroot, reporter)?;
                workspace.mark_base_done()?;
                report.add(plan.base.step_name(), started.elapsed(), status);
            }
            None
        };
        packager.prepare(&workspace, plan.resume_from.is_some())?;

        // What the base says about itself (layer 0: what the stages start from).
        let base_tree = match &stack {
            Some(stack) => stack.base_dir(),
            None => workspace.chroot.clone(),
        };
        let os = os_identity(&plan.os, &base_tree)?;
        let arch = match &plan.arch {
            ArchSource::Given(arch) => arch.clone(),
            ArchSource::FromTree { fallback } => {
                dpkg_arch(&base_tree).unwrap_or_else(|| fallback.clone())
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
            resumed: plan.resume_from.is_some(),
            until,
            always_run: &collection.always_run,
            scoped_settings: &collection.scoped_settings,
            packager_inputs,
            shell_on_failure: plan.shell_on_failure,
            package_cache: plan.cache_dir.as_deref().map(workspace::absolute),
            offline: plan.offline,
        };
        run_stages(&run, stack.as_mut(), reporter, &mut report)?;

        if let Some(until) = until {
            let stage = &collection.stages[until];
            let next = match collection.stages.get(until + 1) {
                Some(next) => {
                    let argv = without_flag(&plan.argv, "--until");
                    let (command, note) = self::resume_command(&argv, &settings);
                    format!("; go on with: {command} --resume-from {}{note}", next.name)
                }
                None => String::new(),
            };
            reporter.info(&format!(
                "stopped after stage '{}' (--until): no artifact was written{next}",
                stage.name
            ));
            return Ok(None);
        }

        let started = Instant::now();
        // The packager reads the merged tree at WORK/chroot, mounted in the builder's own
        // namespace for as long as packaging takes.
        let merged = match &stack {
            Some(stack) => Some(stack.mount_merged(None)?),
            None => None,
        };
        crate::chroot::policy_rc::remove_stale(&workspace.chroot)?;
        let output = packager.package(&workspace, &os, &settings, reporter)?;
        drop(merged);
        report.add(packager.step_name(), started.elapsed(), "ok");
        Ok(Some(output))
    })();
    // The build's own outcome comes first: a closed or full stdout does not undo a build.
    let printed = crate::out!("{}", report.render());
    let output = result?;
    if let Some(output) = &output {
        crate::outln!("wrote {}", output.display())?;
    }
    printed?;
    Ok(output)
}

/// `argv` without `flag VALUE` / `flag=VALUE`.
fn without_flag(argv: &[String], flag: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = argv.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            iter.next();
        } else if !arg.starts_with(&format!("{flag}=")) {
            out.push(arg.clone());
        }
    }
    out
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
