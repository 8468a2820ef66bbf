//! `stemcell-builder shell WORK_DIR`: the tree a layered build left, to look at after it ended
//! (after a failure, the failed stage's layer is on top). The stage's overlay died with it, so
//! this mounts the layers again, over a throwaway upper dir, in this process's own mount
//! namespace, and runs the shell through `chroot-exec`. Nothing written there reaches a layer.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::LayerStack;

/// Runs `command` (an interactive shell when empty) in the work dir's tree; the caller is in a
/// private mount namespace. Returns the command's exit status.
pub fn run(work_dir: &Path, stage: Option<&str>, command: &[OsString]) -> Result<i32> {
    let work = work_dir
        .canonicalize()
        .with_context(|| format!("work dir {} does not exist", work_dir.display()))?;
    if !work.join(crate::pipeline::workspace::MARKER).is_file() {
        bail!(
            "{} is not a work dir of stemcell-builder (no {} in it): pass the --work-dir of a build",
            work.display(),
            crate::pipeline::workspace::MARKER
        );
    }
    if !work.join("layers").is_dir() {
        bail!(
            "{} is not the work dir of a layered build (no layers/ in it): pass the --work-dir of a build that ran without --no-layers",
            work.display()
        );
    }
    // A build running there would change the layers under the shell.
    let _lock = crate::pipeline::lock::lock_work_dir(&work)?;
    let mut stack = LayerStack::open(&work, None)?;
    let failed = stack.stand_on_existing(stage)?;
    let merged = stack.mount_merged(failed.as_deref())?;
    let code = if command.is_empty() {
        eprintln!(
            "a shell in {} ({}); what you change there is thrown away",
            merged.path().display(),
            match &failed {
                Some(slug) => format!("with the layer of the failed stage {slug} on top"),
                None => "the layers of the complete stages".to_string(),
            }
        );
        crate::stage::runner::open_shell(merged.path())?
    } else {
        crate::stage::runner::chroot_exec(merged.path(), command)?
    };
    drop(merged);
    Ok(code)
}
