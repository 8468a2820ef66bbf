//! Layer keys: what a stage's layer is a function of. A key hashes its parent's key (so a change
//! anywhere below invalidates everything above), the stage's files and the settings the stage
//! sees. Each of the three is kept on its own too, so a cache miss can say which one changed.
//!
//! Hashing never follows a symlink: a link in a stage dir is hashed as its target's text.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pipeline::settings::BuildSettings;

/// Bumped when what a layer holds, or how it is made, changes meaning.
const KEY_VERSION: &str = concat!("stemcell-builder-layer-v1/", env!("CARGO_PKG_VERSION"));

/// The three inputs of a layer, each a sha256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInputs {
    /// The key of the layer below (the base's key for the first stage).
    pub parent: String,
    /// The stage's directory (apply.sh, config.sh, assets/, anything else) and `stages/lib/`.
    pub files: String,
    /// The build settings, the packager's inputs and the stage's persisted config.sh settings.
    pub settings: String,
}

impl LayerInputs {
    pub fn key(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [KEY_VERSION, &self.parent, &self.files, &self.settings] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hex::encode(hasher.finalize())
    }

    /// Which inputs differ from `before`'s, in words (`stage files`, `settings`, `parent`).
    pub fn changes_from(&self, before: &LayerInputs) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.files != before.files {
            changed.push("stage files");
        }
        if self.settings != before.settings {
            changed.push("settings");
        }
        if self.parent != before.parent {
            changed.push("parent");
        }
        changed
    }
}

/// A hash of a directory's content: names, types, modes, file contents and symlink targets
/// (not owners or times: a checkout by another user or at another time is the same stage).
pub fn dir_content_hash(dir: &Path, hasher: &mut Sha256, label: &[u8]) -> Result<()> {
    hasher.update(label);
    hasher.update([0]);
    let mut names: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    for name in names {
        let path = dir.join(&name);
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut entry_label = label.to_vec();
        entry_label.push(b'/');
        entry_label.extend_from_slice(name.as_bytes());
        hasher.update(&entry_label);
        hasher.update(format!("\0{:o}\0", meta.mode()).as_bytes());
        let kind = meta.file_type();
        if kind.is_dir() {
            dir_content_hash(&path, hasher, &entry_label)?;
        } else if kind.is_symlink() {
            let target =
                fs::read_link(&path).with_context(|| format!("reading link {}", path.display()))?;
            hasher.update(target.as_os_str().as_bytes());
        } else if kind.is_file() {
            hasher.update(meta.len().to_le_bytes());
            let mut file =
                fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            std::io::copy(&mut file, hasher)
                .with_context(|| format!("reading {}", path.display()))?;
        }
        hasher.update([0]);
    }
    Ok(())
}

/// The `files` input of a stage: its directory (and its name, which stages see as
/// `$stage_name`) and the shared prelude (`lib`), which every stage sources.
pub fn stage_files(stage_dir: &Path, lib_hash: &str) -> Result<String> {
    let mut hasher = Sha256::new();
    hasher.update(lib_hash.as_bytes());
    hasher.update([0]);
    if let Some(name) = stage_dir.file_name() {
        hasher.update(name.as_bytes());
    }
    hasher.update([0]);
    dir_content_hash(stage_dir, &mut hasher, b"stage")?;
    Ok(hex::encode(hasher.finalize()))
}

