//! `stemcell-builder bump` on real package lists: the default OS image's `.packages.txt` against
//! a copy changed the way a rebuilt image changes (security upgrades, a package gone, one new,
//! one rolled back), every exit code, both output formats, and malformed inputs that must leave
//! the version file untouched. Version ordering is checked against dpkg itself.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use stemcell_builder::bump::{diff, PackageList};
use support::text;

/// The default OS image's package list (built once per test run by tests/support).
fn real_list() -> String {
    let (image, _) = support::default_os_image();
    let mut path = image.into_os_string();
    path.push(".packages.txt");
    fs::read_to_string(PathBuf::from(path)).unwrap()
}

fn bump(dir: &Path, previous: &Path, current: &Path, extra: &[&str]) -> Output {
    Command::new(support::bin())
        .arg("bump")
        .arg("--previous")
        .arg(previous)
        .arg("--current")
        .arg(current)
        .arg("--version-file")
        .arg(dir.join("number"))
        .args(extra)
        .output()
        .unwrap()
}

struct Lists {
    dir: tempfile::TempDir,
    previous: PathBuf,
    current: PathBuf,
}

/// `previous` is the real list; `current` the same with `edit` applied to its lines.
fn lists(edit: impl FnOnce(&mut Vec<String>)) -> Lists {
    let dir = tempfile::Builder::new()
        .prefix("sb-bump-")
        .tempdir()
        .unwrap();
    let real = real_list();
    let mut lines: Vec<String> = real.lines().map(str::to_string).collect();
    assert!(lines.len() > 100, "the default OS image lists its packages");
    let previous = dir.path().join("previous.packages.txt");
    fs::write(&previous, &real).unwrap();
    edit(&mut lines);
    let current = dir.path().join("current.packages.txt");
    fs::write(&current, lines.join("\n") + "\n").unwrap();
    fs::write(dir.path().join("number"), "1.41.0\n").unwrap();
    Lists {
        dir,
        previous,
        current,
    }
}

fn field(line: &str, n: usize) -> String {
    line.split_whitespace().nth(n).unwrap().to_string()
}

fn line_of<'a>(lines: &'a [String], name: &str) -> &'a String {
    lines
        .iter()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} is in the default OS image"))
}

/// What a rebuilt image looks like: openssl and libc6 get security updates (`+deb13u1`-style
/// revisions sort above the old ones), sudo gets an epoch-less rollback (a downgrade), vim-tiny
/// is gone and a new package appears.
fn rebuilt(lines: &mut Vec<String>) {
    for name in ["openssl", "libc6"] {
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("{name} ")))
            .unwrap();
        let (v, a) = (field(&lines[i], 1), field(&lines[i], 2));
        lines[i] = format!("{name} {v}+sec1 {a}");
    }
    let i = lines.iter().position(|l| l.starts_with("sudo ")).unwrap();
    lines[i] = format!("sudo 1.0~old {}", field(&lines[i], 2));
    lines.retain(|l| !l.starts_with("vim-tiny "));
    lines.push("zz-new-package 2.0-1 all".to_string());
}

