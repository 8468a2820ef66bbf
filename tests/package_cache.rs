//! The package cache for real: a stage's `pkg_mgr install` in the default OS image's chroot,
//! twice (the second time apt downloads nothing), then `--offline` (from the cache alone, and
//! naming the package it lacks), a tampered cached `.deb` (never provided, dropped), a symlink
//! planted in the tree's apt archive (never followed), `cache ls`/`prune` on packages; and on
//! the busybox base: `--offline --no-cache` refused, and neither the cache's location nor
//! `--offline` changing a layer key.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{ok, status, text, Fixture};

fn cache_command(args: &[&str], cache: &Path) -> Output {
    Command::new(support::bin())
        .arg("cache")
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
        .output()
        .unwrap()
}

/// The cached packages' records (`packages/KEY.json`), as (apt file name, path of the .deb).
fn cached_debs(cache: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = fs::read_dir(cache.join("packages")) else {
        return vec![];
    };
    let mut out = vec![];
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "json") {
            let record: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            out.push((
                record["file"].as_str().unwrap().to_string(),
                path.with_extension("deb"),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn apt_installs_from_the_package_cache_the_second_time_and_offline_names_what_is_missing() {
    let (image, _) = support::default_os_image();
    let f = Fixture::new();
    let cache = f.path().join("cache");
    // A host file that a hostile tree links to from its apt archive: never read into the cache.
    let secret = f.path().join("secret_1.0_amd64.deb");
    fs::write(&secret, "host secret").unwrap();
    f.collection(&["install"]);
    f.stage(
        "install",
        r#"run_in_chroot "$chroot" 'mkdir -p /var/cache/apt/archives; ln -sfn "$1" /var/cache/apt/archives/secret_1.0_amd64.deb' "$host_file"
# shellcheck disable=SC2086
pkg_mgr install $packages
run_in_chroot "$chroot" 'for p in "$@"; do dpkg-query -W -f="\${Status}\n" "$p" | grep -q "install ok installed"; done' $packages"#,
    );
    let build = |extra: &[&str]| -> Output {
        let mut cmd = Command::new(support::bin());
        cmd.arg("build-os-image")
            .arg("--stages-dir")
            .arg(f.stages())
            .arg("--collection")
            .arg("test")
            .arg("--base")
            .arg(&image)
            .arg("--work-dir")
            .arg(f.work())
            .arg("--output")
            .arg(f.output())
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--until")
            .arg("install")
            .arg("--set")
            .arg(format!("host_file={}", secret.display()))
            .args(extra)
            .env_remove("resume_from")
            .env_remove("OS_NAME")
            .env_remove("OS_VERSION");
        cmd.output().unwrap()
    };
    let log = || fs::read_to_string(f.work().join("logs/01-install.log")).unwrap();

    // Cold: apt downloads hello (and whatever it needs) and the cache keeps it and the lists.
    let cold = build(&["--set", "packages=hello"]);
    ok(&cold);
    let cold_log = log();
    assert!(
        cold_log.contains("0 packages (0 B) from the cache"),
        "{cold_log}"
    );
    let need = cold_log
        .lines()
        .find(|l| l.contains("Need to get"))
        .unwrap_or_else(|| panic!("{cold_log}"));
    assert!(!need.contains("Need to get 0 B"), "{need}");
    let debs = cached_debs(&cache);
    assert!(
        debs.iter().any(|(file, _)| file.starts_with("hello_")),
        "{debs:?}"
    );
    assert!(
        !debs.iter().any(|(file, _)| file.starts_with("secret_")),
        "a symlink in the tree's archive was followed into the cache: {debs:?}"
    );
    assert_eq!(fs::read_to_string(&secret).unwrap(), "host secret");
    let ls = cache_command(&["ls"], &cache);
    ok(&ls);
    let listing = text(&ls.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("package ") && l.contains("hello ") && l.contains(" amd64")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.starts_with("lists ")),
        "{listing}"
    );

    // Warm: the stage runs again on the same tree; apt finds every package in its archive.
    let warm = build(&["--set", "packages=hello", "--resume-from", "install"]);
    ok(&warm);
    let warm_log = log();
    assert!(warm_log.contains("Need to get 0 B"), "{warm_log}");
    assert!(warm_log.contains("0 to download"), "{warm_log}");

    // Offline: the same install from the cache alone.
    let offline = build(&[
        "--set",
        "packages=hello",
        "--resume-from",
        "install",
        "--offline",
    ]);
    ok(&offline);

    // Offline with a package the cache lacks: one line naming it and the fix.
    let missing = build(&[
        "--set",
        "packages=hello sl",
        "--resume-from",
        "install",
        "--offline",
    ]);
    assert!(!missing.status.success());
    let missing_log = log();
    let line = missing_log
        .lines()
        .find(|l| l.contains("--offline: package"))
        .unwrap_or_else(|| panic!("{missing_log}"));
    assert!(
        line.contains(" sl ") && line.contains("build once without --offline"),
        "{line}"
    );
    assert!(!line.contains("hello"), "hello is cached: {line}");

    // A cached .deb whose bytes changed (same size) is never provided: offline it is missing,
    // and it is gone from the cache; online apt downloads it again.
    let (file, deb) = debs
        .iter()
        .find(|(file, _)| file.starts_with("hello_"))
        .unwrap()
        .clone();
    let mut bytes = fs::read(&deb).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&deb, &bytes).unwrap();
    let tampered = build(&[
        "--set",
        "packages=hello",
        "--resume-from",
        "install",
        "--offline",
    ]);
    assert!(!tampered.status.success());
    let tampered_log = log();
    assert!(
        tampered_log.contains(&format!("{file} no longer matched its sha256")),
        "{tampered_log}"
    );
    assert!(
        tampered_log.contains("--offline: package hello "),
        "{tampered_log}"
    );
    assert!(!deb.exists(), "the tampered .deb is still cached");
    let again = build(&["--set", "packages=hello sl", "--resume-from", "install"]);
    ok(&again);
    assert!(
        cached_debs(&cache).iter().any(|(f, _)| *f == file),
        "downloaded and kept again"
    );

    // prune: --keep counts layers, bases and lists, not packages (a kernel is a dozen of
    // them); --max-size bounds packages, least recently used first.
    let before = cached_debs(&cache).len();
    assert!(before >= 2, "{before}");
    let pruned = cache_command(&["prune", "--keep", "1"], &cache);
    ok(&pruned);
    assert_eq!(
        cached_debs(&cache).len(),
        before,
        "{}",
        text(&pruned.stdout)
    );
    let pruned = cache_command(&["prune", "--max-size", "1"], &cache);
    ok(&pruned);
    assert!(
        text(&pruned.stdout).contains("removed package "),
        "{}",
        text(&pruned.stdout)
    );
    assert!(cached_debs(&cache).is_empty());
}

#[test]
fn offline_with_no_cache_is_refused_in_one_line() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "true");
    let out = f.build(&["--offline"]);
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--offline") && stderr.contains("--no-cache"),
        "{stderr}"
    );
    assert!(!f.work().exists(), "refused before the work dir was made");
}

