//! `export` checked by the tools that consume its outputs: skopeo and umoci read the OCI
//! layout, podman runs it (when a runtime can run here), GNU tar unpacks the garden rootfs as
//! grootfs would and reads the docker tarball. Input: the shared default OS image (one OCI,
//! one garden and one docker export of it); byte-identity and the error cases use a tiny
//! busybox OS image.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};
use support::text;

const EPOCH: &str = "1700000000";
const EPOCH_RFC3339: &str = "2023-11-14T22:13:20Z";

fn sb() -> Command {
    let mut cmd = Command::new(support::bin());
    cmd.env_remove("SOURCE_DATE_EPOCH");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "s390x" => "s390x",
        "powerpc64" => "ppc64le",
        other => panic!("no Go name known for {other}"),
    }
}

/// The default OS image exported once as an OCI layout, with settings. It lives beside the
/// shared OS image (a static is never dropped, so a temp dir would leak) and is replaced by the
/// next run.
struct Oci {
    layout: PathBuf,
    stdout: String,
}

fn oci() -> &'static Oci {
    static OCI: OnceLock<Oci> = OnceLock::new();
    OCI.get_or_init(|| {
        let (image, _) = support::default_os_image();
        let layout = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("export-oci");
        let _ = fs::remove_dir_all(&layout);
        let started = std::time::Instant::now();
        let out = run(sb()
            .args(["export", "--format", "oci"])
            .arg(&image)
            .arg(&layout)
            .args(["--tag", "trixie", "--env", "LANG=C.UTF-8", "--user", "vcap"])
            .args(["--workdir", "/home/vcap", "--cmd", "/bin/bash -l"])
            .env("SOURCE_DATE_EPOCH", EPOCH));
        let stdout = ok(&out);
        eprintln!(
            "oci export of the default OS image: {:.1?}",
            started.elapsed()
        );
        Oci { layout, stdout }
    })
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").expect("a sha256 digest");
    fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

#[test]
fn skopeo_inspects_the_oci_layout_with_our_settings() {
    let oci = oci();
    let reference = format!("oci:{}:trixie", oci.layout.display());
    let out = run(Command::new("skopeo").args(["inspect", &reference]));
    let inspected = ok(&out);
    println!("skopeo inspect {reference}:\n{inspected}");
    let value = json(inspected.as_bytes());
    assert_eq!(value["Architecture"], host_goarch());
    assert_eq!(value["Os"], "linux");
    assert_eq!(value["Created"], EPOCH_RFC3339);
    assert_eq!(value["Layers"].as_array().unwrap().len(), 1);
    let env: Vec<&str> = value["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(env.contains(&"LANG=C.UTF-8"), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");

    let out = run(Command::new("skopeo").args(["inspect", "--config", &reference]));
    let config = json(ok(&out).as_bytes());
    assert_eq!(config["config"]["User"], "vcap");
    assert_eq!(config["config"]["WorkingDir"], "/home/vcap");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["/bin/bash", "-l"])
    );
    assert!(oci.stdout.contains("skopeo inspect oci:"), "{}", oci.stdout);
}

#[test]
fn oci_blobs_match_their_digests_and_the_layer_its_diff_id() {
    let layout = &oci().layout;
    assert_eq!(
        fs::read_to_string(layout.join("oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    let index = json(&fs::read(layout.join("index.json")).unwrap());
    assert_eq!(index["schemaVersion"], 2);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let descriptor = &manifests[0];
    assert_eq!(
        descriptor["annotations"]["org.opencontainers.image.ref.name"],
        "trixie"
    );
    assert_eq!(descriptor["platform"]["architecture"], host_goarch());
    // Every blob is named by its own digest.
    for entry in fs::read_dir(layout.join("blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let data = fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&data),
            entry.file_name().to_string_lossy(),
            "blob named by its digest"
        );
    }
    let manifest_bytes = blob(layout, descriptor["digest"].as_str().unwrap());
    assert_eq!(descriptor["size"], manifest_bytes.len());
    let manifest = json(&manifest_bytes);
    let config = json(&blob(
        layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["created"], EPOCH_RFC3339);
    assert_eq!(config["os"], "linux");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(layout, layers[0]["digest"].as_str().unwrap());
    assert_eq!(layers[0]["size"], layer.len());
    assert_eq!(&layer[4..8], &[0, 0, 0, 0], "no mtime in the gzip header");
    let mut tar_bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(layer.as_slice())
        .read_to_end(&mut tar_bytes)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&tar_bytes))
    );
    // Entries are relative (./...), and no device node made it into the layer.
    let mut archive = tar::Archive::new(tar_bytes.as_slice());
    let mut names = 0;
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let name = entry.path_bytes().into_owned();
        assert!(
            name.starts_with(b"./"),
            "{}",
            String::from_utf8_lossy(&name)
        );
        assert!(
            !matches!(
                entry.header().entry_type(),
                tar::EntryType::Char | tar::EntryType::Block
            ),
            "device node {} in an OCI layer",
            String::from_utf8_lossy(&name)
        );
        names += 1;
    }
    assert!(names > 1000, "{names} entries");
}

