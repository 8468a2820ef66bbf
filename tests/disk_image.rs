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

/// disk-image of a tree whose grub-install sleeps (`sleep MARKER`), returned once GRUB's step
/// runs (the loop device attached, the copy mounted).
fn disk_image_held_at_grub(dir: &Path, marker: &str, stderr: Stdio) -> std::process::Child {
    let tree = dir.join("tree");
    tree_with_grub(&tree, &format!("sleep {marker}"));
    let child = disk_image(&tree, &dir.join("out"))
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    assert!(
        eventually(60, || !processes_with(&format!("sleep {marker}"))
            .is_empty()),
        "GRUB step reached"
    );
    child
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
    let mut child = disk_image_held_at_grub(dir.path(), "717171", Stdio::null());
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

/// A file of the host's that no disk build may change.
fn host_file(dir: &Path) -> std::path::PathBuf {
    let file = dir.join("host-file");
    fs::write(&file, "HOST-BYTES\n").unwrap();
    file
}

/// Runs disk-image (at most 120 s: a FIFO must not hang it) and returns its stderr.
fn refused_disk(cmd: &mut Command) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    assert!(
        eventually(120, || child.try_wait().unwrap().is_some()),
        "disk-image {pid} still runs after 120 s"
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "disk-image must refuse the tree");
    text(&out.stderr)
}

#[test]
fn boot_files_that_are_links_devices_or_fifos_are_refused_and_no_host_byte_changes() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_file(dir.path());
    let host_dir = dir.path().join("host-dir");
    fs::create_dir(&host_dir).unwrap();
    let climb = format!("../../../../../../../../..{}", host.display());
    type Plant = Box<dyn Fn(&Path)>;
    let cases: Vec<(&str, Plant, &str, &str)> = vec![
        (
            "absolute link",
            Box::new({
                let host = host.clone();
                move |t: &Path| std::os::unix::fs::symlink(&host, t.join("etc/fstab")).unwrap()
            }),
            "/etc/fstab",
            "bios",
        ),
        (
            "climbing relative link",
            Box::new(move |t: &Path| {
                std::os::unix::fs::symlink(&climb, t.join("etc/fstab")).unwrap()
            }),
            "/etc/fstab",
            "bios",
        ),
        (
            "block device",
            Box::new(|t: &Path| {
                support::loop_device_node(&t.join("etc/fstab"));
            }),
            "a block device",
            "bios",
        ),
        (
            "FIFO",
            Box::new(|t: &Path| {
                nix::unistd::mkfifo(
                    &t.join("etc/fstab"),
                    nix::sys::stat::Mode::from_bits_truncate(0o644),
                )
                .unwrap()
            }),
            "a FIFO",
            "bios",
        ),
        (
            "GRUB drop-in linked to a device of the tree",
            Box::new(|t: &Path| {
                fs::create_dir_all(t.join("etc/default/grub.d")).unwrap();
                fs::create_dir_all(t.join("dev")).unwrap();
                support::loop_device_node(&t.join("dev/evil"));
                std::os::unix::fs::symlink(
                    "../../../dev/evil",
                    t.join("etc/default/grub.d/90-root-label.cfg"),
                )
                .unwrap();
            }),
            "90-root-label.cfg",
            "bios",
        ),
        (
            "EFI dir under a boot linked to the host",
            Box::new({
                let host_dir = host_dir.clone();
                move |t: &Path| {
                    fs::create_dir_all(t.join("usr/lib/grub/x86_64-efi")).unwrap();
                    std::os::unix::fs::symlink(&host_dir, t.join("boot")).unwrap();
                }
            }),
            "/boot",
            "efi",
        ),
    ];
    for (name, plant, needle, firmware) in cases {
        let case = dir.path().join(name.replace(' ', "-"));
        let tree = case.join("tree");
        tree_with_grub(&tree, "exit 0");
        plant(&tree);
        let out_dir = case.join("out");
        // The EFI system partition alone takes 256 MiB.
        let size = if firmware == "efi" { "320" } else { "64" };
        let err = refused_disk(
            Command::new(support::bin())
                .arg("disk-image")
                .arg(&tree)
                .arg(&out_dir)
                .args([
                    "--format",
                    "raw",
                    "--size-mib",
                    size,
                    "--firmware",
                    firmware,
                ]),
        );
        let last = err.trim_end().lines().last().unwrap_or("");
        assert!(
            last.contains(needle) && last.contains("refusing to write"),
            "{name}: one line naming {needle}: {err}"
        );
        assert_eq!(fs::read_to_string(&host).unwrap(), "HOST-BYTES\n", "{name}");
        assert_eq!(fs::read_dir(&host_dir).unwrap().count(), 0, "{name}");
        assert!(loops_below(dir.path()).is_empty(), "{name}: loop left");
        assert!(mounts_below(dir.path()).is_empty(), "{name}: mount left");
        assert_eq!(
            fs::read_dir(&out_dir).unwrap().count(),
            0,
            "{name}: partial disk left"
        );
    }
}

#[test]
fn the_copy_is_mounted_nodev_nosuid_while_the_disk_is_made() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = disk_image_held_at_grub(dir.path(), "737373", Stdio::null());
    // The disk-image process's own mount namespace holds the copy's mount.
    let mounts = fs::read_to_string(format!("/proc/{}/mounts", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let copy: Vec<&str> = mounts
        .lines()
        .filter(|l| l.contains("/.disk-") && l.contains(" ext4 "))
        .collect();
    assert_eq!(copy.len(), 1, "{mounts}");
    let options = copy[0].split(' ').nth(3).unwrap();
    assert!(
        options.split(',').any(|o| o == "nodev") && options.split(',').any(|o| o == "nosuid"),
        "{}",
        copy[0]
    );
}

#[test]
fn sigterm_mid_disk_removes_the_half_made_disk() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    let mut child = disk_image_held_at_grub(dir.path(), "747474", Stdio::piped());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        eventually(30, || child.try_wait().unwrap().is_some()),
        "disk-image ends after SIGTERM"
    );
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        fs::read_dir(&out_dir).unwrap().count(),
        0,
        "the scratch dir with root.raw is gone"
    );
    assert!(eventually(10, || loops_below(dir.path()).is_empty()));
    assert!(mounts_below(dir.path()).is_empty());
    assert!(eventually(10, || processes_with("sleep 747474").is_empty()));
}
