//! build-stemcell from the default OS image: the warden stemcell's tree with the agent wired,
//! the openstack qcow2 booted in qemu (no KVM, serial console) to multi-user, the manifest and
//! member order, SBOMs checked by the ecosystem's validators, inspect on good and broken
//! stemcells, an OS image from S3, and the input errors.
//!
//! The openstack stemcell is built with one test-only stage more, `test_boot_probe` (written
//! below, never in the repository's stages): a oneshot unit that, at boot, does what the agent
//! does first (its log disk mounted on /var/log, here a bind mount of /var/log onto itself,
//! which releases rsyslog's wait), then logs a line, runs logrotate as cron would, logs another
//! and prints on the serial console whether the second line reached the new /var/log/syslog;
//! then it says when multi-user.target is active (systemd stops printing its own status there
//! once the serial getty holds the console, which under emulation can come first).
//! The one boot checks multi-user and log rotation together. The unit changes nothing else;
//! the other tests read that stemcell's manifest, members and SBOMs, which it does not affect.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::s3_server::S3Server;
use support::text;

struct Built {
    dir: PathBuf,
    warden: PathBuf,
    openstack: PathBuf,
}

fn agent(dir: &Path) -> PathBuf {
    let agent = dir.join("fake-bosh-agent");
    // Any executable stands in for the agent; it stays up like the real one.
    fs::write(&agent, "#!/bin/sh\n# test agent\nexec sleep infinity\n").unwrap();
    fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    agent
}

/// The agent's four blobstore clients. Like the agent, they are GitHub release binaries this
/// machine cannot download: any executable stands in, and the stage installs what it is given.
fn blobstore_clis(dir: &Path) -> PathBuf {
    let clis = dir.join("blobstore-clis");
    fs::create_dir_all(&clis).unwrap();
    for name in ["dav", "gcs", "s3", "azure-storage"] {
        let cli = clis.join(format!("bosh-blobstore-{name}"));
        fs::write(
            &cli,
            format!("#!/bin/sh\n# test {name} blobstore client\nexit 0\n"),
        )
        .unwrap();
        fs::set_permissions(&cli, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    clis
}

fn build_stemcell(dir: &Path, os_image: &str, iaas: &str, extra: &[&str]) -> std::process::Output {
    build_stemcell_with(dir, os_image, iaas, &agent(dir), extra)
}

/// `build_stemcell` with the agent binary `agent`.
fn build_stemcell_with(
    dir: &Path,
    os_image: &str,
    iaas: &str,
    agent: &Path,
    extra: &[&str],
) -> std::process::Output {
    let out_dir = dir.join(format!("out-{iaas}"));
    fs::create_dir_all(&out_dir).unwrap();
    let clis = format!("blobstore_clis_dir={}", blobstore_clis(dir).display());
    Command::new(support::bin())
        .args([
            "build-stemcell",
            "--os-image",
            os_image,
            "--iaas",
            iaas,
            "--version",
            "1.2",
            "--agent",
        ])
        .arg(agent)
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--work-dir")
        .arg(dir.join(format!("work-{iaas}")))
        .args(["--set", &clis])
        .args(extra)
        .current_dir(support::repo())
        .env_remove("resume_from")
        .env_remove("IAAS")
        .env_remove("HYPERVISOR")
        .env_remove("OS_NAME")
        .env_remove("OS_VERSION")
        .output()
        .unwrap()
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (image, _) = support::default_os_image();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stemcell-e2e");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let image = image.to_str().unwrap();
        let out = build_stemcell(&dir, image, "warden", &[]);
        assert!(out.status.success(), "warden: {}", text(&out.stderr));
        let stages = stages_with_boot_probe(&dir);
        // That stages dir is outside the checkout: the commit is given, as from a tarball.
        let commit = format!("stemcell_git_sha1={}", head_commit());
        let out = build_stemcell(
            &dir,
            image,
            "openstack",
            &[
                "--hypervisor",
                "kvm",
                "--stages-dir",
                stages.to_str().unwrap(),
                "--set",
                &commit,
            ],
        );
        assert!(out.status.success(), "openstack: {}", text(&out.stderr));
        Built {
            warden: dir
                .join("out-warden/bosh-stemcell-1.2-warden-boshlite-debian-trixie-go_agent.tgz"),
            openstack: dir
                .join("out-openstack/bosh-stemcell-1.2-openstack-kvm-debian-trixie-go_agent.tgz"),
            dir,
        }
    })
}

/// The commit of the checkout under test.
fn head_commit() -> String {
    let head = Command::new("git")
        .args(["-c", "safe.directory=*", "rev-parse", "HEAD"])
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(head.status.success(), "{}", text(&head.stderr));
    text(&head.stdout).trim().to_string()
}

