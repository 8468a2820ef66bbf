//! Which shared libraries a program loads, found as glibc's dynamic loader finds them: the
//! program's `PT_INTERP` loader; each `DT_NEEDED` name searched in `DT_RPATH` (of the object and
//! the objects that loaded it, when it has no `DT_RUNPATH`), then `DT_RUNPATH`, then the
//! directories of `/etc/ld.so.conf` (what `ld.so.cache` indexes), then the default directories
//! (`/lib/TRIPLET`, `/usr/lib/TRIPLET`, `/lib64`, `/usr/lib64`, `/lib`, `/usr/lib`), with
//! `$ORIGIN`, `$LIB` and `$PLATFORM` expanded; a candidate of another ELF class or machine is
//! skipped as the loader skips it. `LD_LIBRARY_PATH` and `LD_PRELOAD` are ignored: a root
//! filesystem must work in a clean environment. Headers are read with goblin, never from `ldd`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use goblin::elf::{header, Elf};

/// What the loader needs to know about one ELF object.
#[derive(Debug, Clone)]
pub struct ElfObject {
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub rpath: Vec<String>,
    pub runpath: Vec<String>,
    pub machine: u16,
    pub is64: bool,
    pub little_endian: bool,
}

impl ElfObject {
    /// Parses `path`; `Ok(None)` when it is not an ELF file.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if !bytes.starts_with(b"\x7fELF") {
            return Ok(None);
        }
        let elf = Elf::parse(&bytes)
            .with_context(|| format!("{} is a broken ELF file", path.display()))?;
        let split = |list: &[&str]| -> Vec<String> {
            list.iter()
                .flat_map(|s| s.split(':'))
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        Ok(Some(ElfObject {
            interpreter: elf.interpreter.map(str::to_string),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            rpath: split(&elf.rpaths),
            runpath: split(&elf.runpaths),
            machine: elf.header.e_machine,
            is64: elf.is_64,
            little_endian: elf.little_endian,
        }))
    }

    fn compatible(&self, other: &ElfObject) -> bool {
        self.machine == other.machine
            && self.is64 == other.is64
            && self.little_endian == other.little_endian
    }

    /// Debian's multiarch triplet for this class and machine.
    pub fn triplet(&self) -> Option<&'static str> {
        Some(match (self.machine, self.is64, self.little_endian) {
            (header::EM_X86_64, true, _) => "x86_64-linux-gnu",
            (header::EM_386, false, _) => "i386-linux-gnu",
            (header::EM_AARCH64, true, _) => "aarch64-linux-gnu",
            (header::EM_ARM, false, _) => "arm-linux-gnueabihf",
            (header::EM_PPC64, true, true) => "powerpc64le-linux-gnu",
            (header::EM_S390, true, _) => "s390x-linux-gnu",
            (header::EM_RISCV, true, _) => "riscv64-linux-gnu",
            (header::EM_LOONGARCH, true, _) => "loongarch64-linux-gnu",
            _ => return None,
        })
    }
}

/// The loader's view of a system: its root (`/` for the host), the `ld.so.conf` directories and
/// the platform string.
#[derive(Debug, Clone)]
pub struct Loader {
    pub sysroot: PathBuf,
    pub conf_dirs: Vec<String>,
    pub platform: String,
}

/// A program's closure: every file the loader opens to start it, as absolute paths inside the
/// system (the path each was found at, symlinks not resolved).
#[derive(Debug, Clone, Default)]
pub struct Closure {
    pub files: Vec<String>,
    /// Directories that libraries were found in only through ld.so.conf: the new root needs
    /// them in its own ld.so.conf and cache.
    pub conf_dirs_used: Vec<String>,
}

impl Loader {
    /// The host's loader: `/`, its /etc/ld.so.conf, its machine name.
    pub fn host() -> Self {
        Self::for_root(Path::new("/"))
    }

