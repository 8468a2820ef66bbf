//! The stage loop: every selected stage's `config.sh` first, then `apply.sh` from the resume
//! point on. This is the one place stages are run, so layers (design section 5) can wrap it
//! without touching the stages.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Result;

use super::collection::Stage;
use super::mask::Masker;
use super::process::{self, run_logged, sandboxed};
use super::report::Report;
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
}

impl RunPlan<'_> {
    pub fn log_path(&self, stage: &Stage) -> PathBuf {
        self.work.join("logs").join(format!("{}.log", stage.slug()))
    }

    fn build_settings_file(&self) -> PathBuf {
        self.work.join("settings").join("build.bash")
    }

    fn stage_settings_file(&self, stage: &Stage) -> PathBuf {
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

pub fn run_stages(plan: &RunPlan, reporter: &Reporter, report: &mut Report) -> Result<()> {
    plan.settings.write(&plan.build_settings_file())?;
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
        let command = stage_command(plan, stage, &config, settings_arg.as_os_str())?;
        let outcome = run_logged(command, &plan.log_path(stage), applying, &step, &plan.mask)?;
        finish(plan, stage, "config.sh", outcome, step, started, report)?;
    }
    for (index, stage) in plan.stages.iter().enumerate() {
        if index < plan.start_at {
            report.add(stage.slug(), Default::default(), "skipped (resume)");
            continue;
        }
        let step = reporter.step(&stage.slug());
        let started = Instant::now();
        let command = stage_command(plan, stage, &stage.apply_script(), plan.work.as_os_str())?;
        let fresh_log = stage.config_script().is_none();
        let outcome = run_logged(command, &plan.log_path(stage), fresh_log, &step, &plan.mask)?;
        finish(plan, stage, "apply.sh", outcome, step, started, report)?;
    }
    Ok(())
}

fn finish(
    plan: &RunPlan,
    stage: &Stage,
    script: &str,
    outcome: process::Outcome,
    step: crate::progress::Step,
    started: Instant,
    report: &mut Report,
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
    step.finish("ok", elapsed);
    if script == "apply.sh" {
        report.add(stage.slug(), elapsed, "ok");
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
    stage: &Stage,
    script: &Path,
    arg: &OsStr,
) -> Result<std::process::Command> {
    let mut command = sandboxed(script, &[arg])?;
    let exe = std::env::current_exe()?;
    command
        .current_dir(&stage.dir)
        .envs(plan.settings.iter())
        .env("work", &plan.work)
        .env("chroot", &plan.chroot)
        .env("assets_dir", stage.assets_dir())
        .env("settings_file", plan.stage_settings_file(stage))
        .env("build_settings_file", plan.build_settings_file())
        .env("base_dir", &plan.stages_dir)
        .env("lib_dir", plan.stages_dir.join("lib"))
        .env("stage_name", &stage.name)
        .env("stemcell_builder", exe);
    Ok(command)
}
