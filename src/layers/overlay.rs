//! One overlayfs mount of a stack of layers: the lower dirs (top first), the upper dir and the
//! overlay's work dir, all directories of `WORK/layers`, mounted at `WORK/chroot`.
//!
//! The mount's option string is limited to one page by `mount(2)`. Paths in it are relative to
//! the layers dir (the caller's cwd is set there for the mount and restored right after), so
//! each layer costs its short `NN-name` and about 150 stages fit; past the page, or past
//! overlayfs' 500 lower dirs, the error says so. This module never unmounts anything but the
//! mounts it is asked to: each mount lives in a mount namespace that dies with its owner.

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// overlayfs refuses more lower dirs than this (`OVL_MAX_STACK`).
pub const MAX_LOWER_DIRS: usize = 500;

/// Options every layer mount gets, whatever the host's module defaults: no inode index (the
/// lower set changes from stage to stage), no metadata-only copy-up and no directory redirects
/// (a layer holds whole files, so it can be stored and restored on its own).
const FIXED_OPTIONS: &str = "index=off,metacopy=off,redirect_dir=off,xino=off";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayMount {
    /// `WORK/layers` (absolute): the names below are directories in it.
    pub layers_dir: PathBuf,
    /// Lower dirs, the topmost first (the base last).
    pub lowers: Vec<String>,
    /// The writable layer.
    pub upper: String,
    /// overlayfs' own work dir (same filesystem as the upper dir, emptied by the kernel).
    pub workdir: String,
    /// Where the merged tree appears (`WORK/chroot`).
    pub target: PathBuf,
}

impl OverlayMount {
    /// The `mount(2)` data, checked against the kernel's limits.
    pub fn options(&self) -> Result<String> {
        for name in self.lowers.iter().chain([&self.upper, &self.workdir]) {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                || name.starts_with("..")
                || name == "."
            {
                bail!(
                    "layer name {name:?} cannot be an overlay path: use letters, digits, _ and -"
                );
            }
        }
        if self.lowers.is_empty() {
            bail!("an overlay needs at least one lower layer (the base)");
        }
        if self.lowers.len() > MAX_LOWER_DIRS {
            bail!(
                "{} layers are more than overlayfs stacks ({MAX_LOWER_DIRS}): run fewer stages in this collection, or pass --no-layers",
                self.lowers.len()
            );
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={},{FIXED_OPTIONS}",
            self.lowers.join(":"),
            self.upper,
            self.workdir
        );
        let limit = page_size() - 1;
        if options.len() > limit {
            bail!(
                "the overlay of {} layers needs {} bytes of mount options, more than the kernel's {limit}: shorten stage names, run fewer stages in one collection, or pass --no-layers",
                self.lowers.len() + 1,
                options.len()
            );
        }
        Ok(options)
    }

    /// Mounts the overlay at `target` in the caller's mount namespace (which must be private:
    /// the stage sandbox's, or the builder's own).
    pub fn mount(&self) -> Result<()> {
        let options = self.options()?;
        let upper = self.layers_dir.join(&self.upper);
        let workdir = self.layers_dir.join(&self.workdir);
        for dir in [&upper, &workdir] {
            if !dir.is_dir() {
                bail!("overlay directory {} does not exist", dir.display());
            }
        }
        // Relative paths keep the options short; the cwd is the process's, so put it back.
        let previous = std::env::current_dir().context("reading the current directory")?;
        std::env::set_current_dir(&self.layers_dir)
            .with_context(|| format!("entering {}", self.layers_dir.display()))?;
        let mounted = mount(
            Some("overlay"),
            &self.target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        );
        std::env::set_current_dir(&previous)
            .with_context(|| format!("returning to {}", previous.display()))?;
        mounted.map_err(|errno| mount_error(errno, &self.layers_dir, &self.target, &options))
    }

    /// The hidden `sandbox` subcommand's flags that mount this overlay before the command.
    pub fn to_args(&self) -> Vec<OsString> {
        vec![
            "--overlay-dir".into(),
            self.layers_dir.clone().into(),
            "--overlay-lower".into(),
            self.lowers.join(",").into(),
            "--overlay-upper".into(),
            self.upper.clone().into(),
            "--overlay-work".into(),
            self.workdir.clone().into(),
            "--overlay-target".into(),
            self.target.clone().into(),
        ]
    }
}

fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .map_or(4096, |n| n as usize)
}