    pub fn for_root(sysroot: &Path) -> Self {
        let mut conf_dirs = Vec::new();
        let mut seen = HashSet::new();
        read_ld_so_conf(sysroot, "/etc/ld.so.conf", &mut conf_dirs, &mut seen, 0);
        Loader {
            sysroot: sysroot.to_path_buf(),
            conf_dirs,
            platform: match std::env::consts::ARCH {
                "powerpc64" => "ppc64le".to_string(),
                other => other.to_string(),
            },
        }
    }

    fn host_path(&self, path: &str) -> PathBuf {
        self.sysroot.join(path.trim_start_matches('/'))
    }

    /// The files `program` (an absolute path inside the system) needs to start.
    pub fn closure(&self, program: &str) -> Result<Closure> {
        let main = ElfObject::read(&self.host_path(program))?
            .with_context(|| format!("{program} is not an ELF program"))?;
        let mut closure = Closure {
            files: vec![program.to_string()],
            ..Closure::default()
        };
        if let Some(interp) = &main.interpreter {
            if ElfObject::read(&self.host_path(interp))
                .ok()
                .flatten()
                .is_none()
            {
                bail!("{program} needs the loader {interp}, which is not on this system");
            }
            closure.files.push(interp.clone());
        }
        let defaults = self.default_dirs(&main);
        // Objects in load order: (path, object, index of the object that loaded it).
        let mut objects: Vec<(String, ElfObject, Option<usize>)> =
            vec![(program.to_string(), main.clone(), None)];
        let mut by_name: HashMap<String, String> = HashMap::new();
        let mut queue: VecDeque<usize> = VecDeque::from([0]);
        while let Some(index) = queue.pop_front() {
            let needed = objects[index].1.needed.clone();
            for name in needed {
                if by_name.contains_key(&name) {
                    continue;
                }
                let (path, object, via_conf) = self
                    .find(&name, index, &objects, &main, &defaults)
                    .with_context(|| format!("{} needs {name}", objects[index].0))?;
                if let Some(dir) = via_conf {
                    if !closure.conf_dirs_used.contains(&dir) {
                        closure.conf_dirs_used.push(dir);
                    }
                }
                by_name.insert(name, path.clone());
                if !closure.files.contains(&path) {
                    closure.files.push(path.clone());
                }
                objects.push((path, object, Some(index)));
                queue.push_back(objects.len() - 1);
            }
        }
        Ok(closure)
    }

    /// Searches `name` for the object at `index`. Returns the path, the object, and the
    /// ld.so.conf directory it came from when only ld.so.conf had it.
    fn find(
        &self,
        name: &str,
        index: usize,
        objects: &[(String, ElfObject, Option<usize>)],
        main: &ElfObject,
        defaults: &[String],
    ) -> Result<(String, ElfObject, Option<String>)> {
        let requester = &objects[index].1;
        if name.contains('/') {
            let path = if name.starts_with('/') {
                name.to_string()
            } else {
                bail!("a relative library path ({name}) depends on the working directory");
            };
            let object = ElfObject::read(&self.host_path(&path))?
                .with_context(|| format!("{path} is not an ELF library"))?;
            return Ok((path, object, None));
        }
        let mut searched: Vec<String> = Vec::new();
        let mut dirs: Vec<(String, bool)> = Vec::new();
        if requester.runpath.is_empty() {
            // DT_RPATH of the requester, then of the objects that loaded it, up to the program.
            let mut current = Some(index);
            while let Some(i) = current {
                let (path, object, loader) = &objects[i];
                if object.runpath.is_empty() {
                    for dir in &object.rpath {
                        dirs.push((self.expand(dir, path, object, i == 0), false));
                    }
                }
                current = *loader;
            }
        }
        for dir in &requester.runpath {
            dirs.push((
                self.expand(dir, &objects[index].0, requester, index == 0),
                false,
            ));
        }
        for dir in &self.conf_dirs {
            dirs.push((dir.clone(), !defaults.contains(dir)));
        }
        for dir in defaults {
            dirs.push((dir.clone(), false));
        }
        for (dir, conf_only) in dirs {
            let candidate = format!("{}/{name}", dir.trim_end_matches('/'));
            let candidate = normalise(&candidate);
            if searched.contains(&candidate) {
                continue;
            }
            searched.push(candidate.clone());
            let host = self.host_path(&candidate);
            if !host.is_file() {
                continue;
            }
            match ElfObject::read(&host) {
                Ok(Some(object)) if object.compatible(main) => {
                    return Ok((candidate, object, conf_only.then_some(dir)));
                }
                // Another class or machine, or not ELF: the loader skips it too.
                _ => continue,
            }
        }
        bail!(
            "{name} was not found (searched {}): install the package that ships it",
            searched.join(", ")
        )
    }

