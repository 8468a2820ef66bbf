//! End to end: builds the default OS image (debian-trixie) with the real stages once, unpacks
//! the artifact, and checks each stage group's effect inside it. Needs root, network access to
//! the Debian archive and mmdebstrap; the base is cached under /var/cache/stemcell-builder.

mod support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use support::text;

struct Built {
    root: PathBuf,
    image: PathBuf,
    report: String,
}

fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let (image, report) = support::default_os_image();
        let dir = image.parent().unwrap().to_path_buf();
        let root = dir.join("root");
        let _ = fs::remove_dir_all(&root);
        let unpack = Command::new(support::bin())
            .arg("unpack")
            .arg(&image)
            .arg(&root)
            .output()
            .unwrap();
        assert!(unpack.status.success(), "{}", text(&unpack.stderr));
        assert!(text(&unpack.stdout).contains("checksum verified"));
        Built {
            root,
            image,
            report,
        }
    })
}

fn read(path: &str) -> String {
    let full = built().root.join(path.trim_start_matches('/'));
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

fn meta(path: &str) -> fs::Metadata {
    fs::symlink_metadata(built().root.join(path.trim_start_matches('/'))).unwrap()
}

fn exists(path: &str) -> bool {
    fs::symlink_metadata(built().root.join(path.trim_start_matches('/'))).is_ok()
}

fn link(path: &str) -> String {
    fs::read_link(built().root.join(path.trim_start_matches('/')))
        .unwrap()
        .display()
        .to_string()
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l.trim() == line)
}

fn enabled(unit: &str) -> bool {
    exists(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit}"
    ))
}

#[test]
fn artifact_sidecars_and_report() {
    let b = built();
    let sidecar = fs::read_to_string(b.image.with_extension("tgz.sha256")).unwrap();
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(b.image.with_extension("tgz.sha256"))
        .current_dir(b.image.parent().unwrap())
        .output()
        .unwrap();
    assert!(check.status.success(), "{sidecar}");
    let packages = fs::read_to_string(b.image.with_extension("tgz.packages.txt")).unwrap();
    for pkg in [
        "openssh-server ",
        "sudo ",
        "resolvconf ",
        "parted ",
        "runit ",
        "chrony ",
        "auditd ",
        "rsyslog-relp ",
        "sysstat ",
    ] {
        assert!(
            packages.lines().any(|l| l.starts_with(pkg)),
            "{pkg} in packages.txt"
        );
    }
    let report = &b.report;
    assert!(
        report.contains("duration report")
            && report.contains("00-base")
            && report.contains("30-os_image_cleanup"),
        "{report}"
    );
    assert!(report.contains("archive"), "{report}");
}

#[test]
fn apt_sources_and_packages() {
    let sources = read("/etc/apt/sources.list");
    assert!(
        sources.contains(" trixie main")
            && sources.contains(" trixie-updates ")
            && sources.contains(" trixie-security "),
        "{sources}"
    );
    assert!(read("/etc/apt/apt.conf.d/90stemcell").contains("APT::Install-Recommends \"false\""));
    assert!(
        exists("/usr/bin/dig") && exists("/usr/bin/crontab"),
        "agent needs dig, cron needs crontab"
    );
    for forbidden in ["telnetd", "rsh-server", "tftpd-hpa", "vsftpd", "gconf2"] {
        assert!(
            !exists(&format!("/var/lib/dpkg/info/{forbidden}.list")),
            "{forbidden} is not installed"
        );
    }
    let lists = fs::read_dir(built().root.join("var/lib/apt/lists")).unwrap();
    assert!(
        !lists
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with("_Packages")),
        "package lists cleaned"
    );
}

