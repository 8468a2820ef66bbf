//! The Concourse tasks and pipeline under ci/, and the Vagrantfile, as a project test.
//!
//! Static checks (no Concourse here): every YAML parses; task files and pipelines use only the
//! keys Concourse accepts (it refuses unknown ones); what each task script reads (params as
//! `$VAR`, inputs, outputs and caches as `$task_dir/NAME`) is what its task file declares, and
//! the other way round; every task a pipeline runs exists and gets its inputs; every resource a
//! job uses is declared and every declared one is used; credentials are `((vars))`.
//!
//! Real runs: `ci/tasks/build.sh` laid out as Concourse lays out a task (inputs and outputs as
//! sibling directories of the working directory, params as the only environment) for warden,
//! with the os-image input, from S3, and building the OS image first; `build-os-image.sh`
//! against a real S3 server publishing only when packages change; the loop-device preparation
//! on a fake /dev; `vagrant validate`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use regex::Regex;
use serde_yaml_ng::Value;
use support::s3_server::{self, S3Server};
use support::text;

// ---------------------------------------------------------------------------------------------
// Reading the files

fn ci_dir() -> PathBuf {
    support::repo().join("ci")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        ) {
            out.push(path);
        }
    }
    out.sort();
}

fn load(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn map(v: &Value) -> &serde_yaml_ng::Mapping {
    v.as_mapping()
        .unwrap_or_else(|| panic!("expected a mapping, found {v:?}"))
}

fn keys(v: &Value) -> Vec<String> {
    map(v)
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect()
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn seq<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key)
        .and_then(Value::as_sequence)
        .map(|s| s.iter().collect())
        .unwrap_or_default()
}

fn task_files() -> Vec<PathBuf> {
    let mut files = vec![];
    yaml_files(&ci_dir().join("tasks"), &mut files);
    assert!(!files.is_empty(), "ci/tasks holds task files");
    files
}

fn pipeline_files() -> Vec<PathBuf> {
    let mut files = vec![];
    yaml_files(&ci_dir().join("pipelines"), &mut files);
    assert!(!files.is_empty(), "ci/pipelines holds pipelines");
    files
}

/// A task file as Concourse reads it.
struct Task {
    file: PathBuf,
    /// (name, directory in the working dir, optional)
    inputs: Vec<(String, String, bool)>,
    outputs: Vec<(String, String)>,
    caches: Vec<String>,
    /// Declared params and their defaults (None: declared without a value).
    params: BTreeMap<String, Option<String>>,
    run_path: String,
}

impl Task {
    fn load(file: &Path) -> Task {
        let v = load(file);
        let dirs = |key: &str| -> Vec<(String, String, bool)> {
            seq(&v, key)
                .into_iter()
                .map(|i| {
                    let name = s(i, "name").expect("every input and output has a name");
                    let path = s(i, "path").unwrap_or(name);
                    let optional = i.get("optional").and_then(Value::as_bool).unwrap_or(false);
                    (name.to_string(), path.to_string(), optional)
                })
                .collect()
        };
        let params = v
            .get("params")
            .map(|p| {
                map(p)
                    .iter()
                    .map(|(k, v)| {
                        let value = match v {
                            Value::Null => None,
                            Value::String(s) => Some(s.clone()),
                            other => panic!(
                                "{}: param {k:?} is {other:?}: Concourse params are strings (quote them)",
                                file.display()
                            ),
                        };
                        (k.as_str().unwrap().to_string(), value)
                    })
                    .collect()
            })
            .unwrap_or_default();
        Task {
            file: file.to_path_buf(),
            inputs: dirs("inputs"),
            outputs: dirs("outputs")
                .into_iter()
                .map(|(n, p, _)| (n, p))
                .collect(),
            caches: seq(&v, "caches")
                .into_iter()
                .map(|c| s(c, "path").expect("a cache has a path").to_string())
                .collect(),
            params,
            run_path: s(v.get("run").expect("run"), "path")
                .expect("run.path")
                .to_string(),
        }
    }

    /// The script run.path names, in this repository (run.path starts with the input that
    /// holds this repository).
    fn script(&self) -> PathBuf {
        let (first, rest) = self.run_path.split_once('/').unwrap();
        assert!(
            self.inputs.iter().any(|(n, p, _)| n == first || p == first),
            "{}: run.path {} does not start with an input",
            self.file.display(),
            self.run_path
        );
        support::repo().join(rest)
    }

