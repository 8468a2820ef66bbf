//! chroot-exec and the stage sandbox, for real: namespaces, mounts, /dev, the environment, and
//! that nothing (mount or process) survives the command or a SIGKILLed builder.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use support::{busybox_root, eventually, mounts_below, probe_root, processes_with, text, Fixture};

fn chroot_exec(root: &std::path::Path, script: &str) -> std::process::Output {
    Command::new(support::bin())
        .arg("chroot-exec")
        .arg(root)
        .args(["--", "/bin/sh", "-c", script])
        .env("FOO_SECRET", "leak")
        .env("http_proxy", "http://proxy.invalid:3128")
        .output()
        .unwrap()
}

#[test]
fn runs_inside_the_tree_with_fresh_namespaces_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_root(&root);
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();

    let out = chroot_exec(
        &root,
        r#"set -e
echo "pid=$$"
echo "env=$(env | sort | tr '\n' ' ')"
if hostname changed-inside 2>/dev/null; then echo hostname-set; else echo hostname-denied; fi
test -c /dev/null && test -c /dev/urandom && test -c /dev/tty && echo devices-ok
test -e /dev/pts/ptmx && echo devpts-ok
grep -q ' /proc proc ' /proc/mounts && echo proc-ok
grep -E ' /sys sysfs ro[ ,]' /proc/mounts >/dev/null && echo sys-ro-ok
/usr/sbin/policy-rc.d || echo "policy=$?"
if echo x >/etc/resolv.conf 2>/dev/null; then echo resolv-writable; else echo resolv-ro; fi
exit 7"#,
    );
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "exit status passes through: {stdout} {}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("pid=2\n"),
        "the command runs under a fresh PID namespace's init: {stdout}"
    );
    assert!(
        stdout.contains("devices-ok") && stdout.contains("devpts-ok"),
        "{stdout}"
    );
    assert!(
        stdout.contains("proc-ok") && stdout.contains("sys-ro-ok"),
        "{stdout}"
    );
    assert!(stdout.contains("policy=101"), "{stdout}");
    assert!(
        stdout.contains("hostname-denied"),
        "no CAP_SYS_ADMIN, not even in its own UTS namespace: {stdout}"
    );
    assert!(stdout.contains("resolv-ro"), "{stdout}");
    assert!(
        !stdout.contains("FOO_SECRET"),
        "clean environment: {stdout}"
    );
    assert!(
        stdout.contains("http_proxy=http://proxy.invalid:3128"),
        "proxies pass: {stdout}"
    );
    assert!(
        stdout.contains("LANG=C.UTF-8") && stdout.contains("DEBIAN_FRONTEND=noninteractive"),
        "{stdout}"
    );

    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname,
        "host hostname untouched"
    );
    assert!(
        mounts_below(&root).is_empty(),
        "no mount left: {:?}",
        mounts_below(&root)
    );
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d removed after the run"
    );
    assert_eq!(
        fs::read_to_string(root.join("etc/resolv.conf")).unwrap(),
        "",
        "tree's resolv.conf untouched"
    );
}

#[test]
fn daemons_started_in_the_chroot_die_with_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    busybox_root(&root);
    let out = chroot_exec(
        &root,
        "sleep 424242 </dev/null >/dev/null 2>&1 & echo started",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        eventually(5, || processes_with("sleep 424242").is_empty()),
        "the background sleep was killed"
    );
}

