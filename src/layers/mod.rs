//! Stage layers (design section 5): the base is layer 0 (`WORK/layers/00-base/`), and each stage
//! runs on an overlayfs whose lower dirs are the layers below it and whose upper dir is its own
//! layer (`WORK/layers/NN-name/`), mounted at `WORK/chroot` inside the stage's sandbox, so the
//! mount dies with the stage. A layer is a function of its key (parent key, stage files,
//! settings: `key.rs`); finished layers are kept in the work dir and, with a cache dir, stored
//! by key, so a build reruns only the stages whose inputs changed, and `--resume-from` reruns
//! from a stage on exactly the tree it first saw.
//!
//! Each layer has a record `WORK/layers/NN-name.json`: its key, its inputs and whether it is
//! complete. Nothing here ever mounts in the host's mount namespace: the stage's sandbox, or
//! the builder's own private namespace (for packaging and for a shell), holds every mount.

pub mod key;
pub mod overlay;
pub mod shell;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::cache::{Cache, Kind, Lookup};
use crate::stage::Stage;
pub use key::LayerInputs;
pub use overlay::OverlayMount;

/// The base's layer (the bootstrapped base, the given tree, the unpacked OS image).
pub const BASE: &str = "00-base";
/// overlayfs' work dir for stage mounts.
const WORKDIR: &str = ".work";
/// A throwaway upper dir (and its work dir) for the packaging mount and for shells: nothing
/// written through them reaches a layer.
const SCRATCH: &str = ".scratch";
const SCRATCH_WORK: &str = ".scratch-work";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerStatus {
    /// The stage is running on it (or was killed while it did).
    Running,
    Complete,
    Failed,
}

/// `WORK/layers/NN-name.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    pub slug: String,
    pub stage: String,
    pub key: String,
    pub status: LayerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<LayerInputs>,
}

/// What `prepare` decided for a stage.
pub enum Prepared {
    /// The layer is there: from the work dir (`work dir`) or restored from the cache (`cache`).
    Cached(&'static str),
    /// The stage must run on `overlay`; `reason` says why it was not cached.
    Run {
        reason: String,
        overlay: OverlayMount,
    },
}

/// Moves the builder into a private mount namespace of its own, where the merged tree is
/// mounted for packaging and for shells: nothing mounted there is seen by the host, and it all
/// goes when the builder exits, however it exits. `unshare(CLONE_NEWNS)` needs a process with
/// one thread, so this runs before anything starts a thread (progress bars, S3, Ctrl-C).
pub fn enter_private_mount_namespace() -> Result<()> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if threads.is_some_and(|n| n > 1) {
        bail!("internal error: the layered pipeline must start before any thread does (a private mount namespace needs one thread)");
    }
    crate::sandbox::own_mount_namespace()
}

/// The layers of one work dir.
pub struct LayerStack {
    dir: PathBuf,
    chroot: PathBuf,
    cache: Option<Cache>,
    /// Records as the previous build left them (to reuse layers and to explain misses).
    previous: BTreeMap<String, LayerRecord>,
    /// The layers the current build stands on, base first: (slug, key).
    chain: Vec<(String, String)>,
    /// The cache's layer records, read once, on the first miss.
    cache_records: Option<Vec<crate::cache::Record>>,
}

