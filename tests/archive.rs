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
    // FLG is FEXTRA alone: the member size a parallel reader uses; no name, no comment.
    assert_eq!(
        &bytes[..4],
        &[0x1f, 0x8b, 8, 0x04],
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

/// Runs `pack` and returns its own peak RSS in KiB.
fn pack_peak_rss(tree: &Path, out: &Path, compression: &str) -> i64 {
    let scratch = out.with_extension("rss");
    fs::create_dir_all(&scratch).unwrap();
    let (code, err, rss) = support::run_with_peak_rss(
        &[
            "pack".as_ref(),
            tree.as_os_str(),
            out.as_os_str(),
            "--compression".as_ref(),
            compression.as_ref(),
        ],
        &scratch,
    );
    assert_eq!(code, 0, "pack failed: {err}");
    rss
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

// ---- Hostile and careless inputs: bounded, one line each ----

/// A raw GNU header: name (up to 100 bytes), type, size, link target, device numbers.
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, link: &[u8]) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    let n = name.len().min(100);
    header.as_old_mut().name[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    header.as_old_mut().linkname[..l].copy_from_slice(&link[..l]);
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(size);
    header.set_cksum();
    header
}

/// Raw tar entries (header + data + padding) into `out`, ending with the two zero blocks.
fn raw_tar(out: &mut impl std::io::Write, entries: &[(tar::Header, Vec<u8>)]) {
    for (header, data) in entries {
        out.write_all(header.as_bytes()).unwrap();
        out.write_all(data).unwrap();
        out.write_all(&vec![0u8; (512 - data.len() % 512) % 512])
            .unwrap();
    }
    out.write_all(&[0u8; 1024]).unwrap();
}

fn device_header(name: &str, kind: tar::EntryType, major: u32, minor: u32) -> tar::Header {
    let mut header = raw_header(name.as_bytes(), kind, 0, b"");
    header.set_mode(0o666);
    header.set_device_major(major).unwrap();
    header.set_device_minor(minor).unwrap();
    header.set_cksum();
    header
}

fn dir_header(name: &str) -> tar::Header {
    let mut header = raw_header(name.as_bytes(), tar::EntryType::Directory, 0, b"");
    header.set_mode(0o755);
    header.set_cksum();
    header
}

fn assert_one_clean_line(err: &str, what: &str) {
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: one line: {err}");
    assert!(
        err.trim_end().chars().all(|c| !c.is_control()),
        "{what}: no raw bytes: {err:?}"
    );
    assert!(err.len() < 1000, "{what}: short ({} bytes)", err.len());
}

#[test]
fn huge_long_names_and_pax_headers_are_refused_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    const HUGE: u64 = 128 << 20;
    for (label, kind) in [
        ("gnu-long-name", tar::EntryType::GNULongName),
        ("gnu-long-link", tar::EntryType::GNULongLink),
        ("pax", tar::EntryType::XHeader),
    ] {
        let archive = dir.path().join(format!("{label}.tgz"));
        let mut gz = flate2::write::GzEncoder::new(
            fs::File::create(&archive).unwrap(),
            flate2::Compression::fast(),
        );
        use std::io::Write;
        let header = raw_header(b"././@LongLink", kind, HUGE, b"");
        gz.write_all(header.as_bytes()).unwrap();
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..(HUGE >> 20) {
            gz.write_all(&chunk).unwrap();
        }
        raw_tar(
            &mut gz,
            &[(raw_header(b"./x", tar::EntryType::Regular, 0, b""), vec![])],
        );
        gz.finish().unwrap();
        let target = dir.path().join(format!("t-{label}"));
        let (code, err, rss) = support::run_with_peak_rss(
            &["unpack".as_ref(), archive.as_os_str(), target.as_os_str()],
            dir.path(),
        );
        assert_ne!(code, 0, "{label} refused");
        assert_one_clean_line(&err, label);
        assert!(err.contains("refusing to unpack"), "{label}: {err}");
        assert!(rss < 48 * 1024, "{label}: peak RSS {rss} KiB");
    }
}