#[test]
fn a_missing_root_is_a_clear_error() {
    let out = Command::new(support::bin())
        .args(["chroot-exec", "/nonexistent-root", "--", "/bin/true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("chroot /nonexistent-root does not exist"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn sigkill_of_the_builder_mid_stage_leaves_no_mount_and_no_process() {
    let f = Fixture::new();
    f.collection(&["hang"]);
    f.stage(
        "hang",
        r#"run_in_chroot "$chroot" 'sleep 515151 & touch /inside-started; sleep 525252'"#,
    );
    let mut builder = f
        .build_command(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        eventually(20, || f.layer("01-hang").join("inside-started").exists()),
        "stage reached the chroot (its write landed in its layer)"
    );
    let work = f.work().canonicalize().unwrap();
    assert!(
        mounts_below(&work).is_empty(),
        "stage mounts (the layer overlay, /proc) are invisible to the host: {:?}",
        mounts_below(&work)
    );
    assert!(!processes_with("sleep 525252").is_empty());

    builder.kill().unwrap(); // SIGKILL
    builder.wait().unwrap();

    assert!(
        eventually(10, || processes_with("sleep 515151").is_empty()
            && processes_with("sleep 525252").is_empty()),
        "stage processes survived: {:?}",
        processes_with("sleep 5")
    );
    assert!(
        mounts_below(&work).is_empty(),
        "mounts leaked: {:?}",
        mounts_below(&work)
    );
    assert!(
        processes_with(&f.work().display().to_string()).is_empty(),
        "no stage process left"
    );
    // No output under the final name.
    assert!(!f.output().exists());
}

// ---------------------------------------------------------------------------------------------
// The sandbox: every escape a hostile OS image could try from inside chroot-exec fails, and the
// host is checked to be unchanged afterwards.

fn run_in(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new(support::bin())
        .arg("chroot-exec")
        .arg(root)
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Output of `sh -c script` inside, stdout and stderr together.
fn shell_in(root: &Path, script: &str) -> (Option<i32>, String) {
    let out = run_in(root, &["/bin/sh", "-c", script]);
    (
        out.status.code(),
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
    )
}

#[test]
fn a_double_chroot_from_inside_cannot_reach_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let marker = dir.path().join("escaped-marker");
    let out = run_in(
        &root,
        &["/bin/probe", "chroot-escape", marker.to_str().unwrap()],
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !marker.exists(),
        "the double chroot() escape wrote {} on the host: {said}",
        marker.display()
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("creating the host file failed"),
        "chroot() itself is allowed, but climbing out finds only the tree: {said}"
    );
}

#[test]
fn host_sysctls_cannot_be_written_through_proc_sys() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let sysctl = "/proc/sys/kernel/printk_ratelimit_burst";
    let before = fs::read_to_string(sysctl).unwrap();
    let changed = before.trim().parse::<u32>().unwrap() + 1;
    let (code, said) = shell_in(
        &root,
        &format!(
            "if echo {changed} > {sysctl}; then echo sysctl-written; else echo sysctl-denied; fi
             if echo h > /proc/sysrq-trigger; then echo sysrq-written; else echo sysrq-denied; fi
             grep -E ' /proc/sys [a-z]+ ro[ ,]' /proc/mounts >/dev/null && echo proc-sys-ro"
        ),
    );
    let after = fs::read_to_string(sysctl).unwrap();
    if after != before {
        fs::write(sysctl, &before).unwrap(); // put the host back before failing
    }
    assert_eq!(after, before, "the host's {sysctl} changed: {said}");
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("sysctl-denied") && said.contains("sysrq-denied"),
        "{said}"
    );
    assert!(said.contains("proc-sys-ro"), "{said}");
}

#[test]
fn sys_is_read_only_and_cannot_be_remounted() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let (code, said) = shell_in(
        &root,
        "if mount -o remount,rw /sys; then echo remounted; else echo remount-denied; fi
         if mount -t sysfs sysfs /tmp; then echo mounted; else echo mount-denied; fi
         grep -E ' /sys sysfs ro[ ,]' /proc/mounts >/dev/null && echo sys-still-ro
         if touch /sys/kernel/x 2>/dev/null; then echo sys-written; else echo sys-write-denied; fi
         echo firmware-entries=$(ls /sys/firmware | wc -l)",
    );
    assert_eq!(code, Some(0), "{said}");
    for expected in [
        "remount-denied",
        "mount-denied",
        "sys-still-ro",
        "sys-write-denied",
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
    assert!(
        said.contains("firmware-entries=0\n"),
        "/sys/firmware is masked by an empty tmpfs: {said}"
    );
    assert!(mounts_below(&root).is_empty());
}