/// The repository's stages (linked) plus `test_boot_probe`, run just before `image_disk`.
fn stages_with_boot_probe(dir: &Path) -> PathBuf {
    let stages = dir.join("stages-with-boot-probe");
    fs::create_dir_all(&stages).unwrap();
    let real = support::repo().join("stages");
    for entry in fs::read_dir(&real).unwrap().flatten() {
        if entry.file_name() != "collections.yml" {
            std::os::unix::fs::symlink(entry.path(), stages.join(entry.file_name())).unwrap();
        }
    }
    let collections = fs::read_to_string(real.join("collections.yml")).unwrap();
    // Into every VM collection: each IaaS with a list of its own gets the probe too.
    let probed = collections.replace(
        "    - image_disk\n",
        "    - test_boot_probe\n    - image_disk\n",
    );
    assert_ne!(probed, collections, "collections.yml lists image_disk");
    fs::write(stages.join("collections.yml"), probed).unwrap();
    let probe = stages.join("test_boot_probe");
    fs::create_dir(&probe).unwrap();
    let apply = probe.join("apply.sh");
    fs::write(&apply, BOOT_PROBE_STAGE).unwrap();
    fs::set_permissions(&apply, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    stages
}

const BOOT_PROBE_STAGE: &str = r#"#!/usr/bin/env bash
source "$(dirname "$0")/../lib/prelude_apply.bash"
# Test-only (tests/stemcell.rs): at boot, check that rsyslog writes to the new file after
# logrotate rotated it, and say so on the console.
write_file /usr/local/sbin/rotation-probe 0755 <<'PROBE'
#!/bin/sh
say() { echo "ROTATION-PROBE: $*"; }
# What the agent does first: its log disk on /var/log (rsyslog waits for that mount).
mountpoint -q /var/log || mount --bind /var/log /var/log
i=0
until systemctl is-active -q rsyslog.service; do
  i=$((i + 1)); [ "$i" -le 120 ] || { say "FAIL rsyslog did not start"; exit 1; }; sleep 1
done
wait_for() { # wait_for TEXT FILE
  i=0
  until grep -q "$1" "$2" 2>/dev/null; do
    i=$((i + 1)); [ "$i" -le 30 ] || return 1; sleep 1
  done
}
logger -t probe "before-rotation-$$"
wait_for "before-rotation-$$" /var/log/syslog || { say "FAIL the first line never reached /var/log/syslog"; exit 1; }
logrotate -f /etc/logrotate.conf || say "logrotate exited $?"
logger -t probe "after-rotation-$$"
if wait_for "after-rotation-$$" /var/log/syslog; then
  if grep -q "after-rotation-$$" /var/log/syslog.1; then say "FAIL the line went to the rotated file too"; exit 1; fi
  grep -q "before-rotation-$$" /var/log/syslog.1 || { say "FAIL /var/log/syslog was not rotated"; exit 1; }
  say "PASS the line logged after rotation is in the new /var/log/syslog"
else
  say "FAIL the line logged after rotation is not in the new /var/log/syslog ($(grep -l "after-rotation-$$" /var/log/syslog* 2>/dev/null | tr '\n' ' '))"
fi
# What GRUB booted with and how it keeps its configuration.
echo "BOOT-FACTS: cmdline=[$(cat /proc/cmdline)] grub.cfg=$(stat -c %a:%U:%G /boot/grub/grub.cfg) grub-password=$(grep -qE '^password_pbkdf2 vcap grub[.]pbkdf2[.]sha512[.]' /boot/grub/grub.cfg && echo set || echo none) $( [ -d /sys/firmware/efi ] && echo /sys/firmware/efi present )"
# systemd stops printing its status on the console once the serial getty holds it, which may
# be before multi-user.target is reached: say it here.
i=0
until systemctl is-active -q multi-user.target; do
  i=$((i + 1)); [ "$i" -le 240 ] || { echo "BOOT-PROBE: multi-user.target not reached"; exit 1; }; sleep 1
done
echo "BOOT-PROBE: multi-user.target reached"
PROBE
write_file /etc/systemd/system/rotation-probe.service 0644 <<'UNIT'
[Unit]
Description=test: rsyslog keeps logging after logrotate
[Service]
# simple, not oneshot: multi-user.target must not wait for the probe, or it is reached after
# the serial getty took the console and systemd no longer prints it there.
Type=simple
ExecStart=/usr/local/sbin/rotation-probe
StandardOutput=journal+console
[Install]
WantedBy=multi-user.target
UNIT
run_in_chroot "$chroot" 'systemctl enable rotation-probe.service'
"#;

/// Extracts one member of a stemcell into `dir`.
fn member(stemcell: &Path, name: &str, dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(stemcell)
        .arg("-C")
        .arg(dir)
        .arg(name)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.join(name)
}

fn inspect(stemcell: &Path) -> std::process::Output {
    Command::new(support::bin())
        .arg("inspect")
        .arg(stemcell)
        .output()
        .unwrap()
}

#[test]
fn members_in_order_and_manifest() {
    for (stemcell, format, disk_format) in [
        (&built().warden, "warden-tar", "files"),
        (&built().openstack, "openstack-qcow2", "qcow2"),
    ] {
        let listing = Command::new("tar")
            .arg("-tzf")
            .arg(stemcell)
            .output()
            .unwrap();
        assert_eq!(
            text(&listing.stdout).lines().collect::<Vec<_>>(),
            [
                "stemcell.MF",
                "packages.txt",
                "dev_tools_file_list.txt",
                "image",
                "sbom.spdx.json",
                "sbom.cdx.json"
            ]
        );
        let out = inspect(stemcell);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text(&out.stdout)).unwrap();
        assert_eq!(manifest["bosh_protocol"], 1);
        assert_eq!(manifest["api_version"], 3);
        assert_eq!(manifest["version"], "1.2");
        assert_eq!(manifest["operating_system"], "debian-trixie");
        assert_eq!(manifest["stemcell_formats"][0], format);
        assert_eq!(manifest["cloud_properties"]["disk_format"], disk_format);
        for key in [
            "name",
            "version",
            "infrastructure",
            "hypervisor",
            "disk",
            "container_format",
            "os_type",
            "os_distro",
            "architecture",
        ] {
            assert!(
                !manifest["cloud_properties"][key].is_null(),
                "cloud_properties.{key}"
            );
        }
        // sha1 is the image member's, as stored.
        let dir = tempfile::tempdir().unwrap();
        let image = member(stemcell, "image", dir.path());
        let sha1 = Command::new("sha1sum").arg(&image).output().unwrap();
        assert_eq!(
            manifest["sha1"].as_str().unwrap(),
            text(&sha1.stdout).split_whitespace().next().unwrap()
        );
    }
    let openstack: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&text(&inspect(&built().openstack).stdout)).unwrap();
    assert_eq!(
        openstack["name"],
        "bosh-openstack-kvm-debian-trixie-go_agent"
    );
    assert_eq!(openstack["cloud_properties"]["auto_disk_config"], true);
    assert!(openstack["cloud_properties"]["disk"].as_u64().unwrap() >= 2048);
}

