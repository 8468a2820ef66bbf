//! `cache ls` and `cache prune`: what the cache holds (kind, key, name, size, last use, state)
//! and bounding it by count or age. Entries of every kind are listed the same way, so a new
//! kind (cached packages) only adds a row type.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{now, Cache, Kind, Record};

/// One entry as `cache ls` shows it.
#[derive(Debug, Clone)]
pub struct Listed {
    pub kind: Kind,
    pub key: String,
    pub name: String,
    /// Bytes on disk (archive and record, or the leftover file).
    pub bytes: u64,
    pub last_used: u64,
    pub state: State,
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Ok,
    /// An archive without a record: half-written, or from an older version; never used.
    Incomplete,
    /// A temporary file of a store in progress, or of one that was killed.
    Partial,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Ok => "ok",
            State::Incomplete => "incomplete (not used)",
            State::Partial => "partial write",
        }
    }
}

/// What `cache prune` removes: entries beyond the `keep` most recently used of each kind but
/// packages,
/// entries last used more than `older_than_days` ago, and the least recently used entries of a
/// kind beyond `max_bytes` of that kind. Incomplete entries always go, and temporary files once
/// they are an hour old (younger ones may be a store in progress).
#[derive(Debug, Clone, Copy, Default)]
pub struct PrunePolicy {
    pub keep: Option<usize>,
    pub older_than_days: Option<u64>,
    pub max_bytes: Option<u64>,
}

const PARTIAL_GRACE_SECONDS: u64 = 3600;

impl Cache {
    /// Every entry and leftover, newest use first within each kind.
    pub fn list(&self) -> Result<Vec<Listed>> {
        self.check_ours()?;
        let mut out = Vec::new();
        for kind in Kind::ALL {
            let dir = self.root.join(kind.dir());
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut rows: Vec<Listed> = Vec::new();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                // Only names this cache writes: KEY.tar.zst (KEY.deb), KEY.json, .KEY….partial.
                let key_part = name
                    .strip_suffix(kind.suffix())
                    .or_else(|| name.strip_suffix(".json"))
                    .or_else(|| {
                        name.strip_prefix('.')
                            .and_then(|n| n.strip_suffix(".partial"))
                            .and_then(|n| n.split('.').next())
                    });
                if key_part.is_none_or(|k| super::check_key(k).is_err()) {
                    continue;
                }
                let Ok(meta) = entry.metadata() else { continue };
                let mtime = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                if name.starts_with('.') && name.ends_with(".partial") {
                    rows.push(Listed {
                        kind,
                        key: name.clone(),
                        name: String::new(),
                        bytes: meta.len(),
                        last_used: mtime,
                        state: State::Partial,
                        files: vec![path],
                    });
                } else if let Some(key) = name.strip_suffix(kind.suffix()) {
                    let record_path = dir.join(format!("{key}.json"));
                    match read(&record_path) {
                        Some(record) => rows.push(Listed {
                            kind,
                            key: key.to_string(),
                            name: record.name,
                            bytes: meta.len() + file_size(&record_path),
                            last_used: record.last_used,
                            state: State::Ok,
                            files: vec![path, record_path],
                        }),
                        None => rows.push(Listed {
                            kind,
                            key: key.to_string(),
                            name: String::new(),
                            bytes: meta.len(),
                            last_used: mtime,
                            state: State::Incomplete,
                            files: vec![path, record_path],
                        }),
                    }
                } else if let Some(key) = name.strip_suffix(".json") {
                    // A record whose archive is gone.
                    if !dir.join(format!("{key}{}", kind.suffix())).exists() {
                        rows.push(Listed {
                            kind,
                            key: key.to_string(),
                            name: String::new(),
                            bytes: meta.len(),
                            last_used: mtime,
                            state: State::Incomplete,
                            files: vec![path],
                        });
                    }
                }
            }
            rows.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.key.cmp(&b.key)));
            out.extend(rows);
        }
        Ok(out)
    }
}