/// The major:minor of the block device holding the host's `/` (or any block device).
fn a_host_block_device() -> (u64, u64) {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root_dev = mountinfo
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .map(|f| f[2].to_string())
        .unwrap();
    let pick = if Path::new("/sys/dev/block").join(&root_dev).exists() {
        root_dev
    } else {
        fs::read_dir("/sys/dev/block")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .expect("a block device on the host")
    };
    let (major, minor) = pick.split_once(':').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

#[test]
fn a_block_device_of_the_host_disk_cannot_be_made_or_opened() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let (major, minor) = a_host_block_device();
    // An OS image can ship a device node anywhere in its tree: one is planted, as unpack of a
    // hostile image would leave it.
    nix::sys::stat::mknod(
        &root.join("planted-disk"),
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(major, minor),
    )
    .unwrap();
    let (code, said) = shell_in(
        &root,
        &format!(
            "if mknod /tmp/disk b {major} {minor}; then echo mknod-done; /bin/probe open-rw /tmp/disk; else echo mknod-denied; fi
             /bin/probe open-rw /planted-disk || echo planted-denied
             /bin/probe open-rw /dev/null-not-here 2>/dev/null; ls /dev"
        ),
    );
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("mknod-denied"), "{said}");
    assert!(
        said.contains("planted-denied") && !said.contains("read 512 bytes"),
        "a device node shipped in the tree must not open: {said}"
    );
    let host_disk = format!("{major}:{minor}");
    assert!(
        !said.contains(&host_disk),
        "no host disk in the fresh /dev: {said}"
    );
}

fn lo_addresses() -> String {
    text(
        &Command::new("ip")
            .args(["-o", "addr", "show", "dev", "lo"])
            .output()
            .expect("ip runs (apt-get install iproute2)")
            .stdout,
    )
}

#[test]
fn the_host_network_is_reachable_but_cannot_be_reconfigured() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    // The link change asked for is a no-op (lo's own MTU), so even a broken sandbox leaves the
    // host as it was; it is refused for lack of CAP_NET_ADMIN before the value is looked at.
    let before = lo_addresses();
    let (code, said) = shell_in(
        &root,
        "if ip addr add 127.77.77.77/32 dev lo; then echo addr-added; else echo addr-denied; fi
         mtu=$(cat /sys/class/net/lo/mtu)
         if ip link set lo mtu $mtu; then echo link-changed; else echo link-denied; fi
         /bin/probe raw-socket || echo raw-denied
         ip -o addr show dev lo | grep -q 127.0.0.1 && echo host-lo-visible",
    );
    let after = lo_addresses();
    if after.contains("127.77.77.77") {
        let _ = Command::new("ip")
            .args(["addr", "del", "127.77.77.77/32", "dev", "lo"])
            .status();
    }
    assert_eq!(after, before, "the host's lo changed: {said}");
    assert_eq!(code, Some(0), "{said}");
    for expected in [
        "addr-denied",
        "link-denied",
        "raw-denied",
        "host-lo-visible",
    ] {
        assert!(said.contains(expected), "{expected}: {said}");
    }
}

#[test]
fn kernel_files_in_proc_are_masked_or_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let (code, said) = shell_in(
        &root,
        "for f in kcore keys timer_list sched_debug kallsyms; do
           test -e /proc/$f && echo $f=$(cat /proc/$f 2>/dev/null | wc -c)
         done
         for d in acpi scsi; do test -d /proc/$d && echo $d=$(ls /proc/$d | wc -l); done
         for p in sys sysrq-trigger irq bus; do
           grep -qE \" /proc/$p [a-z]+ ro[ ,]\" /proc/mounts && echo $p=ro
         done",
    );
    assert_eq!(code, Some(0), "{said}");
    // Kernels differ in what /proc has (this one may lack kcore or sysrq): every one the host
    // has must be hidden inside, and some must exist, or the test would prove nothing.
    let host_has = |p: &str| Path::new("/proc").join(p).exists();
    let masked: Vec<_> = ["kcore", "keys", "timer_list", "sched_debug", "kallsyms"]
        .into_iter()
        .filter(|f| host_has(f))
        .collect();
    assert!(
        masked.len() >= 2,
        "the host has {masked:?} of /proc's kernel files"
    );
    for file in masked {
        assert!(
            said.contains(&format!("{file}=0\n")),
            "/proc/{file} reads empty: {said}"
        );
    }
    for dir in ["acpi", "scsi"].into_iter().filter(|d| host_has(d)) {
        assert!(
            said.contains(&format!("{dir}=0\n")),
            "/proc/{dir} is empty: {said}"
        );
    }
    for path in ["sys", "sysrq-trigger", "irq", "bus"]
        .into_iter()
        .filter(|p| host_has(p))
    {
        assert!(said.contains(&format!("{path}=ro")), "/proc/{path}: {said}");
    }
    assert!(said.contains("sys=ro"), "{said}");
}

