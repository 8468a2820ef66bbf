//! A bootstrapped base root filesystem: mmdebstrap when installed, debootstrap otherwise, cached
//! by what determines its content, plus the UTC date so a day's security updates are picked up.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use crate::cache::{Cache, Kind, Lookup};
use crate::progress::Reporter;
use crate::stage::mask::Masker;
use crate::stage::process::{run_logged, sandboxed};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseSpec {
    pub suite: String,
    pub arch: String,
    pub variant: String,
    pub components: Vec<String>,
    pub mirror: Option<String>,
    pub keyring: Option<PathBuf>,
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrapper {
    Mmdebstrap,
    Debootstrap,
}

/// `--bootstrapper`: which tool makes the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BootstrapChoice {
    /// mmdebstrap when installed (faster), else debootstrap.
    Auto,
    Mmdebstrap,
    Debootstrap,
}

impl Bootstrapper {
    pub fn choose(choice: BootstrapChoice) -> Result<Self> {
        let wanted = match choice {
            BootstrapChoice::Auto => return Self::detect(),
            BootstrapChoice::Mmdebstrap => Self::Mmdebstrap,
            BootstrapChoice::Debootstrap => Self::Debootstrap,
        };
        if which::which(wanted.name()).is_err() {
            bail!(
                "{} is not installed: apt-get install -y {}",
                wanted.name(),
                wanted.name()
            );
        }
        Ok(wanted)
    }

    pub fn detect() -> Result<Self> {
        if which::which("mmdebstrap").is_ok() {
            Ok(Self::Mmdebstrap)
        } else if which::which("debootstrap").is_ok() {
            Ok(Self::Debootstrap)
        } else {
            bail!("neither mmdebstrap nor debootstrap is installed: apt-get install -y mmdebstrap")
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Mmdebstrap => "mmdebstrap",
            Self::Debootstrap => "debootstrap",
        }
    }

    /// The bootstrap command line (without the sandbox around it). With a package cache
    /// (`packages`, the cache dir), mmdebstrap's hooks fill the new tree's apt archive from it
    /// before anything is downloaded and keep what was downloaded before the archive is
    /// emptied, as mmdebstrap's manual shows for a package cache; debootstrap gets the same
    /// around its run (see [`provide`]).
    pub fn arguments(self, spec: &BaseSpec, target: &Path, packages: Option<&Path>) -> Vec<String> {
        let mut args = vec![format!("--variant={}", spec.variant)];
        if let (Self::Mmdebstrap, Some(cache)) = (self, packages) {
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "stemcell-builder".into());
            let exe = shell_words::quote(&exe).into_owned();
            let cache = shell_words::quote(&cache.display().to_string()).into_owned();
            // mmdebstrap unlinks the essential packages once installed unless told otherwise:
            // keep them until the customize hook has stored them (its cleanup empties the
            // archive afterwards).
            args.push("--skip=essential/unlink".into());
            args.push(format!(
                "--setup-hook={exe} package-cache provide \"$1\" --cache-dir {cache} --arch {}",
                shell_words::quote(&spec.arch)
            ));
            args.push(format!(
                "--customize-hook={exe} package-cache store \"$1\" --cache-dir {cache}"
            ));
        }
        match self {
            Self::Mmdebstrap => args.push(format!("--architectures={}", spec.arch)),
            Self::Debootstrap => args.push(format!("--arch={}", spec.arch)),
        }
        args.push(format!("--components={}", spec.components.join(",")));
        if !spec.packages.is_empty() {
            args.push(format!("--include={}", spec.packages.join(",")));
        }
        if let Some(keyring) = &spec.keyring {
            args.push(format!("--keyring={}", keyring.display()));
        }
        args.push(spec.suite.clone());
        args.push(target.display().to_string());
        // No mirror given: the bootstrapper picks its own default; we never name one.
        if let Some(mirror) = &spec.mirror {
            args.push(mirror.clone());
        }
        args
    }
}

