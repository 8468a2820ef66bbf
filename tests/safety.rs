//! Ordinary flags used carelessly lose nothing, and secrets stay secret: a foreign work dir is
//! refused, not emptied; a base inside the work dir is refused before it is deleted; `--set`
//! cannot redirect the builder's own variables; stage names cannot leave the stages dir; a
//! secret setting appears in no log, no console line, no resume command, and only in 0600 files.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use support::{text, Fixture};

/// A failed build with exactly one line on stderr, naming `needle`.
fn refused(out: &std::process::Output, needle: &str) -> String {
    assert!(
        !out.status.success(),
        "expected a refusal: {}",
        text(&out.stdout)
    );
    let err = text(&out.stderr);
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains(needle), "{needle:?} in: {err}");
    err
}

/// A directory that looks like a work dir but is someone else's.
fn foreign_dir(dir: &Path) {
    for sub in ["logs", "settings", "chroot"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
        fs::write(dir.join(sub).join("precious"), sub).unwrap();
    }
}

fn untouched(dir: &Path) {
    for sub in ["logs", "settings", "chroot"] {
        assert_eq!(
            fs::read_to_string(dir.join(sub).join("precious")).unwrap(),
            sub,
            "{} was changed",
            dir.join(sub).display()
        );
    }
}

#[test]
fn a_foreign_non_empty_work_dir_is_refused_and_left_as_it_was() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "touch \"$work/ran\"");
    let foreign = f.path().join("checkout");
    foreign_dir(&foreign);

    // `--work-dir .` from inside someone's checkout.
    let mut cmd = f.build_command_in(Path::new("."), &[]);
    cmd.current_dir(&foreign);
    let err = refused(&cmd.output().unwrap(), "not made by stemcell-builder");
    assert!(err.contains("--work-dir"), "{err}");
    untouched(&foreign);
    assert!(!foreign.join("ran").exists());

    let out = f.build_command_in(Path::new("/"), &[]).output().unwrap();
    refused(&out, "not made by stemcell-builder");

    let out = f.build_command_in(Path::new(""), &[]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--work-dir"),
        "{}",
        text(&out.stderr)
    );

    // An empty directory is adopted and marked; the next build reuses it.
    let empty = f.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let out = f.build_command_in(&empty, &[]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(empty.join(".stemcell-builder-work-dir").is_file());
    let mode = fs::metadata(&empty).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "work dirs are private to root");
    for private in ["logs", "settings"] {
        let mode = fs::metadata(empty.join(private))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o700, "{private}");
    }
    let out = f.build_command_in(&empty, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "a marked work dir is ours: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_base_inside_the_work_dir_is_refused_before_anything_is_deleted() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "touch \"$chroot/built\"");
    let out = f.build(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let chroot = f.chroot();
    let built = f.layer("01-one").join("built");
    assert!(built.exists());

    let with_base = |base: &Path| {
        let mut cmd = std::process::Command::new(support::bin());
        cmd.arg("build-os-image")
            .arg("--stages-dir")
            .arg(f.stages())
            .args(["--collection", "test", "--no-cache", "--base"])
            .arg(base)
            .arg("--work-dir")
            .arg(f.work())
            .arg("--output")
            .arg(f.output());
        cmd.output().unwrap()
    };
    refused(&with_base(&chroot), "overlaps the work dir");
    refused(&with_base(&f.layer("00-base")), "overlaps the work dir");
    assert!(built.exists(), "the layers were not deleted");
    assert!(f.layer("00-base").join("bin/busybox").exists());
    refused(&with_base(&f.work()), "overlaps the work dir");
    refused(&with_base(Path::new("/")), "host's root");
    assert!(built.exists(), "the layers were not deleted");
}

#[test]
fn set_cannot_replace_the_builders_variables() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "touch \"$work/ran\"");
    let victim = f.path().join("victim");
    fs::write(&victim, "keep me").unwrap();
    for (pair, why) in [
        (
            format!("settings_file={}", victim.display()),
            "builder gives every stage",
        ),
        ("chroot=/".to_string(), "builder gives every stage"),
        ("PATH=/tmp/evil".to_string(), "build host's shell"),
        ("LD_PRELOAD=/tmp/evil.so".to_string(), "build host's shell"),
        ("BASH_ENV=/tmp/evil".to_string(), "build host's shell"),
        ("os_name=ubuntu".to_string(), "from --os"),
        ("arch=arm64".to_string(), "from --arch"),
        ("not-a-name=1".to_string(), "not a shell variable name"),
    ] {
        let out = f.build_command(&["--set", &pair]).output().unwrap();
        refused(&out, why);
    }
    assert_eq!(fs::read_to_string(&victim).unwrap(), "keep me");
    assert!(!f.work().exists(), "nothing ran");
}