#[test]
fn descriptors_the_caller_left_open_do_not_reach_the_command() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    // A stage script with an fd on a host directory (`exec 7</`): openat(7, "..") would be a
    // way out of the tree.
    let host_dir = fs::File::open(dir.path()).unwrap();
    let raw = host_dir.as_raw_fd();
    let mut command = Command::new(support::bin());
    command.arg("chroot-exec").arg(&root).args([
        "--",
        "/bin/sh",
        "-c",
        "if [ -e /proc/self/fd/7 ]; then echo fd7-open; ls /proc/self/fd/7/; else echo fd7-closed; fi",
    ]);
    // SAFETY: dup2 is async-signal-safe; it runs between fork and exec.
    unsafe {
        command.pre_exec(move || {
            if libc::dup2(raw, 7) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(said.contains("fd7-closed"), "{said}");
}

/// Capability numbers (linux/capability.h) the sandbox must never hand out.
const DENIED_CAPS: &[(&str, u32)] = &[
    ("DAC_READ_SEARCH", 2),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_PTRACE", 19),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_TIME", 25),
    ("MKNOD", 27),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("PERFMON", 38),
    ("BPF", 39),
];

#[test]
fn capabilities_no_new_privs_and_seccomp_are_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let (code, said) = shell_in(
        &root,
        "grep -E '^(Cap|NoNewPrivs|Seccomp:)' /proc/self/status",
    );
    assert_eq!(code, Some(0), "{said}");
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let line = said
            .lines()
            .find(|l| l.starts_with(set))
            .unwrap_or_else(|| panic!("{set} in {said}"));
        let bits = u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap();
        for (name, bit) in DENIED_CAPS {
            assert_eq!(bits & (1 << bit), 0, "CAP_{name} in {set}: {said}");
        }
    }
    assert!(said.contains("NoNewPrivs:\t1"), "{said}");
    assert!(said.contains("Seccomp:\t2"), "a seccomp filter: {said}");
}

#[test]
fn modules_the_clock_keyrings_and_user_namespaces_are_out_of_reach() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    fs::write(root.join("tmp/evil.ko"), b"\x7fELF not really a module").unwrap();
    // Setting the clock to the time it already has: even a broken sandbox changes nothing.
    let (code, said) = shell_in(
        &root,
        "insmod /tmp/evil.ko; echo insmod=$?
         date -s @$(date +%s) >/dev/null
         /bin/probe keyctl; echo keyctl=$?
         /bin/probe userns; echo userns=$?
         unshare -U true; echo unshare=$?",
    );
    assert_eq!(code, Some(0), "{said}");
    for step in ["insmod", "keyctl", "userns", "unshare"] {
        assert!(
            !said.contains(&format!("{step}=0\n")),
            "{step} succeeded: {said}"
        );
    }
    // Refused for lack of privilege, not for a bad argument.
    if Path::new("/proc/modules").exists() {
        assert!(
            said.contains("can't insert '/tmp/evil.ko': Operation not permitted"),
            "{said}"
        );
    }
    for refusal in [
        "can't set date: Operation not permitted",
        "keyctl(KEYCTL_GET_KEYRING_ID, user keyring) failed: Operation not permitted",
        "unshare(CLONE_NEWUSER) failed: Operation not permitted",
        "unshare(0x10000000): Operation not permitted",
    ] {
        assert!(said.contains(refusal), "{refusal}: {said}");
    }
}

/// A loop device over `file`, detached when dropped, a failing test included.
struct LoopDevice(String);