#[test]
fn file_permissions() {
    for file in ["/etc/passwd", "/etc/group"] {
        let m = meta(file);
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o644, 0, 0),
            "{file}"
        );
    }
    for file in ["/etc/shadow", "/etc/gshadow"] {
        let m = meta(file);
        assert_eq!(
            (m.mode() & 0o7777, m.uid(), m.gid()),
            (0o000, 0, 0),
            "{file}"
        );
    }
    let passwd = read("/etc/passwd");
    assert!(
        passwd
            .lines()
            .filter(|l| !l.starts_with('#'))
            .all(|l| l.split(':').nth(1) == Some("x")),
        "no hashes in passwd"
    );
    // As the reference keeps them: su and sudo (sudoedit is a link to sudo).
    let allowed = ["/usr/bin/sudo", "/usr/bin/su"];
    let mut stack = vec![built().root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap().flatten() {
            let m = entry.metadata().unwrap();
            let rel = format!(
                "/{}",
                entry.path().strip_prefix(&built().root).unwrap().display()
            );
            if m.is_dir() {
                stack.push(entry.path());
            } else if m.is_file() && m.mode() & 0o6000 != 0 {
                assert!(
                    allowed.contains(&rel.as_str()),
                    "unexpected setuid/setgid {rel}"
                );
            }
        }
    }
    assert!(
        meta("/usr/bin/sudo").mode() & 0o4000 != 0,
        "sudo keeps setuid"
    );
}