#[test]
fn umoci_unpacks_the_oci_layout() {
    let oci = oci();
    let bundle = tempfile::Builder::new()
        .prefix("sb-umoci-")
        .tempdir()
        .unwrap();
    let target = bundle.path().join("bundle");
    let out = run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:trixie", oci.layout.display()))
        .arg(&target));
    ok(&out);
    let release = fs::read_to_string(target.join("rootfs/etc/os-release")).unwrap();
    assert!(release.contains("ID=debian"), "{release}");
    let passwd = fs::read_to_string(target.join("rootfs/etc/passwd")).unwrap();
    assert!(passwd.contains("vcap:"), "{passwd}");
    let config = json(&fs::read(target.join("config.json")).unwrap());
    assert_eq!(
        config["process"]["user"]["uid"], 1000,
        "vcap from the image's passwd"
    );
    assert_eq!(config["process"]["cwd"], "/home/vcap");
    assert_eq!(
        config["process"]["args"],
        serde_json::json!(["/bin/bash", "-l"])
    );
    // Owners survived: /etc/shadow is root's, mode 0000 or 0640 as the OS stages left it.
    let shadow = fs::symlink_metadata(target.join("rootfs/etc/shadow")).unwrap();
    assert_eq!(shadow.uid(), 0);
}

/// Why podman cannot run a container here, or None when it can.
fn podman_unavailable(state: &Path) -> Option<String> {
    for tool in ["podman", "runc", "unshare"] {
        if which(tool).is_none() {
            return Some(format!(
                "{tool} is not installed (scripts/install.sh installs podman and runc)"
            ));
        }
    }
    if !nix_is_root() {
        return Some("podman with private storage needs root here".into());
    }
    let out = run(podman(state).arg("info"));
    if !out.status.success() {
        return Some(format!(
            "`podman info` fails: {}",
            text(&out.stderr).lines().last().unwrap_or("")
        ));
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}

/// podman with its storage and run state under `state`. (podman 4.3 still writes a blob cache
/// to /var/lib/containers and runc's state to /run/runc whatever the flags say: the caller
/// runs it in a private mount namespace with a tmpfs on each.)
fn podman(state: &Path) -> Command {
    let mut cmd = Command::new("podman");
    cmd.arg("--root")
        .arg(state.join("root"))
        .arg("--runroot")
        .arg(state.join("runroot"))
        .arg("--tmpdir")
        .arg(state.join("tmp"))
        .args(["--storage-driver", "vfs", "--runtime", "runc"])
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "none"]);
    cmd
}

/// A temporary directory whose path is all lowercase (podman turns it into an image name).
struct LowercaseDir(PathBuf);

impl LowercaseDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!("sb-podman-{}-{nanos:x}", std::process::id()));
        fs::create_dir(&dir).unwrap();
        LowercaseDir(dir.canonicalize().unwrap())
    }
}

