//! Bases that do not come from a bootstrapper: `--base tarball:PATH` (a root tarball, as
//! `docker export` writes one: plain, gzip or zstd) and `--base binaries:bash,ls` (host programs
//! with every library they load), each run through the real stage runner.

mod support;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use support::{text, Fixture};

/// `build-os-image` on the fixture's stages with `base` as the base.
fn build(f: &Fixture, base: &str) -> Output {
    Command::new(support::bin())
        .arg("build-os-image")
        .arg("--stages-dir")
        .arg(f.stages())
        .args(["--collection", "test", "--no-cache", "--base", base])
        .arg("--work-dir")
        .arg(f.work())
        .arg("--output")
        .arg(f.output())
        .env_remove("resume_from")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Entry names of an OS image (any compression GNU tar reads).
fn members(image: &Path) -> Vec<String> {
    ok(&Command::new("tar").arg("-taf").arg(image).output().unwrap())
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn a_tarball_base_plain_gzip_or_zstd_runs_a_stage_in_its_chroot() {
    let f = Fixture::new();
    f.collection(&["inside"]);
    f.stage(
        "inside",
        r#"run_in_chroot "$chroot" 'echo "ran in $(hostname)" > /stage-was-here'"#,
    );
    // As `docker export` writes it: entries named without ./ and an empty .dockerenv.
    fs::write(f.base().join(".dockerenv"), "").unwrap();
    let names: Vec<String> = fs::read_dir(f.base())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let plain = f.path().join("exported.tar");
    ok(&Command::new("tar")
        .arg("-C")
        .arg(f.base())
        .args(["--numeric-owner", "-cf"])
        .arg(&plain)
        .args(&names)
        .output()
        .unwrap());
    let gzip = f.path().join("exported.tar.gz");
    let zstd = f.path().join("exported.tar.zst");
    ok(&Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -c {p} > {g} && zstd -q -c {p} > {z}",
            p = plain.display(),
            g = gzip.display(),
            z = zstd.display()
        ))
        .output()
        .unwrap());
    for tarball in [&plain, &gzip, &zstd] {
        let out = build(&f, &format!("tarball:{}", tarball.display()));
        ok(&out);
        let written = fs::read_to_string(f.layer("01-inside").join("stage-was-here")).unwrap();
        assert!(written.starts_with("ran in "), "{written}");
        let image = members(&f.output());
        for member in ["./stage-was-here", "./bin/busybox", "./.dockerenv"] {
            assert!(
                image.iter().any(|m| m == member),
                "{member} in the OS image from {}",
                tarball.display()
            );
        }
        fs::remove_file(f.output()).unwrap();
    }
}

#[test]
fn a_tarball_base_with_hostile_paths_is_refused_and_nothing_escapes() {
    let f = Fixture::new();
    f.collection(&["noop"]);
    f.stage("noop", "true");
    let hostile = f.path().join("hostile.tar");
    let mut builder = tar::Builder::new(fs::File::create(&hostile).unwrap());
    for (name, data) in [
        ("./etc/ok", &b"fine"[..]),
        ("./../escaped-from-base", b"evil"),
    ] {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.finish().unwrap();
    let out = build(&f, &format!("tarball:{}", hostile.display()));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    let line = err.lines().find(|l| l.starts_with("error:")).unwrap();
    assert!(
        line.contains("--base tarball:") && line.contains("contains '..'"),
        "{err}"
    );
    assert!(!f.work().join("escaped-from-base").exists());
    assert!(!f.path().join("escaped-from-base").exists());
    assert!(!f.output().exists(), "no OS image");
}

#[test]
fn a_base_that_is_not_a_tarball_is_refused_before_anything_runs() {
    let f = Fixture::new();
    f.collection(&["noop"]);
    f.stage("noop", "true");
    let notes = f.path().join("notes.txt");
    fs::write(&notes, "not a tarball\n".repeat(100)).unwrap();
    let out = build(&f, &format!("tarball:{}", notes.display()));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is not a tar archive"), "{err}");
    assert!(!f.work().exists(), "nothing ran");
    let out = build(&f, "tarball:/nonexistent/base.tar");
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_binaries_base_runs_bash_and_ls_in_a_chroot() {
    let f = Fixture::new();
    f.collection(&["check"]);
    // The stage sees the copied programs from the host side.
    f.stage(
        "check",
        r#"test -x "$chroot/usr/bin/bash" && test -x "$chroot/usr/bin/ls" && echo ok >"$work/check""#,
    );
    let out = build(&f, "binaries:bash,ls");
    ok(&out);
    assert_eq!(fs::read_to_string(f.work().join("check")).unwrap(), "ok\n");
    // The base layer holds the tree the binaries made (the work dir's chroot is only the
    // stages' mount point).
    let root = f.layer("00-base");
    let listing = Command::new("chroot")
        .arg(&root)
        .args(["/usr/bin/bash", "-c", "ls /; ls -ln /etc/passwd"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap();
    let shown = ok(&listing);
    for dir in ["etc", "usr", "tmp"] {
        assert!(shown.lines().any(|l| l == dir), "{dir} in:\n{shown}");
    }
    assert!(
        shown.contains(" 0 0 "),
        "numeric owner of /etc/passwd: {shown}"
    );
    // ls -l resolves names through the root's own passwd and nsswitch.conf.
    let named = ok(&Command::new("chroot")
        .arg(&root)
        .args(["/usr/bin/ls", "-l", "/etc/group"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .unwrap());
    assert!(named.contains("root root"), "{named}");
    // The loader at its PT_INTERP path, reached through the same symlinks as on the host.
    let interp = if cfg!(target_arch = "x86_64") {
        "lib64/ld-linux-x86-64.so.2"
    } else {
        "lib/ld-linux-aarch64.so.1"
    };
    assert!(root.join(interp).exists(), "{interp}");
    if fs::symlink_metadata("/lib64").is_ok_and(|m| m.file_type().is_symlink()) {
        assert!(fs::symlink_metadata(root.join("lib64"))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    // Nothing but what the programs need: no shell other than bash, no package database.
    assert!(!root.join("usr/bin/dash").exists());
    assert!(!root.join("var/lib/dpkg").exists());
    let image = members(&f.output());
    assert!(image.iter().any(|m| m == "./usr/bin/bash"));
    assert!(image.iter().any(|m| m.ends_with("/libc.so.6")), "{image:?}");
}

#[test]
fn a_binaries_base_naming_a_missing_program_is_one_line_before_anything_runs() {
    let f = Fixture::new();
    f.collection(&["noop"]);
    f.stage("noop", "true");
    let out = build(&f, "binaries:bash,no-such-program-here");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_eq!(
        err.trim(),
        "error: --base binaries: 'no-such-program-here' not found on PATH: install it, or give its absolute path"
    );
    assert!(!f.work().exists(), "nothing ran");
}
