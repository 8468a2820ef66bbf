//! `--base binaries:bash,ls,...`: a root with the named host programs and every file the
//! dynamic loader opens to start them (see `elf.rs`), each at the path it has on the host.
//! Symlinks on the way are recreated as symlinks (`/lib64 -> usr/lib64`,
//! `libtinfo.so.6 -> libtinfo.so.6.4`), so the root looks like the host where it has anything;
//! the host's top-level merged-/usr links (`bin -> usr/bin`, ...) are added when their target is
//! in the root. A script is taken with its `#!` interpreter. The root gets a minimal /etc:
//! `passwd` and `group` with root only, an `nsswitch.conf` that reads them, and, only when a
//! library came from an ld.so.conf directory outside the loader's defaults, an `ld.so.conf`
//! naming those directories and the cache `ldconfig -r` builds from it. Plus /tmp (1777) and
//! /root (0700).
//!
//! Writing into the root never goes through a symlink: every path is resolved against the host
//! first and written at its resolved place.

use std::collections::{HashSet, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::elf::{ElfObject, Loader};

/// What a `binaries:` root holds, resolved before anything is written.
#[derive(Debug, Clone, Default)]
pub struct BinariesPlan {
    /// The programs, as absolute host paths (found on PATH).
    pub programs: Vec<String>,
    /// Every file to copy (programs, interpreters, loader, libraries), absolute host paths.
    pub files: Vec<String>,
    /// ld.so.conf directories the root must list.
    pub conf_dirs: Vec<String>,
}

/// Resolves the names (on PATH unless absolute) and everything they load.
pub fn plan(names: &[String]) -> Result<BinariesPlan> {
    if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
        bail!("--base binaries: needs program names, e.g. --base binaries:bash,ls");
    }
    let loader = Loader::host();
    let mut plan = BinariesPlan::default();
    let mut queue: VecDeque<String> = names.iter().map(|n| n.trim().to_string()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(name) = queue.pop_front() {
        let program = locate(&name)?;
        if !seen.insert(program.clone()) {
            continue;
        }
        plan.programs.push(program.clone());
        match ElfObject::read(Path::new(&program))? {
            Some(_) => {
                let closure = loader
                    .closure(&program)
                    .with_context(|| format!("--base binaries: {name}"))?;
                for file in closure.files {
                    push_unique(&mut plan.files, file);
                }
                for dir in closure.conf_dirs_used {
                    push_unique(&mut plan.conf_dirs, dir);
                }
            }
            None => {
                let interpreter = shebang(Path::new(&program)).with_context(|| {
                    format!("--base binaries: {program} is neither an ELF program nor a #! script")
                })?;
                push_unique(&mut plan.files, program.clone());
                for word in interpreter {
                    queue.push_back(word);
                }
            }
        }
    }
    Ok(plan)
}

/// Writes the planned files and the minimal /etc into `root` (an empty directory).
pub fn build(plan: &BinariesPlan, root: &Path) -> Result<u64> {
    let mut copied = 0;
    for file in &plan.files {
        copied += install(root, file)?;
    }
    link_merged_usr(root)?;
    minimal_etc(plan, root)?;
    for (dir, mode) in [("tmp", 0o1777), ("root", 0o700)] {
        let path = root.join(dir);
        if fs::symlink_metadata(&path).is_err() {
            fs::create_dir(&path).map_err(|e| crate::fsutil::io_error(e, "creating", &path))?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
        }
    }
    if !plan.conf_dirs.is_empty() {
        let conf = root.join("etc/ld.so.conf");
        fs::write(&conf, format!("{}\n", plan.conf_dirs.join("\n")))
            .map_err(|e| crate::fsutil::io_error(e, "writing", &conf))?;
        let ldconfig = which::which("ldconfig")
            .or_else(|_| which::which_in("ldconfig", Some("/sbin:/usr/sbin"), "/"))
            .context("ldconfig is not installed (package libc-bin): the root's libraries in ld.so.conf directories need a cache")?;
        let status = std::process::Command::new(&ldconfig)
            .arg("-r")
            .arg(root)
            .status()
            .with_context(|| format!("running {}", ldconfig.display()))?;
        if !status.success() {
            bail!("ldconfig -r {} failed ({status})", root.display());
        }
    }
    Ok(copied)
}

/// `name` on PATH, or an absolute path as given.
fn locate(name: &str) -> Result<String> {
    if name.contains('/') {
        if !name.starts_with('/') {
            bail!("--base binaries: {name}: give a program name found on PATH or an absolute path");
        }
        if !Path::new(name).is_file() {
            bail!("--base binaries: {name} does not exist");
        }
        return Ok(name.to_string());
    }
    let found = which::which(name).map_err(|_| {
        anyhow::anyhow!(
            "--base binaries: '{name}' not found on PATH: install it, or give its absolute path"
        )
    })?;
    Ok(found.display().to_string())
}

/// The interpreter words of a `#!` line: `/bin/sh`, or `/usr/bin/env` and the program it runs.
fn shebang(path: &Path) -> Result<Vec<String>> {
    let mut head = vec![0u8; 256];
    let n = {
        use std::io::Read;
        fs::File::open(path)?.read(&mut head)?
    };
    head.truncate(n);
    let Some(rest) = head.strip_prefix(b"#!") else {
        bail!("no #! line");
    };
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let words: Vec<String> = String::from_utf8_lossy(line)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let Some(interpreter) = words.first() else {
        bail!("an empty #! line");
    };
    let mut out = vec![interpreter.clone()];
    if interpreter.ends_with("/env") {
        if let Some(program) = words.iter().skip(1).find(|w| !w.starts_with('-')) {
            out.push(program.clone());
        }
    }
    Ok(out)
}

/// Copies host `path` into `root` at the same place, recreating each symlink on the way and
/// following it on the host; returns the number of regular files written.
fn install(root: &Path, path: &str) -> Result<u64> {
    let mut pending: VecDeque<OsString> = components(Path::new(path));
    let mut resolved = PathBuf::from("/");
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let host = resolved.join(&part);
        let meta = fs::symlink_metadata(&host)
            .with_context(|| format!("reading {} (on the way to {path})", host.display()))?;
        let inside = root.join(host.strip_prefix("/").unwrap_or(&host));
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > 40 {
                bail!("{path}: too many levels of symbolic links");
            }
            let target = fs::read_link(&host)?;
            ensure_parent(root, &inside)?;
            match fs::symlink_metadata(&inside) {
                Ok(existing) if existing.file_type().is_symlink() => {}
                Ok(_) => bail!(
                    "{} is a symlink on the host but not in the new root",
                    host.display()
                ),
                Err(_) => std::os::unix::fs::symlink(&target, &inside)
                    .map_err(|e| crate::fsutil::io_error(e, "creating", &inside))?,
            }
            let mut next = components(&target);
            if target.is_absolute() {
                resolved = PathBuf::from("/");
            }
            next.extend(pending);
            pending = next;
        } else if meta.is_dir() {
            if pending.is_empty() {
                bail!("{path} is a directory, not a program or library");
            }
            ensure_parent(root, &inside)?;
            if fs::symlink_metadata(&inside).is_err() {
                fs::create_dir(&inside)
                    .map_err(|e| crate::fsutil::io_error(e, "creating", &inside))?;
                copy_owner_mode(&meta, &inside)?;
            }
            resolved = host;
        } else if meta.is_file() && pending.is_empty() {
            ensure_parent(root, &inside)?;
            if fs::symlink_metadata(&inside).is_ok() {
                return Ok(0);
            }
            fs::copy(&host, &inside)
                .map_err(|e| crate::fsutil::io_error(e, "copying to", &inside))?;
            copy_owner_mode(&meta, &inside)?;
            copy_xattrs(&host, &inside)?;
            let mtime = filetime::FileTime::from_last_modification_time(&meta);
            filetime::set_file_times(&inside, mtime, mtime)?;
            return Ok(1);
        } else {
            bail!(
                "{}: not a regular file, directory or symlink",
                host.display()
            );
        }
    }
    Ok(0)
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// Makes sure `inside`'s parent exists in the root and that no directory on the way is a
/// symlink (writing through one could land on the host).
fn ensure_parent(root: &Path, inside: &Path) -> Result<()> {
    let relative = inside.strip_prefix(root).unwrap_or(inside);
    let mut current = root.to_path_buf();
    let parts: Vec<_> = relative.components().collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => bail!(
                "refusing to write {} through the symlink {}",
                inside.display(),
                current.display()
            ),
            Ok(_) => {}
            Err(_) => fs::create_dir(&current)
                .map_err(|e| crate::fsutil::io_error(e, "creating", &current))?,
        }
    }
    Ok(())
}