impl Drop for LowercaseDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn podman_runs_the_oci_image_and_reads_os_release_inside() {
    let state_dir = LowercaseDir::new();
    let state = state_dir.0.clone();
    if let Some(why) = podman_unavailable(&state) {
        println!("SKIP podman_runs_the_oci_image_and_reads_os_release_inside: {why}");
        return;
    }
    // podman names the image after the layout's path, and image names are lowercase.
    let layout = state.join("layout");
    std::os::unix::fs::symlink(&oci().layout, &layout).unwrap();
    let host_state = || {
        [
            "/var/lib/containers",
            "/run/runc",
            "/run/containers",
            "/run/libpod",
        ]
        .map(|p| Path::new(p).exists())
    };
    let before = host_state();
    let mut inner = podman(&state);
    inner
        .args(["run", "--rm", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .arg(format!("oci:{}:trixie", layout.display()))
        .args(["/bin/sh", "-c", "head -1 /etc/os-release; id -un; pwd"]);
    let mut words = vec![inner.get_program().to_string_lossy().into_owned()];
    words.extend(inner.get_args().map(|a| a.to_string_lossy().into_owned()));
    let script = format!(
        "mount -t tmpfs tmpfs /run && mount -t tmpfs -o mode=0755 tmpfs /var/lib && exec {}",
        shell_words::join(&words)
    );
    let out = run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(&script));
    let stdout = ok(&out);
    println!("from inside the container: {stdout}");
    let mut lines = stdout.lines();
    assert_eq!(
        lines.next(),
        Some("PRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"")
    );
    assert_eq!(lines.next(), Some("vcap"), "runs as --user");
    assert_eq!(lines.next(), Some("/home/vcap"), "in --workdir");
    assert!(
        support::mounts_below(&state).is_empty(),
        "podman left mounts: {:?}",
        support::mounts_below(&state)
    );
    assert_eq!(host_state(), before, "podman left state on the host");
}

/// An OS image entry's owner, mode and kind, keyed by its path relative to the root.
type Listing = BTreeMap<Vec<u8>, (u32, u32, u32, char, Vec<u8>)>;

fn os_image_listing(image: &Path) -> Listing {
    let file = fs::File::open(image).unwrap();
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    let mut listing = Listing::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let header = entry.header();
        let name = entry.path_bytes().into_owned();
        let rel: Vec<u8> = name
            .strip_prefix(b"./")
            .unwrap_or(&name)
            .strip_suffix(b"/")
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| name.strip_prefix(b"./").unwrap_or(&name).to_vec());
        if rel.is_empty() {
            continue;
        }
        let kind = match header.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            tar::EntryType::Fifo => 'p',
            _ => 'f',
        };
        let link = match kind {
            'l' => entry.link_name_bytes().unwrap().into_owned(),
            _ => vec![],
        };
        listing.insert(
            rel,
            (
                header.uid().unwrap() as u32,
                header.gid().unwrap() as u32,
                header.mode().unwrap() & 0o7777,
                kind,
                link,
            ),
        );
    }
    listing
}

fn tree_listing(root: &Path) -> Listing {
    let mut listing = Listing::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let ft = meta.file_type();
            let kind = if ft.is_dir() {
                stack.push(path.clone());
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_block_device() {
                'b'
            } else if ft.is_fifo() {
                'p'
            } else {
                'f'
            };
            let link = if kind == 'l' {
                use std::os::unix::ffi::OsStrExt;
                fs::read_link(&path)
                    .unwrap()
                    .as_os_str()
                    .as_bytes()
                    .to_vec()
            } else {
                vec![]
            };
            use std::os::unix::ffi::OsStrExt;
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            listing.insert(
                rel,
                (meta.uid(), meta.gid(), meta.mode() & 0o7777, kind, link),
            );
        }
    }
    listing
}

#[test]
fn garden_rootfs_unpacks_as_grootfs_would_with_owners_and_modes_intact() {
    let (image, _) = support::default_os_image();
    let dir = tempfile::Builder::new()
        .prefix("sb-garden-")
        .tempdir()
        .unwrap();
    let stack = dir.path().join("stack.tgz");
    let started = std::time::Instant::now();
    ok(&run(sb()
        .args(["export", "--format", "garden-rootfs"])
        .arg(&image)
        .arg(&stack)
        .args(["--user", "vcap", "--env", "LANG=C.UTF-8"])));
    eprintln!("garden export: {:.1?}", started.elapsed());
    // Two members at the top: rootfs/ (first) and metadata.json.
    let listing = run(Command::new("tar").arg("-tzf").arg(&stack));
    let names = ok(&listing);
    assert_eq!(names.lines().next(), Some("rootfs/"));
    assert!(names
        .lines()
        .all(|n| n.starts_with("rootfs/") || n == "metadata.json"));
    let metadata = run(Command::new("tar")
        .arg("-xzOf")
        .arg(&stack)
        .arg("metadata.json"));
    let metadata = json(ok(&metadata).as_bytes());
    assert_eq!(metadata["user"], "vcap");
    assert_eq!(
        metadata["env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8"
        ])
    );
    // grootfs's way: the rootfs/ prefix stripped, numeric owners kept, as root.
    let root = dir.path().join("rootfs");
    fs::create_dir(&root).unwrap();
    ok(&run(Command::new("tar")
        .args(["--strip-components=1", "--numeric-owner", "-xpzf"])
        .arg(&stack)
        .arg("-C")
        .arg(&root)
        .arg("rootfs")));
    let expected = os_image_listing(&image);
    let unpacked = tree_listing(&root);
    let missing: Vec<_> = expected
        .keys()
        .filter(|k| !unpacked.contains_key(*k))
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    assert!(missing.is_empty(), "missing after unpacking: {missing:?}");
    let mut differ = vec![];
    for (path, want) in &expected {
        if &unpacked[path] != want {
            differ.push(format!(
                "{}: {:?} != {:?}",
                String::from_utf8_lossy(path),
                unpacked[path],
                want
            ));
        }
    }
    assert!(differ.is_empty(), "owners/modes differ: {differ:?}");
    assert_eq!(unpacked.len(), expected.len(), "nothing extra");
    // The setuid bit and a file capability-free but owner-specific file, spot-checked.
    let sudo = &unpacked[&b"usr/bin/sudo"[..]];
    assert_eq!(
        (sudo.0, sudo.2 & 0o4000),
        (0, 0o4000),
        "sudo stays setuid root"
    );
}