    fn dirs(&self) -> BTreeSet<String> {
        self.inputs
            .iter()
            .map(|(_, p, _)| p.clone())
            .chain(self.outputs.iter().map(|(_, p)| p.clone()))
            .chain(
                self.caches
                    .iter()
                    .map(|c| c.split('/').next().unwrap().to_string()),
            )
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// What a bash script uses

/// The script without comments: full-line comments and ` # ...` tails outside quotes.
fn strip_comments(script: &str) -> String {
    let mut out = String::new();
    for line in script.lines() {
        let (mut single, mut double, mut prev) = (false, false, ' ');
        let mut end = line.len();
        for (i, c) in line.char_indices() {
            match c {
                '\'' if !double => single = !single,
                '"' if !single && prev != '\\' => double = !double,
                '#' if !single && !double && prev.is_whitespace() => {
                    end = i;
                    break;
                }
                _ => {}
            }
            prev = c;
        }
        out.push_str(&line[..end]);
        out.push('\n');
    }
    out
}

/// The code with the inside of every quoted string blanked out.
fn blank_quoted(code: &str) -> String {
    let (mut single, mut double, mut prev) = (false, false, ' ');
    code.chars()
        .map(|c| {
            let out = match c {
                '\'' if !double => {
                    single = !single;
                    c
                }
                '"' if !single && prev != '\\' => {
                    double = !double;
                    c
                }
                '\n' => c,
                _ if single || double => ' ',
                _ => c,
            };
            prev = c;
            out
        })
        .collect()
}

/// Variables the environment or bash itself provides, never task params.
const SHELL_VARS: &[&str] = &[
    "PATH",
    "HOME",
    "PWD",
    "OLDPWD",
    "TMPDIR",
    "USER",
    "SHELL",
    "HOSTNAME",
    "IFS",
    "RANDOM",
    "SECONDS",
    "LINENO",
    "BASH_SOURCE",
    "BASH_REMATCH",
    "FUNCNAME",
    "PIPESTATUS",
    "EUID",
    "UID",
    "PPID",
    "BASHPID",
    "OPTARG",
    "OPTIND",
    "REPLY",
    "TERM",
    "LANG",
];

struct ScriptUses {
    /// Variables read but never assigned in the script: params (or the shell's own).
    params: BTreeSet<String>,
    /// `$task_dir/NAME` references: inputs, outputs and caches.
    dirs: BTreeSet<String>,
}

fn scan_script(script: &str) -> ScriptUses {
    let code = strip_comments(script);
    let reads = Regex::new(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)").unwrap();
    let assigns = Regex::new(
        r"(?m)(?:^|[\s;&|(!])(?:(?:local|export|readonly|declare)(?:\s+-\w+)*\s+)?([A-Za-z_][A-Za-z0-9_]*)(?:\[[^\]]*\])?\+?=",
    )
    .unwrap();
    let loops = Regex::new(r"\bfor\s+([A-Za-z_][A-Za-z0-9_]*)\s+in\b").unwrap();
    let read_builtin = Regex::new(r"\bread\s+(?:-\w+\s+)*([A-Za-z_][A-Za-z0-9_ ]*)").unwrap();
    let dirs = Regex::new(r"\$\{?task_dir\}?/([A-Za-z0-9._-]+)").unwrap();
    // Assignments never sit inside quotes; messages do ("set FOO=true").
    let unquoted = blank_quoted(&code);
    let mut assigned: BTreeSet<String> = assigns
        .captures_iter(&unquoted)
        .chain(loops.captures_iter(&unquoted))
        .map(|c| c[1].to_string())
        .collect();
    for c in read_builtin.captures_iter(&unquoted) {
        assigned.extend(c[1].split_whitespace().map(str::to_string));
    }
    let params = reads
        .captures_iter(&code)
        .map(|c| c[1].to_string())
        .filter(|v| !assigned.contains(v) && !SHELL_VARS.contains(&v.as_str()))
        .collect();
    ScriptUses {
        params,
        dirs: dirs
            .captures_iter(&code)
            .map(|c| c[1].to_string())
            .collect(),
    }
}

#[test]
fn script_scanner_finds_params_and_dirs() {
    let uses = scan_script(
        "task_dir=$PWD\nlocal x=1 # uses $NOT_A_PARAM\necho \"$FOO ${BAR:-} $x ${#arr[@]}\" '# $QUOTED'\n\
         for f in a; do echo $f; done\nread -r a b <file\necho $a$b \"$task_dir/in/x\" ${task_dir}/out\n\
         fail \"set FOO=true\"\n",
    );
    assert_eq!(
        uses.params,
        ["BAR", "FOO", "QUOTED"]
            .map(String::from)
            .into_iter()
            .collect()
    );
    assert_eq!(
        uses.dirs,
        ["in", "out"].map(String::from).into_iter().collect()
    );
}

// ---------------------------------------------------------------------------------------------
// Static checks

#[test]
fn every_yaml_under_ci_parses() {
    let mut files = vec![];
    yaml_files(&ci_dir(), &mut files);
    assert!(files.len() >= 3, "tasks and a pipeline: {files:?}");
    for file in files {
        let v = load(&file);
        assert!(v.is_mapping(), "{} is a YAML mapping", file.display());
    }
}

/// Concourse decodes task files strictly ("unknown fields"): `privileged` in particular
/// belongs on the task step, not in the file.
#[test]
fn task_files_use_only_keys_concourse_accepts() {
    let allowed = |v: &Value, what: &str, file: &Path, ok: &[&str]| {
        for key in keys(v) {
            assert!(
                ok.contains(&key.as_str()),
                "{}: {what} has key {key:?}, which Concourse refuses (allowed: {ok:?})",
                file.display()
            );
        }
    };
    for file in task_files() {
        let v = load(&file);
        #[rustfmt::skip]
        allowed(&v, "the task", &file, &["platform", "image_resource", "rootfs_uri", "container_limits", "params", "run", "inputs", "outputs", "caches"]);
        assert_eq!(s(&v, "platform"), Some("linux"), "{}", file.display());
        let image = v.get("image_resource").expect("an image");
        allowed(
            image,
            "image_resource",
            &file,
            &["type", "source", "params", "version"],
        );
        allowed(
            v.get("run").unwrap(),
            "run",
            &file,
            &["path", "args", "dir", "user"],
        );
        for i in seq(&v, "inputs") {
            allowed(i, "an input", &file, &["name", "path", "optional"]);
        }
        for o in seq(&v, "outputs") {
            allowed(o, "an output", &file, &["name", "path"]);
        }
        for c in seq(&v, "caches") {
            allowed(c, "a cache", &file, &["path"]);
        }
        Task::load(&file); // params are strings or empty
    }
}

#[test]
fn task_scripts_use_exactly_what_their_task_files_declare() {
    let sets_task_dir = Regex::new(r"(?m)^task_dir=(\$PWD|\$\(pwd\))$").unwrap();
    let sources = Regex::new(r#"(?m)^source\s+"[^"]*/([A-Za-z0-9_.-]+\.bash)"$"#).unwrap();
    for file in task_files() {
        let task = Task::load(&file);
        let script_path = task.script();
        let meta = fs::metadata(&script_path).unwrap_or_else(|_| {
            panic!(
                "{}: run.path {} is not in this repo",
                file.display(),
                task.run_path
            )
        });
        assert!(
            meta.permissions().mode() & 0o111 != 0,
            "{} is executable",
            script_path.display()
        );
        let mut script = fs::read_to_string(&script_path).unwrap();
        assert!(
            sets_task_dir.is_match(&script),
            "{}: sets task_dir=$PWD before using it (inputs are found relative to it)",
            script_path.display()
        );
        // What the script sources from beside it (ci/tasks/common.bash) is part of it.
        let sourced: Vec<String> = sources
            .captures_iter(&script)
            .map(|c| c[1].to_string())
            .collect();
        for name in sourced {
            let path = script_path.parent().unwrap().join(&name);
            script.push('\n');
            script.push_str(&fs::read_to_string(&path).unwrap_or_else(|_| {
                panic!(
                    "{} sources {name}, which is not beside it",
                    script_path.display()
                )
            }));
        }
        let uses = scan_script(&script);
        let declared: BTreeSet<String> = task.params.keys().cloned().collect();
        let undeclared: Vec<_> = uses.params.difference(&declared).collect();
        let unused: Vec<_> = declared.difference(&uses.params).collect();
        assert!(
            undeclared.is_empty(),
            "{} reads params its task file does not declare: {undeclared:?}",
            script_path.display()
        );
        assert!(
            unused.is_empty(),
            "{} declares params its script never reads: {unused:?}",
            file.display()
        );
        let dirs = task.dirs();
        let undeclared: Vec<_> = uses.dirs.difference(&dirs).collect();
        let unused: Vec<_> = dirs.difference(&uses.dirs).collect();
        assert!(
            undeclared.is_empty(),
            "{} uses $task_dir/ dirs its task file does not declare as input, output or cache: {undeclared:?}",
            script_path.display()
        );
        assert!(
            unused.is_empty(),
            "{} declares inputs/outputs/caches its script never uses: {unused:?}",
            file.display()
        );
    }
}

/// Resource types every Concourse has.
const CORE_TYPES: &[&str] = &[
    "git",
    "time",
    "s3",
    "semver",
    "registry-image",
    "docker-image",
    "github-release",
    "pool",
    "hg",
    "bosh-io-release",
    "bosh-io-stemcell",
    "cf",
    "tracker",
    "mock",
];

/// Walks a job's plan in order, the way Concourse makes artifacts available to later steps.
struct PlanWalk<'a> {
    file: &'a Path,
    job: String,
    resources: &'a BTreeMap<String, Value>,
    /// artifact name -> the resource it came from (None: a task output)
    artifacts: BTreeMap<String, Option<String>>,
    used: &'a mut BTreeSet<String>,
    /// (task file, params) of every task step
    tasks: Vec<(String, BTreeMap<String, String>)>,
    /// (resource, params.file) of every put
    puts: Vec<(String, Option<String>)>,
    /// (resource, trigger, passed) of every get
    gets: Vec<(String, bool, Vec<String>)>,
}

const STEP_MODIFIERS: &[&str] = &[
    "timeout",
    "attempts",
    "tags",
    "on_success",
    "on_failure",
    "on_abort",
    "on_error",
    "ensure",
];

impl PlanWalk<'_> {
    fn where_(&self) -> String {
        format!("{} job {}", self.file.display(), self.job)
    }

    fn allowed(&self, step: &Value, own: &[&str]) {
        for key in keys(step) {
            assert!(
                own.contains(&key.as_str()) || STEP_MODIFIERS.contains(&key.as_str()),
                "{}: step key {key:?} is not one Concourse accepts here ({own:?})",
                self.where_()
            );
        }
    }

    fn step(&mut self, step: &Value) {
        if let Some(name) = s(step, "get") {
            self.allowed(
                step,
                &["get", "resource", "passed", "params", "trigger", "version"],
            );
            let resource = s(step, "resource").unwrap_or(name).to_string();
            self.resource(&resource);
            let passed = seq(step, "passed")
                .into_iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            let trigger = step
                .get("trigger")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            self.gets.push((resource.clone(), trigger, passed));
            self.artifacts.insert(name.to_string(), Some(resource));
        } else if let Some(name) = s(step, "put") {
            self.allowed(
                step,
                &[
                    "put",
                    "resource",
                    "inputs",
                    "params",
                    "get_params",
                    "no_get",
                ],
            );
            let resource = s(step, "resource").unwrap_or(name).to_string();
            self.resource(&resource);
            let file = step
                .get("params")
                .and_then(|p| s(p, "file"))
                .map(str::to_string);
            if let Some(file) = &file {
                let first = file.split('/').next().unwrap();
                assert!(
                    self.artifacts.contains_key(first),
                    "{}: put {resource} uploads {file}, but no earlier step makes {first}",
                    self.where_()
                );
            }
            self.puts.push((resource.clone(), file));
            self.artifacts.insert(name.to_string(), Some(resource));
        } else if let Some(name) = s(step, "task") {
            self.allowed(
                step,
                &[
                    "task",
                    "config",
                    "file",
                    "image",
                    "privileged",
                    "vars",
                    "params",
                    "input_mapping",
                    "output_mapping",
                    "container_limits",
                    "hermetic",
                ],
            );
            self.task(name, step);
        } else if step.get("in_parallel").is_some() {
            self.allowed(step, &["in_parallel"]);
            let inner = step.get("in_parallel").unwrap();
            let steps = match inner {
                Value::Sequence(steps) => steps.clone(),
                other => other
                    .get("steps")
                    .and_then(Value::as_sequence)
                    .cloned()
                    .unwrap_or_default(),
            };
            for s in &steps {
                self.step(s);
            }
        } else if let Some(Value::Sequence(steps)) = step.get("do").or(step.get("try")) {
            for s in steps.clone().iter() {
                self.step(s);
            }
        } else {
            panic!("{}: unknown step {step:?}", self.where_());
        }
        for hook in ["on_success", "on_failure", "on_abort", "on_error", "ensure"] {
            if let Some(h) = step.get(hook) {
                let h = h.clone();
                self.step(&h);
            }
        }
    }

    fn resource(&mut self, name: &str) {
        assert!(
            self.resources.contains_key(name),
            "{}: uses resource {name}, which is not declared",
            self.where_()
        );
        self.used.insert(name.to_string());
    }

    fn task(&mut self, name: &str, step: &Value) {
        let file = s(step, "file").unwrap_or_else(|| {
            panic!(
                "{}: task {name} has no file: tasks live in ci/tasks",
                self.where_()
            )
        });
        let (first, rest) = file.split_once('/').unwrap();
        let origin = self
            .artifacts
            .get(first)
            .cloned()
            .flatten()
            .unwrap_or_else(|| {
                panic!(
                    "{}: task file {file}: no earlier get of {first}",
                    self.where_()
                )
            });
        assert_eq!(
            s(&self.resources[&origin], "type"),
            Some("git"),
            "{}: task file {file} comes from a git resource (this repository)",
            self.where_()
        );
        let path = support::repo().join(rest);
        assert!(
            path.is_file(),
            "{}: task file {file} does not exist in this repository",
            self.where_()
        );
        let task = Task::load(&path);
        assert_eq!(
            step.get("privileged").and_then(Value::as_bool),
            Some(true),
            "{}: task {name} mounts and chroots: it needs privileged: true",
            self.where_()
        );
        let mapping = |key: &str| -> BTreeMap<String, String> {
            step.get(key)
                .map(|m| {
                    map(m)
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().unwrap().to_string(),
                                v.as_str().unwrap().to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let inputs = mapping("input_mapping");
        for (input, _, optional) in &task.inputs {
            let artifact = inputs.get(input).unwrap_or(input);
            assert!(
                *optional || self.artifacts.contains_key(artifact),
                "{}: task {name} needs input {input}, which no earlier step provides",
                self.where_()
            );
        }
        let params: BTreeMap<String, String> = step
            .get("params")
            .map(|p| {
                map(p)
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                        };
                        (k.as_str().unwrap().to_string(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        for key in params.keys() {
            assert!(
                task.params.contains_key(key),
                "{}: task {name} sets param {key}, which {file} does not declare",
                self.where_()
            );
        }
        let outputs = mapping("output_mapping");
        for (output, _) in &task.outputs {
            let artifact = outputs.get(output).unwrap_or(output);
            self.artifacts.insert(artifact.clone(), None);
        }
        self.tasks.push((rest.to_string(), params));
    }
}

struct Job {
    name: String,
    tasks: Vec<(String, BTreeMap<String, String>)>,
    puts: Vec<(String, Option<String>)>,
    gets: Vec<(String, bool, Vec<String>)>,
}

struct Pipeline {
    resources: BTreeMap<String, Value>,
    jobs: Vec<Job>,
}

/// Checks a pipeline's structure and returns what its jobs do.
fn check_pipeline(file: &Path) -> Pipeline {
    let v = load(file);
    for key in keys(&v) {
        assert!(
            [
                "jobs",
                "resources",
                "resource_types",
                "groups",
                "var_sources",
                "display"
            ]
            .contains(&key.as_str()),
            "{}: top-level key {key:?} is not one Concourse accepts",
            file.display()
        );
    }
    let declared_types: BTreeSet<String> = seq(&v, "resource_types")
        .into_iter()
        .map(|t| s(t, "name").unwrap().to_string())
        .collect();
    let mut resources = BTreeMap::new();
    for r in seq(&v, "resources") {
        for key in keys(r) {
            assert!(
                [
                    "name",
                    "type",
                    "source",
                    "check_every",
                    "check_timeout",
                    "tags",
                    "public",
                    "webhook_token",
                    "icon",
                    "old_name",
                    "version",
                    "expose_build_created_by"
                ]
                .contains(&key.as_str()),
                "{}: resource key {key:?} is not one Concourse accepts",
                file.display()
            );
        }
        let name = s(r, "name").unwrap().to_string();
        let kind = s(r, "type").unwrap();
        assert!(
            CORE_TYPES.contains(&kind) || declared_types.contains(kind),
            "{}: resource {name} has type {kind}, neither built in nor in resource_types",
            file.display()
        );
        assert!(
            resources.insert(name.clone(), r.clone()).is_none(),
            "resource {name} declared twice"
        );
    }
    let mut used = BTreeSet::new();
    let mut jobs = vec![];
    for j in seq(&v, "jobs") {
        for key in keys(j) {
            assert!(
                [
                    "name",
                    "plan",
                    "serial",
                    "serial_groups",
                    "max_in_flight",
                    "public",
                    "build_log_retention",
                    "build_logs_to_retain",
                    "on_success",
                    "on_failure",
                    "on_abort",
                    "on_error",
                    "ensure",
                    "interruptible",
                    "disable_manual_trigger",
                    "old_name"
                ]
                .contains(&key.as_str()),
                "{}: job key {key:?} is not one Concourse accepts",
                file.display()
            );
        }
        let mut walk = PlanWalk {
            file,
            job: s(j, "name").unwrap().to_string(),
            resources: &resources,
            artifacts: BTreeMap::new(),
            used: &mut used,
            tasks: vec![],
            puts: vec![],
            gets: vec![],
        };
        for step in seq(j, "plan") {
            walk.step(step);
        }
        jobs.push(Job {
            name: walk.job,
            tasks: walk.tasks,
            puts: walk.puts,
            gets: walk.gets,
        });
    }
    let unused: Vec<_> = resources.keys().filter(|r| !used.contains(*r)).collect();
    assert!(
        unused.is_empty(),
        "{}: declared but unused resources: {unused:?}",
        file.display()
    );
    // `passed` names a job that has the resource in its plan (Concourse requires it).
    for job in &jobs {
        for (resource, _, passed) in &job.gets {
            for upstream in passed {
                let up = jobs
                    .iter()
                    .find(|j| &j.name == upstream)
                    .unwrap_or_else(|| {
                        panic!(
                            "{}: {} passed: {upstream} is no job",
                            file.display(),
                            job.name
                        )
                    });
                assert!(
                    up.gets.iter().any(|g| &g.0 == resource)
                        || up.puts.iter().any(|p| &p.0 == resource),
                    "{}: {} gets {resource} passed {upstream}, which never touches it",
                    file.display(),
                    job.name
                );
            }
        }
    }
    Pipeline { resources, jobs }
}

#[test]
fn pipelines_run_existing_tasks_and_use_exactly_the_declared_resources() {
    for file in pipeline_files() {
        let pipeline = check_pipeline(&file);
        assert!(!pipeline.jobs.is_empty());
    }
}

#[test]
fn stemcells_pipeline_bumps_on_a_schedule_and_fans_out_one_job_per_iaas() {
    let pipeline = check_pipeline(&ci_dir().join("pipelines/stemcells.yml"));
    let kind = |r: &str| s(&pipeline.resources[r], "type").unwrap().to_string();
    let runs = |job: &Job, task: &str| job.tasks.iter().any(|(f, _)| f == task);

    // The OS-image job: triggered by a time resource, builds, bumps, puts the semver version
    // from the task's bumped-version output.
    let os_jobs: Vec<&Job> = pipeline
        .jobs
        .iter()
        .filter(|j| runs(j, "ci/tasks/build-os-image.yml"))
        .collect();
    assert_eq!(os_jobs.len(), 1, "one OS-image job");
    let os_job = os_jobs[0];
    assert!(
        os_job
            .gets
            .iter()
            .any(|(r, trigger, _)| *trigger && kind(r) == "time"),
        "the OS-image job is triggered by a time resource"
    );
    let versions: Vec<&(String, Option<String>)> = os_job
        .puts
        .iter()
        .filter(|(r, _)| kind(r) == "semver")
        .collect();
    assert_eq!(versions.len(), 1, "the OS-image job puts the version");
    let (version, file) = versions[0];
    assert_eq!(
        file.as_deref(),
        Some("bumped-version/number"),
        "the version comes from bump"
    );
    let os_params = &os_job.tasks[0].1;
    assert!(
        os_params.contains_key("OS_IMAGE_BUCKET"),
        "the OS image goes to S3"
    );

    // One stemcell job per IaaS, triggered by a new version from the OS-image job, reading the
    // image from S3 and putting its stemcell; none waits for another, so they run in parallel.
    let mut iaases = BTreeSet::new();
    for job in pipeline
        .jobs
        .iter()
        .filter(|j| runs(j, "ci/tasks/build.yml"))
    {
        let params = &job
            .tasks
            .iter()
            .find(|(f, _)| f == "ci/tasks/build.yml")
            .unwrap()
            .1;
        assert!(iaases.insert(params["IAAS"].clone()), "one job per IaaS");
        assert!(
            params.contains_key("OS_IMAGE_BUCKET"),
            "{} downloads the OS image from S3",
            job.name
        );
        assert!(
            job.gets.iter().any(|(r, trigger, passed)| r == version
                && *trigger
                && passed == std::slice::from_ref(&os_job.name)),
            "{} triggers on the version the OS-image job bumped",
            job.name
        );
        for (_, _, passed) in &job.gets {
            assert!(
                passed.iter().all(|p| p == &os_job.name),
                "{} waits only for the OS-image job",
                job.name
            );
        }
        assert!(
            job.puts.iter().any(|(r, f)| kind(r) == "s3"
                && f.as_deref().is_some_and(|f| f.starts_with("stemcell/"))),
            "{} uploads its stemcell to S3",
            job.name
        );
        assert!(
            !job.puts.iter().any(|(r, _)| r == version),
            "only the OS-image job moves the version"
        );
    }
    let expected: BTreeSet<String> = ["warden", "openstack", "aws", "google", "azure", "vsphere"]
        .map(String::from)
        .into_iter()
        .collect();
    assert_eq!(iaases, expected);
}

/// Buckets, keys, secrets, tokens and endpoints come from the credential manager.
#[test]
fn pipeline_credentials_are_vars_never_literals() {
    let secretish =
        Regex::new(r"(?i)bucket|access_key|secret|token|password|private_key|endpoint|credential")
            .unwrap();
    let var = Regex::new(r"^\(\([A-Za-z0-9_.-]+\)\)$").unwrap();
    fn walk(v: &Value, path: &str, check: &mut dyn FnMut(&str, &str, &Value)) {
        match v {
            Value::Mapping(m) => {
                for (k, v) in m {
                    let k = k.as_str().unwrap_or_default();
                    check(path, k, v);
                    walk(v, &format!("{path}.{k}"), check);
                }
            }
            Value::Sequence(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), check);
                }
            }
            _ => {}
        }
    }
    let mut checked = 0;
    for file in pipeline_files() {
        walk(&load(&file), "", &mut |path, key, value| {
            if secretish.is_match(key) && !value.is_mapping() {
                checked += 1;
                assert!(
                    value.as_str().is_some_and(|v| var.is_match(v)),
                    "{}: {path}.{key} is {value:?}: take it from the credential manager as ((a-var))",
                    file.display()
                );
            }
        });
    }
    assert!(
        checked > 10,
        "the pipeline has buckets and credentials to check ({checked})"
    );
}

// ---------------------------------------------------------------------------------------------
// Running the tasks as Concourse lays them out

/// A task's working directory: each input, output and cache a subdirectory.
struct TaskDir {
    dir: PathBuf,
    task: Task,
}

impl TaskDir {
    /// `repo_input`: the stemcell-builder input, a copy of what the task needs from this repo
    /// (Concourse hands over a checkout; the binary comes from target/ via PATH).
    fn new(task_file: &str, name: &str) -> TaskDir {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ci-task-{name}"));
        if dir.exists() {
            Command::new("rm")
                .args(["-rf", "--one-file-system"])
                .arg(&dir)
                .status()
                .unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        let task = Task::load(&support::repo().join(task_file));
        let repo_input = dir.join(&task.inputs[0].1);
        assert_eq!(
            task.inputs[0].0, "stemcell-builder",
            "the first input is this repository"
        );
        fs::create_dir_all(&repo_input).unwrap();
        for part in ["ci", "stages", "assets", "scripts"] {
            let status = Command::new("cp")
                .arg("-a")
                .arg(support::repo().join(part))
                .arg(&repo_input)
                .status()
                .unwrap();
            assert!(status.success());
        }
        // Concourse's git resource hands over a checkout: stages read its commit
        // (system_parameters writes it as stemcell_git_sha1).
        let git = |args: &[&str]| {
            let out = Command::new("git")
                .arg("-C")
                .arg(&repo_input)
                .args(["-c", "user.name=ci", "-c", "user.email=ci@localhost"])
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {}", text(&out.stderr));
        };
        git(&["init", "-q"]);
        git(&["add", "-A"]);
        git(&["commit", "-q", "-m", "the stemcell-builder input"]);
        TaskDir { dir, task }
    }

    fn input(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        fs::create_dir_all(&path).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Runs run.path from the working dir with only the params (defaults from the task file,
    /// an empty value for a param declared without one, as Concourse passes them) and PATH.
    fn run(&self, params: &[(&str, &str)]) -> Output {
        for (name, path, optional) in &self.task.inputs {
            assert!(
                *optional || self.dir.join(path).is_dir(),
                "required input {name} laid out"
            );
        }
        for (_, path) in &self.task.outputs {
            fs::create_dir_all(self.dir.join(path)).unwrap();
        }
        for cache in &self.task.caches {
            fs::create_dir_all(self.dir.join(cache)).unwrap();
        }
        let bin_dir = support::bin().parent().unwrap().to_path_buf();
        let mut cmd = Command::new(self.dir.join(&self.task.run_path));
        cmd.current_dir(&self.dir)
            .env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    bin_dir.display()
                ),
            )
            .env("HOME", "/root")
            .stdin(Stdio::null());
        for (param, default) in &self.task.params {
            let value = params
                .iter()
                .find(|(k, _)| k == param)
                .map(|(_, v)| v.to_string())
                .or_else(|| default.clone())
                .unwrap_or_default();
            cmd.env(param, value);
        }
        for (k, _) in params {
            assert!(
                self.task.params.contains_key(*k),
                "{k} is a param of the task"
            );
        }
        cmd.output().unwrap()
    }
}

fn executable(path: &Path, body: &str) {
    fs::write(path, body).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// The inputs every build.yml run has: version, a stand-in agent as a GitHub release lays it
/// out, and blobstore clients.
fn build_task(name: &str) -> TaskDir {
    let t = TaskDir::new("ci/tasks/build.yml", name);
    // As the semver resource writes it: no trailing newline.
    fs::write(t.input("version").join("number"), "0.4.0").unwrap();
    let agent = t.input("bosh-agent");
    let arch = stemcell_builder::cli::host_arch();
    executable(
        &agent.join(format!("bosh-agent-2.700.0-linux-{arch}")),
        "#!/bin/sh\n# stand-in agent\nexec sleep infinity\n",
    );
    fs::write(agent.join("version"), "2.700.0").unwrap();
    fs::write(agent.join("tag"), "v2.700.0").unwrap();
    let clis = t.input("blobstore-clis");
    for name in ["bosh-blobstore-dav", "bosh-blobstore-s3"] {
        executable(
            &clis.join(name),
            "#!/bin/sh\necho stand-in blobstore client\n",
        );
    }
    fs::write(clis.join("url"), "s3 resource metadata, not a client").unwrap();
    t
}

const WARDEN: [(&str, &str); 4] = [
    ("IAAS", "warden"),
    ("OS_NAME", "debian"),
    ("OS_VERSION", "trixie"),
    ("STEMCELL_BUILDER_INSTALL", "false"),
];

/// The entries of a stemcell's `image` member (a gzip tar of the root tree, for warden):
/// name, mode and, for files under 1 MiB, content. Streamed: the image is ~100 MB.
fn warden_image_tree(stemcell: &Path) -> Vec<(String, u32, Vec<u8>)> {
    let file = fs::File::open(stemcell).unwrap();
    let mut outer = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    for member in outer.entries().unwrap() {
        let member = member.unwrap();
        if member.path().unwrap().to_str() != Some("image") {
            continue;
        }
        let mut inner = tar::Archive::new(flate2::read::MultiGzDecoder::new(member));
        return inner
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().to_string_lossy().into_owned();
                let mode = e.header().mode().unwrap();
                let mut data = vec![];
                if e.header().size().unwrap() < 1 << 20 {
                    e.read_to_end(&mut data).unwrap();
                }
                (name, mode, data)
            })
            .collect();
    }
    panic!("{} has no image member", stemcell.display());
}

/// The one stemcell in stemcell/, which `inspect` accepts, with the agent and blobstore
/// clients in its warden image.
fn assert_warden_stemcell(t: &TaskDir, out: &Output) {
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "build.sh failed:\n{stdout}\n{}",
        text(&out.stderr)
    );
    let name = "bosh-stemcell-0.4-warden-boshlite-debian-trixie-go_agent.tgz";
    let found: Vec<String> = fs::read_dir(t.path("stemcell"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(found, [name], "exactly the stemcell in stemcell/");
    assert!(
        stdout.contains(&format!("built stemcell/{name}")),
        "{stdout}"
    );
    let stemcell = t.path("stemcell").join(name);
    let inspect = Command::new(support::bin())
        .arg("inspect")
        .arg(&stemcell)
        .output()
        .unwrap();
    assert!(
        inspect.status.success(),
        "inspect: {}",
        text(&inspect.stderr)
    );
    assert!(
        text(&inspect.stdout).contains("version: '0.4'")
            || text(&inspect.stdout).contains("version: \"0.4\"")
            || text(&inspect.stdout).contains("version: 0.4"),
        "{}",
        text(&inspect.stdout)
    );
    let tree = warden_image_tree(&stemcell);
    for cli in ["bosh-blobstore-dav", "bosh-blobstore-s3"] {
        let entry = tree
            .iter()
            .find(|e| e.0.trim_start_matches("./") == format!("var/vcap/bosh/bin/{cli}"))
            .unwrap_or_else(|| panic!("{cli} from the blobstore-clis input is in the stemcell"));
        assert_eq!(entry.1 & 0o777, 0o755);
    }
    assert!(
        !tree.iter().any(|e| e.0.ends_with("var/vcap/bosh/bin/url")),
        "only bosh-blobstore-* files"
    );
    let agent = tree
        .iter()
        .find(|e| e.0.trim_start_matches("./") == "var/vcap/bosh/bin/bosh-agent")
        .expect("the agent");
    assert!(text(&agent.2).contains("stand-in agent"));
    assert!(
        !t.path("cache/build").exists(),
        "the work dirs are removed after a success"
    );
    assert!(support::mounts_below(&t.dir).is_empty(), "no mount left");
}

#[test]
fn build_task_in_concourse_layout_makes_a_warden_stemcell_from_the_os_image_input() {
    let (image, _) = support::default_os_image();
    let t = build_task("warden-input");
    let input = t.input("os-image");
    // The s3 resource's get leaves url and version beside the file.
    fs::hard_link(&image, input.join("os-image-0.4.0.tgz")).unwrap();
    let digest = support::text(&fs::read(sidecar(&image)).unwrap());
    fs::write(
        input.join("os-image-0.4.0.tgz.sha256"),
        digest.replace("os-image.tgz", "os-image-0.4.0.tgz"),
    )
    .unwrap();
    fs::write(input.join("version"), "0.4.0").unwrap();
    let out = t.run(&WARDEN);
    assert_warden_stemcell(&t, &out);
    assert!(text(&out.stdout).contains("OS image from input os-image: os-image-0.4.0.tgz"));
}

fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".sha256");
    PathBuf::from(name)
}

#[test]
fn build_task_refuses_bad_inputs_with_one_line() {
    let (image, _) = support::default_os_image();
    let t = build_task("bad-inputs");
    let one_line = |out: &Output, needle: &str| {
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{needle}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    };
    one_line(
        &t.run(&[("IAAS", ""), ("STEMCELL_BUILDER_INSTALL", "false")]),
        "param IAAS is empty",
    );
    let input = t.input("os-image");
    fs::hard_link(&image, input.join("os-image.tgz")).unwrap();
    one_line(
        &t.run(&WARDEN),
        "has no os-image.tgz.sha256 beside the image",
    );
    fs::hard_link(&image, input.join("second.tgz")).unwrap();
    one_line(&t.run(&WARDEN), "input os-image must hold one OS image");
    fs::remove_dir_all(&input).unwrap();
    for e in fs::read_dir(t.path("bosh-agent")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("bosh-agent-")
        {
            fs::remove_file(p).unwrap();
        }
    }
    one_line(&t.run(&WARDEN), "input bosh-agent must hold one bosh-agent");
    assert!(
        fs::read_dir(t.path("stemcell")).unwrap().next().is_none(),
        "no stemcell"
    );
}

#[test]
fn build_task_downloads_the_os_image_from_s3_when_there_is_no_input() {
    let (image, _) = support::default_os_image();
    let server = S3Server::shared();
    let prefix = format!("ci-files-{}/debian-trixie/", std::process::id());
    let url = format!("s3://{}/{prefix}os-image-0.4.0.tgz", s3_server::BUCKET);
    let up = server
        .command(&["upload-os-image", image.to_str().unwrap(), &url])
        .output()
        .unwrap();
    assert!(up.status.success(), "{}", text(&up.stderr));
    let t = build_task("warden-s3");
    let endpoint = server.endpoint();
    let mut params = WARDEN.to_vec();
    params.extend([
        ("OS_IMAGE_BUCKET", s3_server::BUCKET),
        ("OS_IMAGE_PREFIX", prefix.as_str()),
        ("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", s3_server::SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_S3_FORCE_PATH_STYLE", "true"),
    ]);
    let out = t.run(&params);
    assert_warden_stemcell(&t, &out);
    assert!(
        text(&out.stdout).contains(&format!("OS image from {url}")),
        "{}",
        text(&out.stdout)
    );
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        !all.contains(s3_server::SECRET_KEY),
        "the secret is never printed"
    );
}

/// The costly path, run once: no os-image input and no bucket, so the task builds the default
/// OS image from its input's stages (the base comes from the shared base cache, as a warm
/// Concourse cache would hold it) and then the stemcell.
#[test]
fn build_task_builds_the_os_image_first_when_there_is_none() {
    support::default_os_image(); // the base cache is warm for today
    let t = build_task("warden-build-os-image");
    fs::create_dir_all(t.path("cache")).unwrap();
    std::os::unix::fs::symlink("/var/cache/stemcell-builder", t.path("cache/base")).unwrap();
    let started = std::time::Instant::now();
    let out = t.run(&WARDEN);
    eprintln!(
        "build.sh building the OS image first: {:.0?}",
        started.elapsed()
    );
    assert!(
        text(&out.stdout).contains(
            "no os-image input and no OS_IMAGE_BUCKET: building the debian-trixie OS image first"
        ),
        "{}",
        text(&out.stdout)
    );
    assert_warden_stemcell(&t, &out);
}

// ---------------------------------------------------------------------------------------------
// build-os-image.sh: publishes only when packages change

/// The stemcell-builder input with a one-stage OS collection: the base (from the shared cache)
/// plus, when its assets hold a `status` file, one extra dpkg package, so a test can change the
/// package list between runs without a network install.
fn tiny_os_input(t: &TaskDir) -> PathBuf {
    let stages = t.path("stemcell-builder/stages");
    let keep_lib = stages.join("lib");
    for entry in fs::read_dir(&stages).unwrap() {
        let path = entry.unwrap().path();
        if path != keep_lib {
            if path.is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
    }
    fs::write(
        stages.join("collections.yml"),
        "collections:\n  os-debian: [extra_package]\n",
    )
    .unwrap();
    let stage = stages.join("extra_package");
    fs::create_dir_all(stage.join("assets")).unwrap();
    executable(
        &stage.join("apply.sh"),
        "#!/usr/bin/env bash\nsource \"$(dirname \"$0\")/../lib/prelude_apply.bash\"\n\
         if [ -f \"$assets_dir/status\" ]; then cat \"$assets_dir/status\" >>\"$chroot/var/lib/dpkg/status\"; fi\n",
    );
    stage.join("assets/status")
}

fn s3_objects(server: &S3Server, prefix: &str) -> Vec<String> {
    let client = server.client();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listed = runtime
        .block_on(
            client
                .list_objects_v2()
                .bucket(s3_server::BUCKET)
                .prefix(prefix)
                .send(),
        )
        .unwrap();
    let mut keys: Vec<String> = listed
        .contents()
        .iter()
        .map(|o| o.key().unwrap().trim_start_matches(prefix).to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn build_os_image_task_publishes_only_when_packages_change() {
    support::default_os_image(); // the base cache is warm for today
    let server = S3Server::shared();
    let prefix = format!("ci-os-image-{}/debian-trixie/", std::process::id());
    let t = TaskDir::new("ci/tasks/build-os-image.yml", "os-image-bump");
    let extra = tiny_os_input(&t);
    fs::create_dir_all(t.path("cache")).unwrap();
    std::os::unix::fs::symlink("/var/cache/stemcell-builder", t.path("cache/base")).unwrap();
    let endpoint = server.endpoint();
    let params = [
        ("STEMCELL_BUILDER_INSTALL", "false"),
        ("OS_IMAGE_BUCKET", s3_server::BUCKET),
        ("OS_IMAGE_PREFIX", prefix.as_str()),
        ("AWS_ACCESS_KEY_ID", s3_server::ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", s3_server::SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
        ("AWS_S3_FORCE_PATH_STYLE", "true"),
    ];
    let run = |number: &str| {
        // What Concourse hands the next build: the version resource and fresh outputs.
        fs::write(t.input("version").join("number"), number).unwrap();
        for out in ["os-image", "bumped-version"] {
            let _ = fs::remove_dir_all(t.path(out));
        }
        let out = t.run(&params);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
        assert!(!format!("{stdout}{}", text(&out.stderr)).contains(s3_server::SECRET_KEY));
        let bumped = fs::read_to_string(t.path("bumped-version/number")).unwrap();
        (stdout, bumped)
    };

    // First run: nothing published yet (0.0.0), every package is new: 0.1.0 is published.
    let (stdout, bumped) = run("0.0.0");
    assert_eq!(bumped.trim(), "0.1.0");
    assert!(stdout.contains("bumped 0.0.0 -> 0.1.0 (minor)"), "{stdout}");
    assert!(t.path("os-image/os-image.tgz.packages.txt").is_file());
    let published = [
        "os-image-0.1.0.tgz",
        "os-image-0.1.0.tgz.packages.txt",
        "os-image-0.1.0.tgz.packages.txt.sha256",
        "os-image-0.1.0.tgz.sha256",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(s3_objects(&server, &prefix), published);

    // Rebuilt with the same packages: nothing published, the number stays.
    let (stdout, bumped) = run("0.1.0");
    assert_eq!(bumped.trim(), "0.1.0");
    assert!(
        stdout.contains("no package changed since version 0.1.0: nothing published"),
        "{stdout}"
    );
    assert_eq!(s3_objects(&server, &prefix), published);

    // A package appears: 0.2.0, and the diff names it.
    fs::write(
        &extra,
        "\nPackage: zz-security-fix\nStatus: install ok installed\nArchitecture: all\nVersion: 1.0-1+deb13u1\n",
    )
    .unwrap();
    let (stdout, bumped) = run("0.1.0");
    assert_eq!(bumped.trim(), "0.2.0");
    assert!(
        stdout.contains("added:\n  zz-security-fix 1.0-1+deb13u1 (all)"),
        "{stdout}"
    );
    assert!(s3_objects(&server, &prefix).contains(&"os-image-0.2.0.tgz.packages.txt".to_string()));
    assert!(!t.path("cache/build").exists());
}

// ---------------------------------------------------------------------------------------------
// Loop devices in a privileged container

fn prepare_loop_devices() -> PathBuf {
    support::repo().join("ci/tasks/prepare-loop-devices.sh")
}

fn fake_dev(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ci-dev-{name}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn numbers(path: &Path) -> (u64, u64) {
    let rdev = fs::metadata(path).unwrap().rdev();
    (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

fn sysfs_numbers(path: &Path) -> (u64, u64) {
    let text = fs::read_to_string(path).unwrap();
    let (major, minor) = text.trim().split_once(':').unwrap();
    (major.parse().unwrap(), minor.parse().unwrap())
}

fn one_error_line(out: &Output, needles: &[&str]) {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line: {stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} in {stderr}");
    }
}

#[test]
fn loop_devices_missing_from_dev_are_made_from_sysfs() {
    let dev = fake_dev("made");
    let out = Command::new(prepare_loop_devices())
        .arg(&dev)
        .arg("/sys")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let control = dev.join("loop-control");
    assert!(fs::metadata(&control).unwrap().file_type().is_char_device());
    assert_eq!(
        numbers(&control),
        sysfs_numbers(Path::new("/sys/class/misc/loop-control/dev"))
    );
    for n in 0..64 {
        let node = dev.join(format!("loop{n}"));
        assert!(
            fs::metadata(&node).unwrap().file_type().is_block_device(),
            "{}",
            node.display()
        );
        let (major, _) = numbers(&node);
        assert_eq!(major, 7);
        // Where the kernel has the device, the node has its numbers exactly.
        let sys = PathBuf::from(format!("/sys/class/block/loop{n}/dev"));
        if sys.exists() {
            assert_eq!(numbers(&node), sysfs_numbers(&sys));
        }
    }
    // A second run changes nothing and succeeds.
    let again = Command::new(prepare_loop_devices())
        .arg(&dev)
        .arg("/sys")
        .output()
        .unwrap();
    assert!(again.status.success());
    fs::remove_dir_all(&dev).unwrap();
}

#[test]
fn missing_loop_driver_is_one_clear_line() {
    let dev = fake_dev("no-driver");
    let sys = fake_dev("no-driver-sys"); // a /sys without class/misc/loop-control
    let out = Command::new(prepare_loop_devices())
        .arg(&dev)
        .arg(&sys)
        .output()
        .unwrap();
    one_error_line(&out, &["loop-control is missing", "modprobe loop"]);
    assert!(fs::read_dir(&dev).unwrap().next().is_none(), "nothing made");
}

/// An unprivileged container: no CAP_MKNOD over devices (a user namespace), or a device
/// cgroup / nodev /dev that refuses to open the node (a nodev tmpfs in a mount namespace).
#[test]
fn unprivileged_container_is_one_clear_line() {
    let dev = fake_dev("unprivileged");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user"])
        .arg(prepare_loop_devices())
        .arg(&dev)
        .arg("/sys")
        .output()
        .unwrap();
    one_error_line(
        &out,
        &[
            "cannot create",
            "loop-control",
            "privileged: true",
            "fly execute --privileged",
        ],
    );

    let script = format!(
        "mount -t tmpfs -o nodev tmpfs {dev} && exec {prep} {dev} /sys",
        dev = dev.display(),
        prep = prepare_loop_devices().display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    one_error_line(&out, &["cannot open", "loop-control", "privileged: true"]);
    assert!(
        support::mounts_below(&dev).is_empty(),
        "the tmpfs died with its namespace"
    );
}

/// A real loop device with a partition: its partition node (which a container's /dev never
/// gets by itself) appears in the fake /dev while the watcher runs.
#[test]
fn watcher_adds_partition_nodes_as_they_appear() {
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("partx").args(["-d", &self.0]).output();
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let dev = fake_dev("watch");
    let disk = dev.join("../ci-dev-watch.img");
    fs::write(&disk, vec![0u8; 8 << 20]).unwrap();
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&disk)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut sfdisk.stdin.take().unwrap(), b"start=2048, type=83\n").unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let mut watcher = Command::new(prepare_loop_devices())
        .arg("--watch")
        .arg(&dev)
        .arg("/sys")
        .spawn()
        .unwrap();
    let attach = Command::new("losetup")
        .args(["-f", "--show", "-P"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(attach.status.success(), "{}", text(&attach.stderr));
    let loopdev = text(&attach.stdout).trim().to_string();
    let _detach = Detach(loopdev.clone());
    let name = Path::new(&loopdev)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let part_sys = PathBuf::from(format!("/sys/class/block/{name}p1/dev"));
    if !part_sys.exists() {
        let _ = Command::new("partx").args(["-a", &loopdev]).output();
    }
    assert!(
        support::eventually(5, || part_sys.exists()),
        "the kernel added {name}p1"
    );
    let node = dev.join(format!("{name}p1"));
    let appeared = support::eventually(5, || node.exists());
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(appeared, "{} made by the watcher", node.display());
    assert!(fs::metadata(&node).unwrap().file_type().is_block_device());
    assert_eq!(numbers(&node), sysfs_numbers(&part_sys));
    drop(_detach);
    fs::remove_file(&disk).unwrap();
    fs::remove_dir_all(&dev).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Vagrantfile

#[test]
fn vagrantfile_validates() {
    if which::which("vagrant").is_err() {
        let policy = Command::new("apt-cache")
            .args(["policy", "vagrant"])
            .output();
        let installable = policy.is_ok_and(|p| {
            text(&p.stdout)
                .lines()
                .any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)"))
        });
        assert!(
            !installable,
            "vagrant is not installed but can be: run scripts/install.sh (it installs Debian's vagrant package)"
        );
        support::skip("vagrantfile_validates", "this host's package sources have no vagrant package (apt-cache policy vagrant: no candidate), so `vagrant validate` cannot run here");
        return;
    }
    // In a copy, so vagrant's .vagrant/ state never lands in the checkout.
    let dir = tempfile::Builder::new()
        .prefix("sb-vagrant-")
        .tempdir()
        .unwrap();
    fs::copy(
        support::repo().join("Vagrantfile"),
        dir.path().join("Vagrantfile"),
    )
    .unwrap();
    fs::create_dir(dir.path().join("scripts")).unwrap();
    fs::copy(
        support::repo().join("scripts/install.sh"),
        dir.path().join("scripts/install.sh"),
    )
    .unwrap();
    let validate = || {
        Command::new("vagrant")
            .args(["validate", "--ignore-provider"])
            .current_dir(dir.path())
            .env("VAGRANT_HOME", dir.path().join(".vagrant.d"))
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .output()
            .unwrap()
    };
    let out = validate();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("Vagrantfile validated successfully"));
    let vagrantfile = fs::read_to_string(dir.path().join("Vagrantfile")).unwrap();
    for needle in [
        "debian/bookworm64",
        "\"virtualbox\"",
        "\"libvirt\"",
        "scripts/install.sh",
        "vb.memory",
        "lv.machine_virtual_size",
    ] {
        assert!(vagrantfile.contains(needle), "the Vagrantfile has {needle}");
    }
    // The check can fail: without the installer the provisioner is refused.
    fs::remove_file(dir.path().join("scripts/install.sh")).unwrap();
    let out = validate();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("scripts/install.sh"),
        "{}",
        text(&out.stderr)
    );
}
