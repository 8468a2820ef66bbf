//! The stage loop: every selected stage's `config.sh` first, then `apply.sh` from the resume
//! point on. This is the one place stages are run. With layers (design section 5) each
//! `apply.sh` runs on its own overlay, or does not run at all when its layer is cached; the
//! log and the report say which, and why a stage was not cached.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::collection::Stage;
use super::mask::Masker;
use super::process::{self, run_logged, sandboxed_with};
use super::report::Report;
use crate::layers::{key, LayerInputs, LayerStack, OverlayMount, Prepared};
use crate::pipeline::settings::BuildSettings;
use crate::progress::Reporter;

pub struct RunPlan<'a> {
    pub stages: &'a [Stage],
    /// Index into `stages` of the first stage whose `apply.sh` runs.
    pub start_at: usize,
    pub work: PathBuf,
    pub chroot: PathBuf,
    pub stages_dir: PathBuf,
    pub settings: &'a BuildSettings,
    /// The command that started this build, without `--resume-from` and without the values of
    /// secret settings; the failure message appends `--resume-from STAGE` to it.
    pub resume_command: String,
    /// Said after the resume command when secret values were left out of it.
    pub resume_note: String,
    /// Masks the secret settings' values in logs, console and failure messages.
    pub mask: Masker,
    /// `--resume-from` was given: every stage from `start_at` on runs, cached or not.
    pub resumed: bool,
    /// Index into `stages` of the last stage to run (`--until`).
    pub until: Option<usize>,
    /// Stages that run on every build (their output is outside the chroot).
    pub always_run: &'a [String],
    /// Setting name -> the only stages whose apply.sh sees it (collections.yml).
    pub scoped_settings: &'a BTreeMap<String, Vec<String>>,
    /// Inputs of every stage's layer besides settings (e.g. the agent binary's sha256).
    pub packager_inputs: Vec<(String, String)>,
    /// Open a shell in the failed stage's tree when stdin is a terminal.
    pub shell_on_failure: bool,
    /// The cache dir whose package cache the prelude's apt shares (`$package_cache_dir`).
    /// Given to stages as a contract variable, not a setting: where the cache lives changes
    /// no layer's content, so it is no part of any layer key.
    pub package_cache: Option<PathBuf>,
    /// `--offline` (`$offline`): nothing is downloaded. Not in the layer keys either: a layer
    /// built offline holds what the same build online would.
    pub offline: bool,
}

impl RunPlan<'_> {
    /// The settings `stage`'s apply.sh sees (and its layer key hashes); with no stage, what
    /// every config.sh and the build settings file see: no scoped setting at all.
    fn settings_for(&self, stage: Option<&Stage>) -> BuildSettings {
        let hidden: Vec<&str> = self
            .scoped_settings
            .iter()
            .filter(|(_, stages)| stage.is_none_or(|st| !stages.contains(&st.name)))
            .map(|(name, _)| name.as_str())
            .collect();
        self.settings.without(&hidden)
    }

    pub fn log_path(&self, stage: &Stage) -> PathBuf {
        self.work.join("logs").join(format!("{}.log", stage.slug()))
    }

    fn build_settings_file(&self) -> PathBuf {
        self.work.join("settings").join("build.bash")
    }

    pub fn stage_settings_file(&self, stage: &Stage) -> PathBuf {
        self.work
            .join("settings")
            .join("stages")
            .join(format!("{}.bash", stage.slug()))
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "stage '{stage}' failed: {script} exited with status {code}\n--- last {} lines of {log} ---\n{}\n--- end of log tail ---\nlog: {log}\nresume with: {resume}",
    tail.len(),
    tail.iter().cloned().collect::<Vec<_>>().join("\n")
)]
pub struct StageFailed {
    pub stage: String,
    pub script: String,
    pub code: i32,
    pub log: String,
    pub tail: VecDeque<String>,
    pub resume: String,
}

#[derive(Debug, thiserror::Error)]
#[error("interrupted during stage '{stage}'; resume with: {resume}")]
pub struct Interrupted {
    pub stage: String,
    pub resume: String,
}