    /// `$ORIGIN` (the object's directory), `$LIB` and `$PLATFORM` in an RPATH/RUNPATH entry.
    fn expand(&self, dir: &str, object_path: &str, object: &ElfObject, is_program: bool) -> String {
        let origin = if is_program {
            // The loader takes the program's origin from its real path (/proc/self/exe).
            std::fs::canonicalize(self.host_path(object_path))
                .ok()
                .and_then(|p| {
                    p.strip_prefix(&self.sysroot)
                        .ok()
                        .map(|r| format!("/{}", r.display()))
                })
                .unwrap_or_else(|| object_path.to_string())
        } else {
            object_path.to_string()
        };
        let origin = Path::new(&origin)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".into());
        let lib = match object.triplet() {
            Some(t) if self.host_path(&format!("/lib/{t}")).is_dir() => format!("lib/{t}"),
            _ if object.is64 && self.host_path("/lib64").is_dir() => "lib64".to_string(),
            _ => "lib".to_string(),
        };
        dir.replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin)
            .replace("${LIB}", &lib)
            .replace("$LIB", &lib)
            .replace("${PLATFORM}", &self.platform)
            .replace("$PLATFORM", &self.platform)
    }

    /// The loader's built-in directories for this class and machine.
    fn default_dirs(&self, main: &ElfObject) -> Vec<String> {
        let mut dirs = Vec::new();
        if let Some(triplet) = main.triplet() {
            dirs.push(format!("/lib/{triplet}"));
            dirs.push(format!("/usr/lib/{triplet}"));
        }
        if main.is64 {
            dirs.push("/lib64".into());
            dirs.push("/usr/lib64".into());
        }
        dirs.push("/lib".into());
        dirs.push("/usr/lib".into());
        dirs
    }
}

/// Reads an ld.so.conf: one directory per line (or several, split by spaces, `:` or `,`),
/// `include GLOB` lines, `#` comments, `hwcap` lines ignored.
fn read_ld_so_conf(
    sysroot: &Path,
    file: &str,
    out: &mut Vec<String>,
    seen: &mut HashSet<String>,
    depth: usize,
) {
    if depth > 8 || !seen.insert(file.to_string()) {
        return;
    }
    let Ok(text) = std::fs::read_to_string(sysroot.join(file.trim_start_matches('/'))) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() || line.starts_with("hwcap ") {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let pattern = if pattern.starts_with('/') {
                pattern.to_string()
            } else {
                let base = Path::new(file).parent().unwrap_or(Path::new("/etc"));
                format!("{}/{pattern}", base.display())
            };
            for included in glob_files(sysroot, &pattern) {
                read_ld_so_conf(sysroot, &included, out, seen, depth + 1);
            }
            continue;
        }
        for dir in line.split(|c: char| c.is_whitespace() || c == ':' || c == ',') {
            // Old ldconfig syntax: DIR=TYPE.
            let dir = dir.split('=').next().unwrap_or("");
            if dir.starts_with('/') {
                let dir = normalise(dir);
                if !out.contains(&dir) {
                    out.push(dir);
                }
            }
        }
    }
}