impl BaseSpec {
    /// The cache key: everything that determines the base's content, and the UTC day. The two
    /// tools leave slightly different trees (apt config, sources): the tool is part of it.
    pub fn cache_key(&self, tool: Bootstrapper, day: &str) -> String {
        let mut hasher = Sha256::new();
        let mut packages = self.packages.clone();
        packages.sort();
        let keyring = self
            .keyring
            .as_ref()
            .map(|k| k.display().to_string())
            .unwrap_or_default();
        for part in [
            "base-v1",
            tool.name(),
            &self.suite,
            &self.arch,
            &self.variant,
            &self.components.join(","),
            self.mirror.as_deref().unwrap_or("default"),
            &keyring,
            &packages.join(","),
            day,
        ] {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        format!(
            "{}-{}-{}",
            self.suite,
            self.arch,
            &hex::encode(hasher.finalize())[..16]
        )
    }
}

pub fn utc_day() -> String {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .unwrap_or_default()
}

/// How many days back `--offline` looks for a cached base.
const OFFLINE_DAYS: i64 = 90;

/// The base's cache key: today's, or with `offline` the newest cached base of this kind (today's,
/// else an earlier day's), since `--offline` builds from what the last online build made.
pub fn base_key(
    spec: &BaseSpec,
    tool: Bootstrapper,
    cache_dir: Option<&Path>,
    offline: bool,
) -> Result<String> {
    if !offline {
        return Ok(spec.cache_key(tool, &utc_day()));
    }
    let Some(dir) = cache_dir else {
        bail!("--offline builds from the cache and --no-cache forbids it: drop one of them");
    };
    let cache = Cache::new(dir);
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let today = time::OffsetDateTime::now_utc();
    for back in 0..=OFFLINE_DAYS {
        let Ok(day) = (today - time::Duration::days(back)).format(&format) else {
            continue;
        };
        let key = spec.cache_key(tool, &day);
        if cache.archive_path(Kind::Base, &key).is_file() {
            return Ok(key);
        }
    }
    bail!(
        "--offline: no cached {} base of {} {} in {} from the last {OFFLINE_DAYS} days: build once without --offline",
        tool.name(),
        spec.suite,
        spec.arch,
        dir.join(Kind::Base.dir()).display()
    )
}

pub enum BaseOrigin {
    Cache(PathBuf),
    Bootstrapped(Bootstrapper),
}

/// Fills `target` (which must not exist) with the base, from the cache when it can. A cached
/// base is checked against its record first; a damaged one is removed and bootstrapped again.
/// With `offline`, only from the cache (the newest base of this kind there).
pub fn provide(
    spec: &BaseSpec,
    tool: Bootstrapper,
    cache_dir: Option<&Path>,
    offline: bool,
    target: &Path,
    log: &Path,
    reporter: &Reporter,
) -> Result<BaseOrigin> {
    let key = base_key(spec, tool, cache_dir, offline)?;
    let cache = cache_dir.map(Cache::new);
    if let Some(cache) = &cache {
        let step = reporter.step("base (cache)");
        let started = Instant::now();
        match cache.restore(Kind::Base, &key, target)? {
            Lookup::Hit(_) => {
                step.finish("restored", started.elapsed());
                return Ok(BaseOrigin::Cache(cache.archive_path(Kind::Base, &key)));
            }
            Lookup::Corrupt(why) => step.finish(&format!("not used: {why}"), started.elapsed()),
            Lookup::Missing => step.finish("not cached", started.elapsed()),
        }
        if offline {
            bail!(
                "--offline: the cached base {} could not be used (see above): build once without --offline",
                cache.archive_path(Kind::Base, &key).display()
            );
        }
    }
    let step = reporter.step(&format!("base ({} {})", tool.name(), spec.suite));
    let started = Instant::now();
    let program = which::which(tool.name())?;
    let packages = cache_dir
        .map(crate::pipeline::workspace::absolute)
        .map(|dir| (crate::cache::packages::PackageCache::new(&dir), dir));
    if let (Bootstrapper::Debootstrap, Some((packages, _))) = (tool, &packages) {
        // debootstrap uses a package it finds in the target's archive when its checksum
        // matches the index, and leaves what it downloaded there.
        std::fs::create_dir_all(target)
            .map_err(|e| crate::fsutil::io_error(e, "creating", target))?;
        packages.provide(target, None, &spec.arch)?;
    }
    let args = tool.arguments(
        spec,
        target,
        packages.as_ref().map(|(_, dir)| dir.as_path()),
    );
    let os_args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let outcome = run_logged(
        sandboxed(&program, &os_args)?,
        log,
        true,
        &step,
        &Masker::default(),
    )?;
    if outcome.code != 0 {
        step.finish("FAILED", started.elapsed());
        let tail: Vec<String> = outcome.tail.into_iter().collect();
        bail!(
            "{} {} failed with status {}:\n{}\nlog: {}",
            tool.name(),
            spec.suite,
            outcome.code,
            tail.join("\n"),
            log.display()
        );
    }
    if let (Bootstrapper::Debootstrap, Some((packages, _))) = (tool, &packages) {
        packages.store(target)?;
        // The cache has them now; an image must not carry them (and apt-get clean would
        // drop them at the first stage anyway).
        crate::cache::packages::empty_archive(target)?;
    }
    step.finish("bootstrapped", started.elapsed());
    if let Some(cache) = cache {
        let step = reporter.step("base cache");
        let started = Instant::now();
        let name = format!("{} {}", spec.suite, spec.arch);
        // A cache that cannot be written costs the next build a bootstrap, not this build.
        match cache.store(Kind::Base, &key, &name, None, target) {
            Ok(_) => step.finish(
                &format!("stored {}", cache.archive_path(Kind::Base, &key).display()),
                started.elapsed(),
            ),
            Err(err) => step.finish(&format!("warning: not stored: {err:#}"), started.elapsed()),
        }
    }
    Ok(BaseOrigin::Bootstrapped(tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BaseSpec {
        BaseSpec {
            suite: "trixie".into(),
            arch: "amd64".into(),
            variant: "minbase".into(),
            components: vec!["main".into()],
            mirror: None,
            keyring: None,
            packages: vec!["sudo".into(), "cron".into()],
        }
    }

    #[test]
    fn cache_key_changes_with_content_inputs_and_day() {
        let mm = Bootstrapper::Mmdebstrap;
        let base = spec().cache_key(mm, "2026-11-24");
        assert_eq!(base, spec().cache_key(mm, "2026-11-24"));
        assert_ne!(base, spec().cache_key(mm, "2026-11-25"));
        let mut other = spec();
        other.packages.push("vim-tiny".into());
        assert_ne!(base, other.cache_key(mm, "2026-11-24"));
        let mut other = spec();
        other.mirror = Some("http://mirror.invalid/debian".into());
        assert_ne!(base, other.cache_key(mm, "2026-11-24"));
        assert_ne!(
            base,
            spec().cache_key(Bootstrapper::Debootstrap, "2026-11-24")
        );
        let mut reordered = spec();
        reordered.packages.reverse();
        assert_eq!(
            base,
            reordered.cache_key(mm, "2026-11-24"),
            "package order does not matter"
        );
    }

    #[test]
    fn no_mirror_argument_unless_given() {
        let args = Bootstrapper::Mmdebstrap.arguments(&spec(), Path::new("/t"), None);
        assert_eq!(args.last().unwrap(), "/t");
        assert!(
            !args.iter().any(|a| a.contains("hook")),
            "no cache, no hooks"
        );
        let cached =
            Bootstrapper::Mmdebstrap.arguments(&spec(), Path::new("/t"), Some(Path::new("/c d")));
        assert!(
            cached.iter().any(|a| a.starts_with("--setup-hook=")
                && a.contains("package-cache provide \"$1\" --cache-dir '/c d' --arch amd64")),
            "{cached:?}"
        );
        assert!(cached
            .iter()
            .any(|a| a.starts_with("--customize-hook=") && a.contains("package-cache store")));
        assert!(cached.contains(&"--skip=essential/unlink".to_string()));
        assert!(args.contains(&"--include=sudo,cron".to_string()));
        let mut with_mirror = spec();
        with_mirror.mirror = Some("http://m.invalid/debian".into());
        assert_eq!(
            Bootstrapper::Debootstrap
                .arguments(&with_mirror, Path::new("/t"), None)
                .last()
                .unwrap(),
            "http://m.invalid/debian"
        );
    }
}