impl LayerStack {
    /// The layers of `work` (created when missing); `cache` is the cache dir, if any.
    pub fn open(work: &Path, cache: Option<Cache>) -> Result<Self> {
        let dir = work.join("layers");
        crate::fsutil::create_owned_dir(&dir)?;
        let mut previous = BTreeMap::new();
        for entry in std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(slug) = name.strip_suffix(".json") else {
                continue;
            };
            if let Some(record) = std::fs::read(entry.path())
                .ok()
                .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
                .filter(|r| r.slug == slug)
            {
                previous.insert(slug.to_string(), record);
            }
        }
        Ok(Self {
            dir,
            chroot: work.join("chroot"),
            cache,
            previous,
            chain: Vec::new(),
            cache_records: None,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn cache(&self) -> Option<&Cache> {
        self.cache.as_ref()
    }

    /// Where the base goes (it must not exist when the base source fills it).
    pub fn base_dir(&self) -> PathBuf {
        self.dir.join(BASE)
    }

    /// Fails with the fix (`--no-layers`) when overlayfs cannot be mounted here.
    pub fn probe(&self) -> Result<()> {
        overlay::probe(&self.dir)
    }

    /// Keeps the work dir's base when it has this key (and reuse is on: a cache dir is set).
    pub fn reuse_base(&mut self, key: &str) -> bool {
        let reusable = self.cache.is_some()
            && self.complete(BASE).is_some_and(|r| r.key == key)
            && self.base_dir().is_dir();
        if reusable {
            self.chain = vec![(BASE.to_string(), key.to_string())];
        }
        reusable
    }

    /// Deletes every layer, for a new base.
    pub fn clear(&mut self) -> Result<()> {
        crate::fsutil::remove_tree(&self.dir)?;
        crate::fsutil::create_owned_dir(&self.dir)?;
        self.chain.clear();
        Ok(())
    }

    /// The base is complete in `base_dir()`.
    pub fn base_done(&mut self, key: &str) -> Result<()> {
        let record = LayerRecord {
            slug: BASE.into(),
            stage: "base".into(),
            key: key.into(),
            status: LayerStatus::Complete,
            inputs: None,
        };
        self.write_record(&record)?;
        self.chain = vec![(BASE.to_string(), key.to_string())];
        Ok(())
    }

    /// For `--resume-from`: stands on the base and the complete layers of the stages before
    /// `start_at`, and drops the layers from there on.
    pub fn resume(&mut self, stages: &[Stage], start_at: usize) -> Result<()> {
        let Some(base) = self.complete(BASE).filter(|_| self.base_dir().is_dir()) else {
            bail!(
                "nothing to resume in {}: no completed base layer there (was it built with --no-layers?); run without --resume-from",
                self.dir.display()
            );
        };
        let mut chain = vec![(BASE.to_string(), base.key.clone())];
        for stage in &stages[..start_at] {
            let slug = stage.slug();
            let record = self
                .complete(&slug)
                .filter(|_| self.dir.join(&slug).is_dir())
                .filter(|r| r.inputs.as_ref().map(|i| &i.parent) == Some(&chain.last().unwrap().1));
            let Some(record) = record else {
                bail!(
                    "cannot resume from '{}': the layer of stage '{}' is not complete in {}; resume from '{}' or run without --resume-from",
                    stages[start_at].name,
                    stage.name,
                    self.dir.display(),
                    stage.name
                );
            };
            chain.push((slug, record.key.clone()));
        }
        self.chain = chain;
        self.remove_from(stages[start_at].position)
    }

    fn complete(&self, slug: &str) -> Option<&LayerRecord> {
        self.previous
            .get(slug)
            .filter(|r| r.status == LayerStatus::Complete)
    }

    /// The key the next layer stands on.
    pub fn top_key(&self) -> &str {
        &self.chain.last().expect("the base is in the chain").1
    }

    /// Decides how `stage`'s layer comes about: kept from the work dir, restored from the
    /// cache, or made by running the stage (`force` says why it must run regardless).
    pub fn prepare(
        &mut self,
        stage: &Stage,
        inputs: &LayerInputs,
        force: Option<&str>,
    ) -> Result<Prepared> {
        let key = inputs.key();
        let slug = stage.slug();
        let layer = self.dir.join(&slug);
        if force.is_none()
            && self.cache.is_some()
            && self.complete(&slug).is_some_and(|r| r.key == key)
            && layer.is_dir()
        {
            self.chain.push((slug, key));
            return Ok(Prepared::Cached("work dir"));
        }
        self.remove_from(stage.position)?;
        let reason = match (force, &self.cache) {
            (Some(force), _) => force.to_string(),
            (None, None) => "no cache".to_string(),
            (None, Some(cache)) => match cache.restore(Kind::Layer, &key, &layer)? {
                Lookup::Hit(_) => {
                    self.mark_complete(stage, inputs)?;
                    return Ok(Prepared::Cached("cache"));
                }
                Lookup::Corrupt(why) => format!("the cache entry was damaged ({why})"),
                Lookup::Missing => {
                    let records = self
                        .cache_records
                        .get_or_insert_with(|| cache.records(Kind::Layer));
                    explain_miss(&self.previous, records, stage, inputs)
                }
            },
        };
        let top = self.dir.join(&self.chain.last().unwrap().0);
        overlay::init_upper(&layer, &top)?;
        self.fresh_dir(WORKDIR)?;
        self.write_record(&LayerRecord {
            slug: slug.clone(),
            stage: stage.name.clone(),
            key,
            status: LayerStatus::Running,
            inputs: Some(inputs.clone()),
        })?;
        Ok(Prepared::Run {
            reason,
            overlay: OverlayMount {
                layers_dir: self.dir.clone(),
                lowers: self.lowers(None),
                upper: slug,
                workdir: WORKDIR.into(),
                target: self.chroot.clone(),
            },
        })
    }

    /// The stage ran and succeeded: its layer is complete, and stored in the cache. Returns a
    /// note for the log; a cache that cannot be written is a warning, not a failed build.
    pub fn succeeded(&mut self, stage: &Stage, inputs: &LayerInputs) -> Result<String> {
        let (slug, key) = self.mark_complete(stage, inputs)?;
        let Some(cache) = &self.cache else {
            return Ok(String::new());
        };
        Ok(
            match cache.store(
                Kind::Layer,
                &key,
                &stage.name,
                Some(inputs),
                &self.dir.join(&slug),
            ) {
                Ok(record) => format!(
                    "layer stored in the cache ({})",
                    crate::cache::listing::human_bytes(record.bytes)
                ),
                Err(err) => format!("warning: the layer was not cached: {err:#}"),
            },
        )
    }

    /// Records `stage`'s layer as complete and puts it on top of the chain; returns its slug
    /// and key.
    fn mark_complete(&mut self, stage: &Stage, inputs: &LayerInputs) -> Result<(String, String)> {
        let (slug, key) = (stage.slug(), inputs.key());
        self.write_record(&LayerRecord {
            slug: slug.clone(),
            stage: stage.name.clone(),
            key: key.clone(),
            status: LayerStatus::Complete,
            inputs: Some(inputs.clone()),
        })?;
        self.chain.push((slug.clone(), key.clone()));
        Ok((slug, key))
    }

    /// The stage failed: its layer stays, marked failed, for a shell to look at.
    pub fn failed(&mut self, stage: &Stage, inputs: &LayerInputs) -> Result<()> {
        self.write_record(&LayerRecord {
            slug: stage.slug(),
            stage: stage.name.clone(),
            key: inputs.key(),
            status: LayerStatus::Failed,
            inputs: Some(inputs.clone()),
        })
    }

    /// Lower dirs of a mount on the current chain, `extra` (a failed layer) on top.
    fn lowers(&self, extra: Option<&str>) -> Vec<String> {
        extra
            .map(str::to_string)
            .into_iter()
            .chain(self.chain.iter().rev().map(|(slug, _)| slug.clone()))
            .collect()
    }

    /// Mounts the merged tree (the chain, plus `extra` on top) at `WORK/chroot` in the
    /// caller's own mount namespace, over a throwaway upper dir; unmounted when dropped.
    pub fn mount_merged(&self, extra: Option<&str>) -> Result<MergedTree> {
        let top = extra.unwrap_or(&self.chain.last().expect("a base").0);
        self.remove_scratch()?;
        overlay::init_upper(&self.dir.join(SCRATCH), &self.dir.join(top))?;
        self.fresh_dir(SCRATCH_WORK)?;
        crate::fsutil::create_owned_dir(&self.chroot)?;
        let overlay = OverlayMount {
            layers_dir: self.dir.clone(),
            lowers: self.lowers(extra),
            upper: SCRATCH.into(),
            workdir: SCRATCH_WORK.into(),
            target: self.chroot.clone(),
        };
        overlay.mount()?;
        Ok(MergedTree {
            target: self.chroot.clone(),
            layers: self.dir.clone(),
        })
    }

    fn remove_scratch(&self) -> Result<()> {
        crate::fsutil::remove_tree(&self.dir.join(SCRATCH))?;
        crate::fsutil::remove_tree(&self.dir.join(SCRATCH_WORK))
    }

    /// For a shell on a work dir after a build: stands on the complete layers up to `until`
    /// (a stage name; default: all), and returns the failed or interrupted layer above them,
    /// if there is one and no `until` was given.
    pub fn stand_on_existing(&mut self, until: Option<&str>) -> Result<Option<String>> {
        let Some(base) = self.complete(BASE).cloned() else {
            bail!(
                "{} holds no complete base layer: build there first (without --no-layers)",
                self.dir.display()
            );
        };
        self.chain = vec![(BASE.to_string(), base.key)];
        // `base`: the base layer alone (the bootstrap or the unpacked OS image), unless a stage
        // of that name has a layer here.
        if until == Some("base")
            && !self
                .previous
                .values()
                .any(|r| r.stage == "base" && r.slug != BASE)
        {
            return Ok(None);
        }
        let mut stages: Vec<LayerRecord> = self
            .previous
            .values()
            .filter(|r| r.slug != BASE)
            .cloned()
            .collect();
        // By position (`100-x` sorts before `11-y` as text).
        stages.sort_by_key(|r| position(&r.slug));
        for record in stages {
            let linked = record.inputs.as_ref().map(|i| i.parent.as_str()) == Some(self.top_key());
            if !linked || !self.dir.join(&record.slug).is_dir() {
                break;
            }
            match record.status {
                LayerStatus::Complete => {
                    self.chain.push((record.slug.clone(), record.key.clone()));
                    if until == Some(record.stage.as_str()) {
                        return Ok(None);
                    }
                }
                _ if until.is_none() => return Ok(Some(record.slug)),
                _ => break,
            }
        }
        if let Some(until) = until {
            bail!(
                "stage '{until}' has no complete layer in {}: pass a stage whose layer is complete, or none",
                self.dir.display()
            );
        }
        Ok(None)
    }

    /// Removes the layers (and records) at `position` and above.
    fn remove_from(&mut self, position: usize) -> Result<()> {
        let mut doomed: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(&self.dir)
            .with_context(|| format!("listing {}", self.dir.display()))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let slug = name.strip_suffix(".json").unwrap_or(&name);
            if self::position(slug).is_some_and(|n| n >= position && n > 0) {
                doomed.push(name);
            }
        }
        for name in doomed {
            let path = self.dir.join(&name);
            if name.ends_with(".json") {
                std::fs::remove_file(&path)
                    .map_err(|e| crate::fsutil::io_error(e, "removing", &path))?;
            } else {
                crate::fsutil::remove_tree(&path)?;
            }
        }
        Ok(())
    }

    fn fresh_dir(&self, name: &str) -> Result<()> {
        let dir = self.dir.join(name);
        crate::fsutil::remove_tree(&dir)?;
        crate::fsutil::create_owned_dir(&dir)
    }

    fn write_record(&mut self, record: &LayerRecord) -> Result<()> {
        let path = self.dir.join(format!("{}.json", record.slug));
        let mut text = serde_json::to_vec_pretty(record)?;
        text.push(b'\n');
        crate::output::write_atomically(&path, &text)
    }
}

/// Why a layer was not in the cache: which of its inputs differ from the last time this stage
/// was built (in this work dir, else the most recently used cache entry of it).
fn explain_miss(
    previous: &BTreeMap<String, LayerRecord>,
    records: &[crate::cache::Record],
    stage: &Stage,
    inputs: &LayerInputs,
) -> String {
    let before = previous
        .get(&stage.slug())
        .filter(|r| r.stage == stage.name)
        .and_then(|r| r.inputs.as_ref())
        .or_else(|| {
            records
                .iter()
                .filter(|r| r.name == stage.name && r.inputs.is_some())
                .max_by_key(|r| r.last_used)
                .and_then(|r| r.inputs.as_ref())
        });
    match before {
        None => "new: not built before".to_string(),
        Some(before) => {
            let changed = inputs.changes_from(before);
            if changed.is_empty() {
                "not in the cache".to_string()
            } else {
                format!("{} changed", changed.join(", "))
            }
        }
    }
}

/// The stage position a layer's `NN-name` starts with.
fn position(slug: &str) -> Option<usize> {
    slug.split('-').next().and_then(|n| n.parse().ok())
}

/// The merged tree mounted at `WORK/chroot`; unmounted (and its scratch layer removed) when
/// dropped. The mount lives in the builder's own namespace, so even a SIGKILL leaks nothing.
pub struct MergedTree {
    target: PathBuf,
    layers: PathBuf,
}

impl MergedTree {
    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for MergedTree {
    fn drop(&mut self) {
        let _ = overlay::unmount(&self.target);
        let _ = crate::fsutil::remove_tree(&self.layers.join(SCRATCH));
        let _ = crate::fsutil::remove_tree(&self.layers.join(SCRATCH_WORK));
    }
}
