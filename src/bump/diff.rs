//! Two package lists (`NAME VERSION ARCH` lines, as in an OS image's `.packages.txt`) and what
//! changed between them. Versions are ordered as dpkg orders them (epochs, `~`, revisions), by
//! the `debversion` crate; two spellings dpkg holds equal (`1.0` and `0:1.0`) are no change.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use debversion::Version;

/// A package list larger than this is not one (a full OS image lists ~1 MiB at most).
pub const MAX_LIST_BYTES: u64 = 64 << 20;
/// A `NAME VERSION ARCH` line longer than this is not one.
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub arch: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VersionChange {
    pub name: String,
    pub arch: String,
    pub from: String,
    pub to: String,
    /// Set when the package also changed architecture (e.g. `amd64` to `all`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_arch: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageDiff {
    pub added: Vec<Package>,
    pub removed: Vec<Package>,
    pub upgraded: Vec<VersionChange>,
    pub downgraded: Vec<VersionChange>,
}

impl PackageDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }
}

/// One parsed list: entries with their parsed versions, in file order.
pub struct PackageList {
    entries: Vec<(Package, Version)>,
}

impl PackageList {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads a package list: a regular file (never a FIFO or a device, which could block or
    /// never end) of at most [`MAX_LIST_BYTES`], each line at most [`MAX_LINE_BYTES`].
    pub fn read(path: &Path) -> Result<Self> {
        let fix = "pass the .packages.txt beside an OS image";
        let meta = std::fs::metadata(path)
            .with_context(|| format!("cannot read package list {}: {fix}", path.display()))?;
        if !meta.is_file() {
            bail!(
                "package list {} is not a regular file: {fix}",
                path.display()
            );
        }
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| {
                use std::io::Read;
                f.take(MAX_LIST_BYTES + 1).read_to_string(&mut text)
            })
            .with_context(|| format!("cannot read package list {}: {fix}", path.display()))?;
        if text.len() as u64 > MAX_LIST_BYTES {
            bail!(
                "package list {} is larger than {} MiB, far more than any OS image's: {fix}",
                path.display(),
                MAX_LIST_BYTES >> 20
            );
        }
        if let Some(number) = text.lines().position(|l| l.len() > MAX_LINE_BYTES) {
            bail!(
                "package list {} line {}: longer than {MAX_LINE_BYTES} bytes, not `NAME VERSION ARCH`",
                path.display(),
                number + 1
            );
        }
        Self::parse(&text, &path.display().to_string())
    }

    /// Blank lines are skipped; anything else must be `NAME VERSION ARCH` with a valid Debian
    /// version, each NAME:ARCH once.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut entries = Vec::new();
        let mut seen = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.trim().is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, version, arch] = fields[..] else {
                bail!(
                    "{origin}:{number}: expected 'NAME VERSION ARCH', found {line:?}: pass a .packages.txt written by build-os-image"
                );
            };
            let parsed: Version = version.parse().map_err(|_| {
                anyhow::anyhow!(
                    "{origin}:{number}: {version:?} is not a Debian version (package {name}): pass a .packages.txt written by build-os-image"
                )
            })?;
            if let Some(first) = seen.insert((name.to_string(), arch.to_string()), number) {
                bail!(
                    "{origin}:{number}: {name} ({arch}) is listed twice (first on line {first}): a package list names each package once"
                );
            }
            entries.push((
                Package {
                    name: name.to_string(),
                    version: version.to_string(),
                    arch: arch.to_string(),
                },
                parsed,
            ));
        }
        Ok(Self { entries })
    }
}

/// What changed from `previous` to `current`. Packages are matched by name; a name listed for
/// several architectures (multiarch) is matched per architecture. A package whose architecture
/// changed along with its version is an upgrade or downgrade that says so; one whose
/// architecture changed alone is removed and added.
pub fn diff(previous: &PackageList, current: &PackageList) -> PackageDiff {
    let old = by_name(previous);
    let new = by_name(current);
    let mut out = PackageDiff::default();
    let names: std::collections::BTreeSet<&str> = old.keys().chain(new.keys()).copied().collect();
    for name in names {
        let before = old.get(name).cloned().unwrap_or_default();
        let after = new.get(name).cloned().unwrap_or_default();
        if let ([a], [b]) = (&before[..], &after[..]) {
            if a.0.arch != b.0.arch && a.1 != b.1 {
                record(&mut out, a, b, Some(a.0.arch.clone()));
                continue;
            }
        }
        for a in &before {
            match after.iter().find(|b| b.0.arch == a.0.arch) {
                Some(b) => record(&mut out, a, b, None),
                None => out.removed.push(a.0.clone()),
            }
        }
        for b in &after {
            if !before.iter().any(|a| a.0.arch == b.0.arch) {
                out.added.push(b.0.clone());
            }
        }
    }
    let key = |p: &Package| (p.name.clone(), p.arch.clone());
    out.added.sort_by_key(key);
    out.removed.sort_by_key(key);
    out
}

fn by_name(list: &PackageList) -> BTreeMap<&str, Vec<&(Package, Version)>> {
    let mut map: BTreeMap<&str, Vec<&(Package, Version)>> = BTreeMap::new();
    for entry in &list.entries {
        map.entry(entry.0.name.as_str()).or_default().push(entry);
    }
    map
}