#[test]
fn warden_image_is_the_tree_with_the_agent_wired() {
    let dir = tempfile::tempdir().unwrap();
    let image = member(&built().warden, "image", dir.path());
    let root = dir.path().join("root");
    let out = Command::new(support::bin())
        .arg("unpack")
        .arg(&image)
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let agent = root.join("var/vcap/bosh/bin/bosh-agent");
    let meta = fs::metadata(&agent).unwrap();
    assert!(
        meta.permissions().mode_is_executable(),
        "agent is executable"
    );
    assert_eq!(
        fs::read_to_string(&agent).unwrap(),
        "#!/bin/sh\n# test agent\nexec sleep infinity\n"
    );
    let run = fs::read_to_string(root.join("etc/sv/bosh-agent/run")).unwrap();
    assert!(
        run.contains("exec /var/vcap/bosh/bin/bosh-agent")
            && run.contains("-C /var/vcap/bosh/agent.json"),
        "{run}"
    );
    assert!(fs::read_to_string(root.join("etc/sv/bosh-agent/log/run"))
        .unwrap()
        .contains("svlogd"));
    // The runit service link, resolved inside the image (its links are absolute).
    let resolved = Command::new(support::bin())
        .arg("chroot-exec")
        .arg(&root)
        .args([
            "--",
            "/usr/bin/readlink",
            "-f",
            "/etc/service/bosh-agent/run",
        ])
        .output()
        .unwrap();
    assert_eq!(
        text(&resolved.stdout).trim(),
        "/etc/sv/bosh-agent/run",
        "{}",
        text(&resolved.stderr)
    );
    let agent_json = fs::read_to_string(root.join("var/vcap/bosh/agent.json")).unwrap();
    stemcell_builder::audit::agent_settings::validate(&agent_json).unwrap();
    let settings: serde_json::Value = serde_json::from_str(&agent_json).unwrap();
    // installed by system_parameters, without newlines.
    let etc = |name: &str| fs::read_to_string(root.join("var/vcap/bosh/etc").join(name)).unwrap();
    assert_eq!(etc("stemcell_version"), "1.2");
    assert_eq!(etc("infrastructure"), "warden");
    assert_eq!(etc("operating_system"), "debian");
    assert!(
        etc("stemcell_git_sha1").starts_with(&head_commit()),
        "{} is the checkout's commit",
        etc("stemcell_git_sha1")
    );
    // runit runs rsyslog, sshd and cron beside the agent (resolved inside the image: its
    // /etc/service is an absolute link).
    for service in ["rsyslog", "ssh", "cron"] {
        let resolved = Command::new(support::bin())
            .arg("chroot-exec")
            .arg(&root)
            .args(["--", "/usr/bin/readlink", "-f"])
            .arg(format!("/etc/service/{service}"))
            .output()
            .unwrap();
        assert_eq!(
            text(&resolved.stdout).trim(),
            format!("/etc/sv/{service}"),
            "{}",
            text(&resolved.stderr)
        );
    }
    assert_eq!(
        settings["Infrastructure"]["Settings"]["Sources"][0]["Type"],
        "File"
    );
    assert!(fs::read_to_string(root.join("var/vcap/bosh/etc/monitrc"))
        .unwrap()
        .contains("include /var/vcap/monit/job/*.monitrc"));
    assert!(fs::read_to_string(root.join("etc/logrotate.d/bosh-agent"))
        .unwrap()
        .contains("/var/vcap/sys/log/*/*.log"));
    assert!(root.join("var/vcap/bosh/etc/dev_tools_file_list").exists());
    assert!(root
        .join("var/vcap/bosh/etc/static_libraries_list")
        .exists());
    assert!(
        fs::read_dir(root.join("etc/ssh"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("ssh_host_")),
        "no host keys"
    );
    assert!(
        fs::read_to_string(root.join("etc/systemd/system/ssh.service.d/10-host-keys.conf"))
            .unwrap()
            .contains("ssh-keygen -A")
    );

    // The dev-tools list member is the image's list.
    let listed = member(&built().warden, "dev_tools_file_list.txt", dir.path());
    assert_eq!(
        fs::read(listed).unwrap(),
        fs::read(root.join("var/vcap/bosh/etc/dev_tools_file_list")).unwrap()
    );
}

#[test]
fn warden_stemcell_passes_the_audit() {
    let scratch = tempfile::tempdir().unwrap();
    let mut audit = Command::new(support::bin());
    audit
        .arg("audit")
        .arg(&built().warden)
        .arg("--scratch-dir")
        .arg(scratch.path());
    let report = audit_passes_in_full(audit);
    assert_eq!(report["kind"], "stemcell");
    assert_eq!(report["iaas"], "warden");
}

/// Runs `audit` (JSON added) from the checkout and asserts every check passed; the report.
fn audit_passes_in_full(mut audit: Command) -> serde_json::Value {
    let out = audit
        .args(["--format", "json"])
        .current_dir(support::repo())
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("audit printed no JSON ({e}): {}", text(&out.stderr)));
    let not_passing: Vec<String> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] != "pass")
        .map(|r| format!("{} {}: {}", r["status"], r["id"], r["detail"]))
        .collect();
    assert!(not_passing.is_empty(), "{}", not_passing.join("\n"));
    assert!(out.status.success());
    report
}

/// The tree a VM stemcell's disk was made from, audited as a directory (audit does not read a
/// VM stemcell's disk), with every check, commands too.
fn vm_tree_passes_the_audit(tree: &Path, iaas: &str) {
    let mut audit = Command::new(support::bin());
    audit
        .arg("audit")
        .arg(tree)
        .args(["--kind", "stemcell", "--iaas", iaas, "--commands", "run"]);
    audit_passes_in_full(audit);
}

