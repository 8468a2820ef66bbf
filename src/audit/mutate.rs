//! Mutations: one change to a built tree that makes one check fail, and its undo, so the
//! mutation test runs every check's mutation on one unpacked copy. Paths resolve inside the
//! tree; what a mutation replaces is moved aside (renamed into `scratch`, on the same file
//! system) and moved back by `undo`, owner, mode and all.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::checks::{parse_mode, Mutation};
use super::tree::Tree;

pub struct Applied {
    undo: Undo,
}

enum Undo {
    /// Remove what is at `path` now, put `backup` back (or nothing, when there was nothing).
    Restore {
        path: PathBuf,
        backup: Option<PathBuf>,
    },
    Mode {
        path: PathBuf,
        mode: u32,
    },
    Owner {
        path: PathBuf,
        uid: u32,
        gid: u32,
    },
}

/// The host path of `inside` in the tree at `root`: its deepest existing directory resolved
/// inside the tree, the rest (missing directories, the last component) appended, not followed.
fn host_path(root: &Path, inside: &str) -> Result<PathBuf> {
    let tree = Tree::open(root)?;
    let components: Vec<&str> = inside.trim_matches('/').split('/').collect();
    let (last, dirs) = components
        .split_last()
        .with_context(|| format!("{inside} is not a path"))?;
    for n in (0..=dirs.len()).rev() {
        let prefix = format!("/{}", dirs[..n].join("/"));
        if let Ok(resolved) = tree.resolve(&prefix) {
            let mut path = tree.root().join(resolved.trim_start_matches('/'));
            path.extend(&dirs[n..]);
            path.push(last);
            return Ok(path);
        }
    }
    bail!("cannot resolve {inside} in {}", root.display())
}

fn move_aside(path: &Path, scratch: &Path) -> Result<Option<PathBuf>> {
    if fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let backup = scratch.join(format!("aside-{}-{n}", std::process::id()));
    fs::rename(path, &backup)
        .with_context(|| format!("moving {} aside to {}", path.display(), backup.display()))?;
    Ok(Some(backup))
}

/// A new file at `path` with `text`, the mode and owner of `like` when given.
fn write_like(
    path: &Path,
    text: &[u8],
    like: Option<&fs::Metadata>,
    mode: Option<u32>,
) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    if let Some(like) = like {
        std::os::unix::fs::lchown(path, Some(like.uid()), Some(like.gid()))?;
        fs::set_permissions(path, fs::Permissions::from_mode(like.mode() & 0o7777))?;
    }
    if let Some(mode) = mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Makes the missing directories above `path`; returns the topmost one made (undo removes it).
fn make_parents(path: &Path) -> Result<Option<PathBuf>> {
    let mut top = None;
    let mut dir = path.parent();
    while let Some(d) = dir {
        if fs::symlink_metadata(d).is_ok() {
            break;
        }
        top = Some(d.to_path_buf());
        dir = d.parent();
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    Ok(top)
}

pub fn apply(root: &Path, scratch: &Path, mutation: &Mutation) -> Result<Applied> {
    let path = host_path(root, mutation.path())?;
    let made = match mutation {
        Mutation::Write { .. } | Mutation::Append { .. } | Mutation::Symlink { .. } => {
            make_parents(&path)?
        }
        _ => None,
    };
    let undo = match mutation {
        Mutation::Remove { .. } => {
            let backup = move_aside(&path, scratch)?;
            if backup.is_none() {
                bail!("{}: nothing to remove", mutation.path());
            }
            Undo::Restore { path, backup }
        }
        Mutation::Chmod { mode, .. } => {
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("{} does not exist", mutation.path()))?;
            if meta.file_type().is_symlink() {
                bail!(
                    "{} is a symlink: chmod would change its target",
                    mutation.path()
                );
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(parse_mode(mode)?))?;
            Undo::Mode {
                path,
                mode: meta.mode() & 0o7777,
            }
        }
        Mutation::Chown { uid, gid, .. } => {
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("{} does not exist", mutation.path()))?;
            std::os::unix::fs::lchown(&path, Some(*uid), Some(*gid))?;
            Undo::Owner {
                path,
                uid: meta.uid(),
                gid: meta.gid(),
            }
        }
        Mutation::Replace { pattern, with, .. } => {
            let meta = fs::metadata(&path)
                .with_context(|| format!("{} does not exist", mutation.path()))?;
            let text = fs::read_to_string(&path)?;
            let re = super::eval::multiline(pattern)?;
            if !re.is_match(&text) {
                bail!("{}: /{pattern}/ matches nothing", mutation.path());
            }
            let changed = re.replace_all(&text, with.as_str()).into_owned();
            let backup = move_aside(&path, scratch)?;
            write_like(&path, changed.as_bytes(), Some(&meta), None)?;
            Undo::Restore { path, backup }
        }
        Mutation::Append { text, .. } => {
            let meta = fs::metadata(&path).ok();
            let mut content = match &meta {
                Some(_) => fs::read(&path)?,
                None => vec![],
            };
            content.extend_from_slice(text.as_bytes());
            let backup = move_aside(&path, scratch)?;
            write_like(&path, &content, meta.as_ref(), None)?;
            Undo::Restore { path, backup }
        }
        Mutation::Write { text, mode, .. } => {
            let mode = mode.as_deref().map(parse_mode).transpose()?;
            let backup = move_aside(&path, scratch)?;
            write_like(&path, text.as_bytes(), None, Some(mode.unwrap_or(0o644)))?;
            Undo::Restore { path, backup }
        }
        Mutation::Mkdir { .. } => {
            if fs::symlink_metadata(&path).is_ok() {
                bail!("{} exists already", mutation.path());
            }
            // The topmost directory made is what undo removes.
            let mut top = path.clone();
            while let Some(parent) = top.parent() {
                if fs::symlink_metadata(parent).is_ok() {
                    break;
                }
                top = parent.to_path_buf();
            }
            fs::create_dir_all(&path)?;
            Undo::Restore {
                path: top,
                backup: None,
            }
        }
        Mutation::Symlink { target, .. } => {
            let backup = move_aside(&path, scratch)?;
            std::os::unix::fs::symlink(target, &path)?;
            Undo::Restore { path, backup }
        }
    };
    let undo = match (made, undo) {
        // A file in directories the mutation made: removing the topmost removes it all.
        (Some(top), Undo::Restore { backup: None, .. }) => Undo::Restore {
            path: top,
            backup: None,
        },
        (_, undo) => undo,
    };
    Ok(Applied { undo })
}

impl Applied {
    pub fn undo(self) -> Result<()> {
        match self.undo {
            Undo::Restore { path, backup } => {
                match fs::symlink_metadata(&path) {
                    Ok(meta) if meta.is_dir() => fs::remove_dir_all(&path)?,
                    Ok(_) => fs::remove_file(&path)?,
                    Err(_) => {}
                }
                if let Some(backup) = backup {
                    fs::rename(&backup, &path).with_context(|| {
                        format!("putting {} back from {}", path.display(), backup.display())
                    })?;
                }
            }
            Undo::Mode { path, mode } => {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode))?;
            }
            Undo::Owner { path, uid, gid } => {
                std::os::unix::fs::lchown(&path, Some(uid), Some(gid))?
            }
        }
        Ok(())
    }
}
