//! The builder's commit, as `/var/vcap/bosh/etc/stemcell_git_sha1` records it. The builder
//! reads it, not the stage: a setting is part of every later layer's key, so a build from a
//! new commit cannot reuse a cached layer that still names the old one.

use std::path::Path;
use std::process::{Command, Stdio};

/// `SHA` of the git checkout holding `dir`, with `+` when tracked files differ from it (as the
/// reference records it); None when `dir` is not in a checkout or git is missing.
pub fn of_checkout(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(["-c", "safe.directory=*", "-C"])
            .arg(dir)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
    };
    let head = git(&["rev-parse", "HEAD"]).filter(|out| out.status.success())?;
    let sha = String::from_utf8(head.stdout).ok()?.trim().to_string();
    let clean = git(&["diff", "--quiet", "HEAD", "--"]).is_some_and(|out| out.status.success());
    Some(if clean { sha } else { format!("{sha}+") })
}

/// The commit this binary was built from (`build.rs`), when it was built in a checkout.
pub fn of_builder() -> Option<String> {
    option_env!("STEMCELL_BUILDER_COMMIT").map(str::to_string)
}

/// What a stemcell records: the stages' checkout when they are in one (their commit is what
/// made the tree), else the builder's own commit (an installed binary with its shipped stages).
pub fn for_stemcell(stages_dir: &Path) -> Option<String> {
    of_checkout(stages_dir).or_else(of_builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_outside_any_checkout_has_no_commit() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(of_checkout(dir.path()), None);
    }

    #[test]
    fn stages_outside_a_checkout_record_the_builders_own_commit() {
        let dir = tempfile::tempdir().unwrap();
        let builder = of_builder().expect("the tests are built in a checkout");
        assert_eq!(builder.len(), 40, "{builder}");
        assert!(builder.bytes().all(|b| b.is_ascii_hexdigit()), "{builder}");
        assert_eq!(for_stemcell(dir.path()), Some(builder));
    }
}
