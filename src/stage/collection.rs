//! `stages/collections.yml`: which stages run, in order, for each collection (one per OS family,
//! one per IaaS), and which settings the stages treat as secrets. Everything here is checked
//! before any stage runs. A stage name becomes a directory and a log file name, so it is a plain
//! name: letters, digits, `_` and `-`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectionsFile {
    collections: BTreeMap<String, Vec<String>>,
    /// Settings whose values are never printed or logged, besides `*_password`, `*_secret` and
    /// `*_key`.
    #[serde(default)]
    secret_settings: Vec<String>,
    /// Stages whose output lies outside the chroot (a disk image in `$disk_dir`): never taken
    /// from the layer cache, they run on every build.
    #[serde(default)]
    always_run: Vec<String>,
    /// Settings only the named stages see (`stemcell_git_sha1: [system_parameters]`): in no
    /// other stage's environment, in no config.sh's settings file, and so in no other stage's
    /// layer key. A value that changes on every commit then reruns only the stages that read it.
    #[serde(default)]
    scoped_settings: BTreeMap<String, Vec<String>>,
}

/// One collection, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    pub stages: Vec<Stage>,
    pub secret_settings: Vec<String>,
    pub always_run: Vec<String>,
    /// Setting name -> the stages that see it (see `CollectionsFile::scoped_settings`).
    pub scoped_settings: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 1-based position in the collection; names the log file (`NN-name.log`).
    pub position: usize,
    pub name: String,
    pub dir: PathBuf,
}

impl Stage {
    pub fn apply_script(&self) -> PathBuf {
        self.dir.join("apply.sh")
    }
    pub fn config_script(&self) -> Option<PathBuf> {
        let path = self.dir.join("config.sh");
        path.exists().then_some(path)
    }
    pub fn assets_dir(&self) -> PathBuf {
        self.dir.join("assets")
    }
    /// `NN-name`, used for logs and stage settings.
    pub fn slug(&self) -> String {
        format!("{:02}-{}", self.position, self.name)
    }
}

#[derive(Debug, Error)]
pub enum CollectionError {
    #[error("cannot read {path}: {source}; pass the stages directory with --stages-dir")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is malformed: {message}")]
    Malformed { path: PathBuf, message: String },
    #[error("unknown collection '{name}' in {path}: valid collections are {valid}")]
    UnknownCollection {
        name: String,
        path: PathBuf,
        valid: String,
    },
    #[error("stage '{stage}' is listed in collection '{collection}' but {dir} does not exist: add the stage or remove it from collections.yml")]
    MissingStage {
        stage: String,
        collection: String,
        dir: PathBuf,
    },
    #[error("stage '{stage}' has no apply.sh: create {path} (every stage needs one)")]
    MissingApply { stage: String, path: PathBuf },
    #[error("{path} is not executable: run `chmod +x {path}`")]
    NotExecutable { path: PathBuf },
    #[error(
        "stage '{stage}' appears twice in collection '{collection}': stage names must be unique"
    )]
    Duplicate { stage: String, collection: String },
    #[error("stage name '{stage}' in collection '{collection}' of {path} is not a plain name: use only letters, digits, _ and - (it names a directory of the stages dir and a log file)")]
    BadName {
        stage: String,
        collection: String,
        path: PathBuf,
    },
}

/// A plain name: it can be joined to a directory without leaving it.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn load_collection(stages_dir: &Path, name: &str) -> Result<Collection, CollectionError> {
    let path = stages_dir.join("collections.yml");
    let text = std::fs::read_to_string(&path).map_err(|source| CollectionError::Unreadable {
        path: path.clone(),
        source,
    })?;
    let file: CollectionsFile =
        serde_yaml_ng::from_str(&text).map_err(|e| CollectionError::Malformed {
            path: path.clone(),
            message: e.to_string(),
        })?;
    for (setting, stages) in &file.scoped_settings {
        if let Some(stage) = stages
            .iter()
            .find(|s| !file.collections.values().flatten().any(|n| n == *s))
        {
            return Err(CollectionError::Malformed {
                path: path.clone(),
                message: format!(
                    "scoped_settings: {setting} names stage '{stage}', which no collection lists: fix the name"
                ),
            });
        }
    }
    let Some(names) = file.collections.get(name) else {
        let valid = file
            .collections
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        return Err(CollectionError::UnknownCollection {
            name: name.into(),
            path,
            valid,
        });
    };
    if let Some(bad) = names.iter().find(|n| !is_plain_name(n)) {
        return Err(CollectionError::BadName {
            stage: bad
                .chars()
                .take(80)
                .collect::<String>()
                .escape_debug()
                .to_string(),
            collection: name.into(),
            path,
        });
    }
    let mut stages: Vec<Stage> = Vec::with_capacity(names.len());
    for (index, stage) in names.iter().enumerate() {
        if stages.iter().any(|s| &s.name == stage) {
            return Err(CollectionError::Duplicate {
                stage: stage.clone(),
                collection: name.into(),
            });
        }
        let dir = stages_dir.join(stage);
        if !dir.is_dir() {
            return Err(CollectionError::MissingStage {
                stage: stage.clone(),
                collection: name.into(),
                dir,
            });
        }
        let stage = Stage {
            position: index + 1,
            name: stage.clone(),
            dir,
        };
        check_executable(&stage.apply_script(), &stage.name, true)?;
        if let Some(config) = stage.config_script() {
            check_executable(&config, &stage.name, false)?;
        }
        stages.push(stage);
    }
    Ok(Collection {
        stages,
        secret_settings: file.secret_settings.clone(),
        always_run: file.always_run.clone(),
        scoped_settings: file.scoped_settings.clone(),
    })
}