fn read(path: &Path) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Removes what `policy` says; returns the removed entries.
pub fn prune(cache: &Cache, policy: PrunePolicy) -> Result<Vec<Listed>> {
    // Before the lock, which would make any directory look like a cache.
    cache.check_ours()?;
    let _lock = cache.lock()?;
    let now = now();
    let mut removed = Vec::new();
    let mut kept_per_kind = std::collections::HashMap::new();
    let mut bytes_per_kind = std::collections::HashMap::new();
    // Newest use first within each kind: what is kept is what builds use.
    for entry in cache.list()? {
        let remove = match entry.state {
            State::Incomplete => true,
            State::Partial => now.saturating_sub(entry.last_used) > PARTIAL_GRACE_SECONDS,
            State::Ok => {
                let kept: &mut usize = kept_per_kind.entry(entry.kind.name()).or_default();
                // A count of packages means nothing (one kernel is a dozen): `--keep` bounds
                // the other kinds, age and size bound packages.
                let too_many =
                    entry.kind != Kind::Package && policy.keep.is_some_and(|keep| *kept >= keep);
                let too_old = policy
                    .older_than_days
                    .is_some_and(|days| now.saturating_sub(entry.last_used) > days * 86_400);
                let kept_bytes: &mut u64 = bytes_per_kind.entry(entry.kind.name()).or_default();
                let too_big = policy
                    .max_bytes
                    .is_some_and(|max| *kept_bytes + entry.bytes > max);
                let remove = too_many || too_old || too_big;
                if !remove {
                    *kept += 1;
                    *kept_bytes += entry.bytes;
                }
                remove
            }
        };
        if remove {
            for file in &entry.files {
                match std::fs::remove_file(file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(crate::fsutil::io_error(e, "removing", file)),
                }
            }
            removed.push(entry);
        }
    }
    Ok(removed)
}

/// `cache ls`'s table.
pub fn render_list(cache: &Cache, entries: &[Listed]) -> String {
    let mut out = format!("cache {}\n", cache.root().display());
    let _ = writeln!(
        out,
        "{:<7} {:<22} {:<40} {:>10}  {:<17} STATE",
        "KIND", "KEY", "NAME", "SIZE", "LAST USED (UTC)"
    );
    let mut total = 0;
    for e in entries {
        total += e.bytes;
        let _ = writeln!(
            out,
            "{:<7} {:<22} {:<40} {:>10}  {:<17} {}",
            e.kind.name(),
            short(&e.key, 22),
            short(&e.name, 40),
            human_bytes(e.bytes),
            date(e.last_used),
            e.state.name()
        );
    }
    let _ = writeln!(
        out,
        "{} entries, {} in all",
        entries.len(),
        human_bytes(total)
    );
    out
}

/// `--max-size` values: bytes, or with a K, M, G or T suffix (powers of 1000, as `cache ls`
/// prints sizes).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let trimmed = text.trim();
    let bad = || format!("'{text}' is not a size: write e.g. 500M or 20G");
    let (digits, factor) = match trimmed.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let factor: u64 = match c.to_ascii_uppercase() {
                'K' => 1_000,
                'M' => 1_000_000,
                'G' => 1_000_000_000,
                'T' => 1_000_000_000_000,
                _ => return Err(bad()),
            };
            (&trimmed[..i], factor)
        }
        _ => (trimmed, 1),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    n.checked_mul(factor)
        .ok_or_else(|| format!("'{text}' is too large"))
}