/// `sshd -T` inside the image: the configuration sshd itself would run with. A host key is made
/// for the run and removed; a drop-in that tries to weaken the hardening is added for one run.
fn sshd_effective(drop_in: Option<&str>) -> String {
    let script = "set -e
mkdir -p /run/sshd
key=$(mktemp -u /tmp/sshd-T.XXXXXX)
ssh-keygen -q -t ed25519 -N '' -f \"$key\"
if [ -n \"$1\" ]; then printf '%s\\n' \"$1\" >/etc/ssh/sshd_config.d/50-weaken.conf; fi
status=0
/usr/sbin/sshd -T -h \"$key\" || status=$?
rm -f \"$key\" \"$key.pub\" /etc/ssh/sshd_config.d/50-weaken.conf
rmdir /run/sshd
exit $status";
    let out = Command::new(support::bin())
        .arg("chroot-exec")
        .arg("--no-resolv-conf")
        .arg(&built().root)
        .args([
            "--",
            "/bin/bash",
            "-c",
            script,
            "sshd-T",
            drop_in.unwrap_or(""),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "sshd -T: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn ssh_hardening_is_the_effective_configuration() {
    let expected = [
        "permitrootlogin no",
        "passwordauthentication no",
        "x11forwarding no",
        "maxauthtries 3",
        "permitemptypasswords no",
        "hostbasedauthentication no",
        "banner /etc/issue.net",
        "ignorerhosts yes",
        "clientaliveinterval 180",
        "clientalivecountmax 1",
        "logingracetime 60",
        // "Compression delayed" in the file: OpenSSH has only delayed compression left, "yes".
        "compression yes",
        "permituserenvironment no",
        "printlastlog yes",
        "allowgroups bosh_sshers",
        "denyusers root",
        "usedns no",
        "ciphers aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr",
        "macs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-512,hmac-sha2-256,umac-128@openssh.com",
    ];
    let effective = sshd_effective(None);
    for line in expected {
        assert!(has_line(&effective, line), "sshd -T has {line:?}");
    }
    // A drop-in (cloud-init writes one) cannot undo the hardening: it is read after it.
    let weakened = sshd_effective(Some(
        "PasswordAuthentication yes\nPermitRootLogin yes\nX11Forwarding yes",
    ));
    for line in [
        "passwordauthentication no",
        "permitrootlogin no",
        "x11forwarding no",
    ] {
        assert!(
            has_line(&weakened, line),
            "a drop-in cannot override {line:?}"
        );
    }

    // The reference's checks read sshd_config itself: the options are there, once each, above
    // the Include; exactly the RSA, ECDSA and Ed25519 host keys; the image carries no key.
    let config = read("/etc/ssh/sshd_config");
    let include = config
        .lines()
        .position(|l| l.starts_with("Include "))
        .expect("sshd_config includes sshd_config.d");
    let permit = config
        .lines()
        .position(|l| l == "PermitRootLogin no")
        .expect("PermitRootLogin no in sshd_config");
    assert!(permit < include, "the hardening precedes the Include");
    let keys: Vec<&str> = config
        .lines()
        .filter(|l| l.starts_with("HostKey"))
        .collect();
    assert_eq!(
        keys,
        [
            "HostKey /etc/ssh/ssh_host_rsa_key",
            "HostKey /etc/ssh/ssh_host_ecdsa_key",
            "HostKey /etc/ssh/ssh_host_ed25519_key"
        ]
    );
    assert!(!config.contains("X11DisplayOffset"));
    assert_eq!(meta("/etc/ssh/sshd_config").mode() & 0o777, 0o600);
    assert!(
        fs::read_dir(built().root.join("etc/ssh"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().starts_with("ssh_host_")),
        "no host keys in the image"
    );
    assert!(read("/etc/issue.net").contains("Unauthorized use is strictly prohibited"));
    assert!(read("/etc/default/motd-news").contains("ENABLED=0"));
}

#[test]
fn sysstat_environment_sysctl_limits() {
    assert!(has_line(&read("/etc/default/sysstat"), "ENABLED=\"true\""));
    let env = read("/etc/environment");
    assert!(
        env.lines()
            .any(|l| l.starts_with("PATH=") && l.contains("/var/vcap/bosh/bin")),
        "{env}"
    );
    // key=value, the form the reference's checks read.
    let sysctl = read("/etc/sysctl.d/60-bosh-sysctl.conf");
    for line in [
        "net.ipv6.conf.all.accept_redirects=0",
        "net.ipv4.tcp_syncookies=1",
        "kernel.randomize_va_space=2",
        "fs.suid_dumpable=0",
        "net.ipv6.route.flush=1",
    ] {
        assert!(has_line(&sysctl, line), "{line}");
    }
    let limits = read("/etc/security/limits.conf");
    assert!(
        limits
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["*", "hard", "core", "0"]),
        "no core dumps"
    );
}

#[test]
fn users_and_groups() {
    let passwd = read("/etc/passwd");
    let vcap = passwd
        .lines()
        .find(|l| l.starts_with("vcap:"))
        .expect("vcap user");
    let fields: Vec<&str> = vcap.split(':').collect();
    assert_eq!((fields[2], fields[6]), ("1000", "/bin/bash"));
    let group = read("/etc/group");
    let gid = fields[3];
    assert!(
        group
            .lines()
            .any(|l| l.starts_with("vcap:") && l.split(':').nth(2) == Some(gid)),
        "primary group vcap"
    );
    for g in ["bosh_sshers", "admin", "adm", "sudo"] {
        let line = group
            .lines()
            .find(|l| l.starts_with(&format!("{g}:")))
            .unwrap_or_else(|| panic!("group {g}"));
        assert!(
            line.split(':')
                .nth(3)
                .unwrap()
                .split(',')
                .any(|m| m == "vcap"),
            "vcap in {g}"
        );
    }
    assert!(group.lines().any(|l| l.starts_with("bosh_sudoers:")));
    let home = meta("/home/vcap");
    assert_eq!((home.mode() & 0o777, home.uid()), (0o700, 1000));
    for rc in ["/root/.bashrc", "/home/vcap/.bashrc", "/etc/skel/.bashrc"] {
        assert!(
            has_line(&read(rc), "source /etc/profile.d/00-bosh-ps1"),
            "{rc}"
        );
    }
    assert!(has_line(
        &read("/root/.bashrc"),
        "export PATH=/var/vcap/bosh/bin:$PATH"
    ));
    assert!(read("/root/.profile").contains(".bashrc"));
    let shadow = read("/etc/shadow");
    for user in ["root", "vcap"] {
        let hash = shadow
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .unwrap()
            .split(':')
            .nth(1)
            .unwrap()
            .to_string();
        assert!(
            hash.starts_with('!') || hash.starts_with('*'),
            "{user} password locked by default: {hash}"
        );
    }
    // No group may be joined with a password: locked ("*" or "!"), never empty or a hash.
    assert!(
        read("/etc/gshadow")
            .lines()
            .all(|l| matches!(l.split(':').nth(1), Some("*" | "!"))),
        "no group passwords"
    );
}

#[test]
fn monit_and_runit_for_the_agent() {
    // The reference's monit (5.2.5, built with the /var/vcap/bosh prefix), not Debian's: the
    // agent's plain POSTs start jobs only there.
    assert!(exists("/var/vcap/bosh/bin/monit-actual") && exists("/usr/bin/runsvdir"));
    assert!(!exists("/usr/bin/monit"), "Debian's monit is not installed");
    // A wrapper naming the BOSH control file: the agent runs `monit stop -g vcap` by name.
    assert!(
        read("/var/vcap/bosh/bin/monit")
            .contains("exec /var/vcap/bosh/bin/monit-actual -c /var/vcap/bosh/etc/monitrc \"$@\""),
        "{}",
        read("/var/vcap/bosh/bin/monit")
    );
    // runit's monit service, kept down until the agent's `sv start monit`.
    assert!(read("/etc/sv/monit/run").contains("/var/vcap/bosh/bin/monit -I"));
    assert!(exists("/etc/sv/monit/down") && exists("/var/vcap/monit/svlog"));
    let monitrc = read("/var/vcap/bosh/etc/monitrc");
    assert!(
        monitrc.contains("set httpd port 2822")
            && monitrc.contains("include /var/vcap/monit/job/*.monitrc")
    );
    assert_eq!(
        meta("/var/vcap/bosh/etc/monitrc").mode() & 0o777,
        0o700,
        "monit refuses a readable rc file"
    );
    assert!(exists("/etc/service"));
    assert!(enabled("runit.service"), "runsvdir starts at boot");
    assert!(
        !enabled("monit.service"),
        "the distribution's monit does not start: the agent runs it"
    );
}

#[test]
fn time_sync() {
    let chrony = read("/etc/chrony/chrony.conf");
    assert!(has_line(&chrony, "makestep 1 3"), "{chrony}");
    assert!(
        !chrony.lines().any(|l| l.starts_with("pool ")),
        "no public pool: the agent's sync-time sets the sources"
    );
    assert!(enabled("chrony.service"));
}

#[test]
fn sudoers() {
    let sudoers = read("/etc/sudoers");
    assert!(has_line(&sudoers, "%bosh_sudoers ALL=(ALL) NOPASSWD: ALL"));
    assert!(has_line(&sudoers, "#includedir /etc/sudoers.d"));
    assert_eq!(meta("/etc/sudoers").mode() & 0o777, 0o440);
    let mut others = sudoers
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("%bosh_sudoers"))
        .filter(|l| l.contains("NOPASSWD") || l.contains("!authenticate"))
        .count();
    for entry in fs::read_dir(built().root.join("etc/sudoers.d"))
        .unwrap()
        .flatten()
    {
        others += fs::read_to_string(entry.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#') && l.contains("NOPASSWD"))
            .count();
    }
    assert_eq!(
        others, 0,
        "nobody else sudoes without a password (STIG V-58901)"
    );
}

#[test]
fn password_policies_and_su() {
    for entry in fs::read_dir(built().root.join("etc/pam.d"))
        .unwrap()
        .flatten()
    {
        let text = fs::read_to_string(entry.path()).unwrap_or_default();
        assert!(
            !text.contains("nullok"),
            "{} allows blank passwords",
            entry.path().display()
        );
    }
    let password = read("/etc/pam.d/common-password");
    for line in password
        .lines()
        .filter(|l| l.starts_with("password") && l.contains("pam_unix.so"))
    {
        assert!(
            line.contains("sha512") && !line.contains("yescrypt"),
            "{line}"
        );
    }
    assert!(password.contains("pam_pwquality.so"));
    assert!(read("/etc/security/pwquality.conf").contains("minlen = 14"));
    let defs = read("/etc/login.defs");
    assert!(defs
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["PASS_MAX_DAYS", "90"]));
    assert!(defs
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ENCRYPT_METHOD", "SHA512"]));
    let su = read("/etc/pam.d/su");
    let lines: Vec<&str> = su.lines().filter(|l| l.starts_with("auth")).collect();
    assert!(
        lines[0].contains("pam_rootok.so") && lines[1].contains("pam_wheel.so use_uid"),
        "{lines:?}"
    );
}

#[test]
fn tty_and_ctrl_alt_del() {
    let securetty = read("/etc/securetty");
    let entries: Vec<&str> = securetty
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(entries, ["console"]);
    assert_eq!(link("/etc/systemd/system/ctrl-alt-del.target"), "/dev/null");
}

#[test]
fn logging_rsyslog_and_journald() {
    let conf = read("/etc/rsyslog.conf");
    for line in [
        "$FileOwner syslog",
        "$FileGroup syslog",
        "$FileCreateMode 0600",
        "module( load=\"omrelp\" tls.tlslib=\"openssl\" )",
    ] {
        assert!(has_line(&conf, line), "rsyslog.conf has {line}");
    }
    assert!(conf.lines().any(|l| l.starts_with("$ModLoad imklog")));
    let group = read("/etc/group");
    assert!(read("/etc/passwd")
        .lines()
        .any(|l| l.starts_with("syslog:")));
    let vcap_group = group.lines().find(|l| l.starts_with("vcap:")).unwrap();
    assert!(
        vcap_group.ends_with("syslog") || vcap_group.contains("syslog,"),
        "syslog in group vcap: {vcap_group}"
    );
    let rotate = read("/etc/logrotate.d/rsyslog");
    assert!(
        rotate.contains("/usr/lib/rsyslog/rsyslog-rotate") && !rotate.contains("restart rsyslog"),
        "rotation reopens the files the way Debian's rsyslog does: {rotate}"
    );
    let journald = read("/etc/systemd/journald.conf.d/00-override.conf");
    assert!(has_line(&journald, "ForwardToSyslog=yes") && has_line(&journald, "Storage=volatile"));
}

#[test]
fn cron_and_vim() {
    let anacrontab = read("/etc/anacrontab");
    assert_eq!(
        anacrontab
            .lines()
            .filter(|l| l.starts_with("RANDOM_DELAY="))
            .collect::<Vec<_>>(),
        ["RANDOM_DELAY=60"]
    );
    assert!(!exists("/etc/cron.daily/man-db"));
    assert!(read("/etc/apt/apt.conf.d/02periodic").contains("Enable \"0\""));
    assert_eq!(read("/etc/cron.allow"), "vcap\n");
    assert_eq!(meta("/etc/cron.allow").mode() & 0o777, 0o600);
    assert_eq!(meta("/etc/crontab").mode() & 0o777, 0o600);
    assert_eq!(link("/usr/bin/vim"), "vim.tiny");
}

#[test]
fn auditd_installed_with_rules_but_not_enabled() {
    assert!(exists("/usr/sbin/auditd"));
    assert!(
        !enabled("auditd.service"),
        "auditd not enabled (reference OS-image spec)"
    );
    let rules = read("/etc/audit/rules.d/audit.rules");
    assert!(rules.contains("-w /etc/sudoers -p wa -k scope") && rules.contains("-k time-change"));
    assert!(rules.contains("-F arch=b32 -S execve -C uid!=euid -F key=execpriv"));
    assert!(
        rules.contains("-F path=/usr/bin/sudo -F perm=x"),
        "privileged binaries audited"
    );
    assert!(has_line(
        &read("/etc/audit/auditd.conf"),
        "space_left_action = SYSLOG"
    ));
    assert_eq!(meta("/var/log/audit").uid(), 0);
}

#[test]
fn machine_id_and_build_leftovers_are_cleaned() {
    assert_eq!(
        meta("/etc/machine-id").len(),
        0,
        "empty machine-id: every VM makes its own"
    );
    assert!(!exists("/var/lib/dbus/machine-id"));
    assert!(
        !exists("/usr/sbin/policy-rc.d"),
        "the build's daemon blocker is not in the image"
    );
    let resolv = Path::new("/etc/resolv.conf");
    assert!(
        meta(resolv.to_str().unwrap()).is_symlink() || read("/etc/resolv.conf").is_empty(),
        "build host's resolver not leaked"
    );
}
