//! Property tests (proptest, a bounded number of cases, in the normal `cargo test`) of the
//! three readers and writers of archives:
//! - random trees (files, dirs, symlinks, hard links, FIFOs, xattrs, modes, mtimes, long and
//!   unicode names) round-trip through pack → unpack → pack to the same bytes;
//! - random mutations and truncations of a valid archive never panic, never write outside the
//!   target, and fail (when they fail) with one short, clean line;
//! - random stemcells (random manifest YAML, nesting, member order, declared sizes) make
//!   `inspect` finish fast with one short, clean line.
//!
//! They call the library directly (no process per case) so hundreds of cases take seconds.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::Config;
use stemcell_builder::archive::{self, Compression, PackOptions, UnpackOptions};

fn config(cases: u32) -> Config {
    Config {
        cases,
        // Nothing written into the source tree; a failure prints its minimal input instead.
        failure_persistence: None,
        ..Config::default()
    }
}

/// What one generated entry is.
#[derive(Debug, Clone)]
enum Kind {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
    },
    Symlink {
        target: String,
    },
    Fifo,
    /// A hard link to the n-th file made so far (modulo their count).
    HardLink {
        to: usize,
    },
}

#[derive(Debug, Clone)]
struct Spec {
    /// Parent: the n-th directory made so far (modulo their count; 0 is the root).
    parent: usize,
    name: String,
    kind: Kind,
    xattr: Option<Vec<u8>>,
    mtime: i64,
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9._-]{1,12}",
        "[a-zA-Z0-9 ._-]{1,12}",
        // Unicode names.
        "[a-zäöüßéøñ\u{4e00}-\u{4e10}\u{1f600}-\u{1f610}]{1,10}",
        // Past the 100 bytes of a tar name field.
        "[a-z]{101,160}",
    ]
    .prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        4 => (proptest::collection::vec(any::<u8>(), 0..3000), 0u32..0o10000)
            .prop_map(|(data, mode)| Kind::File { data, mode }),
        3 => (0o700u32..0o1000).prop_map(|mode| Kind::Dir { mode }),
        1 => prop_oneof!["[a-z/.]{1,40}", "[a-z]{101,180}"]
            .prop_map(|target| Kind::Symlink { target }),
        1 => Just(Kind::Fifo),
        1 => any::<usize>().prop_map(|to| Kind::HardLink { to }),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<usize>(),
        name(),
        kind(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        0i64..2_000_000_000,
    )
        .prop_map(|(parent, name, kind, xattr, mtime)| Spec {
            parent,
            name,
            kind,
            xattr,
            mtime,
        })
}

/// Makes the tree the specs describe under `root`; returns how many entries it made.
fn build(root: &Path, specs: &[Spec]) -> usize {
    fs::create_dir_all(root).unwrap();
    let mut dirs: Vec<PathBuf> = vec![root.to_path_buf()];
    let mut files: Vec<PathBuf> = vec![];
    let mut made = vec![];
    for spec in specs {
        let path = dirs[spec.parent % dirs.len()].join(&spec.name);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        match &spec.kind {
            Kind::File { data, .. } => {
                fs::write(&path, data).unwrap();
                files.push(path.clone());
            }
            Kind::Dir { .. } => {
                fs::create_dir(&path).unwrap();
                dirs.push(path.clone());
            }
            Kind::Symlink { target } => symlink(target, &path).unwrap(),
            Kind::Fifo => {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o640)).unwrap()
            }
            Kind::HardLink { to } => {
                if files.is_empty() {
                    continue;
                }
                fs::hard_link(&files[to % files.len()], &path).unwrap();
            }
        }
        // user.* xattrs exist on regular files and directories only.
        let xattr_kind = matches!(spec.kind, Kind::File { .. } | Kind::Dir { .. });
        if let (Some(value), true) = (&spec.xattr, xattr_kind) {
            xattr::set(&path, "user.prop", value).unwrap();
        }
        made.push((path, spec.clone()));
    }
    // Modes and times last: a read-only directory is still filled, a filled one keeps its time.
    for (path, spec) in made.iter().rev() {
        match &spec.kind {
            Kind::File { mode, .. } | Kind::Dir { mode } => {
                fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap()
            }
            _ => {}
        }
        let t = filetime::FileTime::from_unix_time(spec.mtime, 0);
        filetime::set_symlink_file_times(path, t, t).unwrap();
    }
    made.len()
}