fn mount_error(
    errno: nix::errno::Errno,
    layers_dir: &Path,
    target: &Path,
    options: &str,
) -> anyhow::Error {
    let why = match errno {
        nix::errno::Errno::ENODEV => "this kernel has no overlayfs (try `modprobe overlay`)",
        nix::errno::Errno::EPERM => "mounting needs root (CAP_SYS_ADMIN)",
        _ => "the work dir's filesystem cannot hold an overlay's upper dir (an overlay, NFS, or a filesystem without xattrs or d_type)",
    };
    anyhow::anyhow!(
        "overlayfs cannot be mounted at {} (mount -t overlay -o {options}, in {}: {errno}): {why}; pass --no-layers to run the stages in one plain directory",
        target.display(),
        layers_dir.display()
    )
}

/// Detaches the overlay at `target` (the caller's own mount, in its own namespace).
pub fn unmount(target: &Path) -> Result<()> {
    umount2(target, MntFlags::MNT_DETACH)
        .with_context(|| format!("umount {} (the merged layers)", target.display()))
}

/// Checks that overlayfs works for `layers_dir` (mounts a tiny overlay below it and unmounts it),
/// so a host without it fails before the base is made, with the fix in the message.
pub fn probe(layers_dir: &Path) -> Result<()> {
    let probe = layers_dir.join(".probe");
    crate::fsutil::remove_tree(&probe)?;
    for dir in ["lower", "upper", "work", "merged"] {
        crate::fsutil::create_private_dir(&probe.join(dir))?;
    }
    let overlay = OverlayMount {
        layers_dir: probe.clone(),
        lowers: vec!["lower".into()],
        upper: "upper".into(),
        workdir: "work".into(),
        target: probe.join("merged"),
    };
    let mounted = overlay.mount();
    if mounted.is_ok() {
        unmount(&overlay.target)?;
    }
    crate::fsutil::remove_tree(&probe)?;
    mounted
}

/// Creates an empty layer dir `upper` whose root looks like `like`'s (owner, mode, mtime and
/// xattrs): overlayfs shows the upper dir's root as the merged tree's `/`.
pub fn init_upper(upper: &Path, like: &Path) -> Result<()> {
    let meta = std::fs::symlink_metadata(like)
        .with_context(|| format!("reading the layer root {}", like.display()))?;
    std::fs::create_dir(upper).map_err(|e| crate::fsutil::io_error(e, "creating", upper))?;
    nix::unistd::chown(upper, Some(meta.uid().into()), Some(meta.gid().into()))
        .with_context(|| format!("chown {}", upper.display()))?;
    std::fs::set_permissions(upper, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(|| format!("chmod {}", upper.display()))?;
    copy_xattrs(like, upper)?;
    let mtime = filetime::FileTime::from_last_modification_time(&meta);
    filetime::set_symlink_file_times(upper, mtime, mtime)
        .with_context(|| format!("setting the mtime of {}", upper.display()))?;
    Ok(())
}

/// Copies the xattrs a tree sees (not overlayfs' own `trusted.overlay.*`).
fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let names = match xattr::list(from) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("listing xattrs of {}", from.display())),
    };
    for name in names {
        if name.to_string_lossy().starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(value) = xattr::get(from, &name)
            .with_context(|| format!("reading xattr {name:?} of {}", from.display()))?
        {
            xattr::set(to, &name, &value)
                .with_context(|| format!("setting xattr {name:?} on {}", to.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay(lowers: usize, name_len: usize) -> OverlayMount {
        OverlayMount {
            layers_dir: "/w/layers".into(),
            lowers: (0..lowers)
                .map(|i| format!("{i:02}-{}", "x".repeat(name_len)))
                .collect(),
            upper: "99-top".into(),
            workdir: ".work".into(),
            target: "/w/chroot".into(),
        }
    }

    #[test]
    fn options_list_lowers_top_first_with_relative_paths() {
        let mut o = overlay(0, 0);
        o.lowers = vec!["02-b".into(), "01-a".into(), "00-base".into()];
        assert_eq!(
            o.options().unwrap(),
            format!("lowerdir=02-b:01-a:00-base,upperdir=99-top,workdir=.work,{FIXED_OPTIONS}")
        );
    }

    #[test]
    fn too_many_or_too_long_layers_are_refused_with_the_limit() {
        assert!(overlay(40, 20).options().is_ok(), "a real collection fits");
        let err = overlay(200, 30).options().unwrap_err().to_string();
        assert!(
            err.contains("bytes of mount options") && err.contains("--no-layers"),
            "{err}"
        );
        let err = overlay(501, 1).options().unwrap_err().to_string();
        assert!(err.contains("500"), "{err}");
    }

    #[test]
    fn names_that_would_change_the_options_are_refused() {
        for bad in ["a,b", "a:b", "../x", "a/b", "", "a=b", "."] {
            let mut o = overlay(1, 1);
            o.upper = bad.into();
            assert!(o.options().is_err(), "{bad}");
        }
    }
}