#[test]
fn docker_tarball_is_a_plain_relative_root_tar_with_the_import_command() {
    let (image, _) = support::default_os_image();
    let dir = tempfile::Builder::new()
        .prefix("sb-docker-")
        .tempdir()
        .unwrap();
    let tarball = dir.path().join("trixie.tar");
    let started = std::time::Instant::now();
    let stdout = ok(&run(sb()
        .args(["export", "--format", "docker"])
        .arg(&image)
        .arg(&tarball)
        .args(["--user", "vcap", "--env", "GREETING=hello world"])
        .args(["--workdir", "/home/vcap", "--tag", "trixie:test"])));
    eprintln!("docker export: {:.1?}", started.elapsed());
    let command = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("docker import "))
        .unwrap_or_else(|| panic!("no docker import line in {stdout}"));
    let words = shell_words::split(command).unwrap();
    for change in [
        "ENV GREETING=\"hello world\"",
        "USER vcap",
        "WORKDIR /home/vcap",
        "CMD [\"/usr/bin/sh\"]",
    ] {
        let at = words.iter().position(|w| w == change);
        assert!(
            at.is_some_and(|i| words[i - 1] == "--change"),
            "--change {change:?} in {command}"
        );
    }
    assert_eq!(words[words.len() - 2], tarball.display().to_string());
    assert_eq!(words[words.len() - 1], "trixie:test");

    // What docker import needs: a plain tar GNU tar reads, entries relative to the root.
    let listing = ok(&run(Command::new("tar")
        .args(["--numeric-owner", "-tvf"])
        .arg(&tarball)));
    let lines: Vec<&str> = listing.lines().collect();
    assert!(lines[0].ends_with(" ./"), "{}", lines[0]);
    for line in &lines {
        assert!(
            !line.starts_with('c') && !line.starts_with('b'),
            "a device node: {line}"
        );
        let name = line.split_whitespace().nth(5).unwrap();
        assert!(name.starts_with("./") && !name.contains("/../"), "{line}");
    }
    let expected = os_image_listing(&image);
    let devices = expected
        .values()
        .filter(|v| v.3 == 'c' || v.3 == 'b')
        .count();
    assert!(devices > 0, "the OS image has device nodes to leave out");
    assert_eq!(
        lines.len(),
        expected.len() + 1 - devices,
        "every other entry, and ./"
    );

    let daemon = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    match daemon {
        Ok(out) if out.status.success() => {
            let mut import = Command::new(&words[0]);
            import.args(&words[1..]);
            ok(&run(&mut import));
            let inside = run(Command::new("docker").args([
                "run",
                "--rm",
                "--network",
                "none",
                "trixie:test",
                "head",
                "-1",
                "/etc/os-release",
            ]));
            let _ = Command::new("docker").args(["rmi", "trixie:test"]).output();
            assert!(ok(&inside).contains("Debian"));
        }
        Ok(out) => println!(
            "SKIP docker import into a daemon: no docker daemon here (docker CLI only: {}); checked the tarball as docker import reads it instead",
            text(&out.stderr).lines().next().unwrap_or("").trim()
        ),
        Err(e) => println!(
            "SKIP docker import into a daemon: no docker CLI ({e}); checked the tarball as docker import reads it instead"
        ),
    }
}

