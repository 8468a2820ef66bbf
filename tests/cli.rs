//! The command line as a user meets it: doctor, OS selection by the reference's environment
//! names, the Ubuntu keyring error, bad --set pairs, a full disk, and Ctrl-C mid-stage.

mod support;

use std::fs;
use std::process::{Command, Stdio};

use support::{eventually, mounts_below, processes_with, text, Fixture};

fn sb() -> Command {
    let mut cmd = Command::new(support::bin());
    cmd.env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .env_remove("resume_from");
    cmd
}

#[test]
fn doctor_names_every_check_and_its_fix() {
    let out = sb().arg("doctor").output().unwrap();
    let report = text(&out.stdout);
    for check in [
        "root",
        "bootstrapper",
        "overlayfs",
        "loop devices",
        "qemu-img",
        "free disk",
    ] {
        assert!(report.contains(check), "{check} in {report}");
    }
    assert!(
        !report.contains("FAIL") || !out.status.success(),
        "a failed required check fails the command"
    );
}

#[test]
fn reference_environment_names_select_the_os() {
    let out = sb()
        .arg("list-stages")
        .env("OS_NAME", "ubuntu")
        .env("OS_VERSION", "jammy")
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("collection 'os-ubuntu' for ubuntu-jammy"),
        "{}",
        text(&out.stdout)
    );
    let out = sb()
        .args(["list-stages", "--os", "centos-7"])
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr)
        .contains("valid names are debian-bookworm, debian-trixie, ubuntu-jammy, ubuntu-noble"));
}

#[test]
fn ubuntu_without_its_keyring_says_how_to_pass_one() {
    // An assets dir whose Ubuntu definition names a keyring no host has, so the check runs the
    // same whether or not this host happens to have Ubuntu's keyring installed.
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    fs::create_dir_all(assets.join("os")).unwrap();
    let shipped = fs::read_to_string(support::repo().join("assets/os/ubuntu-noble.yml")).unwrap();
    let keyring_line = shipped
        .lines()
        .find(|l| l.starts_with("keyring:"))
        .expect("ubuntu-noble.yml names its keyring");
    let missing = dir.path().join("no-such-dir/ubuntu-archive-keyring.gpg");
    fs::write(
        assets.join("os/ubuntu-noble.yml"),
        shipped.replace(keyring_line, &format!("keyring: {}", missing.display())),
    )
    .unwrap();
    let out = sb()
        .args(["build-os-image", "--os", "ubuntu-noble", "--assets-dir"])
        .arg(&assets)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .arg("--output")
        .arg(dir.path().join("noble.tgz"))
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("ubuntu-keyring") && err.contains("--keyring FILE"),
        "{err}"
    );
    assert!(!dir.path().join("work").exists(), "nothing ran: {err}");

    let out = sb()
        .args([
            "build-os-image",
            "--os",
            "ubuntu-noble",
            "--keyring",
            "/nonexistent.gpg",
            "--work-dir",
        ])
        .arg(dir.path().join("work"))
        .arg("--output")
        .arg(dir.path().join("noble.tgz"))
        .current_dir(support::repo())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("keyring /nonexistent.gpg does not exist"),
        "{err}"
    );
    assert!(!dir.path().join("work").exists(), "nothing ran: {err}");
}

#[test]
fn a_malformed_set_pair_is_one_line() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "true");
    let out = f
        .build_command(&["--set", "novalue"])
        .env_remove("novalue")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("--set novalue: expected KEY=VALUE"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_full_disk_is_reported_as_such_naming_the_path() {
    let f = Fixture::new();
    // A 1 MiB tmpfs in a private mount namespace: it vanishes with the command.
    let small = f.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=1m tmpfs {dir} && exec {bin} pack --compression zstd {tree} {dir}/os.tgz",
        dir = small.display(),
        bin = support::bin().display(),
        tree = f.base().display()
    );
    // 4 MiB that no compressor can shrink.
    let random = support::noise(4 << 20, 0x9e3779b97f4a7c15);
    std::fs::write(f.base().join("big"), random).unwrap();
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("no space left on device") && err.contains(&small.display().to_string()),
        "{err}"
    );
    assert!(mounts_below(&small).is_empty());
}

#[test]
fn ctrl_c_mid_stage_stops_cleanly_with_nothing_left() {
    let f = Fixture::new();
    f.collection(&["hang"]);
    f.stage(
        "hang",
        r#"run_in_chroot "$chroot" 'touch /inside; sleep 616161'"#,
    );
    let builder = f
        .build_command(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(20, || f.chroot().join("inside").exists()));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(builder.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = builder.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupted during stage 'hang'") && err.contains("--resume-from hang"),
        "{err}"
    );
    assert!(
        eventually(10, || processes_with("sleep 616161").is_empty()),
        "stage processes gone"
    );
    assert!(mounts_below(&f.work().canonicalize().unwrap()).is_empty());
    assert_eq!(
        std::fs::read_dir(f.out_dir()).unwrap().count(),
        0,
        "no output, no temp file"
    );
}

#[test]
fn empty_reference_variables_count_as_unset() {
    // As a CI task passes unset params: HYPERVISOR= must mean the IaaS's default, not "".
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-os-image.tgz");
    let out = sb()
        .args([
            "build-stemcell",
            "--version",
            "1",
            "--agent",
            "/bin/true",
            "--os-image",
        ])
        .arg(&missing)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .env("IAAS", "warden")
        .env("HYPERVISOR", "")
        .env("resume_from", "")
        .env("STEMCELL_BUILDER_STAGES_DIR", "")
        .current_dir(support::repo())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("OS image {} does not exist", missing.display()))
            && err.contains("build-os-image"),
        "the first problem is the missing image, not the empty variables: {err}"
    );
    assert!(!dir.path().join("work").exists(), "nothing ran");
}