/// The hash of `stages/lib/` (or of nothing when there is none).
pub fn lib_files(lib_dir: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    if lib_dir.is_dir() {
        dir_content_hash(lib_dir, &mut hasher, b"lib")?;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The `settings` input of a stage. Values are hashed with the work dir's path replaced by
/// `$work`, so a build in another work dir can reuse the layers; secrets are hashed like any
/// value and are never written anywhere by this.
pub fn stage_settings(
    settings: &BuildSettings,
    work: &Path,
    packager_inputs: &[(String, String)],
    stage_settings_file: &Path,
) -> Result<String> {
    let mut hasher = Sha256::new();
    let work = work.to_string_lossy();
    for (key, value) in settings.iter() {
        hasher.update(key.as_bytes());
        hasher.update([b'=']);
        hasher.update(value.replace(work.as_ref(), "$work").as_bytes());
        hasher.update([0]);
    }
    hasher.update(b"\0packager\0");
    for (key, value) in packager_inputs {
        hasher.update(key.as_bytes());
        hasher.update([b'=']);
        hasher.update(value.as_bytes());
        hasher.update([0]);
    }
    hasher.update(b"\0persisted\0");
    match fs::read(stage_settings_file) {
        Ok(bytes) => hasher.update(String::from_utf8_lossy(&bytes).replace(work.as_ref(), "$work")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading {}", stage_settings_file.display()))
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The key of a base given as a directory: a walk of every entry's name, type, mode, owner,
/// size, device, link target, mtime and ctime (and inode). Contents are not read: any write
/// changes a file's ctime, which nobody can set back, so an edited tree never keeps its key.
pub fn tree_metadata(root: &Path) -> Result<String> {
    fn walk(dir: &Path, hasher: &mut Sha256, label: &[u8]) -> Result<()> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for name in names {
            let path = dir.join(&name);
            let meta = fs::symlink_metadata(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut entry = label.to_vec();
            entry.push(b'/');
            entry.extend_from_slice(name.as_bytes());
            hasher.update(&entry);
            hasher.update(describe(&meta).as_bytes());
            if meta.file_type().is_symlink() {
                hasher.update(fs::read_link(&path)?.as_os_str().as_bytes());
            }
            hasher.update([0]);
            if meta.is_dir() {
                walk(&path, hasher, &entry)?;
            }
        }
        Ok(())
    }
    fn describe(meta: &fs::Metadata) -> String {
        let kind = meta.file_type();
        let device = if kind.is_char_device() || kind.is_block_device() {
            meta.rdev()
        } else {
            0
        };
        format!(
            "\0{:o} {}:{} {} {} {} {}.{} {}.{}",
            meta.mode(),
            meta.uid(),
            meta.gid(),
            meta.len(),
            device,
            meta.ino(),
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec()
        )
    }
    let meta = fs::symlink_metadata(root).with_context(|| format!("reading {}", root.display()))?;
    let mut hasher = Sha256::new();
    hasher.update(b"tree-v1");
    hasher.update(describe(&meta).as_bytes());
    walk(root, &mut hasher, b".")?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_key_changes_with_each_input_and_says_which() {
        let inputs = LayerInputs {
            parent: "p".into(),
            files: "f".into(),
            settings: "s".into(),
        };
        let key = inputs.key();
        assert_eq!(key, inputs.clone().key());
        for (i, changed) in ["stage files", "settings", "parent"].iter().enumerate() {
            let mut other = inputs.clone();
            match i {
                0 => other.files = "g".into(),
                1 => other.settings = "t".into(),
                _ => other.parent = "q".into(),
            }
            assert_ne!(other.key(), key);
            assert_eq!(other.changes_from(&inputs), [*changed]);
        }
    }

    #[test]
    fn stage_files_see_contents_modes_names_and_link_targets_without_following() {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage");
        fs::create_dir_all(stage.join("assets/sub")).unwrap();
        fs::write(stage.join("apply.sh"), "echo hi\n").unwrap();
        fs::write(stage.join("assets/sub/file"), "x").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", stage.join("assets/link")).unwrap();
        let base = stage_files(&stage, "lib").unwrap();
        assert_eq!(base, stage_files(&stage, "lib").unwrap());
        assert_ne!(base, stage_files(&stage, "other lib").unwrap());

        fs::write(stage.join("assets/sub/file"), "y").unwrap();
        let content = stage_files(&stage, "lib").unwrap();
        assert_ne!(base, content, "content");

        fs::set_permissions(
            stage.join("assets/sub/file"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let mode = stage_files(&stage, "lib").unwrap();
        assert_ne!(content, mode, "mode");

        fs::rename(
            stage.join("assets/sub/file"),
            stage.join("assets/sub/renamed"),
        )
        .unwrap();
        let renamed = stage_files(&stage, "lib").unwrap();
        assert_ne!(mode, renamed, "name");

        fs::remove_file(stage.join("assets/link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", stage.join("assets/link")).unwrap();
        let relinked = stage_files(&stage, "lib").unwrap();
        assert_ne!(renamed, relinked, "link target");

        let other = dir.path().join("other_stage");
        fs::rename(&stage, &other).unwrap();
        assert_ne!(
            relinked,
            stage_files(&other, "lib").unwrap(),
            "the stage's name"
        );
    }

    #[test]
    fn settings_hash_ignores_the_work_dir_path_but_not_values_or_persisted_settings() {
        let mut settings = BuildSettings::default();
        settings.default_value("disk_dir", "/w1/disk");
        settings.default_value("bosh_users_password", "hunter2");
        let dir = tempfile::tempdir().unwrap();
        let persisted = dir.path().join("01-x.bash");
        let one = stage_settings(&settings, Path::new("/w1"), &[], &persisted).unwrap();
        let mut moved = BuildSettings::default();
        moved.default_value("disk_dir", "/w2/disk");
        moved.default_value("bosh_users_password", "hunter2");
        assert_eq!(
            one,
            stage_settings(&moved, Path::new("/w2"), &[], &persisted).unwrap()
        );
        let mut secret = moved.clone();
        secret.default_value("bosh_users_password", "other");
        assert_ne!(
            one,
            stage_settings(&secret, Path::new("/w2"), &[], &persisted).unwrap(),
            "a secret's value is an input"
        );
        fs::write(&persisted, "export greeting=hi\n").unwrap();
        assert_ne!(
            one,
            stage_settings(&settings, Path::new("/w1"), &[], &persisted).unwrap()
        );
        let agent = [("agent".to_string(), "abc".to_string())];
        assert_ne!(
            stage_settings(&settings, Path::new("/w1"), &[], &persisted).unwrap(),
            stage_settings(&settings, Path::new("/w1"), &agent, &persisted).unwrap()
        );
    }

    #[test]
    fn a_written_tree_changes_its_key() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/a"), "one").unwrap();
        let before = tree_metadata(dir.path()).unwrap();
        assert_eq!(before, tree_metadata(dir.path()).unwrap());
        // Same size, mtime put back: the ctime still moves.
        let mtime = filetime::FileTime::from_last_modification_time(
            &fs::metadata(dir.path().join("etc/a")).unwrap(),
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(dir.path().join("etc/a"), "two").unwrap();
        filetime::set_file_mtime(dir.path().join("etc/a"), mtime).unwrap();
        assert_ne!(before, tree_metadata(dir.path()).unwrap());
    }
}
