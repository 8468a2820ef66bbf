//! `bump`: compares the package lists of two OS images and bumps a semantic version file only
//! when a package was added, removed, upgraded or downgraded. The periodic OS-image job of
//! `ci/pipelines/stemcells.yml` uses it to decide whether a rebuilt image is worth publishing.
//!
//! Exit codes are part of the contract (README, "bump"): `0` bumped, `3` nothing changed, `1`
//! an error (`2` a usage error, from clap). "Bumped" is 0 so that a plain Concourse plan
//! `task: bump` → `put: version` publishes only a bumped version; a script that wants a green
//! build when nothing changed tests for 3. Every error leaves the version file untouched.

pub mod diff;
pub mod report;
pub mod version_file;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

pub use diff::{PackageDiff, PackageList};
pub use version_file::{Level, VersionFile};

pub const EXIT_BUMPED: u8 = 0;
pub const EXIT_UNCHANGED: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct BumpPlan {
    pub previous: PathBuf,
    pub current: PathBuf,
    pub version_file: PathBuf,
    pub level: Level,
    pub format: Format,
}

#[derive(Debug)]
pub struct BumpOutcome {
    pub diff: PackageDiff,
    pub previous_count: usize,
    pub current_count: usize,
    pub old_version: semver::Version,
    /// `Some` when the file was rewritten.
    pub new_version: Option<semver::Version>,
}

/// Reads everything first (both lists, the version file), then writes the file only when the
/// lists differ: a malformed input stops before anything is written.
pub fn run(plan: &BumpPlan) -> Result<BumpOutcome> {
    let previous = PackageList::read(&plan.previous)?;
    let current = PackageList::read(&plan.current)?;
    let file = VersionFile::read(&plan.version_file)?;
    let diff = diff::diff(&previous, &current);
    let new_version = if diff.is_empty() {
        None
    } else {
        let next = plan.level.apply(&file.version)?;
        file.write(&next)?;
        Some(next)
    };
    Ok(BumpOutcome {
        diff,
        previous_count: previous.len(),
        current_count: current.len(),
        old_version: file.version.clone(),
        new_version,
    })
}

/// The command: runs, prints the report in the chosen format, and returns the exit code.
pub fn main(plan: &BumpPlan) -> Result<ExitCode> {
    let outcome = run(plan)?;
    let text = match plan.format {
        Format::Text => report::text(plan, &outcome),
        Format::Json => report::json(plan, &outcome)?,
    };
    crate::out!("{text}")?;
    Ok(ExitCode::from(if outcome.new_version.is_some() {
        EXIT_BUMPED
    } else {
        EXIT_UNCHANGED
    }))
}
