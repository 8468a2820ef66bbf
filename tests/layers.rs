//! Stage layers on the tiny busybox base: each stage on its own overlay, exact resume, the
//! content-addressed layer cache (hits, misses and why, damaged entries, `cache ls`/`prune`),
//! the same OS image as `--no-layers`, whiteouts and opaque dirs, devices, capabilities and hard
//! links through layers and the cache, no leaked mount or process, `--until`, a shell on failure
//! under a pseudo-terminal, `shell WORK_DIR`, and `build-stemcell` on layers.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use support::{eventually, mounts_below, ok, processes_with, status, text, Fixture};

/// Unpacks an OS image with our own `unpack` into a new dir.
fn unpacked(image: &Path, dir: &Path) -> PathBuf {
    let _ = fs::remove_dir_all(dir);
    let out = Command::new(support::bin())
        .arg("unpack")
        .arg(image)
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    dir.to_path_buf()
}

fn work_mounts_gone(f: &Fixture, work: &Path) {
    let work = work.canonicalize().unwrap();
    assert!(
        mounts_below(&work).is_empty(),
        "mounts leaked: {:?}",
        mounts_below(&work)
    );
    assert!(
        processes_with(&f.path().display().to_string()).is_empty(),
        "a process of the build is left: {:?}",
        processes_with(&f.path().display().to_string())
    );
}

#[test]
fn each_stage_writes_its_own_layer_over_the_ones_below_and_the_host_sees_no_mount() {
    let f = Fixture::new();
    f.collection(&["one", "two"]);
    f.stage(
        "one",
        r#"echo a >"$chroot/a"
run_in_chroot "$chroot" 'echo from-inside >/inside'"#,
    );
    f.stage(
        "two",
        r#"grep " $chroot overlay" /proc/self/mounts >"$work/mount-in-stage"
run_in_chroot "$chroot" 'cat /a /inside >/seen'"#,
    );
    let out = f.build(&[]);
    ok(&out);

    // What each stage wrote is in its own layer, and only there.
    assert!(f.layer("01-one").join("a").exists() && f.layer("01-one").join("inside").exists());
    assert!(!f.layer("01-one").join("seen").exists());
    assert_eq!(
        fs::read_to_string(f.layer("02-two").join("seen")).unwrap(),
        "a\nfrom-inside\n",
        "stage two (and chroot-exec inside it) saw stage one's layer"
    );
    assert!(!f.layer("02-two").join("a").exists());
    assert!(
        f.layer("00-base").join("bin/busybox").exists(),
        "the base is layer 0"
    );
    let mount = fs::read_to_string(f.work().join("mount-in-stage")).unwrap();
    assert!(
        mount.contains("lowerdir=01-one:00-base") && mount.contains("upperdir=02-two"),
        "the stage ran on an overlay of the layers below it: {mount}"
    );

    // The OS image is the merged tree; the host never saw a mount.
    let root = unpacked(&f.output(), &f.path().join("image"));
    for file in ["a", "inside", "seen", "bin/busybox"] {
        assert!(root.join(file).exists(), "{file} in the image");
    }
    work_mounts_gone(&f, &f.work());
    assert_eq!(
        fs::read_dir(f.chroot()).unwrap().count(),
        0,
        "work/chroot is only a mount point on the host"
    );
}

