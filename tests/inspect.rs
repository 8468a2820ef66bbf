//! `inspect` on hand-made stemcells: a good one passes; hostile ones (compression bombs, huge
//! or deeply nested manifests, long-name bombs) fail fast, in bounded memory, with one line.

mod support;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha1::{Digest, Sha1};

/// A tiny warden `image`: a gzip tar holding ./etc/os-release, named as our own archives name it.
fn warden_image() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let body = b"ID=debian\nVERSION_CODENAME=trixie\n";
    for (name, kind, data) in [
        ("./", tar::EntryType::Directory, &b""[..]),
        ("./etc/", tar::EntryType::Directory, &b""[..]),
        ("./etc/os-release", tar::EntryType::Regular, &body[..]),
    ] {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_cksum();
        gz.write_all(header.as_bytes()).unwrap();
        gz.write_all(data).unwrap();
        gz.write_all(&vec![0u8; (512 - data.len() % 512) % 512])
            .unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap()
}

fn manifest(image: &[u8], extra: &str) -> String {
    let sha1 = hex::encode(Sha1::digest(image));
    format!(
        "name: bosh-warden-boshlite-debian-trixie-go_agent\nversion: '1.2'\nbosh_protocol: 1\n\
         api_version: 3\nsha1: {sha1}\noperating_system: debian-trixie\nstemcell_formats:\n\
         - warden-tar\ncloud_properties:\n  name: x\n  version: '1.2'\n  infrastructure: warden\n\
         \x20 hypervisor: boshlite\n  disk: 1024\n  disk_format: files\n  container_format: bare\n\
         \x20 os_type: linux\n  os_distro: debian\n  architecture: x86_64\n{extra}"
    )
}

const SPDX: &str = r#"{"spdxVersion":"SPDX-2.3","packages":[]}"#;
const CDX: &str = r#"{"bomFormat":"CycloneDX","specVersion":"1.5","components":[]}"#;

/// A member: its name and either bytes or a (size, byte) stream of one repeated byte.
enum Body {
    Bytes(Vec<u8>),
    Repeat(u64, u8),
}

fn stemcell(path: &Path, members: Vec<(&str, Body)>) {
    let mut gz =
        flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::fast());
    for (name, body) in members {
        let size = match &body {
            Body::Bytes(b) => b.len() as u64,
            Body::Repeat(n, _) => *n,
        };
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(size);
        header.set_mtime(0);
        header.set_cksum();
        gz.write_all(header.as_bytes()).unwrap();
        match body {
            Body::Bytes(b) => gz.write_all(&b).unwrap(),
            Body::Repeat(n, byte) => {
                let chunk = vec![byte; 1 << 20];
                let mut left = n;
                while left > 0 {
                    let step = left.min(chunk.len() as u64) as usize;
                    gz.write_all(&chunk[..step]).unwrap();
                    left -= step as u64;
                }
            }
        }
        gz.write_all(&vec![0u8; ((512 - size % 512) % 512) as usize])
            .unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
}

fn good_members(manifest_extra: &str) -> Vec<(&'static str, Body)> {
    let image = warden_image();
    vec![
        (
            "stemcell.MF",
            Body::Bytes(manifest(&image, manifest_extra).into_bytes()),
        ),
        ("packages.txt", Body::Bytes(b"bash 5.2 amd64\n".to_vec())),
        (
            "dev_tools_file_list.txt",
            Body::Bytes(b"/usr/bin/gcc\n".to_vec()),
        ),
        ("image", Body::Bytes(image)),
        ("sbom.spdx.json", Body::Bytes(SPDX.as_bytes().to_vec())),
        ("sbom.cdx.json", Body::Bytes(CDX.as_bytes().to_vec())),
    ]
}

/// Runs inspect; returns (success, stderr, seconds, its own peak RSS in KiB).
fn inspect(stemcell: &Path) -> (bool, String, f64, i64) {
    let scratch = stemcell.with_extension("rss");
    fs::create_dir_all(&scratch).unwrap();
    let started = Instant::now();
    let (code, err, rss) =
        support::run_with_peak_rss(&["inspect".as_ref(), stemcell.as_os_str()], &scratch);
    (code == 0, err, started.elapsed().as_secs_f64(), rss)
}

