//! The one settings contract of every build, OS image or stemcell: what stages see as exported
//! variables, and (for `config.sh`, which the reference contract hands a settings file) what is
//! written to `WORK/settings/build.bash`, never into the stages' source tree.
//!
//! Three kinds of names: settings the builder decides from a flag (`os_name` from `--os`), which
//! `--set` may not replace; builder defaults (`stemcell_version` of an OS image), which it may;
//! and names `--set` may never touch: the variables of the stage contract (`chroot`, `work`,
//! `settings_file`, ...) and those that change how the host's shell and loader behave (`PATH`,
//! `LD_PRELOAD`, `BASH_ENV`, ...). Secret settings (`*_password`, `*_secret`, `*_key`, and the
//! names a stages dir declares) are never printed or logged; files holding them are 0600.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Result};

use crate::os::OsDefinition;
pub use crate::stage::mask::Masker;

/// Variables the runner gives every stage (design section 3). A setting of the same name would
/// be overwritten, or worse, point a stage at a host file (`settings_file`).
pub const CONTRACT_VARIABLES: &[&str] = &[
    "work",
    "chroot",
    "assets_dir",
    "settings_file",
    "build_settings_file",
    "base_dir",
    "lib_dir",
    "stage_name",
    "stemcell_builder",
    "package_cache_dir",
    "offline",
];

/// Names that change how the host's shell, loader or interpreters behave for a stage run as
/// root on the host.
const HOST_ENVIRONMENT: &[&str] = &[
    "PATH",
    "HOME",
    "SHELL",
    "USER",
    "LOGNAME",
    "IFS",
    "ENV",
    "BASH_ENV",
    "CDPATH",
    "GLOBIGNORE",
    "SHELLOPTS",
    "BASHOPTS",
    "PS4",
    "PROMPT_COMMAND",
    "TMPDIR",
    "GCONV_PATH",
    "LOCPATH",
    "NLSPATH",
    "HOSTALIASES",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "TZDIR",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
];
const HOST_ENVIRONMENT_PREFIXES: &[&str] = &["LD_", "BASH", "GLIBC_", "MALLOC_"];

/// Endings that make a setting secret, whatever stages declare.
const SECRET_SUFFIXES: &[&str] = &["_password", "_secret", "_key"];

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildSettings {
    values: BTreeMap<String, String>,
    /// Settings decided by a flag: name -> the flag to use instead of `--set`.
    fixed: BTreeMap<String, &'static str>,
    /// Names declared secret by the stages dir (besides the suffix rule).
    declared_secrets: BTreeSet<String>,
}

/// A `--set KEY=VALUE` the CLI has parsed (the value may come from the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub key: String,
    pub value: String,
}

impl Override {
    /// `KEY=VALUE`; a bare `KEY` takes its value from `env` (so a secret need not be on the
    /// command line, where every local user can read it).
    pub fn parse(pair: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let (key, value) = match pair.split_once('=') {
            Some((key, value)) => (key, value.to_string()),
            None => {
                check_key(pair)?;
                match env(pair) {
                    Some(value) => (pair, value),
                    None => bail!(
                        "--set {pair}: expected KEY=VALUE, or a KEY exported in the environment (${pair} is not): write --set {pair}=VALUE, or export {pair} first"
                    ),
                }
            }
        };
        check_key(key)?;
        Ok(Self {
            key: key.to_string(),
            value,
        })
    }
}

impl BuildSettings {
    /// A setting the builder decides from `flag`; `--set` cannot replace it.
    pub fn fixed(&mut self, key: &str, value: impl Into<String>, flag: &'static str) {
        debug_assert!(check_key(key).is_ok() && reserved(key).is_none(), "{key}");
        self.values.insert(key.to_string(), value.into());
        self.fixed.insert(key.to_string(), flag);
    }

    /// A builder default that `--set` may replace.
    pub fn default_value(&mut self, key: &str, value: impl Into<String>) {
        debug_assert!(check_key(key).is_ok() && reserved(key).is_none(), "{key}");
        self.values.insert(key.to_string(), value.into());
        self.fixed.remove(key);
    }

