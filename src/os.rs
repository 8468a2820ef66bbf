//! OS definitions are data (`assets/os/NAME.yml`): suite, variant, keyring, package set and the
//! stage collection each OS uses.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OsDefinition {
    /// `debian-trixie`; also the file's name.
    pub name: String,
    /// `debian` or `ubuntu` (the reference builder's OS_NAME).
    pub os_name: String,
    /// `trixie`, `noble` (the reference builder's OS_VERSION).
    pub os_version: String,
    /// The archive suite to bootstrap.
    pub suite: String,
    /// mmdebstrap/debootstrap variant.
    #[serde(default = "default_variant")]
    pub variant: String,
    /// Archive components for the base.
    #[serde(default = "default_components")]
    pub components: Vec<String>,
    /// Keyring file the archive is signed with; `None`: the bootstrapper's default.
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// Debian package that ships `keyring`, named in the error when it is missing.
    #[serde(default)]
    pub keyring_package: Option<String>,
    /// The stage collection `build-os-image` runs by default.
    pub collection: String,
    /// Packages installed into the base in the bootstrap itself.
    #[serde(default)]
    pub packages: Vec<String>,
}

fn default_variant() -> String {
    "minbase".into()
}

fn default_components() -> Vec<String> {
    vec!["main".into()]
}

pub const DEFAULT_OS: &str = "debian-trixie";

impl OsDefinition {
    pub fn load(assets_dir: &Path, name: &str) -> Result<Self> {
        let path = assets_dir.join("os").join(format!("{name}.yml"));
        if !crate::stage::collection::is_plain_name(name) || !path.exists() {
            bail!(
                "unknown OS '{name}': valid names are {}",
                available(assets_dir)?.join(", ")
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let def: OsDefinition = serde_yaml_ng::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is malformed: {e}", path.display()))?;
        if def.name != name {
            bail!(
                "{} declares name '{}': it must match its file name",
                path.display(),
                def.name
            );
        }
        Ok(def)
    }

    /// The keyring to use: the user's, else the definition's, which must then be installed.
    pub fn resolve_keyring(&self, user: Option<&Path>) -> Result<Option<PathBuf>> {
        if let Some(path) = user {
            if !path.exists() {
                bail!(
                    "keyring {} does not exist: pass an existing file to --keyring",
                    path.display()
                );
            }
            return Ok(Some(path.to_path_buf()));
        }
        match &self.keyring {
            Some(path) if !path.exists() => {
                let package = self
                    .keyring_package
                    .as_deref()
                    .unwrap_or("the archive keyring package");
                bail!(
                    "{} needs its archive keyring {}, which is not installed: install {package} or pass --keyring FILE",
                    self.name,
                    path.display()
                )
            }
            other => Ok(other.clone()),
        }
    }
}

/// The names of all OS definitions, sorted.
pub fn available(assets_dir: &Path) -> Result<Vec<String>> {
    let dir = assets_dir.join("os");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".yml")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The reference builder's OS_NAME/OS_VERSION pair as one of our names.
pub fn from_reference_env(os_name: Option<String>, os_version: Option<String>) -> Option<String> {
    match (os_name, os_version) {
        (Some(name), Some(version)) => Some(format!("{name}-{version}")),
        (Some(name), None) if name == "debian" => Some(DEFAULT_OS.into()),
        (Some(name), None) if name == "ubuntu" => Some("ubuntu-noble".into()),
        _ => None,
    }
}

/// What the image's /etc/os-release says: (`debian`, `trixie`). Read inside the tree, as the
/// tree itself sees it (`crate::inroot`), never through a symlink to the host's file.
pub fn os_release(root: &Path) -> Result<(String, String)> {
    const MAX: u64 = 64 << 10;
    let (path, bytes) = match crate::inroot::read_if_exists(root, "etc/os-release", MAX)? {
        Some(bytes) => ("etc/os-release", bytes),
        None => match crate::inroot::read_if_exists(root, "usr/lib/os-release", MAX)? {
            Some(bytes) => ("usr/lib/os-release", bytes),
            None => bail!("the OS image has no /etc/os-release: pass --os NAME-VERSION"),
        },
    };
    let fields = parse_os_release(&String::from_utf8_lossy(&bytes));
    let field = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (field("ID"), field("VERSION_CODENAME")) {
        (Some(id), Some(codename)) => Ok((id, codename)),
        _ => bail!(
            "{} names no ID and VERSION_CODENAME: pass --os NAME-VERSION",
            root.join(path).display()
        ),
    }
}

/// `KEY=VALUE` lines of an os-release file (os-release(5)): values are shell words, quoted
/// with `"` or `'` and escaped with `\`, so `shell-words` unquotes them; comments, blank and
/// malformed lines are skipped.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            let words = shell_words::split(value).ok()?;
            Some((key.to_string(), words.join(" ")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets")
    }

    #[test]
    fn every_shipped_definition_loads() {
        let names = available(&assets()).unwrap();
        assert_eq!(
            names,
            [
                "debian-bookworm",
                "debian-trixie",
                "ubuntu-jammy",
                "ubuntu-noble"
            ]
        );
        for name in names {
            let def = OsDefinition::load(&assets(), &name).unwrap();
            assert!(!def.packages.is_empty(), "{name} has packages");
        }
    }

    #[test]
    fn ubuntu_without_keyring_says_how_to_fix() {
        let mut def = OsDefinition::load(&assets(), "ubuntu-noble").unwrap();
        def.keyring = Some("/nonexistent/ubuntu-archive-keyring.gpg".into());
        let err = def.resolve_keyring(None).unwrap_err().to_string();
        assert!(
            err.contains("--keyring") && err.contains("ubuntu-keyring"),
            "{err}"
        );
    }

    #[test]
    fn unknown_os_lists_valid_names() {
        let err = OsDefinition::load(&assets(), "centos-7")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("debian-trixie") && err.contains("ubuntu-noble"),
            "{err}"
        );
    }

    #[test]
    fn reference_environment_names() {
        assert_eq!(
            from_reference_env(Some("ubuntu".into()), Some("jammy".into())).unwrap(),
            "ubuntu-jammy"
        );
        assert_eq!(from_reference_env(None, None), None);
    }
}