fn short(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_string()
    } else {
        let head: String = text.chars().take(width - 1).collect();
        format!("{head}…")
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn date(seconds: u64) -> String {
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]");
    time::OffsetDateTime::from_unix_timestamp(seconds as i64)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(cache: &Cache, kind: Kind, key: &str, last_used: u64, dir: &Path) {
        let tree = dir.join(key);
        std::fs::create_dir_all(&tree).unwrap();
        std::fs::write(tree.join("f"), key).unwrap();
        let mut record = cache.store(kind, key, key, None, &tree).unwrap();
        record.last_used = last_used;
        super::super::write_record(&cache.record_path(kind, key), &record).unwrap();
    }

    #[test]
    fn prune_keeps_the_most_recent_per_kind_and_drops_old_and_broken_entries() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let day = 86_400;
        let now = now();
        stored(&cache, Kind::Layer, "l1", now, dir.path());
        stored(&cache, Kind::Layer, "l2", now - day, dir.path());
        stored(&cache, Kind::Layer, "l3", now - 10 * day, dir.path());
        stored(&cache, Kind::Base, "b1", now - 10 * day, dir.path());
        std::fs::write(cache.archive_path(Kind::Layer, "orphan"), "x").unwrap();
        let listed = cache.list().unwrap();
        assert_eq!(listed.len(), 5);
        let text = render_list(&cache, &listed);
        assert!(
            text.contains("layer") && text.contains("base") && text.contains("incomplete"),
            "{text}"
        );

        let removed = prune(
            &cache,
            PrunePolicy {
                keep: Some(2),
                ..PrunePolicy::default()
            },
        )
        .unwrap();
        let mut names: Vec<_> = removed.iter().map(|r| r.key.as_str()).collect();
        names.sort();
        assert_eq!(names, ["l3", "orphan"]);
        assert!(
            cache.archive_path(Kind::Base, "b1").exists(),
            "kept per kind"
        );

        let removed = prune(
            &cache,
            PrunePolicy {
                older_than_days: Some(5),
                ..PrunePolicy::default()
            },
        )
        .unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].key, "b1");
        let left: Vec<_> = cache.list().unwrap().into_iter().map(|e| e.key).collect();
        assert_eq!(left, ["l1", "l2"]);
    }

    #[test]
    fn prune_and_ls_refuse_what_is_not_a_cache_of_ours_and_delete_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A foreign directory shaped like a cache: its files are somebody's.
        let foreign = dir.path().join("project");
        std::fs::create_dir_all(foreign.join("base")).unwrap();
        std::fs::create_dir_all(foreign.join("layers")).unwrap();
        std::fs::write(foreign.join("base/package.json"), "{}").unwrap();
        std::fs::write(foreign.join("layers/abc.tar.zst"), "x").unwrap();
        let cache = Cache::new(&foreign);
        let policy = PrunePolicy {
            keep: Some(0),
            older_than_days: Some(0),
            max_bytes: Some(0),
        };
        let err = prune(&cache, policy).unwrap_err().to_string();
        assert!(err.contains("not a stemcell-builder cache"), "{err}");
        assert!(cache.list().is_err());
        assert!(foreign.join("base/package.json").exists());
        assert!(foreign.join("layers/abc.tar.zst").exists());
        assert!(!foreign.join(".lock").exists(), "no lock left behind");
        let missing = Cache::new(&dir.path().join("nothing-here"));
        let err = missing.list().unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!dir.path().join("nothing-here").exists());

        // A cache of ours whose layers dir is a symlink to somebody's files.
        let ours = Cache::new(&dir.path().join("cache"));
        stored(&ours, Kind::Base, "b1", now(), dir.path());
        let elsewhere = dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("k.tar.zst"), "x").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.path().join("cache/layers")).unwrap();
        let err = prune(&ours, policy).unwrap_err().to_string();
        assert!(err.contains("refusing"), "{err}");
        assert!(elsewhere.join("k.tar.zst").exists());
        assert!(ours.archive_path(Kind::Base, "b1").exists());
    }

    #[test]
    fn prune_bounds_each_kind_by_size_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(&dir.path().join("cache"));
        let now = now();
        stored(&cache, Kind::Layer, "new", now, dir.path());
        stored(&cache, Kind::Layer, "old", now - 100, dir.path());
        stored(&cache, Kind::Base, "b", now - 1000, dir.path());
        let one = cache.list().unwrap()[0].bytes;
        let removed = prune(
            &cache,
            PrunePolicy {
                max_bytes: Some(one + one / 2),
                ..PrunePolicy::default()
            },
        )
        .unwrap();
        let names: Vec<_> = removed.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(names, ["old"], "per kind, oldest use first");
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("20G"), Ok(20_000_000_000));
        assert_eq!(parse_size("500m"), Ok(500_000_000));
        assert!(parse_size("5X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn sizes_read_like_du() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
        assert_eq!(human_bytes(87_183_025), "87.2 MB");
    }
}