#[test]
fn changed_real_lists_bump_the_version_and_say_what_changed() {
    let l = lists(rebuilt);
    let real: Vec<String> = real_list().lines().map(str::to_string).collect();
    let out = bump(l.dir.path(), &l.previous, &l.current, &["--level", "minor"]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "bumped is 0: {stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read_to_string(l.dir.path().join("number")).unwrap(),
        "1.42.0\n"
    );
    let openssl = line_of(&real, "openssl");
    for expected in [
        "1 added, 1 removed, 2 upgraded, 1 downgraded".to_string(),
        "added:\n  zz-new-package 2.0-1 (all)".to_string(),
        format!(
            "removed:\n  vim-tiny {} ({})",
            field(line_of(&real, "vim-tiny"), 1),
            field(line_of(&real, "vim-tiny"), 2)
        ),
        format!(
            "  openssl {v} -> {v}+sec1 ({})",
            field(openssl, 2),
            v = field(openssl, 1)
        ),
        format!(
            "downgraded:\n  sudo {} -> 1.0~old",
            field(line_of(&real, "sudo"), 1)
        ),
        "bumped 1.41.0 -> 1.42.0 (minor)".to_string(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

#[test]
fn json_report_lists_each_change_with_versions() {
    let l = lists(rebuilt);
    let out = bump(
        l.dir.path(),
        &l.previous,
        &l.current,
        &["--format", "json", "--level", "major"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "bumped");
    assert_eq!(doc["previous_version"], "1.41.0");
    assert_eq!(doc["version"], "2.0.0");
    assert_eq!(doc["level"], "major");
    assert_eq!(doc["added"][0]["name"], "zz-new-package");
    assert_eq!(doc["removed"][0]["name"], "vim-tiny");
    let upgraded: Vec<&str> = doc["upgraded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(upgraded, ["libc6", "openssl"]);
    assert!(doc["upgraded"][0]["to"]
        .as_str()
        .unwrap()
        .ends_with("+sec1"));
    assert_eq!(doc["downgraded"][0]["to"], "1.0~old");
    assert_eq!(
        doc["packages"]["previous"].as_u64().unwrap(),
        doc["packages"]["current"].as_u64().unwrap()
    );
    assert_eq!(
        fs::read_to_string(l.dir.path().join("number")).unwrap(),
        "2.0.0\n"
    );
}

#[test]
fn same_packages_in_another_order_change_nothing_and_exit_3() {
    let l = lists(|lines| lines.reverse());
    let number = l.dir.path().join("number");
    let before = fs::metadata(&number).unwrap().modified().unwrap();
    let out = bump(l.dir.path(), &l.previous, &l.current, &[]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("0 added, 0 removed, 0 upgraded, 0 downgraded"));
    assert!(text(&out.stdout).contains("nothing changed: 1.41.0"));
    assert_eq!(fs::read_to_string(&number).unwrap(), "1.41.0\n");
    assert_eq!(
        fs::metadata(&number).unwrap().modified().unwrap(),
        before,
        "not rewritten"
    );
    let json = bump(l.dir.path(), &l.previous, &l.current, &["--format", "json"]);
    assert_eq!(json.status.code(), Some(3));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(doc["outcome"], "unchanged");
    assert_eq!(doc["version"], "1.41.0");
}

/// Exit 1, one line on stderr that names the problem, nothing on stdout, the file as it was.
fn assert_error_untouched(out: &Output, number: &Path, before: &[u8], needle: &str) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(fs::read(number).unwrap(), before, "version file untouched");
}

#[test]
fn malformed_lists_are_one_line_errors_and_leave_the_version_untouched() {
    let l = lists(rebuilt);
    let number = l.dir.path().join("number");
    let before = fs::read(&number).unwrap();
    let bad = l.dir.path().join("bad.packages.txt");
    for (body, needle) in [
        (
            "libc6 2.41-12 amd64\nbroken-line-without-version\n",
            "bad.packages.txt:2: expected 'NAME VERSION ARCH'",
        ),
        (
            "libc6 2.41_12 amd64\n",
            "bad.packages.txt:1: \"2.41_12\" is not a Debian version",
        ),
        ("a 1 all\na 2 all\n", "listed twice"),
    ] {
        fs::write(&bad, body).unwrap();
        // A malformed current list (the usual case: a truncated upload) and a malformed previous one.
        let out = bump(l.dir.path(), &l.previous, &bad, &[]);
        assert_error_untouched(&out, &number, &before, needle);
        let out = bump(l.dir.path(), &bad, &l.current, &[]);
        assert_error_untouched(&out, &number, &before, needle);
    }
    let out = bump(
        l.dir.path(),
        &l.dir.path().join("absent.txt"),
        &l.current,
        &[],
    );
    assert_error_untouched(&out, &number, &before, "cannot read package list");
}

#[test]
fn unreadable_or_non_semver_version_files_are_refused_untouched() {
    let l = lists(rebuilt);
    let number = l.dir.path().join("number");
    for body in ["1.2\n", "latest", "1.2.3.4", ""] {
        fs::write(&number, body).unwrap();
        let out = bump(l.dir.path(), &l.previous, &l.current, &[]);
        assert_error_untouched(&out, &number, body.as_bytes(), "not a semantic version");
    }
    fs::remove_file(&number).unwrap();
    let out = bump(l.dir.path(), &l.previous, &l.current, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read version file"),
        "{}",
        text(&out.stderr)
    );
    assert!(!number.exists(), "no version file created");
    fs::create_dir(&number).unwrap();
    let out = bump(l.dir.path(), &l.previous, &l.current, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not a regular file"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_bad_flag_is_a_usage_error_exit_2() {
    let l = lists(|_| {});
    let out = bump(l.dir.path(), &l.previous, &l.current, &["--level", "huge"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        fs::read_to_string(l.dir.path().join("number")).unwrap(),
        "1.41.0\n"
    );
}

#[test]
fn a_symlinked_version_file_is_updated_through_the_link() {
    let l = lists(rebuilt);
    let real = l.dir.path().join("real-number");
    fs::rename(l.dir.path().join("number"), &real).unwrap();
    std::os::unix::fs::symlink("real-number", l.dir.path().join("number")).unwrap();
    let out = bump(l.dir.path(), &l.previous, &l.current, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(fs::symlink_metadata(l.dir.path().join("number"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(fs::read_to_string(&real).unwrap(), "1.41.1\n");
}

/// Our ordering (through the diff) agrees with `dpkg --compare-versions` on tricky pairs and on
/// the real list's versions paired with neighbours made from them.
#[test]
fn version_order_matches_dpkg() {
    let mut versions: Vec<String> = [
        "1.0",
        "1.0-1",
        "1:0.9",
        "0:1.0",
        "1.0~rc1",
        "1.0~~",
        "1.0+dfsg-1",
        "1.0-1~bpo12+1",
        "1.0-1+b1",
        "1.0a",
        "1.0.0",
        "1.00",
        "2.36-9+deb12u10",
        "2.36-9+deb12u9",
        "10",
        "9.99",
        "1.2.3-4ubuntu0.1",
        "1.2.3-4",
        "7.88.1-10+deb12u8",
        "252.31-1~deb12u1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for line in real_list().lines().step_by(40) {
        let v = field(line, 1);
        versions.push(format!("{v}~1"));
        versions.push(format!("{v}+1"));
        versions.push(v);
    }
    let single = |v: &str| PackageList::parse(&format!("p {v} all\n"), "t").unwrap();
    for a in &versions {
        for b in &versions {
            let d = diff::diff(&single(a), &single(b));
            let ours = if !d.upgraded.is_empty() {
                "lt"
            } else if !d.downgraded.is_empty() {
                "gt"
            } else {
                "eq"
            };
            let dpkg = Command::new("dpkg")
                .args(["--compare-versions", a, ours, b])
                .status()
                .expect("dpkg is installed on Debian hosts");
            assert!(dpkg.success(), "dpkg disagrees: {a} {ours} {b}");
        }
    }
}