/// A copy of the merged tree of the build in `work`: a layered build leaves its tree in layers
/// (`chroot/` is only the stages' mount point), and the audit's commands and the mutation test
/// may write to the copy.
fn tree_copy(work: &Path, copy: &Path) -> PathBuf {
    if copy.exists() {
        let status = Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(copy)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let merged = support::MergedTree::new(work);
    let out = Command::new("cp")
        .arg("-a")
        .arg(merged.path())
        .arg(copy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "copying the tree of {}: {}",
        work.display(),
        text(&out.stderr)
    );
    assert!(copy.join("etc/passwd").is_file(), "the copy holds the tree");
    copy.to_path_buf()
}

/// The build's own tree of the openstack stemcell (the disk is made from it).
#[test]
fn openstack_tree_passes_the_audit() {
    let tree = tree_copy(
        &built().dir.join("work-openstack"),
        &built().dir.join("openstack-tree"),
    );
    vm_tree_passes_the_audit(&tree, "openstack");
}

/// As tests/audit.rs does for the OS image, for the checks that apply to stemcells only: each
/// one's mutation, on the first of the warden stemcell's tree, the openstack build's tree and
/// the vSphere build's tree that the check applies to, makes exactly that check fail, and is
/// undone.
#[test]
fn every_stemcell_check_fails_on_its_mutation_and_only_it() {
    use stemcell_builder::audit::checks::{self, TargetKind};
    use stemcell_builder::audit::eval::{Exec, Status};
    use stemcell_builder::audit::{applicable, audit_tree, mutate};

    let all = checks::load_dir(&support::repo().join("assets/checks")).unwrap();
    let stemcell_only: Vec<_> = all
        .iter()
        .filter(|c| !c.applies_to.kinds.contains(&TargetKind::OsImage))
        .collect();
    let applies =
        |c: &checks::Check, iaas: &str| c.applies_to.includes(TargetKind::Stemcell, Some(iaas));
    // Each check is tried on the first tree it applies to.
    let trees = ["warden", "openstack", "vsphere"];
    let untried: Vec<&str> = stemcell_only
        .iter()
        .filter(|c| !trees.iter().any(|iaas| applies(c, iaas)))
        .map(|c| c.id.as_str())
        .collect();
    assert!(untried.is_empty(), "checks no tree can try: {untried:?}");

    let warden_dir = built().dir.join("mutations-warden");
    let _ = fs::remove_dir_all(&warden_dir);
    fs::create_dir_all(&warden_dir).unwrap();
    let image = member(&built().warden, "image", &warden_dir);
    let warden_root = warden_dir.join("root");
    let out = Command::new(support::bin())
        .arg("unpack")
        .arg(&image)
        .arg(&warden_root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Copies of their own: the audit tests read the other copies meanwhile.
    let vm = |work: &Path, iaas: &'static str| {
        let scratch = built().dir.join(format!("mutations-{iaas}"));
        let _ = fs::remove_dir_all(&scratch);
        fs::create_dir_all(&scratch).unwrap();
        let tree = tree_copy(work, &built().dir.join(format!("mutations-{iaas}-tree")));
        (tree, scratch, iaas)
    };

    let failing = |report: &stemcell_builder::audit::report::Report| -> Vec<String> {
        report
            .results
            .iter()
            .filter(|r| r.status != Status::Pass)
            .map(|r| format!("{} ({})", r.id, r.detail))
            .collect()
    };
    let mut problems = vec![];
    let mut tried = 0;
    for (root, scratch, iaas) in [
        (warden_root.clone(), warden_dir.clone(), "warden"),
        vm(&built().dir.join("work-openstack"), "openstack"),
        vm(&vsphere_built().join("work-vsphere"), "vsphere"),
    ] {
        let audit = || {
            audit_tree(
                &root,
                iaas,
                TargetKind::Stemcell,
                Some(iaas),
                &all,
                Exec::With(support::bin()),
            )
        };
        let baseline = audit();
        assert!(
            failing(&baseline).is_empty(),
            "{iaas}: the unmutated tree passes: {:?}",
            failing(&baseline)
        );
        let here = applicable(&all, TargetKind::Stemcell, Some(iaas));
        for check in stemcell_only
            .iter()
            .filter(|c| here.iter().any(|h| h.id == c.id))
        {
            let earlier = &trees[..trees.iter().position(|t| *t == iaas).unwrap()];
            if earlier.iter().any(|t| applies(check, t)) {
                continue;
            }
            tried += 1;
            let applied = match mutate::apply(&root, &scratch, &check.mutation) {
                Ok(applied) => applied,
                Err(e) => {
                    problems.push(format!(
                        "{iaas} {}: mutation does not apply: {e:#}",
                        check.id
                    ));
                    continue;
                }
            };
            let report = audit();
            applied.undo().expect("the mutation is undone");
            let failed = failing(&report);
            if !(failed.len() == 1 && failed[0].starts_with(&format!("{} (", check.id))) {
                problems.push(format!(
                    "{iaas} {}: its mutation made these fail: {failed:?}",
                    check.id
                ));
            }
        }
        assert!(
            failing(&audit()).is_empty(),
            "{iaas}: every mutation was undone"
        );
    }
    assert_eq!(tried, stemcell_only.len(), "every stemcell check was tried");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let _ = fs::remove_dir_all(&warden_dir);
    for iaas in ["openstack", "vsphere"] {
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system"])
            .arg(built().dir.join(format!("mutations-{iaas}-tree")))
            .status();
    }
}

trait ModeExt {
    fn mode_is_executable(&self) -> bool;
}

impl ModeExt for fs::Permissions {
    fn mode_is_executable(&self) -> bool {
        std::os::unix::fs::PermissionsExt::mode(self) & 0o111 == 0o111
    }
}

#[test]
fn sboms_pass_the_ecosystem_validators() {
    let dir = tempfile::tempdir().unwrap();
    let venv = support::repo().join(".ci/venv/bin");
    assert!(
        venv.join("pyspdxtools").exists(),
        "run scripts/install.sh --deps-only (installs spdx-tools)"
    );
    for stemcell in [&built().warden, &built().openstack] {
        let spdx = member(stemcell, "sbom.spdx.json", dir.path());
        let out = Command::new(venv.join("pyspdxtools"))
            .arg("--infile")
            .arg(&spdx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pyspdxtools: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let cdx = member(stemcell, "sbom.cdx.json", dir.path());
        let script = "import sys\nfrom cyclonedx.validation.json import JsonStrictValidator\nfrom cyclonedx.schema import SchemaVersion\n\
                      errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
                      print(errors)\nsys.exit(1 if errors else 0)\n";
        let out = Command::new(venv.join("python"))
            .arg("-c")
            .arg(script)
            .arg(&cdx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cyclonedx: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        // Both list what packages.txt lists.
        let packages = fs::read_to_string(member(stemcell, "packages.txt", dir.path()))
            .unwrap()
            .lines()
            .count();
        let spdx_doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&spdx).unwrap()).unwrap();
        let cdx_doc: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&cdx).unwrap()).unwrap();
        assert_eq!(
            spdx_doc["packages"].as_array().unwrap().len(),
            packages + 1,
            "packages + the OS itself"
        );
        assert_eq!(cdx_doc["components"].as_array().unwrap().len(), packages);
    }
    // A validator that accepts anything would prove nothing.
    let broken = dir.path().join("broken.spdx.json");
    fs::write(&broken, r#"{"spdxVersion":"SPDX-2.3","SPDXID":"bad id"}"#).unwrap();
    assert!(!Command::new(venv.join("pyspdxtools"))
        .arg("--infile")
        .arg(&broken)
        .output()
        .unwrap()
        .status
        .success());
}