#[test]
fn error_messages_quote_entry_names_short_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    // A 3000-byte name full of control characters, refused for its '..'.
    let mut name = b"./".to_vec();
    for _ in 0..1000 {
        name.extend_from_slice(b"\x1b[2J");
    }
    name.extend_from_slice(b"/../escape");
    let long = raw_header(b"././@LongLink", tar::EntryType::GNULongName, 0, b"");
    let mut long = long;
    long.set_size(name.len() as u64 + 1);
    long.set_cksum();
    let mut data = name.clone();
    data.push(0);
    let archive = dir.path().join("names.tar");
    let mut file = fs::File::create(&archive).unwrap();
    raw_tar(
        &mut file,
        &[
            (long, data),
            (
                raw_header(b"./placeholder", tar::EntryType::Regular, 4, b""),
                b"evil".to_vec(),
            ),
        ],
    );
    drop(file);
    let target = dir.path().join("t");
    let out = sb(&["unpack".as_ref(), archive.as_os_str(), target.as_os_str()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_one_clean_line(&err, "control characters");
    assert!(err.contains("contains '..'"), "{err}");
    assert!(err.contains("\\x1b"), "escaped: {err}");
}

#[test]
fn device_nodes_only_under_dev_unless_asked() {
    use tar::EntryType::*;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("devices.tar");
    let mut file = fs::File::create(&archive).unwrap();
    let mut fifo = raw_header(b"./run/initctl", Fifo, 0, b"");
    fifo.set_mode(0o600);
    fifo.set_cksum();
    raw_tar(
        &mut file,
        &[
            (dir_header("./"), vec![]),
            (dir_header("./dev/"), vec![]),
            (device_header("./dev/null", Char, 1, 3), vec![]),
            (dir_header("./home/"), vec![]),
            (device_header("./home/disk", Block, 8, 0), vec![]),
            (dir_header("./run/"), vec![]),
            (fifo, vec![]),
        ],
    );
    drop(file);

    // Default: a device node outside dev/ is refused, naming it and the flag.
    let target = dir.path().join("default");
    let out = sb(&["unpack".as_ref(), archive.as_os_str(), target.as_os_str()]);
    assert!(!out.status.success(), "refused by default");
    let err = text(&out.stderr);
    assert_one_clean_line(&err, "device outside dev/");
    assert!(
        err.contains("./home/disk") && err.contains("--devices all"),
        "{err}"
    );
    assert!(
        !target.join("home/disk").exists(),
        "no block device was created"
    );

    // --devices all: every node, as archived.
    let target = dir.path().join("all");
    let out = sb(&[
        "unpack".as_ref(),
        archive.as_os_str(),
        target.as_os_str(),
        "--devices".as_ref(),
        "all".as_ref(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let disk = fs::symlink_metadata(target.join("home/disk")).unwrap();
    use std::os::unix::fs::FileTypeExt;
    assert!(disk.file_type().is_block_device());
    assert_eq!(disk.rdev(), libc::makedev(8, 0));
    assert!(fs::symlink_metadata(target.join("dev/null"))
        .unwrap()
        .file_type()
        .is_char_device());

    // --devices none: no node at all, fifos still made, the skip reported.
    let target = dir.path().join("none");
    let out = sb(&[
        "unpack".as_ref(),
        archive.as_os_str(),
        target.as_os_str(),
        "--devices".as_ref(),
        "none".as_ref(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!target.join("home/disk").exists());
    assert!(!target.join("dev/null").exists());
    assert!(fs::symlink_metadata(target.join("run/initctl"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(
        text(&out.stdout).contains("skipped 2 device nodes"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn directory_xattrs_and_times_survive_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("etc/ssl")).unwrap();
    fs::write(tree.join("etc/ssl/cert"), "x").unwrap();
    xattr::set(tree.join("etc/ssl"), "user.dirattr", b"on a dir").unwrap();
    xattr::set(tree.join("etc/ssl"), "trusted.overlay.opaque", b"y").unwrap();
    fs::set_permissions(tree.join("etc/ssl"), fs::Permissions::from_mode(0o750)).unwrap();
    let t = filetime::FileTime::from_unix_time(1_100_000_000, 0);
    filetime::set_file_mtime(tree.join("etc/ssl"), t).unwrap();
    let image = dir.path().join("os.tgz");
    let out = pack(&tree, &image, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let target = dir.path().join("t");
    let out = sb(&["unpack".as_ref(), image.as_os_str(), target.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let ssl = target.join("etc/ssl");
    assert_eq!(
        xattr::get(&ssl, "user.dirattr").unwrap().as_deref(),
        Some(&b"on a dir"[..])
    );
    assert_eq!(
        xattr::get(&ssl, "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    let meta = fs::metadata(&ssl).unwrap();
    assert_eq!(meta.mtime(), 1_100_000_000, "set after its contents");
    assert_eq!(meta.mode() & 0o7777, 0o750);
}

#[test]
fn unpack_input_errors_are_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    rich_tree(&tree);
    let good = dir.path().join("good.tgz");
    assert!(pack(&tree, &good, &[]).status.success());
    let bytes = fs::read(&good).unwrap();

    let empty = dir.path().join("empty.tgz");
    fs::write(&empty, b"").unwrap();
    let garbage = dir.path().join("garbage.tgz");
    fs::write(&garbage, support::noise(4096, 3)).unwrap();
    let garbage_gz = dir.path().join("garbage-gz.tgz");
    let mut g = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    g.extend(support::noise(4096, 5));
    fs::write(&garbage_gz, g).unwrap();
    let zeros = dir.path().join("zeros.tar");
    fs::write(&zeros, vec![0u8; 10240]).unwrap();
    let truncated = dir.path().join("truncated.tgz");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let mut plain = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut plain)
        .unwrap();
    let cut_tar = dir.path().join("cut.tar");
    // Cut at the end of the first entry: every header intact, the end marker gone.
    fs::write(&cut_tar, &plain[..1024]).unwrap();
    let a_dir = dir.path().join("a-directory");
    fs::create_dir(&a_dir).unwrap();
    let missing = dir.path().join("missing.tgz");

    use std::io::Read;
    for (path, needle) in [
        (&empty, "is empty"),
        (&garbage, "not an OS image"),
        (&garbage_gz, "not an OS image"),
        (&zeros, "no entries"),
        (&truncated, "truncated"),
        (&cut_tar, "truncated"),
        (&a_dir, "is a directory"),
        (&missing, "does not exist"),
    ] {
        let target = dir.path().join("target");
        let out = sb(&["unpack".as_ref(), path.as_os_str(), target.as_os_str()]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{}: refused", path.display());
        assert_one_clean_line(&err, &path.display().to_string());
        assert!(
            err.contains(&path.display().to_string()) && err.contains(needle),
            "{}: {err}",
            path.display()
        );
        assert!(!target.exists(), "the target we created is removed again");
    }
}

#[test]
fn pack_refuses_an_output_inside_the_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("sub")).unwrap();
    fs::write(tree.join("file"), "x").unwrap();
    let out = pack(&tree, &tree.join("sub/os.tgz"), &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_one_clean_line(&err, "output inside the tree");
    assert!(err.contains("inside"), "{err}");
    assert_eq!(fs::read_dir(tree.join("sub")).unwrap().count(), 0);
}

#[test]
fn pack_to_a_directory_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("file"), "x").unwrap();
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    let out = pack(&tree, &out_dir, &[]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_one_clean_line(&err, "output is a directory");
    assert!(err.contains("is a directory"), "{err}");
    let mut left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["out", "tree"], "no sidecar, no partial file");
    assert_eq!(fs::read_dir(&out_dir).unwrap().count(), 0);
}

#[test]
fn pack_stays_on_one_file_system() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("proc")).unwrap();
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(tree.join("etc/hostname"), "x\n").unwrap();
    let image = dir.path().join("os.tgz");
    // A tmpfs mounted inside the tree, in a private mount namespace that dies with the command.
    let script = format!(
        "mount -t tmpfs tmpfs {proc} && echo host > {proc}/mounted-file && exec {bin} pack {tree} {image}",
        proc = tree.join("proc").display(),
        bin = support::bin().display(),
        tree = tree.display(),
        image = image.display(),
    );
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = Command::new("tar")
        .arg("-tzf")
        .arg(&image)
        .output()
        .unwrap();
    let names = text(&listing.stdout);
    assert!(
        names.lines().any(|l| l == "./proc/"),
        "mount point kept: {names}"
    );
    assert!(
        !names.contains("mounted-file"),
        "nothing from the mounted filesystem: {names}"
    );
    assert!(names.contains("./etc/hostname"), "{names}");
}

#[test]
fn a_sidecar_older_than_its_image_is_named_stale() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("file"), "one").unwrap();
    let image = dir.path().join("os.tgz");
    assert!(pack(&tree, &image, &[]).status.success());
    // sha256sum -c reads the sidecar as it is.
    let check = Command::new("sha256sum")
        .args(["-c", "os.tgz.sha256"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    // A rebuild interrupted between the image and its sidecar: a new image, the old sidecar.
    fs::write(tree.join("file"), "two").unwrap();
    let other = dir.path().join("other.tgz");
    assert!(pack(&tree, &other, &[]).status.success());
    fs::rename(&other, &image).unwrap();
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 0);
    filetime::set_file_mtime(dir.path().join("os.tgz.sha256"), old).unwrap();
    let target = dir.path().join("t");
    let out = sb(&["unpack".as_ref(), image.as_os_str(), target.as_os_str()]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert_one_clean_line(&err, "stale sidecar");
    assert!(
        err.contains("older than") && err.contains("os.tgz.sha256"),
        "{err}"
    );
    assert!(!target.exists());

    // Older but matching (the image was touched, or copied in the wrong order): the bytes prove it.
    let image_time = filetime::FileTime::from_unix_time(1_200_000_000, 0);
    fs::write(
        dir.path().join("os.tgz.sha256"),
        format!(
            "{}  os.tgz\n",
            text(
                &Command::new("sha256sum")
                    .arg(&image)
                    .output()
                    .unwrap()
                    .stdout
            )
            .split_whitespace()
            .next()
            .unwrap()
        ),
    )
    .unwrap();
    filetime::set_file_mtime(dir.path().join("os.tgz.sha256"), old).unwrap();
    filetime::set_file_mtime(&image, image_time).unwrap();
    let out = sb(&["unpack".as_ref(), image.as_os_str(), target.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// A label, how to make `var/lib/dpkg/status`, and the refusal expected (None: accepted).
type StatusCase<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, Option<&'a str>);

#[test]
fn pack_reads_the_trees_dpkg_status_never_the_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let host_status = dir.path().join("host-status");
    fs::write(
        &host_status,
        "Package: hostonly\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1\n",
    )
    .unwrap();
    let cases: Vec<StatusCase> = vec![
        (
            "absolute symlink to the host",
            Box::new(|status: &Path| symlink(&host_status, status).unwrap()),
            None,
        ),
        (
            "relative symlink climbing out",
            Box::new(|status: &Path| {
                symlink(
                    format!("../../../../../../../../..{}", host_status.display()),
                    status,
                )
                .unwrap()
            }),
            None,
        ),
        (
            "fifo",
            Box::new(|status: &Path| {
                nix::unistd::mkfifo(status, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .unwrap()
            }),
            Some("not a regular file"),
        ),
        (
            "symlink to the tree's /dev/zero",
            Box::new(|status: &Path| {
                let root = status.ancestors().nth(4).unwrap();
                fs::create_dir_all(root.join("dev")).unwrap();
                nix::sys::stat::mknod(
                    &root.join("dev/zero"),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o666),
                    libc::makedev(1, 5),
                )
                .unwrap();
                symlink("/dev/zero", status).unwrap()
            }),
            Some("not a regular file"),
        ),
    ];
    for (i, (label, make, refused)) in cases.iter().enumerate() {
        let tree = dir.path().join(format!("tree{i}"));
        fs::create_dir_all(tree.join("var/lib/dpkg")).unwrap();
        make(&tree.join("var/lib/dpkg/status"));
        let image = dir.path().join(format!("os{i}.tgz"));
        let mut child = Command::new(support::bin());
        child.arg("pack").arg(&tree).arg(&image);
        // Bounded in time and memory even when the code under test is not.
        unsafe {
            use std::os::unix::process::CommandExt;
            child.pre_exec(|| {
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_AS,
                    4 << 30,
                    4 << 30,
                )
                .map_err(std::io::Error::from)
            });
        }
        let child = child
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = done.clone();
        let watchdog = std::thread::spawn(move || {
            for _ in 0..300 {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return false;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            true
        });
        let out = child.wait_with_output().unwrap();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(!watchdog.join().unwrap(), "{label}: pack hung");
        let err = text(&out.stderr);
        match refused {
            Some(needle) => {
                assert!(!out.status.success(), "{label}: refused");
                // Progress lines (not a terminal) come first; the error is one line.
                let err = err
                    .lines()
                    .filter(|l| l.starts_with("error:"))
                    .collect::<Vec<_>>()
                    .join("\n");
                assert_one_clean_line(&err, label);
                assert!(
                    err.contains(needle) && err.contains("var/lib/dpkg/status"),
                    "{label}: {err}"
                );
            }
            None => {
                assert!(out.status.success(), "{label}: {err}");
                let listed =
                    fs::read_to_string(dir.path().join(format!("os{i}.tgz.packages.txt"))).unwrap();
                assert!(!listed.contains("hostonly"), "{label}: {listed}");
            }
        }
    }
}

#[test]
fn xattr_values_holding_newlines_survive() {
    // cap_dac_override and cap_fowner are bits 1 and 3: the capability's first byte is 0x0a.
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("tool"), "elf").unwrap();
    let setcap = Command::new("setcap")
        .arg("cap_dac_override,cap_fowner+ep")
        .arg(tree.join("tool"))
        .status()
        .unwrap();
    assert!(setcap.success());
    let before = xattr::get(tree.join("tool"), "security.capability")
        .unwrap()
        .unwrap();
    assert!(before.contains(&b'\n'), "{before:?}");
    xattr::set(tree.join("tool"), "user.lines", b"one\ntwo\n").unwrap();
    let image = dir.path().join("os.tgz");
    assert!(pack(&tree, &image, &[]).status.success());
    let target = dir.path().join("t");
    let out = sb(&["unpack".as_ref(), image.as_os_str(), target.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        xattr::get(target.join("tool"), "security.capability").unwrap(),
        Some(before)
    );
    assert_eq!(
        xattr::get(target.join("tool"), "user.lines")
            .unwrap()
            .as_deref(),
        Some(&b"one\ntwo\n"[..])
    );
}

// ---- Block-parallel gzip: standard to every reader, decoded in parallel only when ours ----

/// `rich_tree` plus about 6 MiB of text, so the archive holds many gzip members.
fn many_member_tree(root: &Path) {
    rich_tree(root);
    let texts = root.join("usr/share/doc/text");
    fs::create_dir_all(&texts).unwrap();
    for f in 0..12u64 {
        let mut body = String::new();
        let mut i = f * 100_000;
        while body.len() < 512 << 10 {
            body += &format!("file {f} line {i}: value {}\n", i * 7919 % 104_729);
            i += 1;
        }
        fs::write(texts.join(format!("{f}.txt")), body).unwrap();
    }
}

/// Where each member of ours starts, read from the size marks; panics on a foreign member.
fn member_offsets(gz: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at < gz.len() {
        assert_eq!(gz[at..at + 4], [0x1f, 0x8b, 8, 4], "member at {at} is ours");
        assert_eq!(&gz[at + 12..at + 14], b"SB", "size mark at {at}");
        offsets.push(at);
        at += u32::from_le_bytes(gz[at + 16..at + 20].try_into().unwrap()) as usize;
    }
    assert_eq!(at, gz.len(), "the marks add up to the file");
    offsets
}

/// sha256 of every regular file under `root`, by `./`-relative name.
fn file_digests(root: &Path) -> BTreeMap<String, String> {
    use sha2::Digest;
    snapshot(root)
        .keys()
        .filter(|rel| {
            fs::symlink_metadata(root.join(rel))
                .unwrap()
                .file_type()
                .is_file()
        })
        .map(|rel| {
            let digest = sha2::Sha256::digest(fs::read(root.join(rel)).unwrap());
            (format!("./{}", rel.display()), hex::encode(digest))
        })
        .collect()
}

#[test]
fn our_gzip_is_many_members_that_gnu_tar_gzip_and_python_tarfile_read() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    many_member_tree(&tree);
    let image = dir.path().join("os.tgz");
    let out = pack(&tree, &image, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let members = member_offsets(&fs::read(&image).unwrap());
    assert!(members.len() >= 4, "{} members", members.len());

    let t = Command::new("gzip").arg("-t").arg(&image).output().unwrap();
    assert!(t.status.success(), "gzip -t: {}", text(&t.stderr));

    let expected = file_digests(&tree);
    let gnu = dir.path().join("gnu");
    fs::create_dir(&gnu).unwrap();
    let x = Command::new("tar")
        .arg("-xzf")
        .arg(&image)
        .arg("-C")
        .arg(&gnu)
        .output()
        .unwrap();
    assert!(x.status.success(), "GNU tar: {}", text(&x.stderr));
    assert_eq!(file_digests(&gnu), expected, "GNU tar extracts every file");

    let python = Command::new("python3")
        .arg("-c")
        .arg(
            "import hashlib, sys, tarfile\n\
             with tarfile.open(sys.argv[1], 'r:gz') as t:\n\
             \x20   for m in t:\n\
             \x20       if m.isreg() or m.islnk():\n\
             \x20           print(m.name, hashlib.sha256(t.extractfile(m).read()).hexdigest())\n",
        )
        .arg(&image)
        .output()
        .unwrap();
    assert!(python.status.success(), "tarfile: {}", text(&python.stderr));
    let read: BTreeMap<String, String> = text(&python.stdout)
        .lines()
        .map(|l| {
            let (name, digest) = l.rsplit_once(' ').unwrap();
            (name.to_string(), digest.to_string())
        })
        .collect();
    assert_eq!(read, expected, "Python's tarfile reads every file");
}

#[test]
fn parallel_and_serial_decoding_give_identical_trees() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    many_member_tree(&tree);
    let ours = dir.path().join("ours.tgz");
    assert!(pack(&tree, &ours, &[]).status.success());
    // The same tar as one plain gzip member (no size marks): the serial path.
    let plain = dir.path().join("plain.tgz");
    let recompressed = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | gzip -6 > \"$2\"")
        .arg("sh")
        .arg(&ours)
        .arg(&plain)
        .status()
        .unwrap();
    assert!(recompressed.success());
    assert_eq!(
        fs::read(&plain).unwrap()[3],
        0,
        "gzip's own header: no FEXTRA"
    );

    let unpack = |image: &Path, name: &str, one_core: bool| {
        let target = dir.path().join(name);
        let mut cmd = if one_core {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(support::bin());
            c
        } else {
            Command::new(support::bin())
        };
        let out = cmd.arg("unpack").arg(image).arg(&target).output().unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out.stderr));
        snapshot(&target)
    };
    let parallel = unpack(&ours, "parallel", false);
    assert_eq!(
        parallel,
        snapshot(&tree),
        "the parallel decoder restores the tree"
    );
    assert_eq!(
        unpack(&plain, "serial", false),
        parallel,
        "serial == parallel"
    );
    assert_eq!(
        unpack(&ours, "one-core", true),
        parallel,
        "one inflater == many"
    );
}

#[test]
fn same_bytes_on_one_core_and_on_all() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    many_member_tree(&tree);
    let all = dir.path().join("all.tgz");
    assert!(pack(&tree, &all, &[]).status.success());
    let one = dir.path().join("one.tgz");
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(support::bin())
        .arg("pack")
        .arg(&tree)
        .arg(&one)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (all, one) = (fs::read(&all).unwrap(), fs::read(&one).unwrap());
    assert!(member_offsets(&all).len() >= 4);
    assert!(
        all == one,
        "1 compressor thread and one per core write the same bytes"
    );
}

#[test]
fn a_forged_size_mark_fails_in_one_line_and_writes_nothing_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    many_member_tree(&tree);
    let image = dir.path().join("os.tgz");
    assert!(pack(&tree, &image, &[]).status.success());
    let good = fs::read(&image).unwrap();
    let members = member_offsets(&good);
    let mark = |at: usize| u32::from_le_bytes(good[at + 16..at + 20].try_into().unwrap());
    let (first, second) = (members[0], members[1]);
    let forgeries: Vec<(&str, usize, u32)> = vec![
        ("one byte long", second, mark(second) + 1),
        ("one byte short", second, mark(second) - 1),
        ("two members as one", first, mark(first) + mark(second)),
        ("header and trailer only", second, 28),
        ("beyond any block", first, 3 << 20),
        ("zero", second, 0),
    ];
    let out_dir = dir.path().join("out");
    fs::create_dir(&out_dir).unwrap();
    fs::write(out_dir.join("sentinel"), "here before").unwrap();
    for (what, at, forged) in forgeries {
        let mut bytes = good.clone();
        bytes[at + 16..at + 20].copy_from_slice(&forged.to_le_bytes());
        let path = dir.path().join(format!("{}.tgz", what.replace(' ', "-")));
        fs::write(&path, &bytes).unwrap();
        let target = out_dir.join("target");
        let out = sb(&["unpack".as_ref(), path.as_os_str(), target.as_os_str()]);
        let err = text(&out.stderr);
        assert!(!out.status.success(), "{what}: refused");
        assert_ne!(out.status.code(), Some(101), "{what}: no panic: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert_one_clean_line(&err, what);
        assert!(
            err.contains(&path.display().to_string()),
            "{what}: names the file: {err}"
        );
        assert!(
            err.contains("gzip"),
            "{what}: says it is the gzip stream: {err}"
        );
        let left: Vec<_> = fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec![std::ffi::OsString::from("sentinel")], "{what}");
        assert_eq!(fs::read(out_dir.join("sentinel")).unwrap(), b"here before");
    }
}
