//! The stage helpers and the real stages on real trees, for the defects issue 7 §5 names:
//! `--mirror` with the sources mmdebstrap really writes, pipelines that fail inside
//! run_in_chroot, dev-tools and static-library lists that must not go empty on failure, a
//! resume after dpkg was interrupted, and stages on a hostile OS image whose directories are
//! symlinks to the host. Needs root and network access to the Debian archive.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::{text, Fixture};

/// A stages dir with the real prelude, copies of the named real stages, test stages
/// (name, apply.sh body) and one collection `test` running them in the given order.
fn stages_dir(dir: &Path, real: &[&str], test: &[(&str, &str)], order: &[&str]) -> PathBuf {
    let stages = dir.join("stages");
    fs::create_dir_all(&stages).unwrap();
    let copy = |from: &Path, to: &Path| {
        let status = Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy(&support::repo().join("stages/lib"), &stages.join("lib"));
    for name in real {
        copy(
            &support::repo().join("stages").join(name),
            &stages.join(name),
        );
    }
    for (name, body) in test {
        let stage = stages.join(name);
        fs::create_dir_all(&stage).unwrap();
        let script = stage.join("apply.sh");
        fs::write(
            &script,
            format!("#!/usr/bin/env bash\nsource \"$(dirname \"$0\")/../lib/prelude_apply.bash\"\n{body}\n"),
        )
        .unwrap();
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    fs::write(
        stages.join("collections.yml"),
        format!("collections:\n  test: [{}]\n", order.join(", ")),
    )
    .unwrap();
    stages
}

/// build-os-image on `base` (a tree or an OS image) with the `test` collection of `stages`.
fn build_on(base: &Path, stages: &Path, work: &Path, extra: &[&str]) -> Output {
    Command::new(support::bin())
        .arg("build-os-image")
        .arg("--base")
        .arg(base)
        .arg("--stages-dir")
        .arg(stages)
        .args([
            "--collection",
            "test",
            "--compression",
            "zstd",
            "--no-cache",
        ])
        .arg("--work-dir")
        .arg(work)
        .arg("--output")
        .arg(work.with_extension("tar.zst"))
        .args(extra)
        .current_dir(support::repo())
        .env_remove("resume_from")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .output()
        .unwrap()
}

/// The Debian mirror this machine already uses, from apt's own view of the host's sources
/// (never a name written in this repository): the Repo-URI of the host's main suite, else the
/// one the default OS image was bootstrapped from.
fn host_mirror() -> String {
    let out = Command::new("apt-get")
        .args([
            "indextargets",
            "--no-release-info",
            "--format",
            "$(TARGET_OF) $(RELEASE) $(REPO_URI)",
        ])
        .output();
    if let Ok(out) = out {
        for line in text(&out.stdout).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if let [kind, release, uri] = fields[..] {
                if kind == "deb" && !release.contains('-') && uri.ends_with("/debian/") {
                    return uri.to_string();
                }
            }
        }
    }
    let (image, _) = support::default_os_image();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&image)
        .arg("-C")
        .arg(dir.path())
        .arg("./etc/apt/sources.list")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let sources = fs::read_to_string(dir.path().join("etc/apt/sources.list")).unwrap();
    sources
        .lines()
        .find_map(|l| {
            l.strip_prefix("deb ")
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .expect("a deb line in the default image's sources.list")
}

#[test]
fn mirror_flag_bootstraps_and_base_apt_keeps_the_entries_options() {
    let mirror = host_mirror();
    let dir = tempfile::tempdir().unwrap();
    // The default OS definition with no extra packages: a minbase bootstrap is cheap.
    let assets = dir.path().join("assets/os");
    fs::create_dir_all(&assets).unwrap();
    fs::write(
        assets.join("debian-trixie.yml"),
        "name: debian-trixie\nos_name: debian\nos_version: trixie\nsuite: trixie\nvariant: minbase\ncomponents: [main]\ncollection: test\n",
    )
    .unwrap();
    let stages = stages_dir(dir.path(), &["base_apt"], &[], &["base_apt"]);
    let work = dir.path().join("work");
    let out = Command::new(support::bin())
        .arg("build-os-image")
        .arg("--assets-dir")
        .arg(dir.path().join("assets"))
        .arg("--stages-dir")
        .arg(&stages)
        .args([
            "--mirror",
            &mirror,
            "--no-cache",
            "--bootstrapper",
            "mmdebstrap",
            "--compression",
            "zstd",
        ])
        .arg("--work-dir")
        .arg(&work)
        .arg("--output")
        .arg(dir.path().join("os.tar.zst"))
        .current_dir(support::repo())
        .env_remove("resume_from")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    // mmdebstrap wrote "deb MIRROR trixie main" (some versions write "deb [arch=A] MIRROR ...");
    // base_apt kept the entry as written and added the updates and security suites beside it,
    // in the same form.
    let base = mirror.trim_end_matches('/');
    let arch = stemcell_builder::cli::host_arch();
    let sources = fs::read_to_string(work.join("chroot/etc/apt/sources.list")).unwrap();
    let lines: Vec<&str> = sources.lines().filter(|l| l.starts_with("deb")).collect();
    let options = if lines.first().is_some_and(|l| l.starts_with("deb [")) {
        format!(" [arch={arch}]")
    } else {
        String::new()
    };
    assert_eq!(
        lines,
        [
            format!("deb{options} {mirror} trixie main"),
            format!("deb{options} {base} trixie-updates main"),
            format!(
                "deb{options} {}/debian-security trixie-security main",
                base.trim_end_matches("/debian")
            ),
        ],
        "{sources}"
    );
    let log = fs::read_to_string(work.join("logs/01-base_apt.log")).unwrap();
    assert!(
        log.contains("trixie-security"),
        "apt fetched the security suite: {log}"
    );

    // The same tree with its sources as a deb822 file with Signed-By, and as a one-line entry
    // with spaced options: base_apt reads both with apt's parser and keeps what they carry.
    let keyring = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let variants: [(&str, String); 3] = [
        (
            "etc/apt/sources.list",
            format!("deb [arch={arch} signed-by={keyring}] {mirror} trixie main\n"),
        ),
        (
            "etc/apt/sources.list.d/debian.sources",
            format!("Types: deb\nURIs: {mirror}\nSuites: trixie\nComponents: main\nSigned-By: {keyring}\n"),
        ),
        (
            "etc/apt/sources.list",
            format!("deb [ arch={arch} signed-by={keyring} ] {mirror} trixie main\n"),
        ),
    ];
    for (i, (file, content)) in variants.iter().enumerate() {
        let tree = dir.path().join(format!("tree-{i}"));
        let status = Command::new("cp")
            .arg("-a")
            .arg(work.join("chroot"))
            .arg(&tree)
            .status()
            .unwrap();
        assert!(status.success());
        fs::remove_file(tree.join("etc/apt/sources.list")).unwrap();
        fs::write(tree.join(file), content).unwrap();
        let out = build_on(&tree, &stages, &dir.path().join(format!("work-{i}")), &[]);
        assert!(out.status.success(), "{file}: {}", text(&out.stderr));
        let written =
            fs::read_to_string(dir.path().join(format!("work-{i}/chroot/{file}"))).unwrap();
        assert!(
            written.contains("trixie-updates")
                && written.contains("trixie-security")
                && written.matches("trixie").count() == 3,
            "{file}: {written}"
        );
        assert_eq!(
            written.matches(keyring).count(),
            3,
            "every entry keeps Signed-By: {written}"
        );
    }
}

#[test]
fn run_in_chroot_fails_on_a_failing_pipeline_and_unset_variables() {
    let f = Fixture::new();
    f.stage(
        "pipe",
        r#"run_in_chroot "$chroot" 'false | true; touch /pipe-went-on'"#,
    );
    f.collection(&["pipe"]);
    let out = f.build(&[]);
    assert!(!out.status.success(), "a failing pipeline fails the stage");
    assert!(!f.chroot().join("pipe-went-on").exists());

    let f = Fixture::new();
    f.stage(
        "unset",
        r#"run_in_chroot "$chroot" 'echo "$no_such_variable"; touch /unset-went-on'"#,
    );
    f.collection(&["unset"]);
    let out = f.build(&[]);
    assert!(!out.status.success(), "an unset variable fails the stage");
    assert!(!f.chroot().join("unset-went-on").exists());

    // Arguments reach the script as $1..., quoted as given.
    let f = Fixture::new();
    f.stage(
        "args",
        r#"run_in_chroot "$chroot" 'printf "%s\n" "$1" "$2" >/args' 'a b' '$HOME'"#,
    );
    f.collection(&["args"]);
    let out = f.build(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        fs::read_to_string(f.chroot().join("args")).unwrap(),
        "a b\n$HOME\n"
    );
}

/// The default OS image, for stages that need a real Debian tree.
fn os_image() -> PathBuf {
    support::default_os_image().0
}

fn listed(dir: &Path, prefix: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn dev_tools_list_is_not_written_when_dpkg_fails() {
    let dir = tempfile::tempdir().unwrap();
    // A dpkg database dpkg-query cannot parse: before the fix, errors were swallowed and an
    // empty list was written, and the agent then kept every compiler.
    let stages = stages_dir(
        dir.path(),
        &["dev_tools_config"],
        &[(
            "break_dpkg",
            r#"run_in_chroot "$chroot" 'printf "\nPackage: broken\nStatus: nonsense\n" >>/var/lib/dpkg/status'"#,
        )],
        &["break_dpkg", "dev_tools_config"],
    );
    let work = dir.path().join("work");
    let out = build_on(&os_image(), &stages, &work, &[]);
    assert!(!out.status.success(), "the stage fails");
    assert!(
        text(&out.stderr).contains("stage 'dev_tools_config' failed"),
        "{}",
        text(&out.stderr)
    );
    let etc = work.join("chroot/var/vcap/bosh/etc");
    assert_eq!(
        listed(&etc, "dev_tools_file_list"),
        Vec::<String>::new(),
        "no list, not even a temp file"
    );
}

#[test]
fn static_libraries_list_is_not_written_when_find_fails() {
    let dir = tempfile::tempdir().unwrap();
    // find stands in for a file system that fails mid-walk (an I/O error): it prints part of
    // the answer and fails. Before the fix the partial list was written and the stage passed.
    let stages = stages_dir(
        dir.path(),
        &["static_libraries_config"],
        &[(
            "failing_find",
            r##"run_in_chroot "$chroot" 'mv /usr/bin/find /usr/bin/find.real
printf "#!/bin/sh\necho /usr/lib/x86_64-linux-gnu/libc.a\necho \"find: /usr/lib: Input/output error\" >&2\nexit 1\n" >/usr/bin/find
chmod 0755 /usr/bin/find'"##,
        )],
        &["failing_find", "static_libraries_config"],
    );
    let work = dir.path().join("work");
    let out = build_on(&os_image(), &stages, &work, &[]);
    assert!(!out.status.success(), "the stage fails");
    assert!(
        text(&out.stderr).contains("stage 'static_libraries_config' failed"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        listed(
            &work.join("chroot/var/vcap/bosh/etc"),
            "static_libraries_list"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn pkg_mgr_finishes_what_an_interrupted_dpkg_left() {
    let dir = tempfile::tempdir().unwrap();
    // A stage unpacks a package and dies before dpkg configures it (as when a build is killed
    // mid-install); the build is then resumed from the next stage, which installs with pkg_mgr.
    let stages = stages_dir(
        dir.path(),
        &[],
        &[
            (
                "interrupted",
                r#"run_in_chroot "$chroot" '
  apt-get update -q
  cd /var/cache/apt/archives && apt-get download -q hello
  dpkg --unpack /var/cache/apt/archives/hello_*.deb
  [ "$(dpkg-query -W -f="\${db:Status-Status}" hello)" = unpacked ]
'
fail "killed mid-install (simulated)""#,
            ),
            (
                "install",
                r#"pkg_mgr install hello
run_in_chroot "$chroot" '[ "$(dpkg-query -W -f="\${db:Status-Status}" hello)" = installed ] && hello'"#,
            ),
        ],
        &["interrupted", "install"],
    );
    let work = dir.path().join("work");
    let out = build_on(&os_image(), &stages, &work, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("killed mid-install"),
        "{}",
        text(&out.stderr)
    );
    let out = build_on(&os_image(), &stages, &work, &["--resume-from", "install"]);
    assert!(
        out.status.success(),
        "the resumed build configures the package first: {}",
        text(&out.stderr)
    );
    let log = fs::read_to_string(work.join("logs/02-install.log")).unwrap();
    assert!(log.contains("Hello, world!"), "{log}");
}

/// Every file below `dir` with its content (or link target), to compare before and after.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                files.insert(name, "<dir>".into());
                stack.push(path);
            } else if meta.is_symlink() {
                files.insert(
                    name,
                    format!("-> {}", fs::read_link(&path).unwrap().display()),
                );
            } else {
                files.insert(name, fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    files
}

#[test]
fn stemcell_stages_on_a_hostile_os_image_leave_the_host_alone() {
    let dir = tempfile::tempdir().unwrap();
    // What the host has, and an OS image whose directories point at it.
    let host = dir.path().join("host");
    for (path, content) in [
        ("tmp/precious", "tmp\n"),
        ("vartmp/precious", "var/tmp\n"),
        ("ssh/ssh_host_rsa_key", "the host's key\n"),
        ("lists/precious_Packages", "lists\n"),
        ("devtools", "the host's file\n"),
        ("staticlibs", "the host's file\n"),
    ] {
        fs::create_dir_all(host.join(path).parent().unwrap()).unwrap();
        fs::write(host.join(path), content).unwrap();
    }
    let before = snapshot(&host);

    let tree = dir.path().join("tree");
    let out = Command::new(support::bin())
        .arg("unpack")
        .arg(os_image())
        .arg(&tree)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (inside, target) in [
        ("tmp", "tmp"),
        ("var/tmp", "vartmp"),
        ("etc/ssh", "ssh"),
        ("var/lib/apt/lists", "lists"),
        ("var/vcap/bosh/etc/dev_tools_file_list", "devtools"),
        ("var/vcap/bosh/etc/static_libraries_list", "staticlibs"),
    ] {
        let path = tree.join(inside);
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path).unwrap();
        } else {
            let _ = fs::remove_file(&path);
        }
        symlink(host.join(target), &path).unwrap();
    }
    let image = dir.path().join("hostile.tar.zst");
    let out = Command::new(support::bin())
        .arg("pack")
        .arg(&tree)
        .arg(&image)
        .args(["--compression", "zstd"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    fs::remove_dir_all(&tree).unwrap();

    let agent = dir.path().join("agent");
    fs::write(&agent, "#!/bin/sh\nexec sleep infinity\n").unwrap();
    fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = Command::new(support::bin())
        .args([
            "build-stemcell",
            "--iaas",
            "warden",
            "--version",
            "0.1",
            "--os-image",
        ])
        .arg(&image)
        .arg("--agent")
        .arg(&agent)
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .current_dir(support::repo())
        .env_remove("resume_from")
        .env_remove("IAAS")
        .env_remove("HYPERVISOR")
        .output()
        .unwrap();
    assert_eq!(
        snapshot(&host),
        before,
        "the host's files are untouched (build: {}{})",
        text(&out.stdout),
        text(&out.stderr)
    );
    // The stages ran to the end: each wrote inside the tree, replacing the links.
    assert!(out.status.success(), "{}", text(&out.stderr));
}