#[test]
fn the_cache_location_and_offline_change_no_layer_key() {
    let f = Fixture::new();
    f.collection(&["one", "two"]);
    f.stage(
        "one",
        r#"echo "${package_cache_dir}|${offline}" >"$work/seen"; echo one >"$chroot/one""#,
    );
    f.stage("two", r#"echo two >"$chroot/two""#);
    let first_cache = f.path().join("cache-a");
    let other_cache = f.path().join("cache-b");
    let work = f.work();
    let first = f
        .build_command_with(&work, Some(&first_cache), &[])
        .output()
        .unwrap();
    ok(&first);
    assert_eq!(
        fs::read_to_string(work.join("seen")).unwrap().trim(),
        format!("{}|", first_cache.display()),
        "stages see the package cache as $package_cache_dir"
    );
    // Another cache dir, offline: the same keys, so the work dir's layers are reused.
    let moved = f
        .build_command_with(&work, Some(&other_cache), &["--offline"])
        .output()
        .unwrap();
    ok(&moved);
    assert_eq!(status(&moved, "01-one"), "cached (work dir)");
    assert_eq!(status(&moved, "02-two"), "cached (work dir)");
    // Another work dir, offline, the first cache: every layer comes from the cache.
    let elsewhere = f.path().join("work-2");
    let cached = f
        .build_command_with(&elsewhere, Some(&first_cache), &["--offline"])
        .output()
        .unwrap();
    ok(&cached);
    assert_eq!(status(&cached, "01-one"), "cached (cache)");
    assert_eq!(status(&cached, "02-two"), "cached (cache)");
    // And the stage, when it runs, sees both.
    let rerun = f
        .build_command_with(
            &elsewhere,
            Some(&other_cache),
            &["--offline", "--resume-from", "one"],
        )
        .output()
        .unwrap();
    ok(&rerun);
    assert_eq!(
        fs::read_to_string(elsewhere.join("seen")).unwrap().trim(),
        format!("{}|1", other_cache.display())
    );
    // They are the builder's to decide, not --set's.
    let set = f
        .build_command_with(
            &work,
            Some(&first_cache),
            &["--set", "package_cache_dir=/x"],
        )
        .output()
        .unwrap();
    assert!(!set.status.success());
}
