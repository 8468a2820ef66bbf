//! pack/unpack round trips on a tree with every kind of entry a root filesystem has, checked
//! against the file system (lstat, xattrs, file capabilities) and against GNU tar; hostile
//! archives are refused.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::text;

/// A tree with files, dirs, symlinks, hard links, devices, a fifo, setuid, xattrs, a file
/// capability, odd owners, long names and old mtimes.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("etc/deep")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/deep/owned"), "by 12345").unwrap();
    nix::unistd::chown(
        &root.join("etc/deep/owned"),
        Some(12345.into()),
        Some(54321.into()),
    )
    .unwrap();
    fs::write(root.join("usr/bin/sudo"), vec![7u8; 300_000]).unwrap();
    fs::set_permissions(
        root.join("usr/bin/sudo"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/sudo"), root.join("usr/bin/sudoedit")).unwrap();
    fs::write(root.join("usr/bin/ping"), "elf").unwrap();
    fs::set_permissions(root.join("usr/bin/ping"), fs::Permissions::from_mode(0o755)).unwrap();
    let setcap = Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(root.join("usr/bin/ping"))
        .status()
        .unwrap();
    assert!(setcap.success(), "setcap (libcap2-bin) works");
    xattr::set(root.join("etc/passwd"), "user.stemcell", b"yes").unwrap();
    symlink("usr/bin", root.join("bin")).unwrap();
    symlink("/etc/passwd", root.join("etc/absolute-link")).unwrap();
    let long_dir = root.join("a".repeat(60)).join("b".repeat(60));
    fs::create_dir_all(&long_dir).unwrap();
    fs::write(long_dir.join("c".repeat(90)), "long").unwrap();
    symlink("x".repeat(150), root.join("etc/long-target")).unwrap();
    nix::sys::stat::mknod(
        &root.join("dev/null"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        libc::makedev(1, 3),
    )
    .unwrap();
    nix::sys::stat::mknod(
        &root.join("dev/loop9"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o660),
        libc::makedev(7, 9),
    )
    .unwrap();
    nix::unistd::mkfifo(
        &root.join("dev/initctl"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    for path in ["etc/passwd", "usr/bin/ping", "dev/null"] {
        let t = filetime::FileTime::from_unix_time(1_000_000_000, 0);
        filetime::set_symlink_file_times(root.join(path), t, t).unwrap();
    }
    fs::set_permissions(root, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Everything we promise to preserve, per path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, PathBuf> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().to_path_buf();
        let mut line = format!(
            "mode={:o} uid={} gid={} rdev={}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.rdev()
        );
        if !meta.is_dir() {
            line += &format!(" mtime={}", meta.mtime());
        }
        if meta.file_type().is_symlink() {
            line += &format!(" -> {}", fs::read_link(&path).unwrap().display());
        } else if meta.is_file() {
            line += &format!(
                " size={} sum={:x}",
                meta.len(),
                fs::read(&path)
                    .unwrap()
                    .iter()
                    .map(|b| *b as u64)
                    .sum::<u64>()
            );
            if meta.nlink() > 1 {
                let first = inodes.entry(meta.ino()).or_insert(rel.clone());
                line += &format!(" links-with={}", first.display());
            }
            for name in xattr::list(&path).unwrap() {
                line += &format!(
                    " xattr:{}={:?}",
                    name.to_string_lossy(),
                    xattr::get(&path, &name).unwrap().unwrap()
                );
            }
        }
        if meta.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            children.reverse();
            stack.extend(children);
        }
        out.insert(rel, line);
    }
    out
}

fn sb(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(support::bin()).args(args).output().unwrap()
}

fn pack(tree: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(support::bin());
    cmd.arg("pack").arg(tree).arg(out).args(extra);
    cmd.output().unwrap()
}

#[test]
fn round_trip_preserves_everything_and_is_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    rich_tree(&tree);
    for compression in ["gzip", "zstd"] {
        let a = dir.path().join(format!("a-{compression}.img"));
        let b = dir.path().join(format!("b-{compression}.img"));
        let out = pack(&tree, &a, &["--compression", compression]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(pack(&tree, &b, &["--compression", compression])
            .status
            .success());
        assert_eq!(
            fs::read(&a).unwrap(),
            fs::read(&b).unwrap(),
            "{compression}: same tree, same bytes"
        );

        let target = dir.path().join(format!("unpacked-{compression}"));
        let out = sb(&["unpack".as_ref(), a.as_os_str(), target.as_os_str()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains("checksum verified"),
            "{}",
            text(&out.stdout)
        );
        let (before, after) = (snapshot(&tree), snapshot(&target));
        for (path, line) in &before {
            assert_eq!(
                Some(line),
                after.get(path),
                "{compression}: {}",
                path.display()
            );
        }
        assert_eq!(before.len(), after.len());
        let caps = Command::new("getcap")
            .arg(target.join("usr/bin/ping"))
            .output()
            .unwrap();
        assert!(
            text(&caps.stdout).contains("cap_net_raw=ep"),
            "file capability survives: {}",
            text(&caps.stdout)
        );

        // Unpacked and packed again: still the same bytes.
        let c = dir.path().join(format!("c-{compression}.img"));
        assert!(pack(&target, &c, &["--compression", compression])
            .status
            .success());
        assert_eq!(
            fs::read(&a).unwrap(),
            fs::read(&c).unwrap(),
            "{compression}: round trip is stable"
        );
    }
}

#[test]
fn gzip_output_is_standard_and_sorted_with_dot_slash_names() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    rich_tree(&tree);
    let image = dir.path().join("os.tgz");
    assert!(pack(&tree, &image, &[]).status.success());
    let bytes = fs::read(&image).unwrap();
    assert_eq!(
        &bytes[..4],
        &[0x1f, 0x8b, 8, 0],
        "gzip, no name or comment in the header"
    );
    assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "no time in the gzip header");

    let listing = Command::new("tar")
        .arg("-tvzf")
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "GNU tar reads it: {}",
        text(&listing.stderr)
    );
    let names: Vec<String> = Command::new("tar")
        .arg("-tzf")
        .arg(&image)
        .output()
        .unwrap()
        .stdout
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert_eq!(names[0], "./");
    assert!(names.iter().all(|n| n.starts_with("./")), "{names:?}");
    let mut sorted = names.clone();
    sorted.sort_by(|a, b| {
        a.trim_end_matches('/')
            .as_bytes()
            .cmp(b.trim_end_matches('/').as_bytes())
    });
    assert_eq!(names, sorted, "entries sorted");
    assert!(
        names.iter().any(|n| n.ends_with(&"c".repeat(90))),
        "long names survive"
    );
    let verbose = text(&listing.stdout);
    assert!(verbose.contains("12345/54321"), "numeric owners: {verbose}");
    assert!(
        verbose.contains("./usr/bin/sudoedit link to ./usr/bin/sudo")
            || verbose.contains("./usr/bin/sudo link to ./usr/bin/sudoedit"),
        "hard link: {verbose}"
    );
    assert!(
        verbose
            .lines()
            .any(|l| l.starts_with("crw-") && l.contains("1,3") && l.ends_with("./dev/null")),
        "char device: {verbose}"
    );

    // GNU tar restores the capability from our xattr records too.
    let gnu = dir.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    let x = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-xzpf"])
        .arg(&image)
        .arg("-C")
        .arg(&gnu)
        .output()
        .unwrap();
    assert!(x.status.success(), "{}", text(&x.stderr));
    let caps = Command::new("getcap")
        .arg(gnu.join("usr/bin/ping"))
        .output()
        .unwrap();
    assert!(
        text(&caps.stdout).contains("cap_net_raw=ep"),
        "{}",
        text(&caps.stdout)
    );
}

#[test]
fn source_date_epoch_clamps_mtimes() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    rich_tree(&tree);
    let image = dir.path().join("os.tgz");
    let out = Command::new(support::bin())
        .arg("pack")
        .arg(&tree)
        .arg(&image)
        .env("SOURCE_DATE_EPOCH", "1500000000")
        .output()
        .unwrap();
    assert!(out.status.success());
    let target = dir.path().join("t");
    assert!(
        sb(&["unpack".as_ref(), image.as_os_str(), target.as_os_str()])
            .status
            .success()
    );
    assert_eq!(
        fs::symlink_metadata(target.join("etc/deep/owned"))
            .unwrap()
            .mtime(),
        1_500_000_000,
        "clamped"
    );
    assert_eq!(
        fs::symlink_metadata(target.join("etc/passwd"))
            .unwrap()
            .mtime(),
        1_000_000_000,
        "older kept"
    );
}

