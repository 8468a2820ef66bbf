//! Makes the tree the whole world of the sandbox: `pivot_root` into it and detach the old
//! root, as container runtimes do. After a plain `chroot`, the host's root stays in the mount
//! namespace and a second `chroot()` from inside climbs back to it; after this there is no
//! mount above the tree left to climb to.
//!
//! Runs in the sandbox's own, private mount namespace, never in the host's.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::inroot::TreeRoot;

/// Binds `root` onto itself (with what is mounted below it) so it is a mount point, which
/// `pivot_root` needs, and marks that mount and every one below it `nodev` and `nosuid`: a
/// device node or a setuid file shipped in an image gives nothing inside the sandbox.
pub fn bind_root(root: &Path) -> Result<TreeRoot> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(root), root, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("mount --rbind {} onto itself", root.display()))?;
    // Opened after the bind: the handle is on the new mount.
    let tree = TreeRoot::open(root)?;
    set_recursively(
        &tree,
        libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID,
        root,
    )?;
    Ok(tree)
}

/// Binds `root` onto itself as `bind_root` does, but keeps device nodes and setuid files
/// working: for `smoke`'s privileged container, where the stemcell runs as on a VM (sudo, the
/// agent's own mounts), never for a tree being built.
pub fn bind_root_privileged(root: &Path) -> Result<TreeRoot> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REC;
    mount(Some(root), root, None::<&str>, flags, None::<&str>)
        .with_context(|| format!("mount --rbind {} onto itself", root.display()))?;
    Ok(TreeRoot::open(root)?)
}

/// mount_setattr(2) with AT_RECURSIVE: one call for the tree and every mount below it.
fn set_recursively(tree: &TreeRoot, attributes: u64, root: &Path) -> Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let attr = libc::mount_attr {
        attr_set: attributes,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the fd is open for the call; the path is a NUL-terminated empty string and the
    // struct is the kernel's `mount_attr`, passed with its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_fd().as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!(
                "mount_setattr({}, AT_RECURSIVE, nodev,nosuid) (needs Linux 5.12)",
                root.display()
            )
        });
    }
    Ok(())
}

/// `pivot_root(".", ".")` from inside the tree, then a lazy unmount of the old root stacked on
/// top: the tree becomes `/` and the host's filesystems leave this mount namespace.
pub fn pivot_into(tree: &TreeRoot) -> Result<()> {
    nix::unistd::fchdir(tree).with_context(|| format!("chdir {}", tree.path().display()))?;
    nix::unistd::pivot_root(".", ".")
        .with_context(|| format!("pivot_root into {}", tree.path().display()))?;
    // The old root must not propagate its unmount anywhere (the namespace is private already;
    // this keeps it so whatever the host's propagation settings were).
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("mount --make-rslave on the old root")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the host's root after pivot_root")?;
    std::env::set_current_dir("/").context("chdir / inside the tree")?;
    Ok(())
}
