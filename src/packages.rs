//! The installed packages of a root tree, read from its dpkg database (no dpkg on the host or
//! in the tree needed): `NAME VERSION ARCH` lines, sorted, for `NAME.packages.txt`.

use std::path::Path;

use anyhow::{Context, Result};

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
}

pub fn installed(root: &Path) -> Result<Vec<InstalledPackage>> {
    let status = root.join("var/lib/dpkg/status");
    if !status.exists() {
        return Ok(vec![]);
    }
    let text = std::fs::read_to_string(&status)
        .with_context(|| format!("reading {}", status.display()))?;
    Ok(parse_status(&text))
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
