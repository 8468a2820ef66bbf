//! `stemcell-builder audit` on the default OS image: it passes in full, and every check catches
//! what it checks: for each check, its mutation (data beside it in assets/checks) is applied to
//! one unpacked copy of the image, the whole audit runs, exactly that check must fail, and the
//! mutation is undone. Needs root (chroot-exec for the command checks) and the default OS image
//! (built once per test run by support::default_os_image).

mod support;

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use stemcell_builder::audit::checks::{self, Check, TargetKind};
use stemcell_builder::audit::eval::{Exec, Status};
use stemcell_builder::audit::{applicable, audit_tree, mutate};
use support::text;

fn all_checks() -> Vec<Check> {
    checks::load_dir(&support::repo().join("assets/checks")).expect("assets/checks loads")
}

/// One unpacked copy of the default OS image for this test binary, and a scratch directory on
/// the same file system for what mutations move aside.
fn unpacked() -> &'static (PathBuf, PathBuf) {
    static UNPACKED: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    UNPACKED.get_or_init(|| {
        let (image, _) = support::default_os_image();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("audit-mutations");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let root = dir.join("root");
        let out = Command::new(support::bin())
            .arg("unpack")
            .arg(&image)
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let scratch = dir.join("scratch");
        fs::create_dir(&scratch).unwrap();
        (root, scratch)
    })
}

#[test]
fn audit_passes_in_full_on_the_default_os_image() {
    let (image, _) = support::default_os_image();
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(support::bin())
        .arg("audit")
        .arg(&image)
        .args(["--format", "json", "--scratch-dir"])
        .arg(scratch.path())
        .current_dir(support::repo())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit printed no JSON ({e}): {}", text(&out.stderr)));
    let failures: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "pass")
        .map(|r| format!("{} {}: {}", r["status"], r["id"], r["detail"]))
        .collect();
    assert!(failures.is_empty(), "not passing:\n{}", failures.join("\n"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = applicable(&all_checks(), TargetKind::OsImage, None).len();
    assert_eq!(report["kind"], "os-image");
    assert_eq!(report["summary"]["checks"], expected);
    assert_eq!(
        report["summary"]["passed"], expected,
        "every check ran, none skipped"
    );

    // The table says the same, with the summary last.
    let out = Command::new(support::bin())
        .arg("audit")
        .arg(&image)
        .arg("--scratch-dir")
        .arg(scratch.path())
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = text(&out.stdout);
    assert!(
        table
            .lines()
            .last()
            .unwrap()
            .ends_with(&format!("{expected} passed, 0 failed, 0 skipped")),
        "{table}"
    );
    // The unpacked copies are gone.
    assert_eq!(
        fs::read_dir(scratch.path()).unwrap().count(),
        0,
        "audit removes its temp dir"
    );
}

#[test]
fn every_check_fails_on_its_mutation_and_only_it() {
    let (root, scratch) = unpacked();
    let all = all_checks();
    let checks = applicable(&all, TargetKind::OsImage, None);
    // The checks for stemcells only are tried on stemcell trees by tests/stemcell.rs
    // (every_stemcell_check_fails_on_its_mutation_and_only_it).
    let exec = || Exec::With(support::bin());
    let failing = |report: &stemcell_builder::audit::report::Report| -> Vec<String> {
        report
            .results
            .iter()
            .filter(|r| r.status != Status::Pass)
            .map(|r| format!("{} ({})", r.id, r.detail))
            .collect()
    };
    let baseline = audit_tree(root, "copy", TargetKind::OsImage, None, &all, exec());
    assert!(
        failing(&baseline).is_empty(),
        "the unmutated copy passes: {:?}",
        failing(&baseline)
    );

    let mut problems = vec![];
    for check in &checks {
        let applied = match mutate::apply(root, scratch, &check.mutation) {
            Ok(applied) => applied,
            Err(e) => {
                problems.push(format!("{}: mutation does not apply: {e:#}", check.id));
                continue;
            }
        };
        let report = audit_tree(root, "copy", TargetKind::OsImage, None, &all, exec());
        applied.undo().expect("the mutation is undone");
        let failed = failing(&report);
        let only_it = failed.len() == 1 && failed[0].starts_with(&format!("{} (", check.id));
        if !only_it {
            problems.push(format!(
                "{}: its mutation made these fail: {failed:?}",
                check.id
            ));
        }
    }
    let after = audit_tree(root, "copy", TargetKind::OsImage, None, &all, exec());
    assert!(
        failing(&after).is_empty(),
        "every mutation was undone: {:?}",
        failing(&after)
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn audit_fails_with_the_check_named_and_reads_no_host_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("etc/ssh")).unwrap();
    // A tree whose sshd_config is a link to the host's /etc/hostname: the link resolves inside
    // the tree, where there is no such file, so the audit reads nothing of the host's.
    std::os::unix::fs::symlink("/etc/hostname", root.join("etc/ssh/sshd_config")).unwrap();
    let out = Command::new(support::bin())
        .arg("audit")
        .arg(&root)
        .args(["--format", "json"])
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a bare tree fails the audit");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let result = |id: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    };
    let root_login = result("ssh-permit-root-login");
    assert_eq!(root_login["status"], "fail");
    assert!(
        root_login["detail"]
            .as_str()
            .unwrap()
            .starts_with("cannot read /etc/ssh/sshd_config"),
        "{root_login}"
    );
    // Commands never run on a directory unless asked.
    let dig = result("agent-dig");
    assert_eq!(dig["status"], "skip");
    assert!(dig["detail"].as_str().unwrap().contains("--commands run"));
    assert!(report["summary"]["failed"].as_u64().unwrap() > 0);
}

#[test]
fn bad_targets_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.tgz");
    fs::write(&garbage, b"not an archive at all").unwrap();
    let missing = dir.path().join("missing.tgz");
    let bad_checks = dir.path().join("assets");
    fs::create_dir_all(bad_checks.join("checks")).unwrap();
    fs::write(
        bad_checks.join("checks/x.yml"),
        "checks:\n  - id: x\n    title: t\n    colour: red\n",
    )
    .unwrap();
    for (args, needle) in [
        (vec![missing.to_str().unwrap()], "does not exist"),
        (vec![garbage.to_str().unwrap()], "garbage.tgz"),
        (
            vec![
                dir.path().to_str().unwrap(),
                "--assets-dir",
                bad_checks.to_str().unwrap(),
            ],
            "colour",
        ),
    ] {
        let out = Command::new(support::bin())
            .arg("audit")
            .args(&args)
            .current_dir(support::repo())
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn a_long_name_bomb_is_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("bomb.tgz");
    support::write_long_name_bomb(&image);
    let (code, err, rss) =
        support::run_with_peak_rss(&["audit".as_ref(), image.as_os_str()], dir.path());
    assert_ne!(code, 0);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("over 4096 bytes"), "{err}");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
}