impl LoopDevice {
    fn attach(file: &Path) -> LoopDevice {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(file)
            .output()
            .expect("losetup runs (util-linux)");
        assert!(out.status.success(), "losetup: {}", text(&out.stderr));
        LoopDevice(text(&out.stdout).trim().to_string())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn device_binds_exactly_the_devices_named_and_refuses_anything_else() {
    let dir = tempfile::tempdir().unwrap();
    let root = probe_root(dir.path());
    let disk = dir.path().join("disk.img");
    fs::write(&disk, vec![0x55u8; 1 << 20]).unwrap();
    let device = LoopDevice::attach(&disk);
    let out = Command::new(support::bin())
        .arg("chroot-exec")
        .args(["--device", &device.0])
        .arg(&root)
        .args([
            "--",
            "/bin/sh",
            "-c",
            &format!("ls /dev; /bin/probe open-rw {}", device.0),
        ])
        .output()
        .unwrap();
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains(&format!("read 512 bytes from {}", device.0)),
        "{said}"
    );
    let name = device.0.trim_start_matches("/dev/");
    let loops: Vec<&str> = said.lines().filter(|l| l.starts_with("loop")).collect();
    assert_eq!(loops, [name], "only the device named: {said}");

    for bad in ["/etc/passwd", "/dev/../etc/passwd", "/dev/no-such-device"] {
        let out = Command::new(support::bin())
            .args(["chroot-exec", "--device", bad])
            .arg(&root)
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        let err = text(&out.stderr);
        assert!(!out.status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!("--device {bad}: not a device node under /dev")),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What must keep working inside the sandbox: apt, for real.

#[test]
fn apt_get_install_of_a_package_with_a_service_works_and_starts_nothing() {
    let (image, _) = support::default_os_image();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let unpack = Command::new(support::bin())
        .arg("unpack")
        .arg(&image)
        .arg(&root)
        .output()
        .unwrap();
    assert!(unpack.status.success(), "{}", text(&unpack.stderr));
    assert!(
        !root.join("usr/sbin/atd").exists(),
        "the OS image must not have `at` already"
    );
    // at's postinst starts atd through deb-systemd-invoke / invoke-rc.d, which ask policy-rc.d.
    let out = run_in(
        &root,
        &[
            "/bin/bash",
            "-ec",
            "apt-get update -q
             apt-get install -y -q --no-install-recommends at
             dpkg-query -W -f='status=${Status}\n' at",
        ],
    );
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "apt-get install at failed:\n{said}");
    assert!(said.contains("status=install ok installed"), "{said}");
    assert!(
        said.contains("policy-rc.d denied execution") || said.contains("policy-rc.d returned 101"),
        "the service start was asked for and refused: {said}"
    );
    assert!(root.join("usr/sbin/atd").exists());
    assert!(
        processes_with("/usr/sbin/atd").is_empty() && processes_with(" atd").is_empty(),
        "no atd runs"
    );
    assert!(
        !root.join("usr/sbin/policy-rc.d").exists(),
        "policy-rc.d removed"
    );
    assert!(mounts_below(&root).is_empty(), "{:?}", mounts_below(&root));
}

// ---------------------------------------------------------------------------------------------
// Trees whose symlinks point at the host: chroot-exec writes nothing there and deletes nothing.

/// Every entry below `dir`: path, kind, mode and contents (symlink targets for links).
fn snapshot(dir: &Path) -> Vec<String> {
    let mut entries = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let what = if meta.is_dir() {
            let mut children: Vec<_> = fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            stack.extend(children);
            "dir".to_string()
        } else if meta.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&path).unwrap().display())
        } else {
            format!("{:?}", text(&fs::read(&path).unwrap()))
        };
        use std::os::unix::fs::MetadataExt;
        entries.push(format!("{} {:o} {what}", path.display(), meta.mode()));
    }
    entries
}

