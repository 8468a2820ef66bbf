//! The audit's checks are data: `assets/checks/*.yml`, each a list of checks with an id, the
//! reference's CIS/STIG tag where it has one, a title, where it applies, the probe (a small
//! vocabulary below) and the mutation that makes it fail (the mutation test applies each one to
//! a built tree). Unknown fields are refused, ids are unique, regexes compile and every check
//! has its mutation: a malformed check file fails loading with the file and the check named.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckFile {
    checks: Vec<Check>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// Unique, stable: `ssh-permit-root-login`.
    pub id: String,
    /// The reference's tag: `stig: V-38613`, `CIS-9.4`.
    #[serde(default)]
    pub tag: Option<String>,
    /// What is checked, in a line.
    pub title: String,
    #[serde(default)]
    pub applies_to: Applicability,
    /// `running`: only a booted system can answer; a static audit skips it and says so.
    #[serde(default)]
    pub needs: Needs,
    /// `check: {file: {...}}`: one probe, named by its key.
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub check: Probe,
    /// How to make this check fail on a tree where it passes (the mutation test's input).
    #[serde(with = "serde_yaml_ng::with::singleton_map")]
    pub mutation: Mutation,
    /// The file this check was loaded from (set by the loader).
    #[serde(skip_deserializing, default)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Needs {
    /// Reads the tree, or runs a command in it through chroot-exec.
    #[default]
    Tree,
    /// Needs the system booted (a service running, a port open).
    Running,
}

/// What is audited: an OS image or a stemcell (of one IaaS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    OsImage,
    Stemcell,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            TargetKind::OsImage => "os-image",
            TargetKind::Stemcell => "stemcell",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Applicability {
    /// Default: both kinds.
    #[serde(default = "all_kinds")]
    pub kinds: Vec<TargetKind>,
    /// Stemcells of these IaaS only (default: every IaaS).
    #[serde(default)]
    pub iaas: Vec<String>,
}

fn all_kinds() -> Vec<TargetKind> {
    vec![TargetKind::OsImage, TargetKind::Stemcell]
}

impl Default for Applicability {
    fn default() -> Self {
        Applicability {
            kinds: all_kinds(),
            iaas: vec![],
        }
    }
}

impl Applicability {
    pub fn includes(&self, kind: TargetKind, iaas: Option<&str>) -> bool {
        if !self.kinds.contains(&kind) {
            return false;
        }
        if kind == TargetKind::OsImage || self.iaas.is_empty() {
            return true;
        }
        // A check for some IaaS applies only where the IaaS is known to be one of them.
        iaas.is_some_and(|iaas| self.iaas.iter().any(|i| i == iaas))
    }
}