/// A tiny OS image: the busybox root with a device node, a hard link, a fifo, a long name and
/// a file capability, packed by `pack`.
fn tiny_os_image(dir: &Path) -> PathBuf {
    let root = dir.join("tiny-root");
    support::busybox_root(&root);
    nix_mknod(&root.join("dev-null"));
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::hard_link(root.join("bin/busybox"), root.join("bin/busybox-again")).unwrap();
    let deep = root.join("d".repeat(90)).join("e".repeat(90));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("long-named-file"), "x").unwrap();
    let ping = root.join("bin/ping-like");
    fs::write(&ping, "#!/bin/sh\n").unwrap();
    ok(&run(Command::new("setcap")
        .arg("cap_net_raw+ep")
        .arg(&ping)));
    let image = dir.join("tiny.tgz");
    ok(&run(sb().arg("pack").arg(&root).arg(&image)));
    image
}

fn nix_mknod(path: &Path) {
    ok(&run(Command::new("mknod").arg(path).args(["c", "1", "3"])));
}

fn tree_bytes(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    fs::read(&path).unwrap(),
                );
            }
        }
    }
    files
}

#[test]
fn the_same_os_image_gives_a_byte_identical_oci_layout() {
    let dir = tempfile::tempdir().unwrap();
    let image = tiny_os_image(dir.path());
    let mut layouts = vec![];
    for n in 0..2 {
        let layout = dir.path().join(format!("layout-{n}"));
        if n == 1 {
            // An existing empty directory is filled (replaced when the layout is complete).
            fs::create_dir(&layout).unwrap();
        }
        ok(&run(sb()
            .args(["export", "--format", "oci"])
            .arg(&image)
            .arg(&layout)));
        layouts.push(tree_bytes(&layout));
    }
    assert_eq!(layouts[0].len(), 5, "oci-layout, index.json, 3 blobs");
    assert!(layouts[0] == layouts[1], "two exports differ");
    // No dpkg in this tree: the architecture comes from busybox's ELF header, and `created`
    // from its newest mtime, not the clock.
    let index = json(&layouts[0][Path::new("index.json")]);
    assert_eq!(
        index["manifests"][0]["platform"]["architecture"],
        host_goarch()
    );
    assert_eq!(
        index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
        "latest"
    );
    // The layer keeps the hard link, the long name and the capability; drops the device.
    let layout = dir.path().join("layout-0");
    let bundle = dir.path().join("bundle");
    ok(&run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&bundle)));
    let rootfs = bundle.join("rootfs");
    assert!(!rootfs.join("dev-null").exists(), "device node dropped");
    let a = fs::metadata(rootfs.join("bin/busybox")).unwrap();
    let b = fs::metadata(rootfs.join("bin/busybox-again")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link kept");
    assert!(rootfs
        .join("d".repeat(90))
        .join("e".repeat(90))
        .join("long-named-file")
        .exists());
    let caps = run(Command::new("getcap").arg(rootfs.join("bin/ping-like")));
    assert!(ok(&caps).contains("cap_net_raw"), "file capability kept");
}

