//! Evaluates checks against a root tree: statically (files, packages, units, sysctl.d, users,
//! sshd's effective options are read, never run), except `command` checks, which run inside
//! the tree through `stemcell-builder chroot-exec` (the sandbox) when allowed.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use super::checks::{
    multiline, parse_mode, AgentSettingsProbe, Check, CommandProbe, Condition, ContentProbe,
    FileProbe, FileType, FilesWithProbe, GroupProbe, Having, Needs, PackageProbe, Probe,
    ServiceProbe, SshdOptionProbe, SysctlProbe, TableProbe, UserProbe, Who,
};
use super::tree::{kind_of, Kind, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: Status,
    /// Why it failed or was skipped; what was seen when it passed.
    pub detail: String,
}

impl Outcome {
    fn pass(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Pass,
            detail: detail.into(),
        }
    }
    fn fail(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Fail,
            detail: detail.into(),
        }
    }
    fn skip(detail: impl Into<String>) -> Self {
        Outcome {
            status: Status::Skip,
            detail: detail.into(),
        }
    }
    fn from(result: Result<String, String>) -> Self {
        match result {
            Ok(detail) => Outcome::pass(detail),
            Err(detail) => Outcome::fail(detail),
        }
    }
}

/// How `command` checks may run.
#[derive(Debug, Clone)]
pub enum Exec {
    /// Through this stemcell-builder binary's chroot-exec.
    With(PathBuf),
    /// Not at all: such checks are skipped with this reason.
    Skip(String),
}

pub struct Evaluator<'a> {
    tree: &'a Tree,
    exec: Exec,
    passwd: Option<Vec<Vec<String>>>,
    group: Option<Vec<Vec<String>>>,
    /// Regular files under a start directory (path, mode, uid): several checks walk the same
    /// directories, each walk is done once per evaluator.
    walks: HashMap<String, Walk>,
    /// Results of `command` checks, by script, run together in one chroot-exec.
    ran: HashMap<String, Ran>,
}

/// The regular files a walk found: path, mode, owner uid.
type Walk = std::rc::Rc<Vec<(String, u32, u32)>>;

#[derive(Debug, Clone)]
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs each script (given as $1, $2, ...) with `bash -c`, stdin empty, and prints one line per
/// script: index, exit status, stdout and stderr in hex (so any byte survives the framing). The
/// outputs pass through the sandbox's own /dev/shm, never through the audited tree.
const BATCH: &str = r#"i=0
for script in "$@"; do
  bash -c "$script" </dev/null >/dev/shm/audit.out 2>/dev/shm/audit.err
  code=$?
  printf '%d %d %s %s
' "$i" "$code" "$(od -An -v -tx1 /dev/shm/audit.out | tr -d ' 
')" "$(od -An -v -tx1 /dev/shm/audit.err | tr -d ' 
')"
  i=$((i + 1))
done"#;

type Verdict = Result<String, String>;

impl<'a> Evaluator<'a> {
    pub fn new(tree: &'a Tree, exec: Exec) -> Self {
        Evaluator {
            tree,
            exec,
            passwd: None,
            group: None,
            walks: HashMap::new(),
            ran: HashMap::new(),
        }
    }