fn check_executable(path: &Path, stage: &str, required: bool) -> Result<(), CollectionError> {
    match std::fs::metadata(path) {
        Err(_) if required => Err(CollectionError::MissingApply {
            stage: stage.into(),
            path: path.into(),
        }),
        Err(_) => Ok(()),
        Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
            Err(CollectionError::NotExecutable { path: path.into() })
        }
        Ok(_) => Ok(()),
    }
}

/// The index of `name` in `stages`, or an error listing the valid names.
pub fn position_of(stages: &[Stage], name: &str) -> anyhow::Result<usize> {
    position_for(stages, name, "--resume-from")
}

/// `position_of` for the flag `flag` (named in the error).
pub fn position_for(stages: &[Stage], name: &str, flag: &str) -> anyhow::Result<usize> {
    stages.iter().position(|s| s.name == name).ok_or_else(|| {
        let valid: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
        anyhow::anyhow!(
            "unknown stage '{name}' for {flag}: valid stages are {}",
            valid.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn stage(dir: &Path, name: &str, mode: u32) {
        fs::create_dir_all(dir.join(name)).unwrap();
        let apply = dir.join(name).join("apply.sh");
        fs::write(&apply, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&apply, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn resolves_in_order_with_positions() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("collections.yml"),
            "collections:\n  os: [b, a]\n",
        )
        .unwrap();
        stage(dir.path(), "a", 0o755);
        stage(dir.path(), "b", 0o755);
        let stages = load_collection(dir.path(), "os").unwrap().stages;
        assert_eq!(
            stages.iter().map(|s| s.slug()).collect::<Vec<_>>(),
            ["01-b", "02-a"]
        );
    }

    #[test]
    fn each_bad_input_has_its_own_error() {
        let dir = tempfile::tempdir().unwrap();
        let yml = dir.path().join("collections.yml");
        fs::write(&yml, "collections: [oops").unwrap();
        assert!(matches!(
            load_collection(dir.path(), "os"),
            Err(CollectionError::Malformed { .. })
        ));
        fs::write(&yml, "collections:\n  os: [a, ghost]\n").unwrap();
        stage(dir.path(), "a", 0o644);
        let err = load_collection(dir.path(), "os").unwrap_err();
        assert!(err.to_string().contains("chmod +x"), "{err}");
        stage(dir.path(), "a", 0o755);
        assert!(matches!(
            load_collection(dir.path(), "os"),
            Err(CollectionError::MissingStage { .. })
        ));
        assert!(matches!(
            load_collection(dir.path(), "nope"),
            Err(CollectionError::UnknownCollection { .. })
        ));
        fs::create_dir(dir.path().join("ghost")).unwrap();
        assert!(matches!(
            load_collection(dir.path(), "os"),
            Err(CollectionError::MissingApply { .. })
        ));
    }

    #[test]
    fn a_setting_scoped_to_a_stage_no_collection_lists_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        stage(dir.path(), "a", 0o755);
        let yml = dir.path().join("collections.yml");
        fs::write(
            &yml,
            "scoped_settings:\n  sha: [typo]\ncollections:\n  os: [a]\n",
        )
        .unwrap();
        let err = load_collection(dir.path(), "os").unwrap_err();
        assert!(err.to_string().contains("sha names stage 'typo'"), "{err}");
        fs::write(
            &yml,
            "scoped_settings:\n  sha: [a]\ncollections:\n  os: [a]\n",
        )
        .unwrap();
        let collection = load_collection(dir.path(), "os").unwrap();
        assert_eq!(collection.scoped_settings["sha"], ["a"]);
    }

    #[test]
    fn stage_names_that_leave_the_stages_dir_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let yml = dir.path().join("collections.yml");
        for bad in ["../evil", "a/b", "..", "/abs", "-x", "a b", "a.sh", "\"\""] {
            fs::write(&yml, format!("collections:\n  os: [{bad}]\n")).unwrap();
            let err = load_collection(dir.path(), "os").unwrap_err();
            assert!(
                matches!(err, CollectionError::BadName { .. }),
                "{bad}: {err}"
            );
        }
        assert!(is_plain_name("bosh_go-agent2"));
    }

    #[test]
    fn unknown_resume_stage_lists_valid_names() {
        let stages = vec![Stage {
            position: 1,
            name: "base_apt".into(),
            dir: "/x".into(),
        }];
        let err = position_of(&stages, "nope").unwrap_err().to_string();
        assert!(err.contains("base_apt"), "{err}");
    }
}