    /// These settings without `names` (a stage's view when some settings are scoped to others).
    pub fn without(&self, names: &[&str]) -> BuildSettings {
        let mut view = self.clone();
        for name in names {
            view.values.remove(*name);
        }
        view
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Names a stages dir declares secret (`secret_settings` in collections.yml).
    pub fn declare_secrets(&mut self, names: &[String]) {
        self.declared_secrets.extend(names.iter().cloned());
    }

    pub fn is_secret(&self, key: &str) -> bool {
        is_secret_name(key) || self.declared_secrets.contains(key)
    }

    /// The non-empty values of secret settings, to be masked in everything the build prints.
    pub fn secret_values(&self) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, v)| !v.is_empty() && self.is_secret(k))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Applies `--set` overrides: refuses reserved names and settings a flag decides.
    pub fn apply_overrides(&mut self, overrides: &[Override]) -> Result<()> {
        for o in overrides {
            check_override(&o.key, self.fixed.get(&o.key).copied())?;
            self.values.insert(o.key.clone(), o.value.clone());
        }
        Ok(())
    }

    /// The bash file a stage can `source`.
    pub fn to_bash(&self) -> String {
        let mut out = String::from("# generated by stemcell-builder for this build; do not edit\n");
        for (key, value) in &self.values {
            out.push_str(&format!("export {key}={}\n", shell_words::quote(value)));
        }
        out
    }

    /// Writes `to_bash()` to `path`, readable by root only: it may hold secrets.
    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            crate::fsutil::create_owned_dir(dir)?;
        }
        crate::output::write_atomically(path, self.to_bash().as_bytes())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    }
}

/// The suffix rule alone (the CLI uses it to keep secrets out of the resume command).
pub fn is_secret_name(key: &str) -> bool {
    SECRET_SUFFIXES.iter().any(|s| key.ends_with(s))
}

fn check_key(key: &str) -> Result<()> {
    let mut chars = key.chars();
    let valid_start = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        bail!("setting name '{key}' is not a shell variable name: use letters, digits and _");
    }
    Ok(())
}

/// Why `key` may never be set, if it may not.
fn reserved(key: &str) -> Option<&'static str> {
    if CONTRACT_VARIABLES.contains(&key) {
        Some("is a variable the builder gives every stage")
    } else if HOST_ENVIRONMENT.contains(&key)
        || HOST_ENVIRONMENT_PREFIXES.iter().any(|p| key.starts_with(p))
    {
        Some("changes how the build host's shell and programs behave")
    } else if key.starts_with('_') {
        Some("starts with _, which the stage prelude keeps for itself")
    } else {
        None
    }
}

fn check_override(key: &str, fixed_by: Option<&'static str>) -> Result<()> {
    check_key(key)?;
    if let Some(why) = reserved(key) {
        bail!("--set {key}: {key} {why}; it cannot be set");
    }
    if let Some(flag) = fixed_by {
        bail!("--set {key}: the builder sets {key} from {flag}; pass {flag} instead");
    }
    Ok(())
}

/// Which OS a build is for, as stages see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsIdentity {
    /// `debian-trixie`
    pub name: String,
    pub os_name: String,
    pub os_version: String,
    pub suite: String,
    pub variant: String,
    pub components: Vec<String>,
    pub packages: Vec<String>,
}

impl OsIdentity {
    pub fn from_definition(def: &OsDefinition) -> Self {
        Self {
            name: def.name.clone(),
            os_name: def.os_name.clone(),
            os_version: def.os_version.clone(),
            suite: def.suite.clone(),
            variant: def.variant.clone(),
            components: def.components.clone(),
            packages: def.packages.clone(),
        }
    }

    /// An OS known only by name and version (an OS image's `os-release`): the suite is the
    /// version's codename; components and packages come from a matching definition when the
    /// assets have one.
    pub fn from_release(
        os_name: &str,
        os_version: &str,
        definition: Option<&OsDefinition>,
    ) -> Self {
        match definition {
            Some(def) if def.os_name == os_name && def.os_version == os_version => {
                Self::from_definition(def)
            }
            _ => Self {
                name: format!("{os_name}-{os_version}"),
                os_name: os_name.to_string(),
                os_version: os_version.to_string(),
                suite: os_version.to_string(),
                variant: "minbase".into(),
                components: vec!["main".into()],
                packages: vec![],
            },
        }
    }
}