fn copy_owner_mode(meta: &fs::Metadata, inside: &Path) -> Result<()> {
    nix::unistd::chown(inside, Some(meta.uid().into()), Some(meta.gid().into()))
        .with_context(|| format!("chown {}", inside.display()))?;
    fs::set_permissions(inside, fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(|| format!("chmod {}", inside.display()))
}

/// File capabilities and other xattrs travel with the program.
fn copy_xattrs(from: &Path, to: &Path) -> Result<()> {
    let Ok(names) = xattr::list(from) else {
        return Ok(());
    };
    for name in names {
        if let Some(value) = xattr::get(from, &name)? {
            xattr::set(to, &name, &value)
                .with_context(|| format!("setting xattr {name:?} on {}", to.display()))?;
        }
    }
    Ok(())
}

/// `bin -> usr/bin` and its kin, as on the host, when the root has the target.
fn link_merged_usr(root: &Path) -> Result<()> {
    for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(name);
        let Ok(target) = fs::read_link(&host) else {
            continue;
        };
        let inside = root.join(name);
        if fs::symlink_metadata(&inside).is_ok() {
            continue;
        }
        let target_inside = if target.is_absolute() {
            root.join(target.strip_prefix("/").unwrap_or(&target))
        } else {
            root.join(&target)
        };
        if fs::symlink_metadata(&target_inside).is_ok_and(|m| m.is_dir()) {
            std::os::unix::fs::symlink(&target, &inside)
                .map_err(|e| crate::fsutil::io_error(e, "creating", &inside))?;
        }
    }
    Ok(())
}