fn pack_to(tree: &Path, out: &Path, compression: Compression) {
    let options = PackOptions {
        compression,
        source_date_epoch: None,
        threads: 2,
        ..PackOptions::default()
    };
    let file = fs::File::create(out).unwrap();
    archive::pack(tree, std::io::BufWriter::new(file), &options, &mut |_| {}).unwrap();
}

fn unpack_options() -> UnpackOptions {
    UnpackOptions {
        skip_checksum: true,
        ..UnpackOptions::default()
    }
}

proptest! {
    #![proptest_config(config(40))]

    #[test]
    fn random_trees_round_trip_byte_identical(
        specs in proptest::collection::vec(spec(), 0..40),
        zstd in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        build(&tree, &specs);
        let compression = if zstd { Compression::Zstd } else { Compression::Gzip };
        let first = dir.path().join("first");
        pack_to(&tree, &first, compression);
        let target = dir.path().join("target");
        archive::unpack(&first, &target, &unpack_options()).unwrap();
        let second = dir.path().join("second");
        pack_to(&target, &second, compression);
        prop_assert!(
            fs::read(&first).unwrap() == fs::read(&second).unwrap(),
            "pack → unpack → pack changed the archive"
        );
    }
}

/// A valid plain tar of a small tree with every entry kind and a symlink pointing at the
/// directory beside the target, which a mutation could try to write through.
fn base_archive(dir: &Path) -> Vec<u8> {
    let tree = dir.join("base-tree");
    fs::create_dir_all(tree.join("etc/ssl")).unwrap();
    fs::create_dir_all(tree.join("dev")).unwrap();
    fs::write(tree.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
    fs::write(tree.join("etc/ssl/cert"), vec![7u8; 1500]).unwrap();
    fs::hard_link(tree.join("etc/passwd"), tree.join("etc/passwd-")).unwrap();
    symlink("../outside", tree.join("link")).unwrap();
    symlink("x".repeat(150), tree.join("etc/long-target")).unwrap();
    fs::write(tree.join("etc").join("n".repeat(120)), "long name").unwrap();
    xattr::set(tree.join("etc/ssl"), "user.dir", b"yes").unwrap();
    nix::unistd::mkfifo(
        &tree.join("dev/initctl"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let gz = dir.join("base.tgz");
    pack_to(&tree, &gz, Compression::Gzip);
    let mut plain = vec![];
    use std::io::Read;
    flate2::read::MultiGzDecoder::new(fs::File::open(&gz).unwrap())
        .read_to_end(&mut plain)
        .unwrap();
    plain
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Set bytes at offsets (modulo the length).
    Set(Vec<(usize, u8)>),
    /// Keep only the first n bytes (modulo the length).
    Truncate(usize),
    /// Insert bytes at an offset.
    Insert(usize, Vec<u8>),
    /// Write a big number into a header's size field (the n-th 512-byte block).
    HugeSize(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => proptest::collection::vec((any::<usize>(), any::<u8>()), 1..12).prop_map(Mutation::Set),
        2 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..1024))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => any::<usize>().prop_map(Mutation::HugeSize),
    ]
}

fn apply(data: &mut Vec<u8>, mutation: &Mutation) {
    match mutation {
        Mutation::Set(bytes) => {
            let len = data.len();
            for (at, byte) in bytes {
                data[at % len] = *byte;
            }
        }
        Mutation::Truncate(n) => data.truncate(n % data.len()),
        Mutation::Insert(at, bytes) => {
            let at = at % data.len();
            data.splice(at..at, bytes.iter().copied());
        }
        Mutation::HugeSize(block) => {
            let blocks = data.len() / 512;
            let start = (block % blocks) * 512;
            data[start + 124..start + 136].copy_from_slice(b"77777777777\0");
            // Keep the checksum right so the size is what gets read.
            let mut header = [0u8; 512];
            header.copy_from_slice(&data[start..start + 512]);
            header[148..156].fill(b' ');
            let sum: u32 = header.iter().map(|b| *b as u32).sum();
            data[start + 148..start + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
    }
}

fn assert_one_line(err: &str) -> Result<(), TestCaseError> {
    prop_assert!(!err.contains('\n'), "one line: {err}");
    prop_assert!(
        err.chars().all(|c| !c.is_control()),
        "no raw bytes: {err:?}"
    );
    prop_assert!(err.len() < 2000, "short: {} bytes", err.len());
    Ok(())
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn mutated_archives_fail_cleanly_and_stay_inside(
        mutations in proptest::collection::vec(mutation(), 1..4),
        gzip in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut data = base_archive(dir.path());
        for m in &mutations {
            if data.len() >= 512 {
                apply(&mut data, m);
            }
        }
        let archive_path = dir.path().join("mutated");
        if gzip {
            let mut gz = flate2::write::GzEncoder::new(
                fs::File::create(&archive_path).unwrap(),
                flate2::Compression::fast(),
            );
            gz.write_all(&data).unwrap();
            gz.finish().unwrap();
        } else {
            fs::write(&archive_path, &data).unwrap();
        }
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let target = dir.path().join("target");
        let started = Instant::now();
        let result = archive::unpack(&archive_path, &target, &unpack_options());
        prop_assert!(started.elapsed().as_secs() < 10, "took {:?}", started.elapsed());
        if let Err(err) = &result {
            assert_one_line(&format!("{err:#}"))?;
            prop_assert!(!target.exists(), "a failed unpack removes the target it created");
        }
        prop_assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "nothing written outside");
        let mut beside: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        beside.sort();
        let mut expected = vec!["base-tree", "base.tgz", "mutated", "outside"];
        if result.is_ok() {
            expected.push("target");
        }
        expected.sort();
        prop_assert_eq!(beside, expected);
    }
}

/// A random YAML value, nested up to `depth`, with anchors and aliases sometimes.
fn yaml(depth: u32) -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        "[a-z0-9 ]{0,12}".prop_map(|s| format!("'{s}'")),
        any::<i64>().prop_map(|n| n.to_string()),
        Just("*a".to_string()),
        Just("~".to_string()),
    ];
    leaf.prop_recursive(depth, 256, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8)
                .prop_map(|items| format!("[{}]", items.join(", "))),
            proptest::collection::vec(("[a-z]{1,6}", inner), 0..8).prop_map(|pairs| {
                let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
            Just("&a [1, 2, 3]".to_string()),
        ]
    })
}