#[test]
fn openstack_qcow2_boots_to_multi_user_and_keeps_logging_after_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let image = member(&built().openstack, "image", dir.path());
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&image)
        .arg("-C")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    let disk = dir.path().join("root.img");
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        text(&info.stdout).contains("\"format\": \"qcow2\""),
        "{}",
        text(&info.stdout)
    );
    // The older qcow2 format, as the reference's openstack suite asks ('qcow2 0.10 compat').
    assert!(
        text(&info.stdout).contains("\"compat\": \"0.10\""),
        "{}",
        text(&info.stdout)
    );

    // The probe reports the rotation before multi-user; the getty shows the stemcell's hostname.
    let log = boot_to_multi_user(&disk, "qcow2", &[], dir.path(), &["bosh-stemcell login:"]);
    // GRUB booted the kernel with the stemcell's options, unattended although its menu has a
    // superuser's password, and keeps grub.cfg root's alone.
    let facts = log
        .lines()
        .find(|l| l.contains("BOOT-FACTS: "))
        .expect("boot_to_multi_user waits for BOOT-FACTS");
    for want in [
        " audit=1",
        " ipv6.disable=1",
        "grub.cfg=600:root:root",
        "grub-password=set",
    ] {
        assert!(facts.contains(want), "{want}: {facts}");
    }
    // logrotate made rsyslog reopen its file: the line logged after rotation is in the new one.
    let probe: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ROTATION-PROBE: "))
        .collect();
    assert!(
        probe.iter().any(|l| l.contains("ROTATION-PROBE: PASS")),
        "{probe:?}\n{}",
        tail(&dir.path().join("console.log"))
    );
}

/// Boots a disk under qemu (no KVM, serial console) until the boot probe reports
/// multi-user.target and the console shows every line of `also`; `firmware` are the extra
/// arguments (OVMF's flash for EFI). Returns the console log.
fn boot_to_multi_user(
    disk: &Path,
    format: &str,
    firmware: &[String],
    dir: &Path,
    also: &[&str],
) -> String {
    let console = dir.join("console.log");
    // One vCPU: under multi-threaded TCG a second vCPU can run the kernel's code while the
    // kernel patches it (static keys), which oopsed early in boot ("Oops: int3" in
    // sched_clock_cpu) on a loaded host.
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-m",
            "1024",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-net",
            "none",
            "-snapshot",
        ])
        .args(firmware)
        .arg("-drive")
        .arg(format!("file={},format={format},if=virtio", disk.display()))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&console).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(400);
    let mut booted = false;
    while Instant::now() < deadline {
        let seen = String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned();
        booted = seen.contains("BOOT-PROBE: multi-user.target reached")
            && seen.contains("BOOT-FACTS: ")
            && also.iter().all(|line| seen.contains(line));
        if booted {
            break;
        }
        if let Ok(Some(status)) = qemu.try_wait() {
            panic!(
                "qemu exited ({status}) before multi-user:\n{}",
                tail(&console)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = qemu.kill();
    let _ = qemu.wait();
    assert!(
        booted,
        "no multi-user (and {also:?}) within 400 s:\n{}",
        tail(&console)
    );
    // Firmware and GRUB write bytes that are not UTF-8.
    String::from_utf8_lossy(&fs::read(&console).unwrap_or_default()).into_owned()
}

/// The vSphere stemcell (EFI), built once from the default OS image with the boot probe, in
/// the shared dir's `vsphere/`.
fn vsphere_built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = built().dir.join("vsphere");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let (os_image, _) = support::default_os_image();
        let stages = built().dir.join("stages-with-boot-probe");
        let out = build_stemcell(
            &dir,
            os_image.to_str().unwrap(),
            "vsphere",
            &[
                "--stages-dir",
                stages.to_str().unwrap(),
                "--set",
                &format!("stemcell_git_sha1={}", head_commit()),
            ],
        );
        assert!(out.status.success(), "vsphere: {}", text(&out.stderr));
        dir
    })
}

