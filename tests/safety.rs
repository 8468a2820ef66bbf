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

// ---------------------------------------------------------------------------------------------
// The caller's terminal. Each path that runs a tree's code is run as from an interactive shell:
// a real pty is the caller's controlling terminal. The static probe pushes a line into every
// terminal it can reach (TIOCSTI through /dev/tty and fds 0-2, then TIOCLINUX); what waits in
// the caller's terminal afterwards is what the caller's shell would run as host root.

const LINE: &str = "touch /tmp/pwned-by-the-tree\n";

/// The injection was tried and nothing reached the caller's terminal.
fn nothing_injected(what: &str, run: &support::UnderTerminal, tried: &str) {
    assert!(
        run.injected.is_empty(),
        "{what}: the tree pushed {:?} into the caller's terminal; output: {}",
        String::from_utf8_lossy(&run.injected),
        run.output
    );
    assert!(
        tried.contains("terminals tried"),
        "{what}: the probe did not run: {tried}"
    );
    assert!(
        !tried.contains(": injected"),
        "{what}: TIOCSTI went through on some terminal: {tried}"
    );
}

fn probe_chroot_exec(root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(support::bin());
    cmd.arg("chroot-exec")
        .arg(root)
        .args(["--", "/bin/probe", "tiocsti", LINE]);
    cmd
}

#[test]
fn chroot_exec_gives_the_tree_no_way_into_the_callers_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let root = support::probe_root(dir.path());
    // stdin from /dev/null, output piped: the terminal is reachable only as /dev/tty.
    let run = support::under_terminal(&mut probe_chroot_exec(&root), false, b"");
    nothing_injected("chroot-exec, stdio piped", &run, &run.output);
    assert!(
        run.output
            .contains("open /dev/tty: No such device or address"),
        "no controlling terminal inside: {}",
        run.output
    );
    // stdio on the terminal: the command gets a pty of its own, and TIOCSTI and TIOCLINUX are
    // refused by the seccomp filter even there.
    let run = support::under_terminal(&mut probe_chroot_exec(&root), true, b"");
    nothing_injected("chroot-exec, stdio on the terminal", &run, &run.output);
    assert!(
        run.output
            .contains("TIOCSTI on fd 0: Operation not permitted")
            && run
                .output
                .contains("TIOCLINUX on fd 0: Operation not permitted"),
        "the filter refuses both: {}",
        run.output
    );
}

#[test]
fn the_audit_of_a_hostile_image_runs_its_bash_away_from_the_callers_terminal() {
    let f = Fixture::new();
    // The image's /bin/bash is the probe: the audit's command checks run it.
    fs::copy(support::sandbox_probe(), f.base().join("bin/bash")).unwrap();
    let image = f.pack_base("hostile.tgz");
    for on_tty in [false, true] {
        let mut cmd = std::process::Command::new(support::bin());
        cmd.arg("audit")
            .arg(&image)
            .args(["--kind", "os-image", "--format", "json", "--scratch-dir"])
            .arg(f.path());
        let run = support::under_terminal(&mut cmd, on_tty, b"");
        // The image's bash (the probe) ran for the command checks and failed to inject.
        assert!(
            run.output
                .contains("chroot-exec ran 0 of 1 commands (exit Some(1))"),
            "audit (stdio on the terminal: {on_tty}) ran the image's bash: {}",
            run.output
        );
        assert!(
            !run.output.contains(": injected"),
            "audit (stdio on the terminal: {on_tty}): {}",
            run.output
        );
        assert!(
            run.injected.is_empty(),
            "audit (stdio on the terminal: {on_tty}) let the image push {:?}",
            String::from_utf8_lossy(&run.injected)
        );
    }
}