pub fn run_stages(
    plan: &RunPlan,
    mut layers: Option<&mut LayerStack>,
    reporter: &Reporter,
    report: &mut Report,
) -> Result<()> {
    let shared_settings = plan.settings_for(None);
    shared_settings.write(&plan.build_settings_file())?;
    let settings_arg = plan.build_settings_file();
    for stage in plan.stages {
        prepare_stage_settings(&plan.stage_settings_file(stage))?;
    }
    for (index, stage) in plan.stages.iter().enumerate() {
        let Some(config) = stage.config_script() else {
            continue;
        };
        let applying = index >= plan.start_at;
        let step = reporter.step(&format!("{} config", stage.slug()));
        let started = Instant::now();
        let command = stage_command(
            plan,
            &shared_settings,
            stage,
            &config,
            settings_arg.as_os_str(),
            &[],
        )?;
        let outcome = run_logged(command, &plan.log_path(stage), applying, &step, &plan.mask)?;
        finish(
            plan,
            stage,
            "config.sh",
            outcome,
            step,
            started,
            report,
            "ok",
        )?;
    }
    let lib_hash = match layers {
        Some(_) => key::lib_files(&plan.stages_dir.join("lib"))?,
        None => String::new(),
    };
    for (index, stage) in plan.stages.iter().enumerate() {
        if index < plan.start_at {
            report.add(stage.slug(), Default::default(), "skipped (resume)");
            continue;
        }
        if plan.until.is_some_and(|until| index > until) {
            break;
        }
        let step = reporter.step(&stage.slug());
        let started = Instant::now();
        let log = plan.log_path(stage);
        let fresh_log = stage.config_script().is_none();
        let mut layer: Option<(LayerInputs, OverlayMount, String)> = None;
        let settings = plan.settings_for(Some(stage));
        if let Some(stack) = layers.as_deref_mut() {
            let inputs = LayerInputs {
                parent: stack.top_key().to_string(),
                files: key::stage_files(&stage.dir, &lib_hash)?,
                settings: key::stage_settings(
                    &settings,
                    &plan.work,
                    &plan.packager_inputs,
                    &plan.stage_settings_file(stage),
                )?,
            };
            let force = if plan.resumed {
                Some("resumed")
            } else if plan.always_run.contains(&stage.name) {
                Some("always runs: its output is outside the chroot")
            } else {
                None
            };
            match stack.prepare(stage, &inputs, force)? {
                Prepared::Cached(from) => {
                    let status = format!("cached ({from})");
                    log_note(
                        &log,
                        fresh_log,
                        &format!(
                            "{status}: layer {} kept, apply.sh not run",
                            &inputs.key()[..16]
                        ),
                    )?;
                    let elapsed = started.elapsed();
                    step.finish(&status, elapsed);
                    report.add(stage.slug(), elapsed, status);
                    continue;
                }
                Prepared::Run { reason, overlay } => {
                    log_note(&log, fresh_log, &format!("ran: {reason}"))?;
                    step.line(&format!("not cached: {reason}"));
                    layer = Some((inputs, overlay, reason));
                }
            }
        }
        let overlay_args = layer
            .as_ref()
            .map(|(_, overlay, _)| overlay.to_args())
            .unwrap_or_default();
        let command = stage_command(
            plan,
            &settings,
            stage,
            &stage.apply_script(),
            plan.work.as_os_str(),
            &overlay_args,
        )?;
        let outcome = run_logged(
            command,
            &log,
            fresh_log && layer.is_none(),
            &step,
            &plan.mask,
        )?;
        let failed = outcome.code != 0 || process::interrupted();
        let status = match &layer {
            Some((_, _, reason)) => format!("ran ({reason})"),
            None => "ran".to_string(),
        };
        if failed {
            if let (Some(stack), Some((inputs, _, _))) = (layers.as_deref_mut(), &layer) {
                stack.failed(stage, inputs)?;
            }
            let result = finish(
                plan, stage, "apply.sh", outcome, step, started, report, &status,
            );
            if plan.shell_on_failure && !process::interrupted() {
                // The stage's failure is the build's error, whatever becomes of the shell.
                if let Err(err) = failure_shell(plan, layers.as_deref(), stage, reporter) {
                    reporter.info(&format!("--shell-on-failure: no shell: {err:#}"));
                }
            }
            return result;
        }
        if let (Some(stack), Some((inputs, _, _))) = (layers.as_deref_mut(), &layer) {
            let note = stack.succeeded(stage, inputs)?;
            if !note.is_empty() {
                log_note(&log, false, &note)?;
                if note.starts_with("warning") {
                    reporter.info(&format!("{}: {note}", stage.slug()));
                }
            }
        }
        finish(
            plan, stage, "apply.sh", outcome, step, started, report, &status,
        )?;
    }
    Ok(())
}

/// Appends `### TIME note` to a stage's log (creating it, mode 0600, when `truncate`).
fn log_note(log: &Path, truncate: bool, note: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(!truncate)
        .truncate(truncate)
        .mode(0o600)
        .open(log)
        .map_err(|e| crate::fsutil::io_error(e, "opening log", log))?;
    writeln!(file, "### {} {note}", crate::progress::timestamp())
        .map_err(|e| crate::fsutil::io_error(e, "writing", log))
}