/// Files matching `pattern`, whose last component may hold `*` (`/etc/ld.so.conf.d/*.conf`),
/// sorted as glob(3) sorts them.
fn glob_files(sysroot: &Path, pattern: &str) -> Vec<String> {
    let path = Path::new(pattern);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return vec![];
    };
    let name = name.to_string_lossy().into_owned();
    if !name.contains('*') {
        return vec![pattern.to_string()];
    }
    let parts: Vec<&str> = name.split('*').collect();
    let Ok(entries) =
        std::fs::read_dir(sysroot.join(dir.to_string_lossy().trim_start_matches('/')))
    else {
        return vec![];
    };
    let mut found: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|candidate| wildcard_match(&parts, candidate))
        .map(|candidate| format!("{}/{candidate}", dir.display()))
        .collect();
    found.sort();
    found
}

fn wildcard_match(parts: &[&str], candidate: &str) -> bool {
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !candidate.starts_with(first) || candidate.len() < first.len() + last.len() {
        return false;
    }
    if !candidate.ends_with(last) {
        return false;
    }
    let mut rest = &candidate[first.len()..candidate.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

/// An absolute path with `.` and `..` folded lexically (as the loader joins search paths).
fn normalise(path: &str) -> String {
    let mut out = PathBuf::from("/");
    for component in Path::new(path).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ld_so_conf_includes_globs_and_dedupes() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("ld.so.conf.d")).unwrap();
        std::fs::write(
            etc.join("ld.so.conf"),
            "# comment\ninclude /etc/ld.so.conf.d/*.conf\n/opt/a:/opt/b\n",
        )
        .unwrap();
        std::fs::write(etc.join("ld.so.conf.d/b.conf"), "/usr/local/lib\n/opt/a\n").unwrap();
        std::fs::write(
            etc.join("ld.so.conf.d/a.conf"),
            "/usr/lib/x86_64-linux-gnu/x # c\n",
        )
        .unwrap();
        std::fs::write(etc.join("ld.so.conf.d/ignored.txt"), "/nope\n").unwrap();
        let loader = Loader::for_root(root.path());
        assert_eq!(
            loader.conf_dirs,
            vec![
                "/usr/lib/x86_64-linux-gnu/x",
                "/usr/local/lib",
                "/opt/a",
                "/opt/b"
            ]
        );
    }

    #[test]
    fn wildcards_match_like_glob() {
        let parts: Vec<&str> = "*.conf".split('*').collect();
        assert!(wildcard_match(&parts, "x86_64-linux-gnu.conf"));
        assert!(!wildcard_match(&parts, "x.conf.bak"));
        let parts: Vec<&str> = "a*b*c".split('*').collect();
        assert!(wildcard_match(&parts, "a-b-c"));
        assert!(!wildcard_match(&parts, "ac"));
    }

    #[test]
    fn origin_and_lib_expand_and_paths_fold() {
        let loader = Loader {
            sysroot: PathBuf::from("/nonexistent-root"),
            conf_dirs: vec![],
            platform: "x86_64".into(),
        };
        let object = ElfObject {
            interpreter: None,
            needed: vec![],
            rpath: vec![],
            runpath: vec![],
            machine: header::EM_X86_64,
            is64: true,
            little_endian: true,
        };
        assert_eq!(
            loader.expand(
                "$ORIGIN/../lib:${PLATFORM}",
                "/opt/app/lib/libx.so",
                &object,
                false
            ),
            "/opt/app/lib/../lib:x86_64"
        );
        assert_eq!(loader.expand("/x/$LIB", "/a/b", &object, false), "/x/lib");
        assert_eq!(normalise("/opt/app/bin/../lib//./x"), "/opt/app/lib/x");
    }

    #[test]
    fn the_hosts_bash_needs_libc_and_the_loader() {
        let Ok(bash) = which::which("bash") else {
            panic!("bash is on every Debian host");
        };
        let closure = Loader::host().closure(&bash.display().to_string()).unwrap();
        assert!(
            closure.files.iter().any(|f| f.ends_with("/libc.so.6")),
            "{:?}",
            closure.files
        );
        assert!(
            closure.files.iter().any(|f| f.contains("ld-linux")),
            "{:?}",
            closure.files
        );
    }
}
