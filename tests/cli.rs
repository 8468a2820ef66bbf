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
    assert!(eventually(20, || f
        .layer("01-hang")
        .join("inside")
        .exists()));
    assert!(
        mounts_below(&f.work().canonicalize().unwrap()).is_empty(),
        "the stage's overlay is not in the host's mount table"
    );
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

fn partial_files(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

fn signal(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

/// A tree whose packing takes long but costs no disk: 20 GiB of holes.
fn slow_tree(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let big = std::fs::File::create(dir.join("holes")).unwrap();
    big.set_len(20 << 30).unwrap();
}

#[test]
fn sigint_or_sigterm_mid_pack_stops_and_removes_the_partial_file() {
    use nix::sys::signal::Signal;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    slow_tree(&tree);
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        let out_dir = dir.path().join(format!("out-{sig}"));
        std::fs::create_dir(&out_dir).unwrap();
        let image = out_dir.join("os.tgz");
        let child = sb()
            .arg("pack")
            .arg(&tree)
            .arg(&image)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        assert!(eventually(20, || !partial_files(&out_dir).is_empty()));
        std::thread::sleep(std::time::Duration::from_millis(300));
        signal(&child, sig);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success(), "{sig}: non-zero exit");
        assert!(
            out.status.code().is_some(),
            "{sig}: exits by itself, not killed by the signal"
        );
        let all = text(&out.stderr);
        // Progress lines (not a terminal) come first; the error is one line.
        let err: Vec<&str> = all.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(err.len(), 1, "{sig}: {all}");
        assert!(
            err[0].contains("interrupted") && err[0].contains(&image.display().to_string()),
            "{sig}: {all}"
        );
        assert_eq!(
            std::fs::read_dir(&out_dir).unwrap().count(),
            0,
            "{sig}: no image, no sidecar, no partial file"
        );
    }
}

#[test]
fn ctrl_c_during_the_archive_step_stops_the_build() {
    let f = Fixture::new();
    f.collection(&["grow"]);
    // Host side: 20 GiB of holes in the tree make the archive step long and cost no disk.
    f.stage("grow", r#"truncate -s 20G "$chroot/holes""#);
    let builder = f
        .build_command(&[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(eventually(60, || !partial_files(&f.out_dir()).is_empty()));
    std::thread::sleep(std::time::Duration::from_millis(300));
    signal(&builder, nix::sys::signal::Signal::SIGINT);
    let out = builder.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let err = text(&out.stderr);
    assert!(
        err.contains("interrupted") && err.contains("os-image.tgz"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(f.out_dir()).unwrap().count(),
        0,
        "no output, no temp file"
    );
}

/// A gzip archive of `dirs` directories holding 1000 empty files each: slow to unpack, small.
fn many_files_archive(path: &std::path::Path, dirs: usize) {
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut builder = tar::Builder::new(gz);
    let mut dir_header = tar::Header::new_gnu();
    dir_header.set_entry_type(tar::EntryType::Directory);
    dir_header.set_mode(0o755);
    dir_header.set_uid(0);
    dir_header.set_gid(0);
    dir_header.set_mtime(0);
    dir_header.set_size(0);
    builder
        .append_data(&mut dir_header.clone(), "./", std::io::empty())
        .unwrap();
    for d in 0..dirs {
        builder
            .append_data(
                &mut dir_header.clone(),
                format!("./d{d:04}/"),
                std::io::empty(),
            )
            .unwrap();
        for i in 0..1000 {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(0);
            builder
                .append_data(&mut header, format!("./d{d:04}/f{i:04}"), std::io::empty())
                .unwrap();
        }
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn sigint_mid_unpack_says_what_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("many.tgz");
    many_files_archive(&archive, 300);
    // A target the unpack creates is removed again; one the user made is left, said partial.
    for given in [false, true] {
        let target = dir.path().join(format!("target-{given}"));
        if given {
            std::fs::create_dir(&target).unwrap();
        }
        let child = sb()
            .arg("unpack")
            .arg(&archive)
            .arg(&target)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if !eventually(20, || target.join("d0000").exists()) {
            signal(&child, nix::sys::signal::Signal::SIGKILL);
            let out = child.wait_with_output().unwrap();
            panic!(
                "unpack never started: {} {}",
                text(&out.stdout),
                text(&out.stderr)
            );
        }
        signal(&child, nix::sys::signal::Signal::SIGINT);
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        assert!(out.status.code().is_some(), "exits by itself");
        let err = text(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("interrupted"), "{err}");
        if given {
            assert!(target.exists(), "the user's directory stays");
            assert!(
                err.contains("partial") && err.contains(&target.display().to_string()),
                "{err}"
            );
        } else {
            assert!(
                !target.exists(),
                "the directory it created is removed: {err}"
            );
        }
    }
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

#[test]
fn a_closed_or_full_stdout_is_not_a_panic() {
    // `| head -1`: the reader has gone before anything is written (its end of the pipe is
    // closed here); the command ends quietly and successfully, as other tools do.
    let (read, write) = nix::unistd::pipe().unwrap();
    drop(read);
    let out = sb()
        .args(["list-stages", "--collection", "stemcell-openstack"])
        .current_dir(support::repo())
        .stdout(Stdio::from(write))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err, "", "nothing to say about a closed pipe");
    // A full device: one line naming standard output, exit 1, no panic (which exits 101).
    let out = sb()
        .args(["list-stages", "--collection", "stemcell-openstack"])
        .current_dir(support::repo())
        .stdout(fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writing to standard output") && !err.contains("panicked"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn wrong_inputs_to_audit_disk_image_and_shell_name_the_real_cause() {
    let f = Fixture::new();
    let one_line = |args: &[&str], want: &str| {
        let out = sb().args(args).output().unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    };
    let base = f.base();
    let base = base.to_str().unwrap();
    let missing = f.path().join("missing");
    let missing = missing.to_str().unwrap();
    one_line(
        &["audit", base, "--iaas", "nosuchcloud"],
        "unknown IaaS/hypervisor pair nosuchcloud",
    );
    // A mistyped scratch dir is refused, not made and left behind.
    let image = f.path().join("os.tgz");
    let pack = sb().arg("pack").arg(base).arg(&image).output().unwrap();
    assert!(pack.status.success(), "{}", text(&pack.stderr));
    one_line(
        &["audit", image.to_str().unwrap(), "--scratch-dir", missing],
        "--scratch-dir",
    );
    assert!(!std::path::Path::new(missing).exists());
    let out_dir = f.path().join("disk");
    let out_dir = out_dir.to_str().unwrap();
    one_line(&["disk-image", missing, out_dir], "is not a directory");
    one_line(
        &["disk-image", base, out_dir],
        "has no /usr/sbin/grub-install: install grub-pc",
    );
    // A size that would wrap around, and one too small for the tree.
    fs::create_dir_all(f.base().join("usr/sbin")).unwrap();
    fs::write(f.base().join("usr/sbin/grub-install"), "").unwrap();
    one_line(
        &[
            "disk-image",
            base,
            out_dir,
            "--size-mib",
            "18446744073709551615",
        ],
        "is more than",
    );
    fs::write(f.base().join("big"), support::noise(8 << 20, 7)).unwrap();
    one_line(
        &["disk-image", base, out_dir, "--size-mib", "1"],
        "cannot hold",
    );
    assert!(!std::path::Path::new(out_dir).exists(), "nothing written");
    // A directory that is not a work dir of ours is named as such.
    one_line(&["shell", base], "is not a work dir of stemcell-builder");
}