fn record(
    out: &mut PackageDiff,
    a: &(Package, Version),
    b: &(Package, Version),
    from_arch: Option<String>,
) {
    let change = || VersionChange {
        name: b.0.name.clone(),
        arch: b.0.arch.clone(),
        from: a.0.version.clone(),
        to: b.0.version.clone(),
        from_arch: from_arch.clone(),
    };
    match b.1.cmp(&a.1) {
        Ordering::Greater => out.upgraded.push(change()),
        Ordering::Less => out.downgraded.push(change()),
        Ordering::Equal => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(text: &str) -> PackageList {
        PackageList::parse(text, "test").unwrap()
    }

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    /// The orderings dpkg defines (deb-version(7)) that package lists exercise.
    #[test]
    fn versions_order_as_dpkg_does() {
        let ascending = [
            "1.0~rc1",
            "1.0",
            "1.0-1~bpo12+1",
            "1.0-1",
            "1.0-1+deb12u1",
            "1.0-2",
            "1.0a",
            "1.0.1",
            "1.2",
            "1.10",
            "2:0.1",
        ];
        for pair in ascending.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
        // An epoch beats any upstream version; a missing epoch is 0.
        assert!(v("1:1.0") > v("9.9"));
        assert_eq!(v("0:1.0-1").cmp(&v("1.0-1")), Ordering::Equal);
        // `~` sorts before the end of the string, even before nothing.
        assert!(v("1.0~~") < v("1.0~"));
        assert!(v("1.0~") < v("1.0"));
        // Numbers compare as numbers, leading zeros ignored.
        assert_eq!(v("1.007").cmp(&v("1.7")), Ordering::Equal);
        // Letters sort before non-letters.
        assert!(v("1.0a") < v("1.0+"));
        // Real Debian security updates.
        assert!(v("3.0.15-1~deb12u1") < v("3.0.16-1~deb12u1"));
        assert!(v("252.30-1~deb12u2") < v("252.31-1~deb12u1"));
        assert!(v("2.36-9+deb12u9") < v("2.36-9+deb12u10"));
    }

    #[test]
    fn diff_names_each_kind_of_change() {
        let old = list("a 1.0 amd64\nb 2.0 all\nc 1:3.0 amd64\nd 1.0 amd64\nsame 0:1.0 all\n");
        let new = list("a 1.1 amd64\nc 2.9 amd64\nd 1.0 amd64\ne 0.1 all\nsame 1.0 all\n");
        let diff = diff(&old, &new);
        assert_eq!(diff.added.len(), 1);
        assert_eq!(diff.added[0].name, "e");
        assert_eq!(diff.removed.len(), 1);
        assert_eq!(diff.removed[0].name, "b");
        assert_eq!(diff.upgraded.len(), 1);
        assert_eq!(
            (diff.upgraded[0].from.as_str(), diff.upgraded[0].to.as_str()),
            ("1.0", "1.1")
        );
        // 1:3.0 -> 2.9 drops the epoch: a downgrade.
        assert_eq!(diff.downgraded.len(), 1);
        assert_eq!(diff.downgraded[0].name, "c");
        assert!(!diff.is_empty());
    }

    #[test]
    fn same_lists_in_another_order_are_no_change() {
        let old = list("a 1.0 amd64\nb 2.0 all\n");
        let new = list("\nb 2.0 all\na 1.0 amd64\n");
        assert!(diff(&old, &new).is_empty());
    }

    #[test]
    fn multiarch_packages_are_matched_per_architecture() {
        let old = list("libc6 2.36-9 amd64\nlibc6 2.36-9 i386\n");
        let new = list("libc6 2.36-9+deb12u1 amd64\n");
        let diff = diff(&old, &new);
        assert_eq!(diff.upgraded.len(), 1);
        assert_eq!(diff.upgraded[0].arch, "amd64");
        assert_eq!(diff.removed.len(), 1);
        assert_eq!(diff.removed[0].arch, "i386");
    }

    #[test]
    fn architecture_change_with_a_new_version_is_an_upgrade() {
        let diff = diff(&list("x 1.0 amd64\n"), &list("x 1.1 all\n"));
        assert_eq!(diff.upgraded.len(), 1);
        assert_eq!(diff.upgraded[0].from_arch.as_deref(), Some("amd64"));
        let diff = super::diff(&list("x 1.0 amd64\n"), &list("x 1.0 all\n"));
        assert_eq!((diff.added.len(), diff.removed.len()), (1, 1));
    }

    #[test]
    fn malformed_lines_are_one_line_errors_naming_the_line() {
        for (text, needle) in [
            ("a 1.0\n", "test:1: expected 'NAME VERSION ARCH'"),
            ("a 1.0 amd64 extra\n", "test:1: expected"),
            (
                "ok 1 all\nb 1.0_x amd64\n",
                "test:2: \"1.0_x\" is not a Debian version",
            ),
            (
                "a 1 all\na 2 all\n",
                "test:2: a (all) is listed twice (first on line 1)",
            ),
        ] {
            let err = PackageList::parse(text, "test").err().unwrap().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn lists_that_are_not_regular_files_or_too_long_lines_are_refused_in_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
        let err = PackageList::read(&fifo).err().unwrap().to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let err = PackageList::read(Path::new("/dev/zero"))
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        let long = dir.path().join("long");
        std::fs::write(
            &long,
            format!("a 1 amd64\n{}\n", "x".repeat(MAX_LINE_BYTES + 1)),
        )
        .unwrap();
        let err = PackageList::read(&long).err().unwrap().to_string();
        assert!(err.contains("line 2") && err.lines().count() == 1, "{err}");
    }
}
