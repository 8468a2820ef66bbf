//! The installed packages of a root tree, read from its dpkg database (no dpkg on the host or
//! in the tree needed): `NAME VERSION ARCH` lines, sorted, for `NAME.packages.txt`. The
//! database is read inside the tree ([`crate::inroot`]): a symlink in the tree never makes
//! it read the host's, and a FIFO or a device there is refused instead of hanging or filling
//! memory.

use std::path::Path;

use anyhow::Result;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// A real status file is a few MB (about 3 KB per package).
const MAX_STATUS: u64 = 64 << 20;

/// The packages dpkg lists as installed in `root`; none when it has no dpkg database.
pub fn installed(root: &Path) -> Result<Vec<InstalledPackage>> {
    match crate::inroot::read_if_exists(root, "var/lib/dpkg/status", MAX_STATUS)? {
        Some(bytes) => Ok(parse_status(&String::from_utf8_lossy(&bytes))),
        None => Ok(vec![]),
    }
}

pub fn parse_status(text: &str) -> Vec<InstalledPackage> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
                .map(|v| v.trim().to_string())
        };
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if let (true, Some(name), Some(version)) = (installed, field("Package"), field("Version")) {
            out.push(InstalledPackage {
                name,
                version,
                arch: field("Architecture").unwrap_or_default(),
            });
        }
    }
    out.sort();
    out
}

pub fn render(packages: &[InstalledPackage]) -> String {
    packages
        .iter()
        .map(|p| format!("{} {} {}\n", p.name, p.version, p.arch))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_installed_packages_sorted() {
        let status = "Package: zsh\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.9-4\n\n\
                      Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n\
                      Package: bash\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.2.37-2\nDescription: x\n y\n";
        assert_eq!(
            render(&parse_status(status)),
            "bash 5.2.37-2 amd64\nzsh 5.9-4 amd64\n"
        );
    }
}