/// The vocabulary. Paths are absolute paths inside the audited tree; symlinks in them resolve
/// inside the tree, never on the host.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Probe {
    /// A file's existence, type, mode, owner, group, link target.
    File(FileProbe),
    /// A file's content: regexes (multi-line: `^`/`$` match at lines) that must or must not
    /// match, or the exact content.
    Content(ContentProbe),
    /// A dpkg package installed or not (`/var/lib/dpkg/status`).
    Package(PackageProbe),
    /// A systemd unit enabled or not, read from the unit symlinks as systemctl would.
    Service(ServiceProbe),
    /// A sysctl value as systemd-sysctl would apply it from the sysctl.d files.
    Sysctl(SysctlProbe),
    /// A user's existence, ids, shell, home and group memberships (the tree's passwd/group).
    User(UserProbe),
    /// A group's existence and members.
    Group(GroupProbe),
    /// Rows of a colon-separated table (passwd, shadow, group) selected and checked by field.
    Table(TableProbe),
    /// Files found by permission bits (setuid, world-writable) under some directories.
    FilesWith(FilesWithProbe),
    /// An sshd option's effective value: first value wins, Includes expanded where they stand.
    SshdOption(SshdOptionProbe),
    /// A command run inside the tree through chroot-exec (the sandbox), its exit status and
    /// output checked. Commands must not change the tree.
    Command(CommandProbe),
    /// The BOSH agent's settings file checked against the agent's own settings structures
    /// (`agent_settings`): every key one the agent reads, with its type.
    AgentSettings(AgentSettingsProbe),
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::File(_) => "file",
            Probe::Content(_) => "content",
            Probe::Package(_) => "package",
            Probe::Service(_) => "service",
            Probe::Sysctl(_) => "sysctl",
            Probe::User(_) => "user",
            Probe::Group(_) => "group",
            Probe::Table(_) => "table",
            Probe::FilesWith(_) => "files_with",
            Probe::SshdOption(_) => "sshd_option",
            Probe::Command(_) => "command",
            Probe::AgentSettings(_) => "agent_settings",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileType {
    File,
    Directory,
    Symlink,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Who {
    Group,
    Other,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileProbe {
    pub path: String,
    /// Default true; `false` checks the path is absent.
    #[serde(default = "yes")]
    pub exists: bool,
    #[serde(default, rename = "type")]
    pub file_type: Option<FileType>,
    /// Exact permission bits, octal: "0644".
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub executable: Option<bool>,
    #[serde(default)]
    pub not_writable_by: Vec<Who>,
    /// Where the symlink points, resolved inside the tree ("/usr/bin/vim.tiny").
    #[serde(default)]
    pub resolves_to: Option<String>,
    /// The symlink's own target text ("/dev/null" for a masked unit).
    #[serde(default)]
    pub link_target: Option<String>,
    /// Check what a final symlink points to instead of the link (stat -L).
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContentProbe {
    pub path: String,
    #[serde(default)]
    pub matches: Vec<String>,
    #[serde(default)]
    pub not_matches: Vec<String>,
    #[serde(default)]
    pub equals: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackageProbe {
    /// Every one of these must be (or must not be) installed.
    pub names: Vec<String>,
    pub installed: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceProbe {
    pub unit: String,
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlProbe {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserProbe {
    pub name: String,
    #[serde(default = "yes")]
    pub exists: bool,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub primary_group: Option<String>,
    #[serde(default)]
    pub shell: Option<String>,
    #[serde(default)]
    pub home: Option<String>,
    /// Supplementary groups the user must be in.
    #[serde(default)]
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GroupProbe {
    pub name: String,
    #[serde(default = "yes")]
    pub exists: bool,
    /// Members the group must list.
    #[serde(default)]
    pub members: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableProbe {
    pub path: String,
    /// Rows selected: every condition holds (all rows when empty; comments and blanks skipped).
    #[serde(default, rename = "where")]
    pub filter: Vec<Condition>,
    /// Every selected row must meet these.
    #[serde(default)]
    pub each: Vec<Condition>,
    /// The selected rows must be exactly these lines.
    #[serde(default)]
    pub rows: Option<Vec<String>>,
    /// No row may be selected.
    #[serde(default)]
    pub none: bool,
}

/// A condition on field `field` (1-based, as awk counts) of a colon-separated row.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    pub field: usize,
    #[serde(default)]
    pub equals: Option<String>,
    #[serde(default, rename = "in")]
    pub one_of: Vec<String>,
    #[serde(default)]
    pub not_in: Vec<String>,
    #[serde(default)]
    pub matches: Option<String>,
    #[serde(default)]
    pub not_matches: Option<String>,
    /// Numeric field below this value.
    #[serde(default)]
    pub below: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Having {
    /// setuid or setgid (`find -perm /6000`).
    SetuidOrSetgid,
    /// writable by others (`find -perm -002`).
    WorldWritable,
    /// writable by group or others (`find -perm /022`).
    GroupOrWorldWritable,
    /// not owned by root (`find ! -user root`).
    OwnerNotRoot,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FilesWithProbe {
    /// Where to look; each walked on its own file system without following links (a start
    /// directory that is a link is not entered, as find without -H).
    pub dirs: Vec<String>,
    /// Files with this property...
    #[serde(default)]
    pub having: Option<Having>,
    /// ...and/or this name (`*` and `?` allowed).
    #[serde(default)]
    pub named: Option<String>,
    /// Regular files found that are allowed; anything else found fails.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Instead of `allowed`: every file found must have this line in that file ("{}" is the
    /// file's path).
    #[serde(default)]
    pub each_has_line: Option<LineTemplate>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LineTemplate {
    pub path: String,
    pub line: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshdOptionProbe {
    pub name: String,
    pub value: String,
    #[serde(default = "sshd_config")]
    pub config: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSettingsProbe {
    pub path: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandProbe {
    /// A bash script, run as `bash -c` inside the tree.
    pub run: String,
    #[serde(default)]
    pub exit: i32,
    #[serde(default)]
    pub stdout_equals: Option<String>,
    #[serde(default)]
    pub stdout_matches: Vec<String>,
    #[serde(default)]
    pub stderr_matches: Vec<String>,
}

/// A change to a copy of a built tree that makes one check fail.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Mutation {
    /// Delete the path (file, link or directory tree).
    Remove { path: String },
    /// Set the permission bits (octal).
    Chmod { path: String, mode: String },
    /// Set numeric owner and group.
    Chown { path: String, uid: u32, gid: u32 },
    /// Replace every match of a regex (multi-line) in a file; it must match.
    Replace {
        path: String,
        pattern: String,
        with: String,
    },
    /// Append text to a file (created when missing).
    Append { path: String, text: String },
    /// Make a directory and its missing parents.
    Mkdir { path: String },
    /// Write a file (replacing what is there).
    Write {
        path: String,
        text: String,
        #[serde(default)]
        mode: Option<String>,
    },
    /// Make path a symlink to target (replacing what is there).
    Symlink { path: String, target: String },
}

impl Mutation {
    pub fn path(&self) -> &str {
        match self {
            Mutation::Remove { path }
            | Mutation::Chmod { path, .. }
            | Mutation::Chown { path, .. }
            | Mutation::Replace { path, .. }
            | Mutation::Append { path, .. }
            | Mutation::Write { path, .. }
            | Mutation::Mkdir { path }
            | Mutation::Symlink { path, .. } => path,
        }
    }
}

fn yes() -> bool {
    true
}

fn sshd_config() -> String {
    "/etc/ssh/sshd_config".into()
}

/// Parses an octal mode ("0644", "644").
pub fn parse_mode(text: &str) -> Result<u32> {
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .with_context(|| format!("'{text}' is not an octal mode (like 0644)"))
}

/// Every check of every `*.yml` in `dir`, in file-name order, validated.
pub fn load_dir(dir: &Path) -> Result<Vec<Check>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| {
            format!(
                "cannot read the checks directory {}: pass --assets-dir with a checks/ directory",
                dir.display()
            )
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no *.yml check files", dir.display());
    }
    let mut checks = vec![];
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        checks.extend(parse(&text, &file)?);
    }
    validate_unique(&checks)?;
    Ok(checks)
}

/// The checks of one file's text (`source` names it in errors).
pub fn parse(text: &str, source: &Path) -> Result<Vec<Check>> {
    let parsed: CheckFile = serde_yaml_ng::from_str(text)
        .map_err(|e| anyhow::anyhow!("{} is malformed: {e}", source.display()))?;
    let mut checks = parsed.checks;
    for check in &mut checks {
        check.source = source.to_path_buf();
        validate(check)
            .map_err(|e| anyhow::anyhow!("{}: check '{}': {e:#}", source.display(), check.id))?;
    }
    Ok(checks)
}

fn validate_unique(checks: &[Check]) -> Result<()> {
    let mut seen = BTreeSet::new();
    for check in checks {
        if !seen.insert(check.id.as_str()) {
            bail!(
                "check id '{}' appears twice ({}): ids must be unique",
                check.id,
                check.source.display()
            );
        }
    }
    Ok(())
}

fn validate(check: &Check) -> Result<()> {
    if check.id.is_empty()
        || !check
            .id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!("the id must be lower-case letters, digits and dashes");
    }
    if check.applies_to.kinds.is_empty() {
        bail!("applies_to.kinds is empty: the check would never run");
    }
    let absolute = |p: &str| -> Result<()> {
        if p.starts_with('/') {
            Ok(())
        } else {
            bail!("path '{p}' must be absolute (inside the audited tree)")
        }
    };
    let regex = |r: &str| -> Result<()> { multiline(r).map(drop).map_err(Into::into) };
    match &check.check {
        Probe::File(f) => {
            absolute(&f.path)?;
            if let Some(mode) = &f.mode {
                parse_mode(mode)?;
            }
            if !f.exists
                && (f.file_type.is_some()
                    || f.mode.is_some()
                    || f.owner.is_some()
                    || f.group.is_some()
                    || f.resolves_to.is_some())
            {
                bail!("a file that must be absent has no type, mode, owner or target");
            }
        }
        Probe::Content(c) => {
            absolute(&c.path)?;
            if c.matches.is_empty() && c.not_matches.is_empty() && c.equals.is_none() {
                bail!("a content check needs matches, not_matches or equals");
            }
            c.matches
                .iter()
                .chain(&c.not_matches)
                .try_for_each(|r| regex(r))?;
        }
        Probe::Table(t) => {
            absolute(&t.path)?;
            let expectations = usize::from(!t.each.is_empty())
                + usize::from(t.rows.is_some())
                + usize::from(t.none);
            if expectations != 1 {
                bail!("a table check needs exactly one of each, rows, none");
            }
            for c in t.filter.iter().chain(&t.each) {
                if c.field == 0 {
                    bail!("fields count from 1");
                }
                c.matches
                    .iter()
                    .chain(&c.not_matches)
                    .try_for_each(|r| regex(r))?;
            }
        }
        Probe::FilesWith(f) => {
            f.dirs.iter().try_for_each(|d| absolute(d))?;
            if f.having.is_none() && f.named.is_none() {
                bail!("files_with needs having, named or both");
            }
            if let Some(t) = &f.each_has_line {
                absolute(&t.path)?;
                if !f.allowed.is_empty() {
                    bail!("files_with takes allowed or each_has_line, not both");
                }
            }
        }
        Probe::SshdOption(s) => absolute(&s.config)?,
        Probe::AgentSettings(a) => absolute(&a.path)?,
        Probe::Command(c) => {
            c.stdout_matches
                .iter()
                .chain(&c.stderr_matches)
                .try_for_each(|r| regex(r))?;
        }
        Probe::Package(p) => {
            if p.names.is_empty() {
                bail!("a package check needs names");
            }
        }
        Probe::Service(_) | Probe::Sysctl(_) | Probe::User(_) | Probe::Group(_) => {}
    }
    absolute(check.mutation.path())?;
    match &check.mutation {
        Mutation::Chmod { mode, .. } => drop(parse_mode(mode)?),
        Mutation::Write {
            mode: Some(mode), ..
        } => drop(parse_mode(mode)?),
        Mutation::Replace { pattern, .. } => regex(pattern)?,
        _ => {}
    }
    Ok(())
}

/// A regex in multi-line mode: `^` and `$` match at line boundaries, as grep reads a file.
pub fn multiline(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("(?m){pattern}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Result<Vec<Check>> {
        parse(yaml, Path::new("test.yml"))
    }

    #[test]
    fn a_check_with_every_part_loads() {
        let checks = one(
            "checks:\n  - id: ssh-root\n    tag: 'stig: V-38613'\n    title: no root\n    check:\n      sshd_option: {name: PermitRootLogin, value: 'no'}\n    mutation:\n      replace: {path: /etc/ssh/sshd_config, pattern: '^PermitRootLogin no$', with: 'PermitRootLogin yes'}\n",
        )
        .unwrap();
        assert_eq!(checks[0].id, "ssh-root");
        assert!(checks[0].applies_to.includes(TargetKind::OsImage, None));
        assert!(checks[0]
            .applies_to
            .includes(TargetKind::Stemcell, Some("aws")));
    }

    #[test]
    fn unknown_fields_and_missing_mutations_are_refused() {
        let unknown = one("checks:\n  - id: a\n    title: t\n    colour: red\n    check: {package: {names: [x], installed: true}}\n    mutation: {remove: {path: /x}}\n");
        assert!(unknown.unwrap_err().to_string().contains("colour"));
        let no_mutation =
            one("checks:\n  - id: a\n    title: t\n    check: {package: {names: [x], installed: true}}\n");
        assert!(no_mutation.unwrap_err().to_string().contains("mutation"));
        let bad_probe_field = one("checks:\n  - id: a\n    title: t\n    check: {package: {names: [x], installd: true}}\n    mutation: {remove: {path: /x}}\n");
        assert!(bad_probe_field.is_err());
    }

    #[test]
    fn bad_regexes_relative_paths_and_modes_name_the_check() {
        let regex = one("checks:\n  - id: a\n    title: t\n    check: {content: {path: /x, matches: ['(']}}\n    mutation: {remove: {path: /x}}\n");
        assert!(regex.unwrap_err().to_string().contains("check 'a'"));
        let relative = one("checks:\n  - id: a\n    title: t\n    check: {file: {path: x}}\n    mutation: {remove: {path: /x}}\n");
        assert!(relative.unwrap_err().to_string().contains("absolute"));
        let mode = one("checks:\n  - id: a\n    title: t\n    check: {file: {path: /x, mode: '0999'}}\n    mutation: {remove: {path: /x}}\n");
        assert!(mode.unwrap_err().to_string().contains("octal"));
    }

    #[test]
    fn applicability_by_kind_and_iaas() {
        let a = Applicability {
            kinds: vec![TargetKind::Stemcell],
            iaas: vec!["warden".into()],
        };
        assert!(!a.includes(TargetKind::OsImage, None));
        assert!(a.includes(TargetKind::Stemcell, Some("warden")));
        assert!(!a.includes(TargetKind::Stemcell, Some("aws")));
    }
}