#[test]
fn stage_names_that_leave_the_stages_dir_are_refused_before_anything_runs() {
    let f = Fixture::new();
    // A script outside the stages dir that a name with `..` would reach.
    let outside = f.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    let marker = f.path().join("outside-ran");
    let script = outside.join("apply.sh");
    fs::write(&script, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    for bad in ["../outside", "a/b", "..", "sub dir"] {
        f.collection(&[&format!("'{bad}'")]);
        let out = f.build(&[]);
        refused(&out, "is not a plain name");
        assert!(
            !marker.exists(),
            "{bad}: a script outside the stages dir ran"
        );
        assert!(!f.work().exists(), "{bad}: the build started");
    }
}

#[test]
fn a_secret_setting_is_in_no_log_no_console_and_only_in_private_files() {
    let f = Fixture::new();
    let secret = "Sup3r-s3cret-Pa55";
    f.collection(&["users", "echoes", "fails"]);
    f.config(
        "users",
        "bosh_users_password=${bosh_users_password:-}\npersist bosh_users_password\necho \"config sees $bosh_users_password\"",
    );
    f.stage(
        "users",
        "set -x\necho \"apply sees $bosh_users_password\"\necho \"on stderr $bosh_users_password\" >&2",
    );
    f.stage("echoes", "env | sort; echo \"declared: $db_token\"");
    f.stage("fails", "echo \"last words $bosh_users_password\"; exit 3");
    // A stage author declares a secret that no suffix rule would catch.
    fs::write(
        f.stages().join("collections.yml"),
        "collections:\n  test: [users, echoes, fails]\nsecret_settings: [db_token]\n",
    )
    .unwrap();

    let out = f
        .build_command(&[
            "--set",
            &format!("bosh_users_password={secret}"),
            "--set",
            "db_token",
        ])
        .env("db_token", "t0ken-value-42")
        .output()
        .unwrap();
    let console = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "the last stage fails: {console}");
    for value in [secret, "t0ken-value-42"] {
        assert!(!console.contains(value), "secret on the console: {console}");
    }
    assert!(
        console.contains("apply sees ***"),
        "masked, not dropped: {console}"
    );
    assert!(console.contains("last words ***"), "{console}");
    assert!(
        console.contains("--set bosh_users_password --set db_token --resume-from fails"),
        "the resume command names the settings without their values: {console}"
    );
    assert!(
        console.contains("export bosh_users_password db_token"),
        "{console}"
    );

    // Every file under the work dir: the secret only in the settings files, and those 0600.
    let mut holders = vec![];
    let mut stack = vec![f.work()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let bytes = fs::read(&path).unwrap();
                let content = String::from_utf8_lossy(&bytes);
                if content.contains(secret) || content.contains("t0ken-value-42") {
                    holders.push(path.clone());
                    assert_eq!(
                        meta.permissions().mode() & 0o777,
                        0o600,
                        "{} holds a secret",
                        path.display()
                    );
                }
            }
        }
    }
    holders.sort();
    let settings = f.work().canonicalize().unwrap().join("settings");
    assert_eq!(
        holders
            .iter()
            .map(|p| p.strip_prefix(f.work()).unwrap().display().to_string())
            .collect::<Vec<_>>(),
        ["settings/build.bash", "settings/stages/01-users.bash"],
        "files holding the secret (settings at {})",
        settings.display()
    );
    let logs = fs::read_to_string(f.work().join("logs/01-users.log")).unwrap();
    assert!(
        logs.contains("apply sees ***") && logs.contains("on stderr ***"),
        "{logs}"
    );
    assert!(logs.contains("config sees ***"), "{logs}");
}

#[test]
fn a_stemcell_never_ships_a_host_file_its_image_links_to() {
    let f = Fixture::new();
    let host_file = f.path().join("host-only");
    fs::write(&host_file, "HOST-ONLY-CONTENT\n").unwrap();
    // A hostile OS image: its dev-tools list is a link to a file of the build host.
    let etc = f.base().join("var/vcap/bosh/etc");
    fs::create_dir_all(&etc).unwrap();
    std::os::unix::fs::symlink(&host_file, etc.join("dev_tools_file_list")).unwrap();
    let image = f.pack_base("hostile.tgz");
    f.collection(&["noop"]);
    f.stage("noop", "true");
    let agent = f.path().join("bosh-agent");
    fs::write(&agent, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).unwrap();

    let out = f
        .stemcell_command(&image, &agent, &f.path().join("cache"))
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "the list resolves inside the tree, where there is none"
    );
    assert!(err.contains("dev_tools_file_list is missing"), "{err}");
    assert_eq!(
        fs::read_dir(f.out_dir()).unwrap().count(),
        0,
        "no stemcell written"
    );
    let staged = f.work().join("stemcell/dev_tools_file_list.txt");
    assert!(
        !fs::read_to_string(&staged).is_ok_and(|t| t.contains("HOST-ONLY")),
        "the host's file was copied into the stemcell's staging"
    );
}