/// A host directory that no tree may touch. With `policy`, its `sbin` holds a policy-rc.d that
/// is byte for byte ours: exactly what a clean-up following the tree's symlinks would delete.
/// Without, its `sbin` is where a write following them would land.
fn host_canary(dir: &Path, policy: bool) -> PathBuf {
    let host = dir.join("host");
    fs::create_dir_all(host.join("sbin")).unwrap();
    if policy {
        fs::write(
            host.join("sbin/policy-rc.d"),
            stemcell_builder::chroot::policy_rc::CONTENT,
        )
        .unwrap();
    }
    fs::write(host.join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
    fs::write(host.join("canary"), "host file\n").unwrap();
    host
}

fn replace_with_symlink(root: &Path, entry: &str, target: &Path) {
    let path = root.join(entry);
    if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(&path).unwrap();
    } else {
        let _ = fs::remove_file(&path);
    }
    std::os::unix::fs::symlink(target, &path).unwrap();
}

#[test]
fn a_tree_whose_usr_or_etc_points_at_the_host_gets_nothing_written_or_deleted_there() {
    for (entry, host_part) in [
        ("usr", ""),
        ("usr/sbin", "sbin"),
        ("etc", ""),
        ("etc/resolv.conf", "resolv.conf"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = probe_root(dir.path());
        let host = host_canary(dir.path(), false);
        let target = if host_part.is_empty() {
            host.clone()
        } else {
            host.join(host_part)
        };
        replace_with_symlink(&root, entry, &target);
        let before = snapshot(&host);
        // The host directory is looked at while the command runs: policy-rc.d is in place then.
        let mut child = Command::new(support::bin())
            .arg("chroot-exec")
            .arg(&root)
            .args([
                "--",
                "/bin/sh",
                "-c",
                "touch /started; while [ ! -e /stop ]; do sleep 0.05; done; cat /etc/resolv.conf",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = eventually(10, || root.join("started").exists());
        let during = snapshot(&host);
        // The command ends before any assertion, so a failure leaves no process behind.
        fs::write(root.join("stop"), "").unwrap();
        if !started {
            let _ = child.kill();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            started,
            "{entry}: the command started: {}",
            text(&out.stderr)
        );
        assert_eq!(during, before, "{entry}: host changed during the run");
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "{entry}: {}",
            text(&out.stderr)
        );
        assert!(
            !text(&out.stdout).contains("192.0.2.1"),
            "{entry}: the host directory's resolv.conf is not the tree's"
        );
        assert_eq!(snapshot(&host), before, "{entry}: host changed");
        assert!(mounts_below(dir.path()).is_empty(), "{entry}");
    }
}

#[test]
fn the_build_clean_up_never_deletes_a_hosts_policy_rc_d() {
    let f = Fixture::new();
    let host = host_canary(f.path(), true);
    replace_with_symlink(&f.base(), "usr", &host);
    let before = snapshot(&host);
    f.collection(&["noop"]);
    f.stage("noop", "true");
    let out = f.build(&[]);
    assert_eq!(snapshot(&host), before, "build: {}", text(&out.stderr));
    assert!(out.status.success(), "{}", text(&out.stderr));
}

// ---------------------------------------------------------------------------------------------
// Properties, over generated inputs (bounded: CI runs them every time).

mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};

    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A command-line argument: any bytes but NUL, which argv cannot hold.
    fn argument() -> impl Strategy<Value = OsString> {
        proptest::collection::vec(1u8..=255, 0..40).prop_map(OsString::from_vec)
    }

    /// One probe tree, made once: the properties only read it.
    fn shared_root() -> &'static Path {
        static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
        &ROOT
            .get_or_init(|| {
                let dir = tempfile::tempdir().unwrap();
                let root = probe_root(dir.path());
                (dir, root)
            })
            .1
    }

    proptest! {
        #![proptest_config(config(40))]

        #[test]
        fn argv_and_exit_status_pass_through_unchanged(
            args in proptest::collection::vec(argument(), 0..6),
            code in 0u8..=255,
        ) {
            let root = shared_root();
            let out = Command::new(support::bin())
                .arg("chroot-exec")
                .arg(root)
                .args(["--", "/bin/probe", "args", &code.to_string()])
                .args(&args)
                .output()
                .unwrap();
            prop_assert_eq!(out.status.code(), Some(code as i32), "{}", text(&out.stderr));
            let mut expected = vec![];
            for arg in &args {
                expected.extend_from_slice(arg.as_bytes());
                expected.push(0);
            }
            prop_assert_eq!(out.stdout, expected);
        }
    }

    /// What an entry of a generated tree is.
    #[derive(Debug, Clone, Copy)]
    enum Shape {
        Unchanged,
        Missing,
        Dir,
        File,
        ToHostDir,
        ToHostFile,
        ClimbingToHost,
        Dangling,
        Loop,
    }

    fn shape() -> impl Strategy<Value = Shape> {
        prop_oneof![
            Just(Shape::Unchanged),
            Just(Shape::Missing),
            Just(Shape::Dir),
            Just(Shape::File),
            Just(Shape::ToHostDir),
            Just(Shape::ToHostFile),
            Just(Shape::ClimbingToHost),
            Just(Shape::Dangling),
            Just(Shape::Loop),
        ]
    }

    /// Entries chroot-exec reads, writes or mounts onto, parents first.
    const ENTRIES: &[&str] = &[
        "usr",
        "usr/sbin",
        "usr/sbin/policy-rc.d",
        "etc",
        "etc/resolv.conf",
        "proc",
        "sys",
        "dev",
        "tmp",
    ];

    fn shape_tree(root: &Path, host: &Path, shapes: &[Shape]) {
        for (entry, shape) in ENTRIES.iter().zip(shapes) {
            let path = root.join(entry);
            // A parent made a symlink or a file: its children cannot be shaped.
            if !fs::symlink_metadata(path.parent().unwrap()).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            let link = |target: PathBuf| replace_with_symlink(root, entry, &target);
            let depth = entry.matches('/').count() + root.components().count() + 2;
            match shape {
                Shape::Unchanged => {}
                Shape::Missing => {
                    let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
                }
                Shape::Dir => {
                    let _ = fs::remove_file(&path);
                    let _ = fs::create_dir(&path);
                }
                Shape::File => {
                    let _ = fs::remove_dir_all(&path);
                    fs::write(&path, "tree file\n").unwrap();
                }
                Shape::ToHostDir => link(host.join("sbin")),
                Shape::ToHostFile => link(host.join("canary")),
                Shape::ClimbingToHost => {
                    link(PathBuf::from("../".repeat(depth)).join(host.strip_prefix("/").unwrap()))
                }
                Shape::Dangling => link(host.join("does-not-exist")),
                Shape::Loop => link(PathBuf::from(entry.rsplit('/').next().unwrap())),
            }
        }
    }

    proptest! {
        #![proptest_config(config(40))]

        #[test]
        fn generated_trees_never_touch_the_host(
            shapes in proptest::collection::vec(shape(), ENTRIES.len()),
            host_policy in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let root = probe_root(dir.path());
            let host = host_canary(dir.path(), host_policy);
            shape_tree(&root, &host, &shapes);
            let before = snapshot(&host);
            let out = Command::new(support::bin())
                .arg("chroot-exec")
                .arg(&root)
                .args(["--", "/bin/sh", "-c", "echo x > /tmp/x 2>/dev/null; true"])
                .output()
                .unwrap();
            let stderr = text(&out.stderr);
            prop_assert_eq!(snapshot(&host), before, "{}", stderr);
            prop_assert!(mounts_below(dir.path()).is_empty());
            // It runs, or it refuses with one line that says why.
            if !out.status.success() {
                prop_assert_eq!(stderr.lines().count(), 1, "{}", stderr);
                prop_assert!(stderr.contains("in the tree"), "{}", stderr);
            }
            let real_dirs = ["usr", "usr/sbin"]
                .iter()
                .all(|d| fs::symlink_metadata(root.join(d)).is_ok_and(|m| m.is_dir()));
            let ours = fs::symlink_metadata(root.join("usr/sbin/policy-rc.d"))
                .is_ok_and(|m| m.is_file())
                && fs::read_to_string(root.join("usr/sbin/policy-rc.d")).unwrap()
                    == stemcell_builder::chroot::policy_rc::CONTENT;
            prop_assert!(!(real_dirs && ours), "our policy-rc.d is removed after the run");
        }
    }
}