#[test]
fn resume_reruns_a_stage_on_exactly_the_tree_it_first_saw() {
    let f = Fixture::new();
    f.collection(&["first", "append", "last"]);
    let fail_once = f.path().join("fail-once");
    f.stage("first", "echo base-line >\"$chroot/file\"");
    f.stage(
        "append",
        &format!(
            r#"echo appended >>"$chroot/file"
if [ -e {flag} ]; then rm {flag}; exit 1; fi"#,
            flag = fail_once.display()
        ),
    );
    f.stage("last", "cp \"$chroot/file\" \"$chroot/copy\"");
    fs::write(&fail_once, "").unwrap();
    let failed = f.build(&[]);
    assert!(!failed.status.success());
    assert!(text(&failed.stderr).contains("--resume-from append"));
    assert_eq!(
        fs::read_to_string(f.layer("02-append").join("file")).unwrap(),
        "base-line\nappended\n",
        "the failed run appended once"
    );

    let resumed = f.build(&["--resume-from", "append"]);
    ok(&resumed);
    assert_eq!(status(&resumed, "01-first"), "skipped (resume)");
    assert_eq!(status(&resumed, "02-append"), "ran (resumed)");
    let root = unpacked(&f.output(), &f.path().join("image"));
    let file = fs::read_to_string(root.join("file")).unwrap();
    println!("after the resume, /file holds:\n{file}");
    assert_eq!(file, "base-line\nappended\n", "one appended line, not two");

    // Without layers, the reference behaviour: the rerun appends to what the failure left.
    let plain = f.path().join("plain");
    fs::write(&fail_once, "").unwrap();
    assert!(!f
        .build_command_in(&plain, &["--no-layers"])
        .output()
        .unwrap()
        .status
        .success());
    ok(&f
        .build_command_in(&plain, &["--no-layers", "--resume-from", "append"])
        .output()
        .unwrap());
    assert_eq!(
        fs::read_to_string(plain.join("chroot/file")).unwrap(),
        "base-line\nappended\nappended\n"
    );
}