/// Writes a stemcell-shaped gzip tar: (name, declared size, data) per member.
fn write_stemcell(path: &Path, members: &[(String, u64, Vec<u8>)]) {
    let mut gz =
        flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::fast());
    for (name, size, data) in members {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(*size);
        header.set_cksum();
        gz.write_all(header.as_bytes()).unwrap();
        gz.write_all(data).unwrap();
        let padded = (data.len() as u64).min(*size);
        gz.write_all(&vec![0u8; ((512 - padded % 512) % 512) as usize])
            .unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
}

const MEMBERS: [&str; 6] = [
    "stemcell.MF",
    "packages.txt",
    "dev_tools_file_list.txt",
    "image",
    "sbom.spdx.json",
    "sbom.cdx.json",
];

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn random_stemcells_are_judged_fast_in_one_line(
        manifest in yaml(6),
        deep in 0usize..3000,
        order in Just(MEMBERS.to_vec()).prop_shuffle(),
        keep in 3usize..7,
        huge in proptest::option::of((0usize..6, 1u64 << 20..1u64 << 40)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mf = format!(
            "name: x\nversion: '1'\nbosh_protocol: 1\napi_version: 3\nsha1: {}\n\
             operating_system: debian-trixie\nstemcell_formats: [warden-tar]\n\
             cloud_properties: {manifest}\nextra: {}{}\n",
            "0".repeat(40),
            "[".repeat(deep),
            "]".repeat(deep)
        );
        let mut members: Vec<(String, u64, Vec<u8>)> = order
            .iter()
            .take(keep)
            .map(|name| {
                let data = match *name {
                    "stemcell.MF" => mf.clone().into_bytes(),
                    "sbom.spdx.json" => br#"{"spdxVersion":"SPDX-2.3"}"#.to_vec(),
                    "sbom.cdx.json" => br#"{"bomFormat":"CycloneDX","specVersion":"1.5"}"#.to_vec(),
                    _ => b"some text\n".to_vec(),
                };
                (name.to_string(), data.len() as u64, data)
            })
            .collect();
        if let Some((which, size)) = huge {
            let i = which % members.len();
            members[i].1 = size;
        }
        let path = dir.path().join("stemcell.tgz");
        write_stemcell(&path, &members);
        let started = Instant::now();
        let result = stemcell_builder::stemcell::inspect::inspect(&path);
        prop_assert!(started.elapsed().as_secs_f64() < 5.0, "took {:?}", started.elapsed());
        match result {
            // sha1 is zeros and image is text: never a valid stemcell.
            Ok(_) => prop_assert!(false, "accepted a broken stemcell"),
            Err(err) => assert_one_line(&format!("{err:#}"))?,
        }
    }
}