fn assert_refused(out: &Output, needle: &str, leftovers_in: &Path) {
    assert!(!out.status.success(), "should fail: {}", text(&out.stdout));
    let err = text(&out.stderr);
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "one error line: {err}");
    assert!(err.lines().last().unwrap().starts_with("error:"), "{err}");
    assert!(error_lines[0].contains(needle), "{needle:?} in {err}");
    let left: Vec<String> = fs::read_dir(leftovers_in)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("out") || n.contains(".partial"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn bad_inputs_are_one_line_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let image = tiny_os_image(d);
    let not_an_image = d.join("notes.tgz");
    fs::write(
        &not_an_image,
        "these are notes, not an OS image\n".repeat(50),
    )
    .unwrap();
    for (format, out) in [
        ("garden-rootfs", "out.tgz"),
        ("docker", "out.tar"),
        ("oci", "out-layout"),
    ] {
        let result = run(sb()
            .args(["export", "--format", format])
            .arg(&not_an_image)
            .arg(d.join(out)));
        assert_refused(&result, "is not an OS image", d);
    }
    // Cut in the middle: the gzip stream ends early.
    let whole = fs::read(&image).unwrap();
    let truncated = d.join("truncated.tgz");
    fs::write(&truncated, &whole[..whole.len() / 2]).unwrap();
    let result = run(sb()
        .args(["export", "--format", "oci"])
        .arg(&truncated)
        .arg(d.join("out-layout")));
    assert_refused(&result, "truncated.tgz", d);

    let result = run(sb()
        .args(["export", "--format", "docker"])
        .arg(&image)
        .arg(d.join("out.tar"))
        .args(["--env", "GREETING"]));
    assert_refused(&result, "--env GREETING: write KEY=VALUE", d);

    // busybox's root has no /etc/passwd: any user name is unknown to it.
    let result = run(sb()
        .args(["export", "--format", "garden-rootfs"])
        .arg(&image)
        .arg(d.join("out.tgz"))
        .args(["--user", "vcap"]));
    assert_refused(&result, "has no user 'vcap'", d);

    let result = run(sb()
        .args(["export", "--format", "docker"])
        .arg(&image)
        .arg(d.join("out.zip")));
    assert_refused(&result, "name the docker tarball .tar", d);

    let busy = d.join("busy-layout");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("keep"), "mine").unwrap();
    let result = run(sb()
        .args(["export", "--format", "oci"])
        .arg(&image)
        .arg(&busy));
    assert!(!result.status.success());
    assert!(text(&result.stderr).contains("already exists and is not empty"));
    assert_eq!(fs::read_to_string(busy.join("keep")).unwrap(), "mine");

    // A checksum that does not match is refused before anything is written.
    fs::write(
        d.join("tiny.tgz.sha256"),
        format!("{}  tiny.tgz\n", "0".repeat(64)),
    )
    .unwrap();
    let result = run(sb()
        .args(["export", "--format", "docker"])
        .arg(&image)
        .arg(d.join("out.tar")));
    assert_refused(&result, "checksum mismatch", d);
}

/// name, type, link target
type RawEntry<'a> = (&'a str, tar::EntryType, &'a str);

#[test]
fn hostile_os_image_entries_are_refused_naming_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[RawEntry], &str)] = &[
        (
            "dotdot",
            &[("./../escaped", tar::EntryType::Regular, "")],
            "contains '..'",
        ),
        (
            "absolute",
            &[("/etc/evil", tar::EntryType::Regular, "")],
            "is an absolute path",
        ),
        (
            "through-symlink",
            &[
                ("./link", tar::EntryType::Symlink, "/etc"),
                ("./link/passwd", tar::EntryType::Regular, ""),
            ],
            "written through the symlink ./link",
        ),
        (
            "hardlink-out",
            &[("./hl", tar::EntryType::Link, "../../etc/shadow")],
            "hard-links to a path that contains '..'",
        ),
    ];
    for (name, entries, needle) in cases {
        let image = dir.path().join(format!("{name}.tar"));
        let mut builder = tar::Builder::new(fs::File::create(&image).unwrap());
        for (path, kind, link) in *entries {
            let mut header = tar::Header::new_gnu();
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
            header.set_entry_type(*kind);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            let data: &[u8] = if *kind == tar::EntryType::Regular {
                b"evil"
            } else {
                b""
            };
            header.set_size(data.len() as u64);
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.finish().unwrap();
        let result = run(sb()
            .args(["export", "--format", "docker"])
            .arg(&image)
            .arg(dir.path().join("out.tar")));
        assert_refused(&result, needle, dir.path());
        assert!(text(&result.stderr).contains("refusing to export"));
    }
}

#[test]
fn a_long_name_bomb_is_refused_in_bounded_memory() {
    // 128 MiB of GNU long name in a small gzip: the tar crate would hold it all.
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("bomb.tgz");
    let mut gz = flate2::write::GzEncoder::new(
        fs::File::create(&image).unwrap(),
        flate2::Compression::fast(),
    );
    use std::io::Write;
    const HUGE: u64 = 128 << 20;
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(HUGE);
    header.set_cksum();
    gz.write_all(header.as_bytes()).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    for _ in 0..(HUGE >> 20) {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    gz.finish().unwrap();
    let out = dir.path().join("out.tar");
    let (code, err, rss) = support::run_with_peak_rss(
        &[
            "export".as_ref(),
            "--format".as_ref(),
            "docker".as_ref(),
            image.as_os_str(),
            out.as_os_str(),
        ],
        dir.path(),
    );
    assert_ne!(code, 0);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains("over 4096 bytes"), "{err}");
    assert!(rss < 64 * 1024, "peak RSS {rss} KiB");
    assert!(!out.exists(), "nothing under the output name");
}