#[test]
fn a_second_build_reruns_only_what_changed_and_says_why() {
    let f = Fixture::new();
    let cache = f.path().join("cache");
    f.collection(&["one", "two", "three"]);
    let greeting = f.path().join("greeting");
    fs::write(&greeting, "hello").unwrap();
    f.config(
        "one",
        &format!("greeting=$(cat {})\npersist greeting", greeting.display()),
    );
    for name in ["one", "two", "three"] {
        f.stage(
            name,
            &format!(
                "echo {name} >>\"$work/ran\"; echo \"${{greeting:-}}{name}\" >\"$chroot/{name}\""
            ),
        );
    }
    fs::create_dir_all(f.stages().join("two/assets")).unwrap();
    fs::write(f.stages().join("two/assets/data"), "v1").unwrap();
    let build = |work: &Path, extra: &[&str]| {
        let out = f
            .build_command_with(work, Some(&cache), extra)
            .output()
            .unwrap();
        ok(&out);
        out
    };
    let ran = |work: &Path| fs::read_to_string(work.join("ran")).unwrap_or_default();
    let work = f.work();

    let cold = build(&work, &[]);
    for slug in ["01-one", "02-two", "03-three"] {
        assert_eq!(status(&cold, slug), "ran (new: not built before)");
    }
    let first_image = fs::read(f.output()).unwrap();

    let again = build(&work, &[]);
    for slug in ["01-one", "02-two", "03-three"] {
        assert_eq!(status(&again, slug), "cached (work dir)");
    }
    assert_eq!(ran(&work), "one\ntwo\nthree\n", "no stage ran again");
    assert_eq!(fs::read(f.output()).unwrap(), first_image);
    let log = fs::read_to_string(work.join("logs/02-two.log")).unwrap();
    assert!(
        log.contains("cached (work dir)") && log.contains("apply.sh not run"),
        "{log}"
    );

    // The last stage's script changes: only it runs.
    f.stage(
        "three",
        "echo three >>\"$work/ran\"; echo changed >\"$chroot/three\"",
    );
    let changed = build(&work, &[]);
    assert_eq!(status(&changed, "01-one"), "cached (work dir)");
    assert_eq!(status(&changed, "02-two"), "cached (work dir)");
    assert_eq!(status(&changed, "03-three"), "ran (stage files changed)");
    assert_eq!(ran(&work), "one\ntwo\nthree\nthree\n");
    let log = fs::read_to_string(work.join("logs/03-three.log")).unwrap();
    assert!(log.contains("ran: stage files changed"), "{log}");

    // An asset's mode is a stage file too; the stages above it see a new parent.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(
        f.stages().join("two/assets/data"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let asset = build(&work, &[]);
    assert_eq!(status(&asset, "01-one"), "cached (work dir)");
    assert_eq!(status(&asset, "02-two"), "ran (stage files changed)");
    assert_eq!(status(&asset, "03-three"), "ran (parent changed)");

    // What config.sh persisted is a setting of its stage; --set is a setting of every stage.
    fs::write(&greeting, "bonjour").unwrap();
    let persisted = build(&work, &[]);
    assert_eq!(status(&persisted, "01-one"), "ran (settings changed)");
    assert_eq!(status(&persisted, "02-two"), "ran (parent changed)");
    let set = build(&work, &["--set", "extra=1"]);
    assert_eq!(status(&set, "01-one"), "ran (settings changed)");
    assert_eq!(status(&set, "02-two"), "ran (settings, parent changed)");

    // Another work dir takes every layer from the cache, and makes the same image.
    let image = fs::read(f.output()).unwrap();
    let other = f.path().join("other-work");
    let fresh = build(&other, &["--set", "extra=1"]);
    for slug in ["01-one", "02-two", "03-three"] {
        assert_eq!(status(&fresh, slug), "cached (cache)");
    }
    assert_eq!(ran(&other), "", "nothing ran in the other work dir");
    assert_eq!(fs::read(f.output()).unwrap(), image, "the same OS image");

    // --no-cache runs everything and keeps nothing.
    let nocache = f
        .build_command_in(&work, &["--set", "extra=1"])
        .output()
        .unwrap();
    ok(&nocache);
    assert_eq!(status(&nocache, "03-three"), "ran (no cache)");
}

#[test]
fn damaged_cache_entries_are_rebuilt_never_used_and_cache_ls_and_prune_bound_the_cache() {
    let f = Fixture::new();
    let cache = f.path().join("cache");
    f.collection(&["one", "two"]);
    f.stage("one", "echo one >\"$chroot/one\"");
    f.stage("two", "echo two >\"$chroot/two\"");
    ok(&f
        .build_command_with(&f.work(), Some(&cache), &[])
        .output()
        .unwrap());
    let archives: Vec<PathBuf> = fs::read_dir(cache.join("layers"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .collect();
    assert_eq!(archives.len(), 2, "one entry per layer");

    let ls = Command::new(support::bin())
        .args(["cache", "ls", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    let listing = text(&ls.stdout);
    assert!(ls.status.success(), "{}", text(&ls.stderr));
    assert!(
        listing.contains("KIND") && listing.contains("LAST USED") && listing.contains("SIZE"),
        "{listing}"
    );
    let rows: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with("layer "))
        .collect();
    assert_eq!(rows.len(), 2, "{listing}");
    assert!(rows.iter().any(|r| r.contains(" one ")) && rows.iter().any(|r| r.contains(" two ")));
    assert!(listing.contains("2 entries"), "{listing}");

    // Damage stage one's entry (same size, one byte), and remove stage two's record (as if a
    // store had been killed between the archive and its record).
    let find = |stage: &str| -> PathBuf {
        archives
            .iter()
            .find(|a| {
                let record = fs::read_to_string(a.with_extension("").with_extension("json"))
                    .unwrap_or_default();
                record.contains(&format!("\"name\": \"{stage}\""))
            })
            .unwrap()
            .clone()
    };
    let one = find("one");
    let two = find("two");
    let mut bytes = fs::read(&one).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    fs::write(&one, &bytes).unwrap();
    fs::remove_file(two.with_extension("").with_extension("json")).unwrap();

    let out = f
        .build_command_with(&f.path().join("work2"), Some(&cache), &[])
        .output()
        .unwrap();
    ok(&out);
    let one_status = status(&out, "01-one");
    assert!(
        one_status.starts_with("ran (the cache entry was damaged") && one_status.contains("sha256"),
        "{one_status}"
    );
    let two_status = status(&out, "02-two");
    assert!(
        two_status.starts_with("ran (the cache entry was damaged")
            && two_status.contains("no record"),
        "an entry without a record is not used: {two_status}"
    );
    let root = unpacked(&f.output(), &f.path().join("image"));
    assert_eq!(fs::read_to_string(root.join("one")).unwrap(), "one\n");

    // Rebuilt entries are whole again: a third work dir takes both from the cache.
    let third = f
        .build_command_with(&f.path().join("work3"), Some(&cache), &[])
        .output()
        .unwrap();
    ok(&third);
    assert_eq!(status(&third, "01-one"), "cached (cache)");
    assert_eq!(status(&third, "02-two"), "cached (cache)");

    // prune: an entry unused for ten days goes with --older-than 5; --keep 1 keeps one layer.
    let record = find("one").with_extension("").with_extension("json");
    let text_record = fs::read_to_string(&record).unwrap();
    let old = cache_last_used_days_ago(&text_record, 10);
    fs::write(&record, old).unwrap();
    let prune = |args: &[&str]| {
        let out = Command::new(support::bin())
            .args(["cache", "prune", "--cache-dir"])
            .arg(&cache)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    let pruned = prune(&["--older-than", "5"]);
    assert!(pruned.contains("removed 1 entries"), "{pruned}");
    assert!(!find_exists(&cache, "one"));
    assert!(find_exists(&cache, "two"));
    ok(&f
        .build_command_with(&f.path().join("work4"), Some(&cache), &[])
        .output()
        .unwrap());
    let pruned = prune(&["--keep", "1"]);
    assert!(pruned.contains("removed 1 entries"), "{pruned}");
    let left = fs::read_dir(cache.join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar.zst"))
        .count();
    assert_eq!(left, 1);
    let usage = Command::new(support::bin())
        .args(["cache", "prune", "--cache-dir"])
        .arg(&cache)
        .output()
        .unwrap();
    assert!(
        !usage.status.success(),
        "prune needs --keep or --older-than"
    );
}

fn cache_last_used_days_ago(record: &str, days: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut value: serde_json::Value = serde_json::from_str(record).unwrap();
    value["last_used"] = (now - days * 86_400).into();
    serde_json::to_string_pretty(&value).unwrap()
}

fn find_exists(cache: &Path, stage: &str) -> bool {
    fs::read_dir(cache.join("layers"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .any(|e| {
            fs::read_to_string(e.path())
                .unwrap()
                .contains(&format!("\"name\": \"{stage}\""))
        })
}

/// Stages that delete, replace and create every kind of entry, deterministic under
/// `SOURCE_DATE_EPOCH`.
fn tricky_stages(f: &Fixture) {
    fs::create_dir_all(f.base().join("opt/dir")).unwrap();
    fs::write(f.base().join("opt/dir/old"), "old").unwrap();
    fs::write(f.base().join("etc/gone"), "gone").unwrap();
    fs::create_dir_all(f.base().join("usr/bin")).unwrap();
    fs::write(f.base().join("usr/bin/tool"), "tool").unwrap();
    f.collection(&["add", "remove", "special"]);
    f.stage(
        "add",
        r#"mkdir -p "$chroot/srv/data"
echo kept >"$chroot/srv/data/kept"
echo short-lived >"$chroot/srv/data/short-lived""#,
    );
    f.stage(
        "remove",
        r#"rm "$chroot/etc/gone" "$chroot/srv/data/short-lived"
rm -rf "$chroot/opt/dir"
mkdir "$chroot/opt/dir"
echo new >"$chroot/opt/dir/new""#,
    );
    // A capability whose xattr holds a newline byte (cap_dac_override + cap_fowner = 0x0a).
    f.stage(
        "special",
        r#"mkdir -p "$chroot/dev"
mknod "$chroot/dev/console7" c 5 7
mkfifo "$chroot/srv/fifo"
ln "$chroot/usr/bin/tool" "$chroot/usr/bin/tool-link"
setcap cap_net_raw+ep "$chroot/usr/bin/tool"
cp "$chroot/bin/busybox" "$chroot/usr/bin/ping"
setcap cap_dac_override,cap_fowner+ep "$chroot/usr/bin/ping""#,
    );
}

fn getcap(path: &Path) -> String {
    let out = Command::new("getcap").arg(path).output().unwrap();
    text(&out.stdout)
}

fn check_tricky_tree(root: &Path) {
    assert!(
        !root.join("etc/gone").exists(),
        "a base file deleted by a stage stays deleted"
    );
    assert!(
        !root.join("srv/data/short-lived").exists(),
        "deleted from an earlier layer"
    );
    assert_eq!(
        fs::read_to_string(root.join("srv/data/kept")).unwrap(),
        "kept\n"
    );
    assert!(
        !root.join("opt/dir/old").exists(),
        "an opaque dir hides what was below"
    );
    assert_eq!(
        fs::read_to_string(root.join("opt/dir/new")).unwrap(),
        "new\n"
    );
    let console = fs::symlink_metadata(root.join("dev/console7")).unwrap();
    assert!(console.file_type().is_char_device());
    assert_eq!(console.rdev(), libc::makedev(5, 7));
    assert!(fs::symlink_metadata(root.join("srv/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    let tool = fs::metadata(root.join("usr/bin/tool")).unwrap();
    let link = fs::metadata(root.join("usr/bin/tool-link")).unwrap();
    assert_eq!(tool.ino(), link.ino(), "the hard link survived");
    assert_eq!(tool.nlink(), 2);
    assert!(getcap(&root.join("usr/bin/tool")).contains("cap_net_raw=ep"));
    let ping = getcap(&root.join("usr/bin/ping"));
    assert!(ping.contains("cap_dac_override,cap_fowner=ep"), "{ping}");
    // No overlay bookkeeping leaks into the image.
    for entry in walk(root) {
        let meta = fs::symlink_metadata(&entry).unwrap();
        assert!(
            !(meta.file_type().is_char_device() && meta.rdev() == 0),
            "a whiteout in the image: {}",
            entry.display()
        );
        if !meta.file_type().is_symlink() {
            for name in xattr::list(&entry).unwrap() {
                assert!(
                    !name.to_string_lossy().starts_with("trusted.overlay."),
                    "{} carries {name:?}",
                    entry.display()
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for entry in fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&path));
        }
        out.push(path);
    }
    out
}

#[test]
fn whiteouts_opaque_dirs_devices_capabilities_and_hard_links_survive_layers_and_the_cache() {
    let f = Fixture::new();
    tricky_stages(&f);
    let cache = f.path().join("cache");
    ok(&f
        .build_command_with(&f.work(), Some(&cache), &[])
        .output()
        .unwrap());
    // The layers hold overlayfs' own records of it.
    let whiteout = fs::symlink_metadata(f.layer("02-remove").join("etc/gone")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert_eq!(
        xattr::get(
            f.layer("02-remove").join("opt/dir"),
            "trusted.overlay.opaque"
        )
        .unwrap(),
        Some(b"y".to_vec())
    );
    check_tricky_tree(&unpacked(&f.output(), &f.path().join("image")));
    let first = fs::read(f.output()).unwrap();

    // The same layers restored from the cache archives into another work dir.
    let out = f
        .build_command_with(&f.path().join("work2"), Some(&cache), &[])
        .output()
        .unwrap();
    ok(&out);
    for slug in ["01-add", "02-remove", "03-special"] {
        assert_eq!(status(&out, slug), "cached (cache)");
    }
    let restored = f.path().join("work2/layers/02-remove");
    assert_eq!(
        xattr::get(restored.join("opt/dir"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec()),
        "the opaque mark survives the cache"
    );
    check_tricky_tree(&unpacked(&f.output(), &f.path().join("image2")));
    assert_eq!(fs::read(f.output()).unwrap(), first);
}

#[test]
fn layers_make_the_same_os_image_as_no_layers() {
    let f = Fixture::new();
    tricky_stages(&f);
    let build = |work: &str, extra: &[&str]| -> Vec<u8> {
        let out = f
            .build_command_in(&f.path().join(work), extra)
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        ok(&out);
        fs::read(f.output()).unwrap()
    };
    let layered = build("layered", &[]);
    let plain = build("plain", &["--no-layers"]);
    assert!(
        f.path().join("plain/chroot/srv/data/kept").exists()
            && !f.path().join("plain/layers").exists(),
        "--no-layers writes the chroot directly"
    );
    assert!(
        layered == plain,
        "the layered OS image differs from the --no-layers one"
    );
}

#[test]
fn without_overlayfs_the_build_says_so_and_no_layers_works() {
    let f = Fixture::new();
    f.collection(&["one"]);
    f.stage("one", "echo one >\"$chroot/one\"");
    // A work dir on an overlay: overlayfs cannot use it as an upper dir.
    let outer = f.path().join("outer");
    for dir in ["lower", "upper", "work", "merged"] {
        fs::create_dir_all(outer.join(dir)).unwrap();
    }
    let build = |extra: &str| {
        let script = format!(
            "mount -t overlay overlay -o lowerdir={o}/lower,upperdir={o}/upper,workdir={o}/work {o}/merged && exec \"$@\" {extra}",
            o = outer.display()
        );
        let inner = f.build_command_in(&outer.join("merged/work"), &[]);
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
        .arg(inner.get_program())
        .args(inner.get_args());
        cmd.output().unwrap()
    };
    let out = build("");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("overlayfs cannot be mounted") && err.contains("--no-layers"),
        "{err}"
    );
    assert_eq!(
        err.trim_end()
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        1
    );
    let out = build("--no-layers");
    ok(&out);
    assert!(f.output().exists());
    assert!(mounts_below(&outer).is_empty());
}

#[test]
fn a_failed_stage_leaves_no_mount_and_no_process_and_the_builder_mounts_in_its_own_namespace() {
    let f = Fixture::new();
    f.collection(&["hang", "bad"]);
    let release = f.path().join("release");
    f.stage(
        "hang",
        &format!(
            r#"touch "$chroot/started"; while [ ! -e {} ]; do sleep 0.1; done"#,
            release.display()
        ),
    );
    f.stage("bad", "sleep 747474 &\nexit 4");
    let mut builder = f
        .build_command(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(20, || f
        .layer("01-hang")
        .join("started")
        .exists()));
    let own = fs::read_link(format!("/proc/{}/ns/mnt", builder.id())).unwrap();
    let host = fs::read_link("/proc/self/ns/mnt").unwrap();
    assert_ne!(
        own, host,
        "the builder mounts only in a namespace of its own"
    );
    assert!(mounts_below(&f.work().canonicalize().unwrap()).is_empty());
    fs::write(&release, "").unwrap();
    let status = builder.wait().unwrap();
    assert!(!status.success());
    assert!(eventually(10, || processes_with("sleep 747474").is_empty()));
    work_mounts_gone(&f, &f.work());
}

#[test]
fn until_stops_after_a_stage_without_an_artifact_and_resume_goes_on() {
    let f = Fixture::new();
    f.collection(&["one", "two", "three"]);
    for name in ["one", "two", "three"] {
        f.stage(name, &format!("echo {name} >>\"$work/ran\""));
    }
    let out = f.build(&["--until", "two"]);
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("stopped after stage 'two' (--until): no artifact was written")
            && err.contains("--resume-from three")
            && !err.contains("--until two --resume-from"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(f.work().join("ran")).unwrap(),
        "one\ntwo\n"
    );
    assert!(!f.output().exists());
    ok(&f.build(&["--resume-from", "three"]));
    assert_eq!(
        fs::read_to_string(f.work().join("ran")).unwrap(),
        "one\ntwo\nthree\n"
    );
    assert!(f.output().exists());

    let bad = f.build(&["--until", "nope"]);
    assert!(text(&bad.stderr).contains("unknown stage 'nope' for --until"));
    let before = f.build(&["--resume-from", "three", "--until", "one"]);
    assert!(text(&before.stderr).contains("--until one comes before --resume-from three"));
}

/// Runs `cmd` with a new pseudo-terminal as its controlling terminal and stdio; `input` is
/// typed once `ready` appears in the output. Returns the exit status and all output.
fn run_on_pty(mut cmd: Command, ready: &str, input: &str) -> (std::process::ExitStatus, String) {
    use std::io::{Read, Write};
    use std::os::unix::process::CommandExt;
    let pty = nix::pty::openpty(None, None).unwrap();
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(Stdio::from(pty.slave.try_clone().unwrap()));
    // SAFETY: setsid and ioctl are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // Only the child may hold the slave, so the master reads EOF (EIO) when it is done.
    drop(cmd);
    drop(pty.slave);
    let output = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let mut reader = std::fs::File::from(pty.master.try_clone().unwrap());
    let sink = output.clone();
    let reading = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let seen = |needle: &str| String::from_utf8_lossy(&output.lock().unwrap()).contains(needle);
    assert!(
        eventually(60, || seen(ready)),
        "never saw {ready:?}:\n{}",
        String::from_utf8_lossy(&output.lock().unwrap())
    );
    let mut writer = std::fs::File::from(pty.master);
    writer.write_all(input.as_bytes()).unwrap();
    let status = child.wait().unwrap();
    drop(writer);
    let _ = reading.join();
    let all = String::from_utf8_lossy(&output.lock().unwrap()).into_owned();
    (status, all)
}

#[test]
fn shell_on_failure_opens_a_shell_in_the_failed_stages_tree_on_a_terminal_and_shell_opens_any_layer_later(
) {
    let f = Fixture::new();
    f.collection(&["good", "bad"]);
    f.stage("good", "echo good >\"$chroot/good\"");
    f.stage(
        "bad",
        "echo left-by-the-failed-stage >\"$chroot/failed-marker\"; exit 3",
    );
    let cmd = f.build_command(&["--shell-on-failure"]);
    let (status, output) = run_on_pty(
        cmd,
        "Exit the shell to end the build",
        "cat /good /failed-marker; echo shell-says-$((6*7)); exit\n",
    );
    assert!(!status.success(), "the build ends with the stage's failure");
    assert!(
        output.contains("good\r\nleft-by-the-failed-stage\r\n") && output.contains("shell-says-42"),
        "the shell saw the failed stage's tree:\n{output}"
    );
    let after = &output[output.find("shell-says-42").unwrap()..];
    assert!(
        after.contains("stage 'bad' failed") && after.contains("exited with status 3"),
        "the failure follows the shell:\n{output}"
    );
    work_mounts_gone(&f, &f.work());

    // Without a terminal there is no shell, and it says so.
    let out = f
        .build_command(&["--shell-on-failure"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("stdin is not a terminal"));

    // The tree stays inspectable after the build with `shell WORK_DIR`: its stdout, once it
    // succeeded.
    let shell = |args: &[&str]| {
        let out = Command::new(support::bin())
            .arg("shell")
            .arg(f.work())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    assert_eq!(
        shell(&["--", "/bin/cat", "/failed-marker", "/good"]),
        "left-by-the-failed-stage\ngood\n"
    );
    let listed = shell(&["--stage", "good", "--", "/bin/ls", "/"]);
    assert!(listed.contains("good") && !listed.contains("failed-marker"));
    // `--stage base`: the base layer alone, before any stage.
    let listed = shell(&["--stage", "base", "--", "/bin/ls", "/"]);
    assert!(
        listed.contains("bin") && !listed.contains("good") && !listed.contains("failed-marker"),
        "{listed}"
    );
    work_mounts_gone(&f, &f.work());
}

#[test]
fn build_stemcell_runs_its_stages_on_layers_over_the_unpacked_os_image() {
    let f = Fixture::new();
    fs::write(f.base().join("etc/from-the-os-image"), "os\n").unwrap();
    let image = f.pack_base("os-image.tgz");
    f.collection(&["agent_in", "dev_tools"]);
    f.stage(
        "agent_in",
        r#"mkdir -p "$chroot/var/vcap/bosh/bin"
cp "$agent_binary" "$chroot/var/vcap/bosh/bin/bosh-agent"
cat "$chroot/etc/from-the-os-image" >"$chroot/seen-os""#,
    );
    f.stage(
        "dev_tools",
        r#"mkdir -p "$chroot/var/vcap/bosh/etc"; echo /usr/bin/cc >"$chroot/var/vcap/bosh/etc/dev_tools_file_list""#,
    );
    let cache = f.path().join("cache");
    let agent = f.path().join("agent");
    let stemcell = |agent_text: &str| {
        fs::write(&agent, agent_text).unwrap();
        fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let out = f.stemcell_command(&image, &agent, &cache).output().unwrap();
        ok(&out);
        out
    };
    let first = stemcell("#!/bin/sh\n# agent v1\n");
    assert_eq!(status(&first, "01-agent_in"), "ran (new: not built before)");
    assert_eq!(
        fs::read_to_string(f.layer("00-base").join("etc/from-the-os-image")).unwrap(),
        "os\n",
        "layer 0 is the unpacked OS image"
    );
    assert_eq!(
        fs::read_to_string(f.layer("01-agent_in").join("seen-os")).unwrap(),
        "os\n"
    );
    assert!(!f
        .layer("01-agent_in")
        .join("etc/from-the-os-image")
        .exists());
    let tarball = f
        .out_dir()
        .join("bosh-stemcell-1.2-warden-boshlite-debian-trixie-go_agent.tgz");
    assert!(tarball.exists());

    // A new agent binary is a new input of every stage's layer.
    let second = stemcell("#!/bin/sh\n# agent v2\n");
    assert_eq!(status(&second, "00-os-image"), "cached (work dir)");
    assert_eq!(status(&second, "01-agent_in"), "ran (settings changed)");
    assert_eq!(
        fs::read_to_string(f.layer("01-agent_in").join("var/vcap/bosh/bin/bosh-agent")).unwrap(),
        "#!/bin/sh\n# agent v2\n"
    );
    let third = stemcell("#!/bin/sh\n# agent v2\n");
    assert_eq!(status(&third, "01-agent_in"), "cached (work dir)");
    assert_eq!(status(&third, "02-dev_tools"), "cached (work dir)");
    work_mounts_gone(&f, &f.work());
}

#[test]
fn a_new_commit_of_the_stages_checkout_reruns_system_parameters_alone_instead_of_reusing_its_layer()
{
    let f = Fixture::new();
    // write_file gives its files to root:root, which the tree's own user database names.
    fs::write(
        f.base().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\n",
    )
    .unwrap();
    fs::write(f.base().join("etc/group"), "root:x:0:\n").unwrap();
    let image = f.pack_base("os-image.tgz");
    // The commit is scoped to system_parameters, as the shipped collections.yml scopes it: the
    // stage before it neither sees it nor reruns for a new commit.
    fs::write(
        f.stages().join("collections.yml"),
        "scoped_settings:\n  stemcell_git_sha1: [system_parameters]\ncollections:\n  test: [before, system_parameters]\n",
    )
    .unwrap();
    f.stage(
        "before",
        r#"echo "${stemcell_git_sha1-unset}" >"$chroot/seen-by-before"
grep -c stemcell_git_sha1 "$build_settings_file" >"$chroot/in-build-settings" || true"#,
    );
    let stage = f.stages().join("system_parameters");
    fs::create_dir_all(&stage).unwrap();
    fs::copy(
        support::repo().join("stages/system_parameters/apply.sh"),
        stage.join("apply.sh"),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args([
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args)
            .current_dir(f.stages())
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    };
    let commit = |message: &str| {
        fs::write(f.stages().join("NOTES"), message).unwrap();
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", message]);
        git(&["rev-parse", "HEAD"])
    };
    let agent = f.path().join("agent");
    fs::write(&agent, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let stemcell = |extra: &[&str]| {
        f.stemcell_command(&image, &agent, &f.path().join("cache"))
            // The stage's layer is what is checked; packaging needs stages this test has not.
            .args(["--until", "system_parameters"])
            .args(extra)
            .output()
            .unwrap()
    };
    let recorded = || {
        fs::read_to_string(
            f.layer("02-system_parameters")
                .join("var/vcap/bosh/etc/stemcell_git_sha1"),
        )
        .unwrap()
    };

    // Outside a checkout: the commit the builder itself was built from (an installed binary
    // with its shipped stages); `--set` gives another.
    ok(&stemcell(&[]));
    let builder = Command::new("git")
        .arg("-C")
        .arg(support::repo())
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    assert_eq!(recorded(), text(&builder.stdout).trim());
    let given = "0123456789abcdef0123456789abcdef01234567";
    ok(&stemcell(&["--set", &format!("stemcell_git_sha1={given}")]));
    assert_eq!(recorded(), given);

    // A build after a new commit: only system_parameters reruns.
    let rerun_alone = || {
        let out = stemcell(&[]);
        ok(&out);
        assert_eq!(status(&out, "01-before"), "cached (work dir)");
        assert_eq!(
            status(&out, "02-system_parameters"),
            "ran (settings changed)"
        );
    };
    git(&["init", "-q"]);
    let first = commit("first");
    rerun_alone();
    assert_eq!(recorded(), first);
    let before = f.layer("01-before");
    assert_eq!(
        fs::read_to_string(before.join("seen-by-before")).unwrap(),
        "unset\n"
    );
    assert_eq!(
        fs::read_to_string(before.join("in-build-settings")).unwrap(),
        "0\n"
    );

    // The stage's files are the same at the next commit; the recorded commit is not.
    let second = commit("second");
    rerun_alone();
    assert_eq!(recorded(), second);
    let out = stemcell(&[]);
    ok(&out);
    assert_eq!(status(&out, "02-system_parameters"), "cached (work dir)");

    // Uncommitted changes to tracked files are marked, as the reference marks them.
    fs::write(f.stages().join("NOTES"), "edited").unwrap();
    let out = stemcell(&[]);
    ok(&out);
    assert_eq!(recorded(), format!("{second}+"));
    work_mounts_gone(&f, &f.work());
}