#[test]
fn a_stage_and_shell_give_the_tree_no_way_into_the_callers_terminal() {
    let f = Fixture::new();
    fs::copy(support::sandbox_probe(), f.base().join("bin/probe")).unwrap();
    f.collection(&["inject"]);
    // Inside the tree, and from the stage's own host side.
    f.stage(
        "inject",
        &format!(
            "run_in_chroot \"$chroot\" '/bin/probe tiocsti \"$1\" || true' '{LINE}'\n\
             \"$chroot/bin/probe\" tiocsti '{LINE}' || true"
        ),
    );
    for on_tty in [false, true] {
        let run = support::under_terminal(&mut f.build_command(&[]), on_tty, b"");
        assert!(run.status.success(), "build: {}", run.output);
        let log = fs::read_to_string(f.work().join("logs/01-inject.log")).unwrap();
        nothing_injected(&format!("a stage (tty {on_tty})"), &run, &log);
        assert_eq!(
            log.matches("terminals tried").count(),
            2,
            "both probes ran: {log}"
        );
    }
    for on_tty in [false, true] {
        let mut shell = std::process::Command::new(support::bin());
        shell
            .arg("shell")
            .arg(f.work())
            .args(["--", "/bin/probe", "tiocsti", LINE]);
        let run = support::under_terminal(&mut shell, on_tty, b"");
        nothing_injected(&format!("shell -- (tty {on_tty})"), &run, &run.output);
    }
}

#[test]
fn an_interactive_shell_gets_a_terminal_of_its_own_relayed_to_the_callers() {
    let f = Fixture::new();
    f.collection(&["noop"]);
    f.stage("noop", "true");
    support::ok(&f.build(&[]));
    let mut shell = std::process::Command::new(support::bin());
    shell.arg("shell").arg(f.work());
    // What is typed reaches the shell in the tree, on a terminal; what it prints comes back;
    // its exit status is the command's.
    let run = support::under_terminal(
        &mut shell,
        true,
        b"echo relay-$((6 * 7)); [ -t 0 ] && echo stdin-is-a-terminal; exit 3\n",
    );
    assert_eq!(run.status.code(), Some(3), "{}", run.output);
    assert!(run.output.contains("relay-42"), "{}", run.output);
    assert!(run.output.contains("stdin-is-a-terminal"), "{}", run.output);
    assert!(run.injected.is_empty());
}

#[test]
fn build_stemcell_of_an_image_whose_boot_files_link_to_the_host_changes_no_host_byte() {
    let f = Fixture::new();
    let host_file = f.path().join("host-file");
    fs::write(&host_file, "HOST-BYTES\n").unwrap();
    // The hostile OS image: GRUB's tools present (stand-ins), etc/fstab a link to a host file,
    // and GRUB's drop-in a relative link to a block device node under dev/ (which the unpack
    // policy lets through there).
    let base = f.base();
    for tool in ["grub-install", "update-grub"] {
        let path = base.join("usr/sbin").join(tool);
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink(&host_file, base.join("etc/fstab")).unwrap();
    fs::create_dir_all(base.join("etc/default/grub.d")).unwrap();
    fs::create_dir_all(base.join("dev")).unwrap();
    support::loop_device_node(&base.join("dev/evil"));
    std::os::unix::fs::symlink(
        "../../../dev/evil",
        base.join("etc/default/grub.d/90-root-label.cfg"),
    )
    .unwrap();
    let image = f.pack_base("hostile.tgz");
    let stage = f.stages().join("image_disk");
    fs::create_dir_all(&stage).unwrap();
    fs::copy(
        support::repo().join("stages/image_disk/apply.sh"),
        stage.join("apply.sh"),
    )
    .unwrap();
    f.collection(&["image_disk"]);
    let agent = f.path().join("bosh-agent");
    fs::write(&agent, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&agent, fs::Permissions::from_mode(0o755)).unwrap();
    let cmd = f.stemcell_command(&image, &agent, &f.path().join("cache"));
    // The warden fixture, turned into a VM IaaS whose collection is the disk stage alone.
    let args: Vec<std::ffi::OsString> = cmd
        .get_args()
        .map(|a| {
            if a == "warden" {
                "openstack".into()
            } else {
                a.to_owned()
            }
        })
        .collect();
    let mut cmd = std::process::Command::new(support::bin());
    cmd.args(args)
        .env_remove("resume_from")
        .env_remove("IAAS")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION");
    let out = cmd.output().unwrap();
    let err = text(&out.stderr);
    assert!(!out.status.success(), "the disk step must refuse the tree");
    let log = fs::read_to_string(f.work().join("logs/01-image_disk.log")).unwrap_or_default();
    assert!(
        log.contains("/etc/fstab") && log.contains("refusing to write"),
        "the disk step names etc/fstab: {err}\n{log}"
    );
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "HOST-BYTES\n");
    assert!(support::mounts_below(f.path()).is_empty());
    assert_eq!(fs::read_dir(f.out_dir()).unwrap().count(), 0);
}
