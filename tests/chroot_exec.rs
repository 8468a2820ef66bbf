//! chroot-exec and the stage sandbox, for real: namespaces, mounts, /dev, the environment, and
//! that nothing (mount or process) survives the command or a SIGKILLed builder.

mod support;

use std::fs;
use std::process::{Command, Stdio};

use support::{busybox_root, eventually, mounts_below, processes_with, text, Fixture};

fn chroot_exec(root: &std::path::Path, script: &str) -> std::process::Output {
    Command::new(support::bin())
        .arg("chroot-exec")
        .arg(root)
        .args(["--", "/bin/sh", "-c", script])
        .env("FOO_SECRET", "leak")
        .env("http_proxy", "http://proxy.invalid:3128")
        .output()
        .unwrap()
}

#[test]
fn runs_inside_the_tree_with_fresh_namespaces_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_root(&root);
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let out = chroot_exec(
        &root,
        r#"set -e
echo "pid=$$"
echo "env=$(env | sort | tr '\n' ' ')"
hostname changed-inside
test -c /dev/null && test -c /dev/urandom && test -c /dev/tty && echo devices-ok
test -e /dev/pts/ptmx && echo devpts-ok
grep -q ' /proc proc ' /proc/mounts && echo proc-ok
grep -E ' /sys sysfs ro[ ,]' /proc/mounts >/dev/null && echo sys-ro-ok
/usr/sbin/policy-rc.d || echo "policy=$?"
if echo x >/etc/resolv.conf 2>/dev/null; then echo resolv-writable; else echo resolv-ro; fi
exit 7"#,
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit status passes through: {stdout} {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("pid=2\n"),
        "the command runs under a fresh PID namespace's init: {stdout}"
    );
    assert!(
        stdout.contains("devices-ok") && stdout.contains("devpts-ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("proc-ok") && stdout.contains("sys-ro-ok"),
        "{stdout}"
    );
    assert!(stdout.contains("policy=101"), "{stdout}");
    assert!(stdout.contains("resolv-ro"), "{stdout}");
    assert!(
        !stdout.contains("FOO_SECRET"),
        "clean environment: {stdout}"
    );
    assert!(
        stdout.contains("http_proxy=http://proxy.invalid:3128"),
        "proxies pass: {stdout}"
    );
    assert!(
        stdout.contains("LANG=C.UTF-8") && stdout.contains("DEBIAN_FRONTEND=noninteractive"),
        "{stdout}"
    );

    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname,
        "host hostname untouched"
    );
    assert!(
        mounts_below(&root).is_empty(),
        "no mount left: {:?}",
        mounts_below(&root)
    );
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d removed after the run"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "",
        "tree's resolv.conf untouched"
    );
}

#[test]
fn daemons_started_in_the_chroot_die_with_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_root(&root);
    let out = chroot_exec(
        &root,
        "sleep 424242 </dev/null >/dev/null 2>&1 & echo started",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        eventually(5, || processes_with("sleep 424242").is_empty()),
        "the background sleep was killed"
    );
}

#[test]
fn a_missing_root_is_a_clear_error() {
    let out = Command::new(support::bin())
        .args(["chroot-exec", "/nonexistent-root", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("chroot /nonexistent-root does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigkill_of_the_builder_mid_stage_leaves_no_mount_and_no_process() {
    let f = Fixture::new();
    f.collection(&["hang"]);
    f.stage(
        "hang",
        r#"run_in_chroot "$chroot" 'sleep 515151 & touch /inside-started; sleep 525252'"#,
    );
    let mut builder = f
        .build_command(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(20, || f.layer("01-hang").join("inside-started").exists()),
        "stage reached the chroot (its write landed in its layer)"
    );
    let work = f.work().canonicalize().unwrap();
    assert!(
        mounts_below(&work).is_empty(),
        "stage mounts (the layer overlay, /proc) are invisible to the host: {:?}",
        mounts_below(&work)
    );
    assert!(!processes_with("sleep 525252").is_empty());

    builder.kill().unwrap(); // SIGKILL
    builder.wait().unwrap();

    assert!(
        eventually(10, || processes_with("sleep 515151").is_empty()
            && processes_with("sleep 525252").is_empty()),
        "stage processes survived: {:?}",
        processes_with("sleep 5")
    );
    assert!(
        mounts_below(&work).is_empty(),
        "mounts leaked: {:?}",
        mounts_below(&work)
    );
    assert!(
        processes_with(&f.work().display().to_string()).is_empty(),
        "no stage process left"
    );
    // No output under the final name.
    assert!(!f.output().exists());
}