#[test]
fn vsphere_tree_passes_the_audit_and_its_ovf_is_efi_and_boots_with_ovmf() {
    let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd");
    let vars = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
    assert!(
        code.exists() && vars.exists(),
        "run scripts/install.sh --deps-only (installs ovmf)"
    );
    let dir = vsphere_built().to_path_buf();
    // Its tree passes every check for vSphere stemcells, as openstack's does.
    let tree = tree_copy(&dir.join("work-vsphere"), &dir.join("vsphere-tree"));
    vm_tree_passes_the_audit(&tree, "vsphere");
    let stemcell =
        dir.join("out-vsphere/bosh-stemcell-1.2-vsphere-esxi-debian-trixie-go_agent.tgz");
    let image = member(&stemcell, "image", &dir);
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(&image)
        .arg("-C")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success());
    let ovf = fs::read_to_string(dir.join("image.ovf")).unwrap();
    assert!(
        ovf.contains(r#"vmw:key="firmware" vmw:value="efi""#),
        "the descriptor asks for EFI firmware:\n{ovf}"
    );
    // No floppy drive (the reference's 'disables the floppy drive'): none is declared at all.
    assert!(
        !ovf.contains("<rasd:ResourceType>14</rasd:ResourceType>")
            && !ovf.to_lowercase().contains("floppy"),
        "the descriptor declares no floppy drive:\n{ovf}"
    );
    let raw = dir.join("root.raw");
    let out = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(dir.join("image-disk1.vmdk"))
        .arg(&raw)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    // GPT: the EFI system partition first, then the root partition.
    let table = Command::new("sfdisk")
        .arg("--json")
        .arg(&raw)
        .output()
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&table.stdout).unwrap();
    assert_eq!(table["partitiontable"]["label"], "gpt", "{table}");
    let parts = table["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(
        parts[0]["type"].as_str().unwrap().to_uppercase(),
        "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
        "the first partition is the EFI system partition: {table}"
    );
    // OVMF with its own copy of the variable store; no CSM, so only GRUB EFI can boot it.
    let vars_copy = dir.join("OVMF_VARS.fd");
    fs::copy(vars, &vars_copy).unwrap();
    let firmware = vec![
        "-drive".to_string(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.display()
        ),
        "-drive".to_string(),
        format!("if=pflash,format=raw,unit=1,file={}", vars_copy.display()),
    ];
    let log = boot_to_multi_user(&raw, "raw", &firmware, &dir, &[]);
    let facts = log.lines().find(|l| l.contains("BOOT-FACTS: ")).unwrap();
    for want in [
        " audit=1",
        " ipv6.disable=1",
        "grub.cfg=600:root:root",
        "grub-password=set",
    ] {
        assert!(facts.contains(want), "{want}: {facts}");
    }
    assert!(
        log.contains("/sys/firmware/efi present"),
        "booted through EFI:\n{}",
        log.lines()
            .filter(|l| l.contains("BOOT-"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = fs::remove_dir_all(&dir);
}

fn tail(path: &Path) -> String {
    let text = String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).into_owned();
    text.lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn inspect_fails_on_broken_stemcells() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    for name in [
        "stemcell.MF",
        "packages.txt",
        "dev_tools_file_list.txt",
        "image",
        "sbom.spdx.json",
        "sbom.cdx.json",
    ] {
        member(&built().warden, name, &src);
    }
    let repack = |name: &str, members: &[&str]| -> PathBuf {
        let out = dir.path().join(name);
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&out)
            .arg("-C")
            .arg(&src)
            .args(members)
            .status()
            .unwrap();
        assert!(status.success());
        out
    };
    let all = [
        "stemcell.MF",
        "packages.txt",
        "dev_tools_file_list.txt",
        "image",
        "sbom.spdx.json",
        "sbom.cdx.json",
    ];
    let good = repack("good.tgz", &all);
    assert!(
        inspect(&good).status.success(),
        "{}",
        text(&inspect(&good).stderr)
    );

    let reordered = repack(
        "reordered.tgz",
        &[
            "packages.txt",
            "stemcell.MF",
            "dev_tools_file_list.txt",
            "image",
            "sbom.spdx.json",
            "sbom.cdx.json",
        ],
    );
    let out = inspect(&reordered);
    assert!(
        !out.status.success() && text(&out.stderr).contains("in that order"),
        "{}",
        text(&out.stderr)
    );

    let missing = repack("missing.tgz", &all[..5]);
    assert!(!inspect(&missing).status.success());

    let manifest = fs::read_to_string(src.join("stemcell.MF")).unwrap();
    let sha1_line = manifest
        .lines()
        .find(|l| l.starts_with("sha1:"))
        .unwrap()
        .to_string();
    fs::write(
        src.join("stemcell.MF"),
        manifest.replace(&sha1_line, &format!("sha1: {}", "0".repeat(40))),
    )
    .unwrap();
    let wrong_sha = repack("wrong-sha.tgz", &all);
    let out = inspect(&wrong_sha);
    assert!(
        !out.status.success() && text(&out.stderr).contains("sha1"),
        "{}",
        text(&out.stderr)
    );

    fs::write(
        src.join("stemcell.MF"),
        manifest.replace("api_version: 3", "api_version: 2"),
    )
    .unwrap();
    let out = inspect(&repack("api.tgz", &all));
    assert!(
        !out.status.success() && text(&out.stderr).contains("api_version"),
        "{}",
        text(&out.stderr)
    );

    fs::write(dir.path().join("garbage.tgz"), b"not a stemcell").unwrap();
    assert!(!inspect(&dir.path().join("garbage.tgz")).status.success());
}

#[test]
fn os_image_from_s3_and_offline_from_the_copy_it_downloaded() {
    let server = S3Server::shared();
    let (image, _) = support::default_os_image();
    let out = server
        .command(&[
            "upload-os-image",
            image.to_str().unwrap(),
            "s3://os-images/stemcell-test/os-image.tgz",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = server
        .command(&[
            "build-stemcell",
            "--os-image",
            "s3://os-images/stemcell-test/os-image.tgz",
            "--iaas",
            "warden",
            "--version",
            "7",
        ])
        .arg("--agent")
        .arg(agent(dir.path()))
        .arg("--output-dir")
        .arg(&out_dir)
        .arg("--work-dir")
        .arg(dir.path().join("work"))
        .current_dir(support::repo())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stemcell = out_dir.join("bosh-stemcell-7-warden-boshlite-debian-trixie-go_agent.tgz");
    assert!(inspect(&stemcell).status.success());
    assert!(
        text(&out.stdout).contains("ok (sha256 verified)"),
        "the downloaded image was verified: {}",
        text(&out.stdout)
    );

    // --offline takes the copy this work dir downloaded from that URL and never contacts S3:
    // the endpoint given is a closed port, so any request would fail the build.
    let offline = |url: &str, out_dir: &Path| {
        fs::create_dir_all(out_dir).unwrap();
        Command::new(support::bin())
            .args(["build-stemcell", "--os-image", url, "--iaas", "warden"])
            .args(["--version", "7", "--offline", "--path-style"])
            .args(["--endpoint", "http://127.0.0.1:9"])
            .arg("--agent")
            .arg(agent(dir.path()))
            .arg("--output-dir")
            .arg(out_dir)
            .arg("--work-dir")
            .arg(dir.path().join("work"))
            .env("AWS_ACCESS_KEY_ID", "unused")
            .env("AWS_SECRET_ACCESS_KEY", "unused")
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            .current_dir(support::repo())
            .output()
            .unwrap()
    };
    let again = dir.path().join("offline");
    let out = offline("s3://os-images/stemcell-test/os-image.tgz", &again);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        inspect(&again.join("bosh-stemcell-7-warden-boshlite-debian-trixie-go_agent.tgz"))
            .status
            .success()
    );
    // Another URL's image was never downloaded here: one line, and nothing is built.
    let other = dir.path().join("offline-other");
    let out = offline("s3://os-images/stemcell-test/other.tgz", &other);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("--offline: s3://os-images/stemcell-test/other.tgz was not downloaded into this work dir")
            && err.trim().lines().count() == 1,
        "{err}"
    );
    assert_eq!(fs::read_dir(&other).unwrap().count(), 0, "nothing written");
}