    /// Runs the `command` probes of `checks` inside the tree, all in one chroot-exec (each a
    /// `bash -c` of its own), so evaluating them later reads the results.
    pub fn run_commands(&mut self, checks: &[&Check]) -> Result<(), String> {
        let Exec::With(builder) = &self.exec else {
            return Ok(());
        };
        let scripts: Vec<&str> = checks
            .iter()
            .filter(|c| c.needs == Needs::Tree)
            .filter_map(|c| match &c.check {
                Probe::Command(p) => Some(p.run.as_str()),
                _ => None,
            })
            .collect();
        if scripts.is_empty() {
            return Ok(());
        }
        let output = Command::new(builder)
            .arg("chroot-exec")
            .arg("--no-resolv-conf")
            .arg(self.tree.root())
            .args(["--", "/bin/bash", "-c", BATCH, "audit"])
            .args(&scripts)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", builder.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            let [index, code, out, err] = fields[..] else {
                continue;
            };
            let (Ok(index), Ok(code)) = (index.parse::<usize>(), code.parse::<i32>()) else {
                continue;
            };
            let decode =
                |h: &str| String::from_utf8_lossy(&hex::decode(h).unwrap_or_default()).into_owned();
            if let Some(script) = scripts.get(index) {
                self.ran.insert(
                    script.to_string(),
                    Ran {
                        code,
                        stdout: decode(out),
                        stderr: decode(err),
                    },
                );
            }
        }
        if self.ran.len() < scripts.len() {
            return Err(format!(
                "chroot-exec ran {} of {} commands (exit {:?}): {}",
                self.ran.len(),
                scripts.len(),
                output.status.code(),
                first_line(String::from_utf8_lossy(&output.stderr).trim())
            ));
        }
        Ok(())
    }

    pub fn evaluate(&mut self, check: &Check) -> Outcome {
        if check.needs == Needs::Running {
            return Outcome::skip("needs a running system: a static audit cannot answer it");
        }
        match &check.check {
            Probe::File(p) => Outcome::from(self.file(p)),
            Probe::Content(p) => Outcome::from(self.content(p)),
            Probe::Package(p) => Outcome::from(self.package(p)),
            Probe::Service(p) => Outcome::from(self.service(p)),
            Probe::Sysctl(p) => Outcome::from(self.sysctl(p)),
            Probe::User(p) => Outcome::from(self.user(p)),
            Probe::Group(p) => Outcome::from(self.group_probe(p)),
            Probe::Table(p) => Outcome::from(self.table(p)),
            Probe::FilesWith(p) => Outcome::from(self.files_with(p)),
            Probe::SshdOption(p) => Outcome::from(self.sshd_option(p)),
            Probe::AgentSettings(p) => Outcome::from(self.agent_settings(p)),
            Probe::Command(p) => match &self.exec {
                Exec::Skip(why) => Outcome::skip(why.clone()),
                Exec::With(_) => Outcome::from(self.command(p)),
            },
        }
    }

    fn read(&self, path: &str) -> Result<String, String> {
        self.tree
            .read(path)
            .map_err(|e| format!("cannot read {path}: {e}"))
    }

    fn rows(&self, path: &str) -> Result<Vec<Vec<String>>, String> {
        Ok(self
            .read(path)?
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| l.split(':').map(str::to_string).collect())
            .collect())
    }

    fn passwd(&mut self) -> Result<&Vec<Vec<String>>, String> {
        if self.passwd.is_none() {
            self.passwd = Some(self.rows("/etc/passwd")?);
        }
        Ok(self.passwd.as_ref().unwrap())
    }

    fn groups(&mut self) -> Result<&Vec<Vec<String>>, String> {
        if self.group.is_none() {
            self.group = Some(self.rows("/etc/group")?);
        }
        Ok(self.group.as_ref().unwrap())
    }

    fn user_name(&mut self, uid: u32) -> Result<String, String> {
        Ok(self
            .passwd()?
            .iter()
            .find(|r| r.get(2).map(String::as_str) == Some(&uid.to_string()))
            .map(|r| r[0].clone())
            .unwrap_or_else(|| uid.to_string()))
    }

    fn group_name(&mut self, gid: u32) -> Result<String, String> {
        Ok(self
            .groups()?
            .iter()
            .find(|r| r.get(2).map(String::as_str) == Some(&gid.to_string()))
            .map(|r| r[0].clone())
            .unwrap_or_else(|| gid.to_string()))
    }

    fn file(&mut self, p: &FileProbe) -> Verdict {
        let stat = match self.tree.stat(&p.path, p.follow) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if p.exists {
                    Err(format!("{} is missing", p.path))
                } else {
                    Ok(format!("{} is absent", p.path))
                };
            }
            Err(e) => return Err(format!("cannot stat {}: {e}", p.path)),
        };
        if !p.exists {
            return Err(format!("{} exists", p.path));
        }
        let kind = kind_of(&stat);
        if let Some(want) = p.file_type {
            let ok = matches!(
                (want, kind),
                (FileType::File, Kind::File)
                    | (FileType::Directory, Kind::Directory)
                    | (FileType::Symlink, Kind::Symlink)
            );
            if !ok {
                return Err(format!("{} is a {kind:?}, not a {want:?}", p.path).to_lowercase());
            }
        }
        let mode = stat.st_mode & 0o7777;
        if let Some(want) = &p.mode {
            let want = parse_mode(want).map_err(|e| e.to_string())?;
            if mode != want {
                return Err(format!("{} has mode {mode:04o}, not {want:04o}", p.path));
            }
        }
        for who in &p.not_writable_by {
            let bit = match who {
                Who::Group => 0o020,
                Who::Other => 0o002,
            };
            if mode & bit != 0 {
                return Err(
                    format!("{} (mode {mode:04o}) is writable by {who:?}", p.path).to_lowercase(),
                );
            }
        }
        if let Some(want) = p.executable {
            if (mode & 0o111 != 0) != want {
                return Err(format!(
                    "{} (mode {mode:04o}) is {}executable",
                    p.path,
                    if want { "not " } else { "" }
                ));
            }
        }
        if let Some(want) = &p.owner {
            let owner = self.user_name(stat.st_uid)?;
            if &owner != want {
                return Err(format!("{} is owned by {owner}, not {want}", p.path));
            }
        }
        if let Some(want) = &p.group {
            let group = self.group_name(stat.st_gid)?;
            if &group != want {
                return Err(format!("{} has group {group}, not {want}", p.path));
            }
        }
        if let Some(want) = &p.link_target {
            let got = self
                .tree
                .read_link(&p.path)
                .map_err(|e| format!("{} is not a symlink: {e}", p.path))?;
            if got != std::path::Path::new(want) {
                return Err(format!(
                    "{} points to {}, not {want}",
                    p.path,
                    got.display()
                ));
            }
        }
        if let Some(want) = &p.resolves_to {
            let got = self
                .tree
                .resolve(&p.path)
                .map_err(|e| format!("cannot resolve {}: {e}", p.path))?;
            if &got != want {
                return Err(format!("{} leads to {got}, not {want}", p.path));
            }
        }
        Ok(format!("{} ({kind:?}, {mode:04o})", p.path).to_lowercase())
    }

    fn agent_settings(&mut self, p: &AgentSettingsProbe) -> Verdict {
        let text = self.read(&p.path)?;
        super::agent_settings::validate(&text).map_err(|e| format!("{}: {e}", p.path))?;
        Ok(format!("{} holds only keys the agent reads", p.path))
    }

    fn content(&mut self, p: &ContentProbe) -> Verdict {
        let text = self.read(&p.path)?;
        if let Some(want) = &p.equals {
            if &text != want {
                return Err(format!("{} is not exactly {want:?}", p.path));
            }
        }
        for pattern in &p.matches {
            let re = multiline(pattern).map_err(|e| e.to_string())?;
            if !re.is_match(&text) {
                return Err(format!("{} has no line matching /{pattern}/", p.path));
            }
        }
        for pattern in &p.not_matches {
            let re = multiline(pattern).map_err(|e| e.to_string())?;
            if let Some(m) = re.find(&text) {
                return Err(format!(
                    "{} matches /{pattern}/: {:?}",
                    p.path,
                    first_line(m.as_str())
                ));
            }
        }
        Ok(format!("{} as expected", p.path))
    }

    fn package(&mut self, p: &PackageProbe) -> Verdict {
        let status = self.read("/var/lib/dpkg/status")?;
        let mut installed = std::collections::BTreeSet::new();
        for paragraph in status.split("\n\n") {
            let mut name = None;
            let mut state = None;
            for line in paragraph.lines() {
                if let Some(v) = line.strip_prefix("Package: ") {
                    name = Some(v.trim());
                } else if let Some(v) = line.strip_prefix("Status: ") {
                    state = Some(v.trim());
                }
            }
            if let (Some(name), Some(state)) = (name, state) {
                if state.ends_with(" installed") {
                    installed.insert(name.to_string());
                }
            }
        }
        let wrong: Vec<&str> = p
            .names
            .iter()
            .filter(|n| installed.contains(*n) != p.installed)
            .map(String::as_str)
            .collect();
        let state = if p.installed {
            "installed"
        } else {
            "not installed"
        };
        if wrong.is_empty() {
            Ok(format!("{} {state}", p.names.join(", ")))
        } else if p.installed {
            Err(format!("not installed: {}", wrong.join(", ")))
        } else {
            Err(format!("installed: {}", wrong.join(", ")))
        }
    }

    /// Enabled: a link named UNIT in a `*.wants`/`*.requires` directory of /etc/systemd/system
    /// (what `systemctl enable` makes), and not masked.
    fn service(&mut self, p: &ServiceProbe) -> Verdict {
        let unit = if p.unit.contains('.') {
            p.unit.clone()
        } else {
            format!("{}.service", p.unit)
        };
        let etc = "/etc/systemd/system";
        let masked = self
            .tree
            .read_link(&format!("{etc}/{unit}"))
            .is_ok_and(|t| t == std::path::Path::new("/dev/null"));
        let mut wanted_by = vec![];
        if let Ok(entries) = self.tree.list(etc) {
            for (name, kind) in entries {
                if kind == Kind::Directory
                    && (name.ends_with(".wants") || name.ends_with(".requires"))
                    && self.tree.exists(&format!("{etc}/{name}/{unit}"))
                {
                    wanted_by.push(name);
                }
            }
        }
        let enabled = !masked && !wanted_by.is_empty();
        match (enabled, p.enabled) {
            (true, true) => Ok(format!("{unit} enabled ({})", wanted_by.join(", "))),
            (false, false) if masked => Ok(format!("{unit} is masked")),
            (false, false) => Ok(format!("{unit} is not enabled")),
            (true, false) => Err(format!("{unit} is enabled ({})", wanted_by.join(", "))),
            (false, true) if masked => Err(format!("{unit} is masked")),
            (false, true) => Err(format!("{unit} is not enabled")),
        }
    }

    /// As systemd-sysctl: *.conf from /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d,
    /// /usr/lib/sysctl.d (a name in an earlier directory hides the same name in later ones),
    /// applied in file-name order, the last assignment of a key winning.
    fn sysctl(&mut self, p: &SysctlProbe) -> Verdict {
        let dirs = [
            "/etc/sysctl.d",
            "/run/sysctl.d",
            "/usr/local/lib/sysctl.d",
            "/usr/lib/sysctl.d",
            "/lib/sysctl.d",
        ];
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        for dir in dirs {
            if let Ok(entries) = self.tree.list(dir) {
                for (name, _) in entries {
                    if name.ends_with(".conf") && !files.contains_key(&name) {
                        files.insert(name.clone(), format!("{dir}/{name}"));
                    }
                }
            }
        }
        let key = normalize_sysctl_key(&p.key);
        let mut value: Option<(String, String)> = None;
        for path in files.values() {
            let Ok(text) = self.tree.read(path) else {
                continue;
            };
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                    continue;
                }
                if let Some((k, v)) = line.split_once('=') {
                    if normalize_sysctl_key(k.trim().trim_start_matches('-')) == key {
                        value = Some((v.trim().to_string(), path.clone()));
                    }
                }
            }
        }
        match value {
            Some((v, from)) if v == p.value => Ok(format!("{} = {v} ({from})", p.key)),
            Some((v, from)) => Err(format!("{} = {v} ({from}), not {}", p.key, p.value)),
            None => Err(format!("{} is set by no sysctl.d file", p.key)),
        }
    }

    fn user(&mut self, p: &UserProbe) -> Verdict {
        let row = self
            .passwd()?
            .iter()
            .find(|r| r.first() == Some(&p.name))
            .cloned();
        let Some(row) = row else {
            return if p.exists {
                Err(format!("user {} does not exist", p.name))
            } else {
                Ok(format!("user {} does not exist", p.name))
            };
        };
        if !p.exists {
            return Err(format!("user {} exists", p.name));
        }
        let field = |i: usize| row.get(i).cloned().unwrap_or_default();
        if let Some(uid) = p.uid {
            if field(2) != uid.to_string() {
                return Err(format!("user {} has uid {}, not {uid}", p.name, field(2)));
            }
        }
        if let Some(shell) = &p.shell {
            if &field(6) != shell {
                return Err(format!(
                    "user {} has shell {}, not {shell}",
                    p.name,
                    field(6)
                ));
            }
        }
        if let Some(home) = &p.home {
            if &field(5) != home {
                return Err(format!("user {} has home {}, not {home}", p.name, field(5)));
            }
        }
        let gid: u32 = field(3).parse().unwrap_or(u32::MAX);
        let primary = self.group_name(gid)?;
        if let Some(want) = &p.primary_group {
            if &primary != want {
                return Err(format!(
                    "user {} has primary group {primary}, not {want}",
                    p.name
                ));
            }
        }
        let mut member_of: Vec<String> = self
            .groups()?
            .iter()
            .filter(|g| {
                g.get(3)
                    .is_some_and(|m| m.split(',').any(|m| m.trim() == p.name))
            })
            .map(|g| g[0].clone())
            .collect();
        member_of.push(primary);
        for group in &p.groups {
            if !member_of.contains(group) {
                return Err(format!("user {} is not in group {group}", p.name));
            }
        }
        Ok(format!("user {}: groups {}", p.name, member_of.join(",")))
    }

    fn group_probe(&mut self, p: &GroupProbe) -> Verdict {
        let row = self
            .groups()?
            .iter()
            .find(|r| r.first() == Some(&p.name))
            .cloned();
        let Some(row) = row else {
            return if p.exists {
                Err(format!("group {} does not exist", p.name))
            } else {
                Ok(format!("group {} does not exist", p.name))
            };
        };
        if !p.exists {
            return Err(format!("group {} exists", p.name));
        }
        let members: Vec<&str> = row
            .get(3)
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|m| !m.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        for want in &p.members {
            if !members.contains(&want.as_str()) {
                return Err(format!("group {} does not list {want}", p.name));
            }
        }
        Ok(format!("group {}: {}", p.name, members.join(",")))
    }

    fn table(&mut self, p: &TableProbe) -> Verdict {
        let text = self.read(&p.path)?;
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .collect();
        let mut selected = vec![];
        for line in &lines {
            let fields: Vec<&str> = line.split(':').collect();
            if p.filter.iter().all(|c| holds(c, &fields)) {
                selected.push(*line);
            }
        }
        if p.none {
            return match selected.first() {
                None => Ok(format!("no row of {} selected", p.path)),
                Some(row) => Err(format!("{} has {}", p.path, redact(&p.path, row))),
            };
        }
        if let Some(rows) = &p.rows {
            return if selected.iter().map(|s| s.to_string()).collect::<Vec<_>>() == *rows {
                Ok(format!("{} rows as expected", p.path))
            } else {
                Err(format!(
                    "{} rows are {:?}",
                    p.path,
                    selected
                        .iter()
                        .map(|r| redact(&p.path, r))
                        .collect::<Vec<_>>()
                ))
            };
        }
        for row in &selected {
            let fields: Vec<&str> = row.split(':').collect();
            if let Some(c) = p.each.iter().find(|c| !holds(c, &fields)) {
                return Err(format!(
                    "{}: {} fails on field {}",
                    p.path,
                    redact(&p.path, row),
                    c.field
                ));
            }
        }
        Ok(format!("{} rows of {} as expected", selected.len(), p.path))
    }

    fn walk(&mut self, dir: &str) -> Result<Walk, String> {
        if let Some(files) = self.walks.get(dir) {
            return Ok(files.clone());
        }
        // A directory on the root's file system is a part of the walk of /: one walk serves all.
        if dir != "/" {
            let start = self
                .tree
                .walk_start(dir)
                .map_err(|e| format!("cannot walk {dir}: {e}"))?;
            let root = self
                .tree
                .walk_start("/")
                .map_err(|e| format!("cannot walk /: {e}"))?;
            if let (Some((canonical, device)), Some((_, root_device))) = (start, root) {
                if device == root_device {
                    let prefix = format!("{}/", canonical.trim_end_matches('/'));
                    let files: Vec<_> = self
                        .walk("/")?
                        .iter()
                        .filter(|(path, _, _)| path.starts_with(&prefix))
                        .cloned()
                        .collect();
                    let files = std::rc::Rc::new(files);
                    self.walks.insert(dir.to_string(), files.clone());
                    return Ok(files);
                }
            }
        }
        let mut files = vec![];
        self.tree
            .walk_files(dir, &mut |path, meta| {
                files.push((path.to_string(), meta.mode(), meta.uid()));
            })
            .map_err(|e| format!("cannot walk {dir}: {e}"))?;
        let files = std::rc::Rc::new(files);
        self.walks.insert(dir.to_string(), files.clone());
        Ok(files)
    }

    fn files_with(&mut self, p: &FilesWithProbe) -> Verdict {
        let mut found = vec![];
        for dir in &p.dirs {
            for (path, mode, uid) in self.walk(dir)?.iter() {
                let having = match p.having {
                    None => true,
                    Some(Having::SetuidOrSetgid) => mode & 0o6000 != 0,
                    Some(Having::WorldWritable) => mode & 0o002 != 0,
                    Some(Having::GroupOrWorldWritable) => mode & 0o022 != 0,
                    Some(Having::OwnerNotRoot) => *uid != 0,
                };
                let named = p
                    .named
                    .as_deref()
                    .is_none_or(|pattern| wildcard(pattern, path.rsplit('/').next().unwrap_or("")));
                if having && named {
                    found.push(path.clone());
                }
            }
        }
        found.sort();
        found.dedup();
        if let Some(template) = &p.each_has_line {
            let text = self.read(&template.path)?;
            let lines: Vec<&str> = text.lines().map(str::trim).collect();
            for file in &found {
                let line = template.line.replace("{}", file);
                if !lines.contains(&line.as_str()) {
                    return Err(format!("{} has no line {line:?}", template.path));
                }
            }
            return Ok(format!("{} files, each in {}", found.len(), template.path));
        }
        let unexpected: Vec<&String> = found.iter().filter(|f| !p.allowed.contains(f)).collect();
        if unexpected.is_empty() {
            Ok(format!("found {}", found.join(", ")))
        } else {
            Err(format!(
                "unexpected: {}",
                unexpected
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    fn sshd_option(&mut self, p: &SshdOptionProbe) -> Verdict {
        let mut found = None;
        self.sshd_visit(&p.config, &p.name.to_ascii_lowercase(), &mut found, 0)?;
        match found {
            Some((value, file)) if value == p.value => Ok(format!("{} {value} ({file})", p.name)),
            Some((value, file)) => Err(format!("{} is {value} ({file}), not {}", p.name, p.value)),
            None => Err(format!("{} is not set: sshd's default applies", p.name)),
        }
    }

    /// Reads one sshd config file as sshd does: the first value of an option wins, Include
    /// expands in place (relative to /etc/ssh), and a Match block ends the global section of
    /// the file it is in.
    fn sshd_visit(
        &mut self,
        file: &str,
        option: &str,
        found: &mut Option<(String, String)>,
        depth: usize,
    ) -> Result<(), String> {
        if depth > 8 {
            return Err(format!("{file}: Include nested too deep"));
        }
        let text = self.read(file)?;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, value) = match line.find(|c: char| c.is_whitespace() || c == '=') {
                Some(i) => (
                    &line[..i],
                    line[i..].trim_start_matches(|c: char| c.is_whitespace() || c == '='),
                ),
                None => (line, ""),
            };
            let keyword = keyword.to_ascii_lowercase();
            if keyword == "match" {
                return Ok(());
            }
            if keyword == "include" {
                for pattern in value.split_whitespace() {
                    let pattern = if pattern.starts_with('/') {
                        pattern.to_string()
                    } else {
                        format!("/etc/ssh/{pattern}")
                    };
                    for included in self.glob(&pattern) {
                        self.sshd_visit(&included, option, found, depth + 1)?;
                    }
                }
                continue;
            }
            if keyword == option && found.is_none() {
                let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                *found = Some((value, file.to_string()));
            }
        }
        Ok(())
    }

    /// Files matching a pattern whose last component may hold `*` and `?`, sorted.
    fn glob(&self, pattern: &str) -> Vec<String> {
        let (dir, name) = pattern.rsplit_once('/').unwrap_or(("/", pattern));
        if !name.contains(['*', '?']) {
            return if self.tree.exists(pattern) {
                vec![pattern.to_string()]
            } else {
                vec![]
            };
        }
        let dir = if dir.is_empty() { "/" } else { dir };
        self.tree
            .list(dir)
            .unwrap_or_default()
            .into_iter()
            .filter(|(n, _)| wildcard(name, n))
            .map(|(n, _)| format!("{}/{n}", dir.trim_end_matches('/')))
            .collect()
    }

    fn command(&mut self, p: &CommandProbe) -> Verdict {
        if !self.ran.contains_key(&p.run) {
            let check = Check {
                id: String::new(),
                tag: None,
                title: String::new(),
                applies_to: Default::default(),
                needs: Needs::Tree,
                check: Probe::Command(p.clone()),
                mutation: super::checks::Mutation::Remove { path: "/".into() },
                source: PathBuf::new(),
            };
            self.run_commands(&[&check])?;
        }
        let ran = self
            .ran
            .get(&p.run)
            .cloned()
            .ok_or("the command did not run")?;
        let (code, stdout, stderr) = (ran.code, ran.stdout, ran.stderr);
        if code != p.exit {
            return Err(format!(
                "exited {code}, not {}: {}",
                p.exit,
                first_line(stderr.trim())
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        if let Some(want) = &p.stdout_equals {
            if stdout != *want {
                return Err(format!(
                    "printed {:?}",
                    stdout.chars().take(200).collect::<String>()
                ));
            }
        }
        for (stream, patterns, text) in [
            ("stdout", &p.stdout_matches, &stdout),
            ("stderr", &p.stderr_matches, &stderr),
        ] {
            for pattern in patterns {
                let re = multiline(pattern).map_err(|e| e.to_string())?;
                if !re.is_match(text) {
                    return Err(format!("{stream} has no line matching /{pattern}/"));
                }
            }
        }
        Ok(format!("exited {code}"))
    }
}

fn holds(c: &Condition, fields: &[&str]) -> bool {
    let value = fields.get(c.field - 1).copied().unwrap_or("");
    if c.equals.as_deref().is_some_and(|e| e != value) {
        return false;
    }
    if !c.one_of.is_empty() && !c.one_of.iter().any(|v| v == value) {
        return false;
    }
    if c.not_in.iter().any(|v| v == value) {
        return false;
    }
    if let Some(re) = &c.matches {
        if !multiline(re).is_ok_and(|re| re.is_match(value)) {
            return false;
        }
    }
    if let Some(re) = &c.not_matches {
        if multiline(re).is_ok_and(|re| re.is_match(value)) {
            return false;
        }
    }
    if let Some(below) = c.below {
        match value.parse::<i64>() {
            Ok(n) if n < below => {}
            _ => return false,
        }
    }
    true
}

/// Rows of shadow files are shown without their hashes.
fn redact(path: &str, row: &str) -> String {
    if path.ends_with("shadow") {
        let mut fields: Vec<&str> = row.split(':').collect();
        if fields.len() > 1 && !fields[1].is_empty() {
            fields[1] = "<hash>";
        }
        fields.join(":")
    } else {
        row.to_string()
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn normalize_sysctl_key(key: &str) -> String {
    key.trim().replace('/', ".")
}

/// Shell-style `*` and `?` matching of one file name.
pub fn wildcard(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checks;
    use std::fs;
    use std::path::Path;

    fn eval(root: &Path, yaml: &str) -> Outcome {
        let checks = checks::parse(
            &format!(
                "checks:\n  - id: t\n    title: t\n    check: {yaml}\n    mutation: {{remove: {{path: /x}}}}\n"
            ),
            Path::new("t.yml"),
        )
        .unwrap();
        let tree = Tree::open(root).unwrap();
        Evaluator::new(&tree, Exec::Skip("no".into())).evaluate(&checks[0])
    }

    fn root() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for d in [
            "etc/ssh/sshd_config.d",
            "etc/sysctl.d",
            "usr/lib/sysctl.d",
            "etc/systemd/system/multi-user.target.wants",
        ] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(
            r.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nvcap:x:1000:1000:BOSH:/home/vcap:/bin/bash\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/group"),
            "root:x:0:\nvcap:x:1000:syslog\nsudo:x:27:vcap\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn sshd_first_value_wins_and_includes_expand_in_place() {
        let dir = root();
        let r = dir.path();
        fs::write(r.join("etc/ssh/sshd_config"), "PermitRootLogin no\nInclude /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n").unwrap();
        fs::write(
            r.join("etc/ssh/sshd_config.d/50-cloud.conf"),
            "PasswordAuthentication yes\nPermitRootLogin yes\n",
        )
        .unwrap();
        let root_login = eval(r, "{sshd_option: {name: PermitRootLogin, value: 'no'}}");
        assert_eq!(root_login.status, Status::Pass, "{}", root_login.detail);
        let password = eval(
            r,
            "{sshd_option: {name: PasswordAuthentication, value: 'no'}}",
        );
        assert_eq!(password.status, Status::Fail);
        assert!(
            password.detail.contains("50-cloud.conf"),
            "{}",
            password.detail
        );
    }

    #[test]
    fn sysctl_later_files_win_and_etc_hides_usr_lib() {
        let dir = root();
        let r = dir.path();
        fs::write(
            r.join("usr/lib/sysctl.d/50-default.conf"),
            "net.ipv4.ip_forward = 1\n",
        )
        .unwrap();
        fs::write(
            r.join("etc/sysctl.d/60-bosh.conf"),
            "net.ipv4.ip_forward=0\n",
        )
        .unwrap();
        assert_eq!(
            eval(r, "{sysctl: {key: net.ipv4.ip_forward, value: '0'}}").status,
            Status::Pass
        );
        fs::write(
            r.join("etc/sysctl.d/99-late.conf"),
            "net/ipv4/ip_forward = 1\n",
        )
        .unwrap();
        assert_eq!(
            eval(r, "{sysctl: {key: net.ipv4.ip_forward, value: '0'}}").status,
            Status::Fail
        );
        fs::write(r.join("etc/sysctl.d/99-late.conf"), "").unwrap();
        fs::write(r.join("etc/sysctl.d/50-default.conf"), "").unwrap();
        assert_eq!(
            eval(r, "{sysctl: {key: net.ipv4.ip_forward, value: '0'}}").status,
            Status::Pass
        );
    }

    #[test]
    fn services_users_tables_and_running_only_checks() {
        let dir = root();
        let r = dir.path();
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/cron.service",
            r.join("etc/systemd/system/multi-user.target.wants/cron.service"),
        )
        .unwrap();
        assert_eq!(
            eval(r, "{service: {unit: cron, enabled: true}}").status,
            Status::Pass
        );
        assert_eq!(
            eval(r, "{service: {unit: auditd, enabled: false}}").status,
            Status::Pass
        );
        std::os::unix::fs::symlink("/dev/null", r.join("etc/systemd/system/cron.service")).unwrap();
        assert_eq!(
            eval(r, "{service: {unit: cron, enabled: true}}").detail,
            "cron.service is masked"
        );
        assert_eq!(
            eval(
                r,
                "{user: {name: vcap, uid: 1000, primary_group: vcap, groups: [sudo]}}"
            )
            .status,
            Status::Pass
        );
        assert_eq!(eval(r, "{user: {name: syslog}}").status, Status::Fail);
        assert_eq!(
            eval(r, "{group: {name: vcap, members: [syslog]}}").status,
            Status::Pass
        );
        let uid0 = "{table: {path: /etc/passwd, where: [{field: 3, equals: '0'}], rows: ['root:x:0:0:root:/root:/bin/bash']}}";
        assert_eq!(eval(r, uid0).status, Status::Pass);
        let shells = "{table: {path: /etc/passwd, where: [{field: 3, below: 500}, {field: 1, not_in: [root]}], each: [{field: 7, in: [/usr/sbin/nologin]}]}}";
        assert_eq!(eval(r, shells).status, Status::Pass);
        let checks = checks::parse("checks:\n  - id: t\n    title: t\n    needs: running\n    check: {package: {names: [x], installed: true}}\n    mutation: {remove: {path: /x}}\n", Path::new("t.yml")).unwrap();
        let tree = Tree::open(r).unwrap();
        let outcome = Evaluator::new(&tree, Exec::Skip("no".into())).evaluate(&checks[0]);
        assert_eq!(outcome.status, Status::Skip);
        assert!(outcome.detail.contains("running system"));
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("*.conf", "50-cloud.conf"));
        assert!(!wildcard("*.conf", "50-cloud.conf.bak"));
        assert!(!wildcard("*.conf", ".hidden.conf"));
        assert!(wildcard("a?c", "abc"));
    }
}