fn assert_fails_fast(path: &Path, needle: &str) {
    let (ok, err, seconds, rss) = inspect(path);
    let label = path.file_name().unwrap().to_string_lossy();
    assert!(!ok, "{label}: refused");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{label}: one line: {err}"
    );
    assert!(
        err.trim_end().chars().all(|c| !c.is_control()) && err.len() < 1000,
        "{label}: short and clean: {err:?}"
    );
    assert!(
        err.contains(needle) && err.contains(&path.display().to_string()),
        "{label}: {err}"
    );
    assert!(seconds < 10.0, "{label}: took {seconds:.1} s");
    assert!(rss < 100 * 1024, "{label}: peak RSS {rss} KiB");
}

fn dir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    (dir, path)
}

#[test]
fn a_hand_made_stemcell_passes() {
    let (_keep, dir) = dir();
    let path = dir.join("good.tgz");
    stemcell(&path, good_members(""));
    let (ok, err, _, _) = inspect(&path);
    assert!(ok, "{err}");
}

#[test]
fn deeply_nested_manifest_fails_fast() {
    let (_keep, dir) = dir();
    for (name, extra) in [
        (
            "brackets.tgz",
            format!("x: {}{}\n", "[".repeat(200_000), "]".repeat(200_000)),
        ),
        ("braces.tgz", format!("x: {}\n", "{a: ".repeat(50_000))),
        ("dashes.tgz", format!("x:\n{}y\n", "- ".repeat(100_000))),
    ] {
        let path = dir.join(name);
        stemcell(&path, {
            let mut m = good_members(&extra);
            // The manifest may be big here; the bound is on nesting.
            m.truncate(6);
            m
        });
        assert_fails_fast(&path, "stemcell.MF");
    }
}

#[test]
fn alias_bomb_in_the_manifest_fails_fast() {
    let (_keep, dir) = dir();
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        bomb.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    let image = warden_image();
    let text =
        manifest(&image, "").replace("cloud_properties:\n", "cloud_properties:\n  bomb: *a11\n");
    let path = dir.join("aliases.tgz");
    let mut members = good_members("");
    members[0] = (
        "stemcell.MF",
        Body::Bytes(format!("{bomb}{text}").into_bytes()),
    );
    stemcell(&path, members);
    assert_fails_fast(&path, "stemcell.MF");
}

#[test]
fn oversized_members_are_refused_before_they_are_read() {
    let (_keep, dir) = dir();
    // A 100 MB manifest (a valid one padded with a comment) and a 256 MiB packages.txt.
    let image = warden_image();
    let mut big = manifest(&image, "").into_bytes();
    big.push(b'#');
    big.resize(100 << 20, b' ');
    big.push(b'\n');
    let mut members = good_members("");
    members[0] = ("stemcell.MF", Body::Bytes(big));
    let path = dir.join("big-manifest.tgz");
    stemcell(&path, members);
    assert_fails_fast(&path, "stemcell.MF");

    let mut members = good_members("");
    members[1] = ("packages.txt", Body::Repeat(256 << 20, b'\n'));
    let path = dir.join("big-packages.tgz");
    stemcell(&path, members);
    assert_fails_fast(&path, "packages.txt");
}

#[test]
fn a_compression_bomb_image_fails_fast() {
    let (_keep, dir) = dir();
    let mut members = good_members("");
    // 512 MiB of zeros as `image` (half a MB compressed): far past what the file's size allows.
    members[3] = ("image", Body::Repeat(512 << 20, 0));
    let path = dir.join("bomb.tgz");
    stemcell(&path, members);
    assert_fails_fast(&path, "expands");
}

#[test]
fn a_long_name_bomb_fails_fast() {
    let (_keep, dir) = dir();
    let path = dir.join("longname.tgz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&path).unwrap(),
        flate2::Compression::fast(),
    );
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_size(256 << 20);
    header.set_cksum();
    gz.write_all(header.as_bytes()).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
    assert_fails_fast(&path, "long name");
}

#[test]
fn empty_garbage_and_directory_are_one_line() {
    let (_keep, dir) = dir();
    let empty = dir.join("empty.tgz");
    fs::write(&empty, b"").unwrap();
    let garbage = dir.join("garbage.tgz");
    fs::write(&garbage, support::noise(2048, 9)).unwrap();
    let a_dir = dir.join("a-dir.tgz");
    fs::create_dir(&a_dir).unwrap();
    assert_fails_fast(&empty, "is empty");
    assert_fails_fast(&garbage, "not a stemcell");
    assert_fails_fast(&a_dir, "is a directory");
}