#[test]
fn input_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = support::default_os_image();
    let image = image.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--iaas", "openstack", "--hypervisor", "esxi"], "valid pairs are warden/boshlite, openstack/kvm, aws/xen-hvm, vsphere/esxi, google/kvm, azure/hyperv"),
        (vec!["--iaas", "warden", "--format", "qcow2"], "format qcow2 does not fit warden/boshlite"),
        (vec!["--iaas", "warden", "--resume-from", "nope"], "unknown stage 'nope'"),
    ];
    for (args, needle) in cases {
        let mut cmd = Command::new(support::bin());
        cmd.args([
            "build-stemcell",
            "--os-image",
            image,
            "--version",
            "1",
            "--agent",
        ])
        .arg(agent(dir.path()))
        .arg("--output-dir")
        .arg(dir.path())
        .arg("--work-dir")
        .arg(dir.path().join("w"))
        .args(&args)
        .current_dir(support::repo())
        .env_remove("IAAS")
        .env_remove("HYPERVISOR");
        let out = cmd.output().unwrap();
        assert!(!out.status.success());
        let err = text(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{needle}: {err}");
    }
    let plain = dir.path().join("not-executable");
    fs::write(&plain, "x").unwrap();
    let out = Command::new(support::bin())
        .args([
            "build-stemcell",
            "--os-image",
            image,
            "--iaas",
            "warden",
            "--version",
            "1",
            "--agent",
        ])
        .arg(&plain)
        .arg("--output-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("is not an executable file"),
        "{}",
        text(&out.stderr)
    );
    // The reference builder's environment names.
    let out = Command::new(support::bin())
        .args([
            "build-stemcell",
            "--os-image",
            image,
            "--version",
            "1",
            "--agent",
        ])
        .arg(agent(dir.path()))
        .env("IAAS", "openstack")
        .env("HYPERVISOR", "esxi")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("unknown IaaS/hypervisor pair openstack/esxi"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn build_time_leaves_no_loop_device_or_mount() {
    let _ = built();
    let work = built().dir.join("work-openstack");
    assert!(support::mounts_below(&work).is_empty());
    let loops = fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok());
    for backing in loops {
        assert!(
            !backing.contains(&work.display().to_string()),
            "loop device still backed by {backing}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// smoke. Its plumbing runs here on the stemcells above, whose agent is a stand-in that never
// answers (a test double of the harness's, proving nothing about the stemcell): the container
// or VM boots, nats-server takes the director's mutual TLS, ping times out, the failure is
// reported with the agent's or console's last lines, and nothing is left running. With
// STEMCELL_BUILDER_TEST_AGENT naming a real bosh-agent binary, warden and openstack stemcells
// built with it must pass every step.

fn smoke(stemcell: &Path, scratch: &Path, extra: &[&str]) -> Command {
    fs::create_dir_all(scratch).unwrap();
    let mut cmd = Command::new(support::bin());
    cmd.arg("smoke")
        .arg(stemcell)
        .arg("--scratch-dir")
        .arg(scratch)
        .args(extra);
    cmd
}

/// Processes whose command line names `dir` (smoke's `container` process, qemu, nats-server),
/// smoke itself aside.
fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let mut found = vec![];
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) && !cmdline.contains(" smoke ") {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

/// The PID namespace of the container smoke runs with its scratch in `dir` (the namespace of
/// the `container` process's child, the container's init), once it exists.
fn container_pid_namespace(dir: &Path) -> Option<(String, String)> {
    let needle = format!("container --log {}", dir.display());
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmdline)
            .replace('\0', " ")
            .contains(&needle)
        {
            continue;
        }
        let pid = entry.file_name().to_string_lossy().to_string();
        let children =
            fs::read_to_string(entry.path().join(format!("task/{pid}/children"))).ok()?;
        let init = children.split_whitespace().next()?;
        return fs::read_link(format!("/proc/{init}/ns/pid"))
            .ok()
            .map(|l| (l.display().to_string(), init.to_string()));
    }
    None
}

/// Processes in the PID namespace `namespace`.
fn processes_in_namespace(namespace: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            fs::read_link(e.path().join("ns/pid"))
                .is_ok_and(|l| l.display().to_string() == namespace)
        })
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect()
}

/// Whether the host end of the veth of the container whose init is `init` exists (`sbsPID`).
fn veth_of(init: &str) -> bool {
    Path::new("/sys/class/net")
        .join(format!("sbs{init}"))
        .exists()
}

