//! The stage runner on a tiny busybox base: order, contract variables, logs, settings,
//! reports, failures, resume, bad input, the work-dir lock and atomic outputs.

mod support;

use std::fs;

use support::{text, Fixture};

#[test]
fn stages_run_config_first_then_apply_in_order_with_the_contract() {
    let f = Fixture::new();
    f.collection(&["first", "second"]);
    f.config(
        "first",
        "greeting=\"hello $os_name\"\npersist greeting\necho config-first >>\"$work/order\"",
    );
    f.stage(
        "first",
        r#"echo apply-first >>"$work/order"
echo "greeting=$greeting chroot=$chroot assets=$assets_dir base=$base_dir lib=$lib_dir extra=${extra:-}" >"$work/env"
echo "from first" >"$chroot/first.txt"
echo "a line on stdout"; echo "a line on stderr" >&2"#,
    );
    f.config("second", "echo config-second >>\"$work/order\"");
    f.stage("second", r#"echo apply-second >>"$work/order"; echo "greeting=${greeting:-unset}" >"$work/second-env""#);

    let out = f.build(&["--set", "extra=42"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let order = fs::read_to_string(f.work().join("order")).unwrap();
    assert_eq!(
        order,
        "config-first\nconfig-second\napply-first\napply-second\n"
    );
    let env = fs::read_to_string(f.work().join("env")).unwrap();
    let stages = f.stages().canonicalize().unwrap();
    assert!(env.contains("greeting=hello debian"), "{env}");
    assert!(
        env.contains(&format!(
            "chroot={}",
            f.chroot().canonicalize().unwrap().display()
        )),
        "{env}"
    );
    assert!(
        env.contains(&format!("assets={}/first/assets", stages.display())),
        "{env}"
    );
    assert!(env.contains(&format!("base={}", stages.display())), "{env}");
    assert!(env.contains("extra=42"), "{env}");
    // A stage only sees its own persisted settings.
    assert_eq!(
        fs::read_to_string(f.work().join("second-env")).unwrap(),
        "greeting=unset\n"
    );
    // Settings live under the work dir, never in the stages' tree.
    assert!(f.work().join("settings/stages/01-first.bash").exists());
    assert!(!fs::read_dir(f.stages().join("first"))
        .unwrap()
        .any(|e| e.unwrap().file_name() == "settings.bash"));

    let log = fs::read_to_string(f.work().join("logs/01-first.log")).unwrap();
    assert!(
        log.contains("a line on stdout") && log.contains("a line on stderr"),
        "{log}"
    );
    assert!(f.work().join("logs/02-second.log").exists());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("a line on stdout"),
        "console shows stage output: {stderr}"
    );

    let report = text(&out.stdout);
    assert!(
        report.contains("duration report")
            && report.contains("01-first")
            && report.contains("02-second"),
        "{report}"
    );
    assert!(
        report.contains("archive") && report.contains("total"),
        "{report}"
    );

    // The OS image holds what the stages wrote, with its sidecars.
    assert!(f.output().exists());
    let listing = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(f.output())
        .output()
        .unwrap();
    assert!(
        text(&listing.stdout).lines().any(|l| l == "./first.txt"),
        "{}",
        text(&listing.stdout)
    );
    let check = std::process::Command::new("sha256sum")
        .arg("-c")
        .arg("os-image.tgz.sha256")
        .current_dir(f.out_dir())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stdout));
    assert!(f.out_dir().join("os-image.tgz.packages.txt").exists());
}

