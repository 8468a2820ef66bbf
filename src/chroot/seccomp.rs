//! A small seccomp deny-list for what capabilities do not cover.
//!
//! Dropping capabilities already refuses mount, module loading, raw I/O, the clock and so on.
//! These system calls need no capability at all, yet reach past the sandbox:
//! - `keyctl`, `add_key`, `request_key`: kernel keyrings are not namespaced; root inside would
//!   read and change the host root's user keyring (credentials of the build host);
//! - `unshare`/`clone` with `CLONE_NEWUSER`: a user namespace gives its creator every
//!   capability again over new namespaces, a large kernel surface no package install needs;
//! - `bpf`, `perf_event_open`, `userfaultfd`: allowed or not by sysctls of the host; refused
//!   here whatever the host says;
//! - `io_uring_*` and `clone3` answer "not implemented" (ENOSYS), so programs fall back to the
//!   classic calls: io_uring bypasses seccomp checks of the calls it performs, and `clone3`'s
//!   flags sit in memory, where a filter cannot see a `CLONE_NEWUSER`.
//!
//! Everything else is allowed: a deny-list keeps every package install working. A process of
//! another architecture (a 32-bit binary on x86_64) is killed: its system call numbers differ.
//!
//! A third filter, [`install_terminal_filter`], refuses the two `ioctl`s that write into a
//! terminal's *input*: `TIOCSTI` (push a byte as if typed) and `TIOCLINUX` (the console's
//! selection paste). With either, a program holding any fd on the caller's terminal makes the
//! caller's shell run a line as host root after the builder exits. Every sandbox (a stage's
//! and `chroot-exec`'s) installs it, whatever else it keeps.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Refused with EPERM, whatever the arguments. (System call numbers are `c_long`, which is
/// `i64` on every architecture seccompiler supports.)
const DENIED: &[i64] = &[
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
];

/// Answered with ENOSYS so callers use the classic equivalent.
const NOT_IMPLEMENTED: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
];

/// `ioctl` requests that inject input into a terminal (`asm-generic/ioctls.h`). (`Ioctl` is
/// `u64` on glibc and `c_int` on musl: the cast is for the latter.)
#[allow(clippy::unnecessary_cast)]
const TERMINAL_INPUT: &[u64] = &[libc::TIOCSTI as u64, libc::TIOCLINUX as u64];

/// On x86_64 the same calls can also be made through the x32 ABI: the number with this bit
/// set, under the same audit architecture (linux/arch/x86/include/uapi/asm/unistd.h).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

fn numbers(calls: &[i64]) -> Vec<i64> {
    let mut all = calls.to_vec();
    #[cfg(target_arch = "x86_64")]
    all.extend(calls.iter().map(|&n| n | X32_SYSCALL_BIT));
    all
}

fn target() -> Result<TargetArch> {
    std::env::consts::ARCH
        .try_into()
        .with_context(|| format!("no seccomp filter for {}", std::env::consts::ARCH))
}

/// The two filters, compiled (for the tests and for `install`).
pub fn filters() -> Result<[BpfProgram; 2]> {
    let arch = target()?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        numbers(DENIED).into_iter().map(|n| (n, vec![])).collect();
    let new_user_ns = || -> Result<Vec<SeccompRule>> {
        let flag = libc::CLONE_NEWUSER as u64;
        Ok(vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )?])?])
    };
    for call in numbers(&[libc::SYS_unshare, libc::SYS_clone]) {
        denied.insert(call, new_user_ns()?);
    }
    let deny = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )?;
    let missing = SeccompFilter::new(
        numbers(NOT_IMPLEMENTED)
            .into_iter()
            .map(|n| (n, vec![]))
            .collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )?;
    Ok([deny.try_into()?, missing.try_into()?])
}

/// The terminal filter: `ioctl(fd, TIOCSTI | TIOCLINUX, …)` fails with EPERM on any fd. The
/// request is compared on its low 32 bits, as the kernel reads it (`unsigned int cmd`), so high
/// bits set by the caller change nothing.
pub fn terminal_filter() -> Result<BpfProgram> {
    let rules = || -> Result<Vec<SeccompRule>> {
        TERMINAL_INPUT
            .iter()
            .map(|&request| {
                Ok(SeccompRule::new(vec![SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    request,
                )?])?)
            })
            .collect()
    };
    #[allow(unused_mut)]
    let mut calls = vec![libc::SYS_ioctl];
    // The x32 ABI's ioctl is number 514 (arch/x86/entry/syscalls/syscall_64.tbl), not 16.
    #[cfg(target_arch = "x86_64")]
    calls.push(514 | X32_SYSCALL_BIT);
    let mut denied = BTreeMap::new();
    for call in calls {
        denied.insert(call, rules()?);
    }
    let filter = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target()?,
    )?;
    Ok(filter.try_into()?)
}

/// Installs [`terminal_filter`] on the calling thread. Needs `no_new_privs` or CAP_SYS_ADMIN
/// (a stage's sandbox and smoke's container keep root's capabilities; `chroot-exec` has set
/// `no_new_privs`). Unlike `seccompiler::apply_filter` it does not set `no_new_privs` itself:
/// in smoke's container `sudo` must still work, as it does on a VM.
pub fn install_terminal_filter() -> Result<()> {
    let mut program = terminal_filter()?;
    let fprog = libc::sock_fprog {
        len: u16::try_from(program.len()).context("the terminal filter is too long")?,
        // seccompiler's sock_filter is the kernel's struct sock_filter, field for field.
        filter: program.as_mut_ptr().cast::<libc::sock_filter>(),
    };
    // SAFETY: fprog points at `program`, alive for the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(
            "installing the terminal seccomp filter (needs CAP_SYS_ADMIN or no_new_privs)",
        );
    }
    Ok(())
}

/// Installs the filters on the calling thread (and so on everything it executes). Needs
/// `no_new_privs` or CAP_SYS_ADMIN.
pub fn install() -> Result<()> {
    for filter in filters()? {
        seccompiler::apply_filter(&filter).context("installing the seccomp filter")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_for_this_architecture() {
        let [deny, missing] = filters().unwrap();
        assert!(deny.len() > DENIED.len());
        assert!(missing.len() > NOT_IMPLEMENTED.len());
        assert!(terminal_filter().unwrap().len() > TERMINAL_INPUT.len());
    }
}
