//! What root inside the sandbox may still do: the capabilities a package install needs, and no
//! more, plus `no_new_privs` so nothing executed later gains any back.
//!
//! Kept (Docker's default set, minus what a package install does not need):
//! - `CHOWN`, `DAC_OVERRIDE`, `FOWNER`, `FSETID`: dpkg unpacks files owned by other users and
//!   sets their modes;
//! - `SETUID`, `SETGID`: apt drops to its `_apt` user, maintainer scripts run `su`/`runuser`,
//!   `useradd` creates users;
//! - `SETFCAP`: postinsts set file capabilities (`setcap cap_net_raw+ep /bin/ping`);
//! - `KILL`: start-stop-daemon and postinsts signal processes of other users;
//! - `SETPCAP`: programs that drop capabilities of their own before running a helper;
//! - `SYS_CHROOT`: tools that chroot (harmless after `pivot_root`: there is nothing above);
//! - `AUDIT_WRITE`: PAM (`su`, `chpasswd`) logs to the audit system and fails without it.
//!
//! Everything else is gone from all five sets: notably `SYS_ADMIN` (mount, namespaces),
//! `SYS_MODULE`, `SYS_RAWIO`, `SYS_TIME`, `SYS_BOOT`, `SYS_PTRACE`, `MKNOD`, `MAC_ADMIN`, `BPF`,
//! `PERFMON`, `DAC_READ_SEARCH` (open_by_handle_at reaches any host file by inode),
//! `NET_ADMIN` (the host's network namespace is shared: it must not be reconfigured),
//! `NET_RAW` (a packet socket on the shared namespace sniffs and forges the host's traffic;
//! `ping` inside therefore fails, which no package install needs) and `NET_BIND_SERVICE`
//! (nothing may listen on the host's privileged ports).

use anyhow::{Context, Result};
use caps::{CapSet, Capability, CapsHashSet};

pub const KEPT: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_KILL,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETPCAP,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_AUDIT_WRITE,
];

/// Sets `no_new_privs` and cuts every capability set of the calling thread to [`KEPT`] (those
/// the thread holds). Call last before exec: the thread cannot get any of it back.
pub fn drop_to_kept() -> Result<()> {
    nix::sys::prctl::set_no_new_privs().context("prctl(PR_SET_NO_NEW_PRIVS)")?;
    let kept: CapsHashSet = KEPT.iter().copied().collect();
    // The bounding set first: it needs CAP_SETPCAP in the effective set, which goes last.
    for cap in caps::runtime::thread_all_supported() {
        if !kept.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .with_context(|| format!("dropping {cap} from the bounding set"))?;
        }
    }
    caps::clear(None, CapSet::Ambient).context("clearing the ambient capabilities")?;
    caps::clear(None, CapSet::Inheritable).context("clearing the inheritable capabilities")?;
    let held = caps::read(None, CapSet::Permitted).context("reading the permitted set")?;
    let kept: CapsHashSet = held.intersection(&kept).copied().collect();
    // Effective before permitted: the kernel refuses an effective set larger than permitted.
    caps::set(None, CapSet::Effective, &kept).context("setting the effective capabilities")?;
    caps::set(None, CapSet::Permitted, &kept).context("setting the permitted capabilities")?;
    Ok(())
}
