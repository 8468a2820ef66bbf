//! disk-image releases its loop device and mounts on every path: a failure after the loop
//! device is attached (GRUB failing inside the disk), and a SIGKILL in the middle.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{busybox_root, eventually, mounts_below, processes_with, text};

/// A tiny tree whose grub-install runs `body` (the real one needs a kernel and grub-pc).
fn tree_with_grub(root: &Path, body: &str) {
    busybox_root(root);
    let grub = root.join("usr/sbin/grub-install");
    fs::write(&grub, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&grub, fs::Permissions::from_mode(0o755)).unwrap();
    let update = root.join("usr/sbin/update-grub");
    fs::write(&update, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&update, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Loop devices whose backing file lies below `dir` (deleted files included).
fn loops_below(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|b| b.starts_with(&prefix))
        .collect()
}

fn disk_image(tree: &Path, out: &Path) -> Command {
    let mut cmd = Command::new(support::bin());
    cmd.arg("disk-image")
        .arg(tree)
        .arg(out)
        .args(["--format", "qcow2", "--size-mib", "64"]);
    cmd
}

#[test]
fn a_failure_after_the_loop_device_is_attached_releases_everything() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    tree_with_grub(&tree, "echo 'grub-install: simulated failure' >&2; exit 1");
    let out_dir = dir.path().join("out");
    let out = disk_image(&tree, &out_dir).output().unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("installing GRUB into the disk failed") && err.contains("simulated failure"),
        "{err}"
    );
    assert!(
        loops_below(dir.path()).is_empty(),
        "loop devices left: {:?}",
        loops_below(dir.path())
    );
    assert!(
        mounts_below(dir.path()).is_empty(),
        "mounts left: {:?}",
        mounts_below(dir.path())
    );
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        0,
        "no partial disk left in {}",
        out_dir.display()
    );
}

#[test]
fn a_tree_without_grub_is_refused_before_anything_is_attached() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    busybox_root(&tree);
    let out = disk_image(&tree, &dir.path().join("out")).output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no /usr/sbin/grub-install"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigkill_mid_disk_leaves_no_loop_device_mount_or_process() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    tree_with_grub(&tree, "sleep 717171");
    let mut child = disk_image(&tree, &dir.path().join("out"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(30, || !processes_with("sleep 717171").is_empty()),
        "GRUB step reached"
    );
    assert!(
        !loops_below(dir.path()).is_empty(),
        "the loop device is attached while it works"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        eventually(10, || processes_with("sleep 717171").is_empty()),
        "chroot processes killed"
    );
    assert!(
        eventually(10, || loops_below(dir.path()).is_empty()),
        "loop device autocleared: {:?}",
        loops_below(dir.path())
    );
    assert!(mounts_below(dir.path()).is_empty());
}