fn minimal_etc(plan: &BinariesPlan, root: &Path) -> Result<()> {
    let etc = root.join("etc");
    ensure_parent(root, &etc.join("x"))?;
    let shell = plan
        .programs
        .iter()
        .find(|p| {
            let base = Path::new(p).file_name().map(|n| n.as_bytes().to_vec());
            matches!(
                base.as_deref(),
                Some(b"bash" | b"sh" | b"dash" | b"zsh" | b"busybox")
            )
        })
        .cloned()
        .unwrap_or_else(|| "/bin/sh".to_string());
    let files = [
        ("passwd", format!("root:x:0:0:root:/root:{shell}\n"), 0o644),
        ("group", "root:x:0:\n".to_string(), 0o644),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n".to_string(),
            0o644,
        ),
    ];
    for (name, text, mode) in files {
        let path = etc.join(name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        fs::write(&path, text).map_err(|e| crate::fsutil::io_error(e, "writing", &path))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_one_line_naming_it() {
        let err = plan(&["no-such-program-anywhere".into()]).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "--base binaries: 'no-such-program-anywhere' not found on PATH: install it, or give its absolute path"
        );
        assert!(plan(&[]).is_err());
        assert!(plan(&["rel/path".into()]).is_err());
    }

    #[test]
    fn install_recreates_symlinks_and_never_writes_through_them() {
        let host = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let h = host.path();
        fs::create_dir_all(h.join("usr/lib")).unwrap();
        fs::write(h.join("usr/lib/libx.so.1.2"), b"lib").unwrap();
        std::os::unix::fs::symlink("usr/lib", h.join("lib")).unwrap();
        std::os::unix::fs::symlink("libx.so.1.2", h.join("usr/lib/libx.so.1")).unwrap();
        let path = h.join("lib/libx.so.1").display().to_string();
        assert_eq!(install(root.path(), &path).unwrap(), 1);
        let inside = root.path().join(h.strip_prefix("/").unwrap());
        assert_eq!(
            fs::read_link(inside.join("lib")).unwrap(),
            Path::new("usr/lib")
        );
        assert_eq!(
            fs::read_link(inside.join("usr/lib/libx.so.1")).unwrap(),
            Path::new("libx.so.1.2")
        );
        assert_eq!(
            fs::read(inside.join("usr/lib/libx.so.1.2")).unwrap(),
            b"lib"
        );
        // A second install of the same chain is a no-op.
        assert_eq!(install(root.path(), &path).unwrap(), 0);
    }

    #[test]
    fn shebang_lines_name_their_interpreter() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("s");
        fs::write(&script, "#!/usr/bin/env -S python3 -u\nprint()\n").unwrap();
        assert_eq!(shebang(&script).unwrap(), vec!["/usr/bin/env", "python3"]);
        fs::write(&script, "#!/bin/sh -e\n").unwrap();
        assert_eq!(shebang(&script).unwrap(), vec!["/bin/sh"]);
        fs::write(&script, "plain text").unwrap();
        assert!(shebang(&script).is_err());
    }
}