/// The settings every stage of every build sees.
pub fn contract(os: &OsIdentity, arch: &str, mirror: Option<&str>) -> BuildSettings {
    let mut s = BuildSettings::default();
    s.fixed("os", &os.name, "--os");
    s.fixed("os_name", &os.os_name, "--os");
    s.fixed("os_version", &os.os_version, "--os");
    s.fixed("os_suite", &os.suite, "--os");
    s.fixed("variant", &os.variant, "--os");
    s.fixed("os_components", os.components.join(" "), "--os");
    s.fixed("os_packages", os.packages.join(" "), "--os");
    // The reference builder's names, so its stages read naturally here.
    s.fixed("stemcell_operating_system", &os.os_name, "--os");
    s.fixed("stemcell_operating_system_version", &os.os_version, "--os");
    s.fixed("DISTRIB_CODENAME", &os.suite, "--os");
    s.fixed("arch", arch, "--arch");
    s.fixed("mirror", mirror.unwrap_or_default(), "--mirror");
    s.default_value("stemcell_version", "0000");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[&str]) -> Result<BuildSettings> {
        let mut settings = BuildSettings::default();
        let overrides = pairs
            .iter()
            .map(|p| Override::parse(p, |_| None))
            .collect::<Result<Vec<_>>>()?;
        settings.apply_overrides(&overrides)?;
        Ok(settings)
    }

    #[test]
    fn bash_file_round_trips_awkward_values_and_is_private() {
        let settings = set(&["weird=it's a \"$HOME\" `x`"]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("settings/s.bash");
        settings.write(&file).unwrap();
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!("source {} && printf %s \"$weird\"", file.display()))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "it's a \"$HOME\" `x`");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.path().join("settings")), 0o700);
    }

    #[test]
    fn bad_keys_and_pairs_are_refused() {
        assert!(set(&["novalue"])
            .unwrap_err()
            .to_string()
            .contains("export novalue"));
        assert!(set(&["1abc=x"]).is_err());
        assert!(set(&["a-b=x"]).is_err());
        assert!(set(&["=x"]).is_err());
    }

    #[test]
    fn a_bare_key_takes_its_value_from_the_environment() {
        let o = Override::parse("bosh_users_password", |k| {
            (k == "bosh_users_password").then(|| "s3cret".to_string())
        })
        .unwrap();
        assert_eq!(o.value, "s3cret");
    }

    #[test]
    fn reserved_names_are_refused_with_the_reason() {
        for key in ["settings_file", "chroot", "work", "stemcell_builder"] {
            let err = set(&[&format!("{key}=/etc/passwd")])
                .unwrap_err()
                .to_string();
            assert!(err.contains("builder gives every stage"), "{err}");
        }
        for key in [
            "PATH",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "BASH_ENV",
            "BASH_FUNC_x%%",
            "IFS",
        ] {
            assert!(set(&[&format!("{key}=x")]).is_err(), "{key}");
        }
        assert!(set(&["_on_exit_commands=x"]).is_err());
        let mut settings = contract(
            &OsIdentity::from_release("debian", "trixie", None),
            "amd64",
            None,
        );
        let err = settings
            .apply_overrides(&[Override::parse("os_name=ubuntu", |_| None).unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from --os"), "{err}");
        settings
            .apply_overrides(&[Override::parse("stemcell_version=1.2", |_| None).unwrap()])
            .unwrap();
        assert_eq!(settings.get("stemcell_version"), Some("1.2"));
    }

    #[test]
    fn secrets_by_suffix_and_declaration_are_masked() {
        let mut settings = set(&[
            "bosh_users_password=hunter2",
            "api_key=k3y",
            "token=t0k",
            "plain=visible",
            "empty_secret=",
        ])
        .unwrap();
        settings.declare_secrets(&["token".into()]);
        let mut secrets = settings.secret_values();
        secrets.sort();
        assert_eq!(secrets, ["hunter2", "k3y", "t0k"]);
        let masker = Masker::new(secrets);
        assert_eq!(
            masker.mask("pw=hunter2 key=k3y t0k plain=visible"),
            "pw=*** key=*** *** plain=visible"
        );
    }
}