/// name, type, link target
type HostileEntry<'a> = (&'a str, tar::EntryType, String);

/// Builds a hostile archive with raw headers.
fn hostile(path: &Path, entries: &[(&str, tar::EntryType, &str)]) {
    let file = fs::File::create(path).unwrap();
    let mut builder = tar::Builder::new(file);
    for (name, kind, link) in entries {
        let mut header = tar::Header::new_gnu();
        let bytes = name.as_bytes();
        header.as_old_mut().name[..bytes.len()].copy_from_slice(bytes);
        header.set_entry_type(*kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(if *kind == tar::EntryType::Regular {
            4
        } else {
            0
        });
        if !link.is_empty() {
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_cksum();
        let data: &[u8] = if *kind == tar::EntryType::Regular {
            b"evil"
        } else {
            b""
        };
        builder.append(&header, data).unwrap();
    }
    builder.finish().unwrap();
}

#[test]
fn hostile_archives_are_refused_naming_the_entry() {
    use tar::EntryType::*;
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let cases: Vec<(&str, Vec<HostileEntry>, &str)> = vec![
        (
            "dotdot",
            vec![("./../escaped", Regular, String::new())],
            "contains '..'",
        ),
        (
            "absolute",
            vec![("/tmp/absolute-evil", Regular, String::new())],
            "is an absolute path",
        ),
        (
            "through-symlink",
            vec![
                ("./link", Symlink, outside.display().to_string()),
                ("./link/planted", Regular, String::new()),
            ],
            "written through the symlink ./link",
        ),
        (
            "hardlink-out",
            vec![("./hl", Link, "../../etc/passwd".into())],
            "hard-links to a path that contains '..'",
        ),
        (
            "unknown-type",
            vec![("./volume", tar::EntryType::new(b'V'), String::new())],
            "which a root filesystem never needs",
        ),
    ];
    for (name, entries, needle) in cases {
        let archive = dir.path().join(format!("{name}.tar"));
        let borrowed: Vec<(&str, tar::EntryType, &str)> = entries
            .iter()
            .map(|(n, k, l)| (*n, *k, l.as_str()))
            .collect();
        hostile(&archive, &borrowed);
        let target = dir.path().join(format!("target-{name}"));
        let out = sb(&["unpack".as_ref(), archive.as_os_str(), target.as_os_str()]);
        assert!(!out.status.success(), "{name} refused");
        let err = text(&out.stderr);
        assert!(
            err.contains(needle) && err.contains("refusing to unpack"),
            "{name}: {err}"
        );
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!dir.path().join("escaped").exists());
    assert!(!Path::new("/tmp/absolute-evil").exists());
}

#[test]
fn checksum_mismatch_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    rich_tree(&tree);
    let image = dir.path().join("os.tgz");
    assert!(pack(&tree, &image, &[]).status.success());
    let sidecar = dir.path().join("os.tgz.sha256");
    fs::write(&sidecar, format!("{}  os.tgz\n", "0".repeat(64))).unwrap();
    let target = dir.path().join("t");
    let out = sb(&["unpack".as_ref(), image.as_os_str(), target.as_os_str()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("os.tgz"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!target.exists() || fs::read_dir(&target).unwrap().count() == 0);
}

#[test]
fn unpack_refuses_a_non_empty_target() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    rich_tree(&tree);
    let image = dir.path().join("os.tgz");
    assert!(pack(&tree, &image, &[]).status.success());
    let out = sb(&["unpack".as_ref(), image.as_os_str(), tree.as_os_str()]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("is not empty"));
}

/// Runs `pack` and returns its own peak RSS in KiB (wait4 reports it for that child alone).
#[allow(clippy::zombie_processes)] // reaped by wait4, which std's Child cannot do
fn pack_peak_rss(tree: &Path, out: &Path, compression: &str) -> i64 {
    let child = Command::new(support::bin())
        .arg("pack")
        .arg(tree)
        .arg(out)
        .args(["--compression", compression])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter; wait4 reaps exactly this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "pack failed"
    );
    usage.ru_maxrss
}

fn noise_tree(dir: &Path, files: usize, seed: u64) {
    fs::create_dir_all(dir).unwrap();
    for i in 0..files {
        fs::write(
            dir.join(format!("blob{i}")),
            support::noise(8 << 20, seed + i as u64),
        )
        .unwrap();
    }
}

#[test]
fn peak_memory_does_not_follow_the_tree_size() {
    let dir = tempfile::tempdir().unwrap();
    // 48 MiB and 144 MiB of incompressible data, in files of 8 MiB: both past the point where
    // zstd's multi-threaded buffers (its window and jobs, tens of MiB) are full.
    let (small, big) = (dir.path().join("small"), dir.path().join("big"));
    noise_tree(&small, 6, 7);
    noise_tree(&big, 18, 11);
    for compression in ["gzip", "zstd"] {
        let small_rss = pack_peak_rss(
            &small,
            &dir.path().join(format!("s-{compression}")),
            compression,
        );
        let big_rss = pack_peak_rss(
            &big,
            &dir.path().join(format!("b-{compression}")),
            compression,
        );
        assert!(
            big_rss < small_rss + 16 * 1024,
            "{compression}: peak RSS grew from {small_rss} KiB to {big_rss} KiB with a 3x larger tree"
        );
        assert!(
            big_rss < 160 * 1024,
            "{compression}: peak RSS {big_rss} KiB"
        );
    }
}