fn steps(report: &serde_json::Value) -> Vec<(String, bool)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["step"].as_str().unwrap().to_string(),
                s["ok"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn smoke_of_a_warden_stemcell_fails_at_ping_when_the_agent_never_answers_and_leaves_nothing_even_after_sigkill(
) {
    // One run to its end: the agent never answers, ping times out.
    let scratch = built().dir.join("smoke-warden");
    let child = smoke(
        &built().warden,
        &scratch,
        &["--timeout", "45", "--format", "json"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut namespace = None;
    assert!(
        support::eventually(60, || {
            namespace = container_pid_namespace(&scratch);
            namespace.is_some()
        }),
        "the container starts"
    );
    let (namespace, init) = namespace.unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", text(&out.stdout));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(
        steps(&report),
        [
            ("boot".to_string(), true),
            ("nats".to_string(), true),
            ("ping".to_string(), false)
        ],
        "{report}"
    );
    assert!(
        report["steps"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("no pong within"),
        "{report}"
    );
    assert_eq!(report["infrastructure"], "warden");
    assert!(
        support::eventually(10, || processes_in_namespace(&namespace).is_empty()),
        "container processes left: {:?}",
        processes_in_namespace(&namespace)
    );
    assert!(
        processes_in(&scratch).is_empty(),
        "{:?}",
        processes_in(&scratch)
    );
    assert!(support::mounts_below(&scratch).is_empty());
    assert!(!veth_of(&init), "the container's veth is gone");
    assert_eq!(
        fs::read_dir(&scratch).unwrap().count(),
        0,
        "scratch removed"
    );

    // One run killed with SIGKILL while the container and nats-server run.
    let scratch = built().dir.join("smoke-sigkill");
    let mut child = smoke(&built().warden, &scratch, &["--timeout", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut namespace = None;
    assert!(
        support::eventually(120, || {
            namespace = container_pid_namespace(&scratch);
            namespace
                .as_ref()
                .is_some_and(|(ns, _)| processes_in_namespace(ns).len() > 2)
                && processes_in(&scratch)
                    .iter()
                    .any(|p| p.contains("nats-server"))
        }),
        "the container's services and nats-server run: {:?}",
        processes_in(&scratch)
    );
    let (namespace, init) = namespace.unwrap();
    assert!(veth_of(&init), "the container's veth is up");
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        support::eventually(20, || processes_in_namespace(&namespace).is_empty()),
        "container processes left: {:?}",
        processes_in_namespace(&namespace)
    );
    assert!(
        support::eventually(20, || processes_in(&scratch).is_empty()),
        "left running: {:?}",
        processes_in(&scratch)
    );
    assert!(
        support::eventually(20, || !veth_of(&init)),
        "the container's veth sbs{init} is left"
    );
    assert!(support::mounts_below(&scratch).is_empty());
    let _ = fs::remove_dir_all(&scratch);
}

#[test]
fn smoke_of_a_vm_stemcell_boots_it_in_qemu_with_its_settings_on_a_config_drive() {
    let scratch = built().dir.join("smoke-openstack");
    let out = smoke(
        &built().openstack,
        &scratch,
        &["--timeout", "150", "--keep-scratch"],
    )
    .output()
    .unwrap();
    let said = text(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("ok    boot") && said.contains("qemu (tcg)"),
        "{said}"
    );
    assert!(said.contains("ok    nats"), "{said}");
    assert!(said.contains("FAIL  ping"), "{said}");
    // The console's last lines stand in for the agent's log: the guest booted.
    assert!(
        said.contains("# the agent's last log lines (openstack)"),
        "{said}"
    );
    assert!(
        processes_in(&scratch).is_empty(),
        "{:?}",
        processes_in(&scratch)
    );
    let kept = said
        .lines()
        .find_map(|l| l.strip_prefix("# kept "))
        .expect("the kept scratch dir is named");
    let drive = Path::new(kept).join("config-drive.img");
    let mtype = Command::new("mtype")
        .arg("-i")
        .arg(&drive)
        .arg("::/ec2/latest/user-data")
        .output()
        .unwrap();
    assert!(mtype.status.success(), "{}", text(&mtype.stderr));
    let settings: serde_json::Value = serde_json::from_slice(&mtype.stdout).unwrap();
    assert!(
        settings["mbus"]
            .as_str()
            .unwrap()
            .starts_with("nats://10.0.2.2:"),
        "{settings}"
    );
    assert_eq!(settings["disks"]["ephemeral"], "/dev/vdb");
    assert!(settings["env"]["bosh"]["mbus"]["cert"]["private_key"]
        .as_str()
        .unwrap()
        .contains("PRIVATE KEY"));
    let label = Command::new("mlabel")
        .args(["-s", "-i"])
        .arg(&drive)
        .arg("::")
        .output()
        .unwrap();
    assert!(
        text(&label.stdout).contains("CONFIG-2"),
        "{}",
        text(&label.stdout)
    );
    // The keys stay root's.
    let mode = fs::metadata(Path::new(kept).join("nats/server.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    fs::remove_dir_all(kept).unwrap();
}

#[test]
fn the_real_agent_passes_every_smoke_step_on_warden_and_openstack() {
    let Some(agent) = std::env::var_os("STEMCELL_BUILDER_TEST_AGENT") else {
        support::skip(
            "the_real_agent_passes_every_smoke_step_on_warden_and_openstack",
            "STEMCELL_BUILDER_TEST_AGENT names no real bosh-agent binary",
        );
        return;
    };
    let (image, _) = support::default_os_image();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("smoke-real-agent");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    for iaas in ["warden", "openstack"] {
        let out = build_stemcell_with(&dir, image.to_str().unwrap(), iaas, Path::new(&agent), &[]);
        assert!(out.status.success(), "{iaas}: {}", text(&out.stderr));
        let out_dir = dir.join(format!("out-{iaas}"));
        let stemcell = fs::read_dir(&out_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "tgz"))
            .unwrap();
        let out = smoke(
            &stemcell,
            &dir.join("scratch"),
            &["--timeout", "900", "--format", "json"],
        )
        .output()
        .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
        assert!(out.status.success(), "{iaas}: {report:#}");
        let mut expected = vec![
            "boot",
            "nats",
            "ping",
            "get_state",
            "ssh setup",
            "ssh login",
            "upload_blob",
            "apply",
            "start",
            "stop",
            "run_script",
        ];
        if iaas != "warden" {
            expected.insert(4, "ephemeral disk");
        }
        let names: Vec<String> = steps(&report).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, expected, "{report:#}");
        assert!(steps(&report).iter().all(|(_, ok)| *ok), "{report:#}");
    }
}