/// `--shell-on-failure`: an interactive shell in the failed stage's tree, when stdin is a
/// terminal. With layers the tree is mounted (the failed layer on top, over a throwaway upper
/// dir) in the builder's own mount namespace, so the shell's chroot-exec sees it.
fn failure_shell(
    plan: &RunPlan,
    layers: Option<&LayerStack>,
    stage: &Stage,
    reporter: &Reporter,
) -> Result<()> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        reporter.info("--shell-on-failure: stdin is not a terminal, so no shell was opened");
        return Ok(());
    }
    let _merged = match layers {
        Some(stack) => Some(stack.mount_merged(Some(&stage.slug()))?),
        None => None,
    };
    let kept = if layers.is_some() {
        "what you change there is thrown away"
    } else {
        "what you change there stays in the chroot"
    };
    eprintln!(
        "stage '{}' failed: a shell in its tree ({}); {kept}. Exit the shell to end the build.",
        stage.name,
        plan.chroot.display()
    );
    open_shell(&plan.chroot)?;
    Ok(())
}

/// An interactive shell (bash when the tree has it, else sh) in `root`, through chroot-exec,
/// on this process's terminal; returns its exit status.
pub fn open_shell(root: &Path) -> Result<i32> {
    chroot_exec(
        root,
        &[
            "/bin/sh".into(),
            "-c".into(),
            "if command -v bash >/dev/null 2>&1; then exec bash -i; fi; exec sh -i".into(),
        ],
    )
}

/// `stemcell-builder chroot-exec ROOT -- COMMAND` as a child on this process's stdio (a child,
/// because chroot-exec needs a single-threaded process); returns its exit status.
pub fn chroot_exec(root: &Path, command: &[std::ffi::OsString]) -> Result<i32> {
    let exe = std::env::current_exe().context("locating the stemcell-builder binary")?;
    let mut child = std::process::Command::new(exe);
    child.arg("chroot-exec").arg(root).arg("--").args(command);
    crate::sandbox::die_with_parent(&mut child);
    let status = child
        .status()
        .context("starting stemcell-builder chroot-exec")?;
    Ok(status.code().unwrap_or(128))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    plan: &RunPlan,
    stage: &Stage,
    script: &str,
    outcome: process::Outcome,
    step: crate::progress::Step,
    started: Instant,
    report: &mut Report,
    status: &str,
) -> Result<()> {
    let elapsed = started.elapsed();
    let resume = format!(
        "{} --resume-from {}{}",
        plan.resume_command, stage.name, plan.resume_note
    );
    if process::interrupted() {
        step.finish("interrupted", elapsed);
        report.add(stage.slug(), elapsed, "interrupted");
        return Err(Interrupted {
            stage: stage.name.clone(),
            resume,
        }
        .into());
    }
    if outcome.code != 0 {
        step.finish(&format!("FAILED (exit {})", outcome.code), elapsed);
        report.add(stage.slug(), elapsed, "failed");
        return Err(StageFailed {
            stage: stage.name.clone(),
            script: stage.dir.join(script).display().to_string(),
            code: outcome.code,
            log: plan.log_path(stage).display().to_string(),
            tail: outcome.tail,
            resume,
        }
        .into());
    }
    step.finish(status, elapsed);
    if script == "apply.sh" {
        report.add(stage.slug(), elapsed, status);
    }
    Ok(())
}

/// A stage's own settings file exists, empty and private, before its config.sh runs: what that
/// persists may be a secret, and the prelude's `>` keeps the mode of the file it truncates.
fn prepare_stage_settings(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        crate::fsutil::create_private_dir(dir)?;
    }
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| crate::fsutil::io_error(e, "creating", path))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// The stage's script with the contract's environment, in its sandbox.
fn stage_command(
    plan: &RunPlan,
    settings: &BuildSettings,
    stage: &Stage,
    script: &Path,
    arg: &OsStr,
    sandbox_options: &[std::ffi::OsString],
) -> Result<std::process::Command> {
    let mut command = sandboxed_with(script, &[arg], sandbox_options)?;
    let exe = std::env::current_exe()?;
    command
        .current_dir(&stage.dir)
        .envs(settings.iter())
        .env("work", &plan.work)
        .env("chroot", &plan.chroot)
        .env("assets_dir", stage.assets_dir())
        .env("settings_file", plan.stage_settings_file(stage))
        .env("build_settings_file", plan.build_settings_file())
        .env("base_dir", &plan.stages_dir)
        .env("lib_dir", plan.stages_dir.join("lib"))
        .env("stage_name", &stage.name)
        .env("stemcell_builder", exe)
        .env(
            "package_cache_dir",
            plan.package_cache.as_deref().unwrap_or(Path::new("")),
        )
        .env("offline", if plan.offline { "1" } else { "" });
    Ok(command)
}
