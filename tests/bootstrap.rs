//! The base for real: debootstrap when asked (the fallback when mmdebstrap is missing), its
//! packages kept in the package cache, the
//! base cache making a second build start from the cache, the package cache serving a bootstrap
//! whose base is no longer cached, and `--offline` from the cached base. A minimal OS definition
//! keeps it quick.

mod support;

use std::fs;
use std::process::Command;

use support::{text, Fixture};

/// A fixture whose assets hold one OS definition with no extra packages.
fn minimal_os(f: &Fixture) -> std::path::PathBuf {
    let assets = f.path().join("assets");
    fs::create_dir_all(assets.join("os")).unwrap();
    fs::write(
        assets.join("os/debian-trixie.yml"),
        "name: debian-trixie\nos_name: debian\nos_version: trixie\nsuite: trixie\nvariant: minbase\ncollection: test\npackages: []\n",
    )
    .unwrap();
    f.collection(&["check"]);
    f.stage(
        "check",
        r#"test -f "$chroot/etc/debian_version"
run_in_chroot "$chroot" 'dpkg-query -W -f="\${Version}" base-files' >"$work/base-files-version""#,
    );
    assets
}

fn build(f: &Fixture, assets: &std::path::Path, extra: &[&str]) -> std::process::Output {
    Command::new(support::bin())
        .arg("build-os-image")
        .arg("--assets-dir")
        .arg(assets)
        .arg("--stages-dir")
        .arg(f.stages())
        .arg("--work-dir")
        .arg(f.work())
        .arg("--output")
        .arg(f.output())
        .args(extra)
        .env_remove("resume_from")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .output()
        .unwrap()
}

#[test]
fn debootstrap_makes_the_base_when_asked() {
    let f = Fixture::new();
    let assets = minimal_os(&f);
    // With a cache: debootstrap's packages are kept in the package cache, and the base keeps
    // none of them in its apt archive.
    let cache = f.path().join("cache");
    let out = build(
        &f,
        &assets,
        &[
            "--bootstrapper",
            "debootstrap",
            "--cache-dir",
            cache.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let kept = fs::read_dir(cache.join("packages"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
        .count();
    assert!(kept > 20, "debootstrap's packages were not kept: {kept}");
    let archive = f.work().join("layers/00-base/var/cache/apt/archives");
    let left: Vec<_> = fs::read_dir(&archive)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".deb"))
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "the base still holds {left:?}");
    let log = fs::read_to_string(f.work().join("logs/00-base.log")).unwrap();
    assert!(
        log.contains("debootstrap") && log.contains("Base system installed successfully"),
        "{log}"
    );
    assert!(!fs::read_to_string(f.work().join("base-files-version"))
        .unwrap()
        .is_empty());
    let packages = fs::read_to_string(f.out_dir().join("os-image.tgz.packages.txt")).unwrap();
    assert!(
        packages.lines().any(|l| l.starts_with("base-files ")),
        "{packages}"
    );
}

#[test]
fn the_second_build_of_the_day_starts_from_the_cache() {
    let f = Fixture::new();
    let assets = minimal_os(&f);
    let cache = f.path().join("cache");
    let cache_arg = cache.to_str().unwrap();
    let first = build(&f, &assets, &["--cache-dir", cache_arg]);
    assert!(first.status.success(), "{}", text(&first.stderr));
    let first_version = fs::read_to_string(f.work().join("base-files-version")).unwrap();
    let first_packages = fs::read_to_string(f.out_dir().join("os-image.tgz.packages.txt")).unwrap();
    assert!(
        text(&first.stdout)
            .lines()
            .any(|l| l.contains("00-base") && l.trim_end().ends_with("ok")),
        "{}",
        text(&first.stdout)
    );
    let cached: Vec<_> = fs::read_dir(cache.join("base"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    assert_eq!(cached.len(), 1, "one cached base");
    let name = cached[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with("trixie-"), "{name}");
    let record = cache.join("base").join(name.replace(".tar.zst", ".json"));
    assert!(
        fs::read_to_string(&record).unwrap().contains("\"sha256\""),
        "the cached base has its checksum record"
    );

    // Without layers the stage runs again, on the base restored from the cache (with layers,
    // the same work dir would keep its base layer and its stage's layer).
    let second = build(&f, &assets, &["--cache-dir", cache_arg, "--no-layers"]);
    assert!(second.status.success(), "{}", text(&second.stderr));
    assert!(
        text(&second.stdout).contains("ok (cache)"),
        "{}",
        text(&second.stdout)
    );
    // The same base either way: the stage saw the same base-files, and the image holds the
    // same packages at the same versions.
    let version = fs::read_to_string(f.work().join("base-files-version")).unwrap();
    assert!(!version.is_empty());
    assert_eq!(
        version, first_version,
        "base-files differs between the builds"
    );
    let packages = fs::read_to_string(f.out_dir().join("os-image.tgz.packages.txt")).unwrap();
    assert!(packages.lines().count() > 20, "{packages}");
    assert_eq!(
        packages, first_packages,
        "the cached base holds other packages"
    );

    // The bootstrap kept its packages; with the base cache emptied, the next bootstrap takes
    // every one of them from the package cache and downloads none.
    let debs = |cache: &std::path::Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(cache.join("packages"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".deb"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let kept = debs(&cache);
    assert!(
        kept.len() > 20,
        "the bootstrap kept {} packages",
        kept.len()
    );
    for entry in fs::read_dir(cache.join("base")).unwrap().flatten() {
        fs::remove_file(entry.path()).unwrap();
    }
    let warm = build(&f, &assets, &["--cache-dir", cache_arg, "--no-layers"]);
    assert!(warm.status.success(), "{}", text(&warm.stderr));
    let log = fs::read_to_string(f.work().join("logs/00-base.log")).unwrap();
    let provided = log
        .lines()
        .find(|l| l.contains("package cache:") && l.contains("from the cache"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(!provided.contains(" 0 packages"), "{provided}");
    assert!(
        log.contains("package cache: kept 0 new packages"),
        "the warm bootstrap downloaded packages:\n{log}"
    );
    assert_eq!(debs(&cache), kept);
    assert!(
        !log.lines().any(|l| l.starts_with("Get:")),
        "apt downloaded:\n{log}"
    );
    let version = fs::read_to_string(f.work().join("base-files-version")).unwrap();
    assert_eq!(version, first_version);

    // --offline builds from the cached base; without one it says so in one line.
    let offline = build(
        &f,
        &assets,
        &["--cache-dir", cache_arg, "--no-layers", "--offline"],
    );
    assert!(offline.status.success(), "{}", text(&offline.stderr));
    assert!(text(&offline.stdout).contains("ok (cache)"));
    for entry in fs::read_dir(cache.join("base")).unwrap().flatten() {
        fs::remove_file(entry.path()).unwrap();
    }
    let none = build(
        &f,
        &assets,
        &["--cache-dir", cache_arg, "--no-layers", "--offline"],
    );
    assert!(!none.status.success());
    let stderr = text(&none.stderr);
    assert!(
        stderr.contains("--offline: no cached mmdebstrap base of trixie"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