#[test]
fn a_failing_stage_names_itself_its_status_log_tail_and_resume_command() {
    let f = Fixture::new();
    f.collection(&["good", "bad", "never"]);
    f.stage("good", "true");
    f.stage(
        "bad",
        "for i in $(seq 1 30); do echo \"line $i\"; done\nexit 3",
    );
    f.stage("never", "touch \"$work/never-ran\"");
    let out = f.build(&[]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    // The console streamed every line; the error message itself starts at "error:".
    let err = &stderr[stderr.find("error:").expect("an error line")..];
    assert!(err.contains("stage 'bad' failed"), "{err}");
    assert!(err.contains("exited with status 3"), "{err}");
    assert!(
        err.contains("line 30") && err.contains("\nline 11\n") && !err.contains("\nline 10\n"),
        "last 20 lines: {err}"
    );
    assert!(err.contains("logs/02-bad.log"), "{err}");
    assert!(err.contains("--resume-from bad"), "{err}");
    assert!(!f.work().join("never-ran").exists());
    // Nothing under the final name, and no temporary left over.
    assert_eq!(fs::read_dir(f.out_dir()).unwrap().count(), 0);
    assert!(
        text(&out.stdout).contains("failed"),
        "report printed after a failure"
    );
}

#[test]
fn resume_from_skips_earlier_stages_and_keeps_the_chroot() {
    let f = Fixture::new();
    f.collection(&["one", "two", "three"]);
    f.stage(
        "one",
        "echo one >>\"$work/ran\"; echo kept >\"$chroot/from-one\"",
    );
    let fail_two = f.path().join("fail-two");
    f.stage(
        "two",
        &format!(
            "echo two >>\"$work/ran\"; [ -e {} ] && exit 1; true",
            fail_two.display()
        ),
    );
    f.stage("three", "echo three >>\"$work/ran\"");
    fs::write(&fail_two, "").unwrap();
    let failed = f.build(&[]);
    assert!(!failed.status.success());
    assert!(
        text(&failed.stderr).contains("stage 'two' failed"),
        "{}",
        text(&failed.stderr)
    );
    fs::remove_file(&fail_two).unwrap();

    let out = f.build(&["--resume-from", "two"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(f.work().join("ran")).unwrap(),
        "one\ntwo\ntwo\nthree\n"
    );
    assert!(f.layer("01-one").join("from-one").exists());
    assert!(text(&out.stdout).contains("skipped (resume)"));

    // The reference builder's environment name works too.
    let out = f
        .build_command(&[])
        .env("resume_from", "three")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(fs::read_to_string(f.work().join("ran"))
        .unwrap()
        .ends_with("three\nthree\n"));
}

#[test]
fn unknown_resume_stage_is_an_error_listing_valid_names() {
    let f = Fixture::new();
    f.collection(&["alpha", "beta"]);
    f.stage("alpha", "true");
    f.stage("beta", "true");
    let out = f.build(&["--resume-from", "gamma"]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown stage 'gamma'") && err.contains("alpha, beta"),
        "{err}"
    );
    assert!(!f.work().exists(), "nothing ran");
}

fn assert_bad_input(f: &Fixture, needle: &str) {
    let out = f.build(&[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "expected {needle:?} in {err}");
    assert!(!f.work().exists(), "nothing ran before the error: {err}");
}

#[test]
fn missing_apply_sh_is_one_line_before_anything_runs() {
    let f = Fixture::new();
    f.collection(&["ok", "empty"]);
    f.stage("ok", "touch \"$work/ran\"");
    fs::create_dir_all(f.stages().join("empty")).unwrap();
    assert_bad_input(&f, "stage 'empty' has no apply.sh");
}

#[test]
fn non_executable_apply_sh_says_chmod() {
    use std::os::unix::fs::PermissionsExt;
    let f = Fixture::new();
    f.collection(&["plain"]);
    f.stage("plain", "true");
    let apply = f.stages().join("plain/apply.sh");
    fs::set_permissions(&apply, fs::Permissions::from_mode(0o644)).unwrap();
    assert_bad_input(&f, "chmod +x");
}

#[test]
fn malformed_collections_yml_names_the_file() {
    let f = Fixture::new();
    fs::write(
        f.stages().join("collections.yml"),
        "collections:\n  test: [a, b\n",
    )
    .unwrap();
    assert_bad_input(&f, "collections.yml is malformed");
}

#[test]
fn stage_listed_but_absent_names_it() {
    let f = Fixture::new();
    f.collection(&["ghost"]);
    assert_bad_input(&f, "stage 'ghost' is listed in collection 'test'");
}

#[test]
fn list_stages_prints_the_resolved_order_and_runs_nothing() {
    let f = Fixture::new();
    f.collection(&["b_stage", "a_stage"]);
    let marker = f.path().join("ran");
    f.stage("b_stage", &format!("touch {}", marker.display()));
    f.stage("a_stage", "true");
    f.config("a_stage", "true");
    let out = std::process::Command::new(support::bin())
        .args(["list-stages", "--collection", "test", "--stages-dir"])
        .arg(f.stages())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(
        listing.contains("01 b_stage\n02 a_stage  (config.sh)\n"),
        "{listing}"
    );
    assert!(!marker.exists(), "list-stages ran a stage");
    assert!(!f.work().exists(), "list-stages made a work dir");
}

#[test]
fn a_held_work_dir_is_refused_and_freed_when_the_holder_is_killed() {
    let f = Fixture::new();
    f.collection(&["slow"]);
    f.stage("slow", "touch \"$work/started\"; sleep 30");
    let mut first = f
        .build_command(&[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(support::eventually(20, || f
        .work()
        .join("started")
        .exists()));

    let second = f.build(&[]);
    assert!(!second.status.success());
    let err = text(&second.stderr);
    assert!(
        err.contains("is in use by another build") && err.contains("--work-dir"),
        "{err}"
    );

    first.kill().unwrap(); // SIGKILL: the kernel drops the lock
    first.wait().unwrap();
    f.stage("slow", "true");
    let third = f.build(&[]);
    assert!(third.status.success(), "{}", text(&third.stderr));
}

#[test]
fn output_directory_must_exist() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "true");
    let out = f.build(&["--output", "/nonexistent-dir/os.tgz"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("output directory /nonexistent-dir does not exist"),
        "{}",
        text(&out.stderr)
    );
}
