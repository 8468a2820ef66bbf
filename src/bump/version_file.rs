//! The version file `bump` reads and rewrites: one semantic version (`MAJOR.MINOR.PATCH`), as
//! Concourse's semver resource keeps it in `version/number`. A rewrite goes to a temp file in the
//! same directory, with the original's mode, renamed over it: a reader never sees half a file,
//! and a failure leaves the old version in place.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::fsutil::io_error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Major,
    Minor,
    Patch,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Major => "major",
            Level::Minor => "minor",
            Level::Patch => "patch",
        }
    }

    /// The next version at this level; pre-release and build metadata are dropped, as
    /// Concourse's semver resource drops them when it bumps.
    /// A number at `u64::MAX` cannot go up: that is an error, never a wrap to 0 (which would
    /// make the version go down).
    pub fn apply(self, v: &semver::Version) -> anyhow::Result<semver::Version> {
        let up = |n: u64| {
            n.checked_add(1).ok_or_else(|| {
                anyhow::anyhow!(
                    "version {v}: its {} number is already the largest there is; set a smaller version by hand",
                    self.name()
                )
            })
        };
        Ok(match self {
            Level::Major => semver::Version::new(up(v.major)?, 0, 0),
            Level::Minor => semver::Version::new(v.major, up(v.minor)?, 0),
            Level::Patch => semver::Version::new(v.major, v.minor, up(v.patch)?),
        })
    }
}

pub struct VersionFile {
    /// The file itself (a symlink is followed, so the rename replaces its target).
    path: PathBuf,
    pub version: semver::Version,
    newline: bool,
    mode: u32,
}

impl VersionFile {
    pub fn read(path: &Path) -> Result<Self> {
        let fix = "write one semantic version such as 1.0.0 into it";
        let real = std::fs::canonicalize(path)
            .with_context(|| format!("cannot read version file {}: {fix}", path.display()))?;
        let meta = std::fs::metadata(&real)
            .with_context(|| format!("cannot read version file {}: {fix}", path.display()))?;
        if !meta.is_file() {
            anyhow::bail!(
                "version file {} is not a regular file: {fix}",
                path.display()
            );
        }
        let text = std::fs::read_to_string(&real)
            .with_context(|| format!("cannot read version file {}: {fix}", path.display()))?;
        let trimmed = text.trim();
        let version = semver::Version::parse(trimmed).map_err(|_| {
            anyhow::anyhow!(
                "version file {} holds {:?}, not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0): {fix}",
                path.display(),
                truncate(trimmed)
            )
        })?;
        Ok(Self {
            path: real,
            version,
            newline: text.ends_with('\n'),
            mode: meta.permissions().mode() & 0o7777,
        })
    }

    /// Replaces the file's content with `version`, atomically.
    pub fn write(&self, version: &semver::Version) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut temp = tempfile::Builder::new()
            .prefix(".version.")
            .suffix(".partial")
            .tempfile_in(dir)
            .map_err(|e| io_error(e, "creating a temporary file in", dir))?;
        let body = if self.newline {
            format!("{version}\n")
        } else {
            version.to_string()
        };
        temp.write_all(body.as_bytes())
            .and_then(|()| temp.as_file().sync_all())
            .and_then(|()| {
                temp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(self.mode))
            })
            .map_err(|e| io_error(e, "writing", &self.path))?;
        temp.persist(&self.path)
            .map_err(|e| io_error(e.error, "renaming into", &self.path))?;
        Ok(())
    }
}

/// Keeps an error line short when the file holds something large.
fn truncate(text: &str) -> String {
    let mut out: String = text.chars().take(40).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_bump_like_the_semver_resource() {
        let v = semver::Version::parse("1.2.3-rc.1+build.5").unwrap();
        assert_eq!(Level::Major.apply(&v).unwrap().to_string(), "2.0.0");
        assert_eq!(Level::Minor.apply(&v).unwrap().to_string(), "1.3.0");
        assert_eq!(Level::Patch.apply(&v).unwrap().to_string(), "1.2.4");
        // At the largest number, a bump is refused, never wrapped to 0.
        let top = semver::Version::new(1, 2, u64::MAX);
        let err = Level::Patch.apply(&top).unwrap_err();
        assert!(err.to_string().contains("largest"), "{err}");
        assert!(Level::Minor.apply(&top).is_ok());
        assert!(Level::Major
            .apply(&semver::Version::new(u64::MAX, 0, 0))
            .is_err());
    }

    #[test]
    fn rewrite_keeps_mode_and_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("number");
        std::fs::write(&path, "0.9.1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let file = VersionFile::read(&path).unwrap();
        file.write(&Level::Minor.apply(&file.version).unwrap())
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0.10.0\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn not_semver_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("number");
        for bad in ["1.2", "", "v1.2.3", "1.2.3.4"] {
            std::fs::write(&path, bad).unwrap();
            let err = VersionFile::read(&path).err().unwrap().to_string();
            assert!(err.contains("not a semantic version"), "{err}");
        }
    }
}
