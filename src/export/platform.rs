//! The platform an OCI image declares: Go's names (GOARCH, and a variant for ARM), taken from
//! the tree's dpkg architecture, or from the ELF header of one of its programs when it has no
//! dpkg database.

use anyhow::{bail, Result};
use goblin::elf::{header, Elf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// GOARCH: amd64, arm64, ppc64le, s390x, ...
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    fn new(architecture: &str, variant: Option<&str>) -> Self {
        Self {
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }
}

/// A Debian architecture as Go names it.
pub fn from_dpkg(arch: &str) -> Option<Platform> {
    Some(match arch {
        "amd64" => Platform::new("amd64", None),
        "arm64" => Platform::new("arm64", Some("v8")),
        "armhf" => Platform::new("arm", Some("v7")),
        "armel" => Platform::new("arm", Some("v5")),
        "i386" => Platform::new("386", None),
        "ppc64el" => Platform::new("ppc64le", None),
        "ppc64" => Platform::new("ppc64", None),
        "s390x" => Platform::new("s390x", None),
        "riscv64" => Platform::new("riscv64", None),
        "mips64el" => Platform::new("mips64le", None),
        "mipsel" => Platform::new("mipsle", None),
        "loong64" => Platform::new("loong64", None),
        _ => return None,
    })
}

/// The platform of an ELF program, from its first 64 bytes.
pub fn from_elf(head: &[u8]) -> Result<Platform> {
    let parsed = Elf::parse_header(head).map_err(|e| anyhow::anyhow!("ELF header: {e}"))?;
    let is64 = parsed.e_ident[header::EI_CLASS] == header::ELFCLASS64;
    let little = parsed.e_ident[header::EI_DATA] == header::ELFDATA2LSB;
    Ok(match (parsed.e_machine, is64, little) {
        (header::EM_X86_64, true, _) => Platform::new("amd64", None),
        (header::EM_AARCH64, true, _) => Platform::new("arm64", Some("v8")),
        (header::EM_ARM, false, _) => Platform::new("arm", None),
        (header::EM_386, false, _) => Platform::new("386", None),
        (header::EM_PPC64, true, true) => Platform::new("ppc64le", None),
        (header::EM_PPC64, true, false) => Platform::new("ppc64", None),
        (header::EM_S390, true, _) => Platform::new("s390x", None),
        (header::EM_RISCV, true, _) => Platform::new("riscv64", None),
        (header::EM_LOONGARCH, true, _) => Platform::new("loong64", None),
        (machine, _, _) => bail!("ELF machine {machine} has no Go architecture name"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_architectures_map_to_go_names() {
        assert_eq!(from_dpkg("amd64").unwrap().architecture, "amd64");
        assert_eq!(from_dpkg("ppc64el").unwrap().architecture, "ppc64le");
        assert_eq!(from_dpkg("s390x").unwrap().architecture, "s390x");
        let arm = from_dpkg("armhf").unwrap();
        assert_eq!(
            (arm.architecture.as_str(), arm.variant.as_deref()),
            ("arm", Some("v7"))
        );
        assert!(from_dpkg("hurd-i386").is_none());
    }

    #[test]
    fn this_hosts_programs_map_to_its_architecture() {
        let head = std::fs::read("/proc/self/exe").unwrap();
        let expected = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "s390x" => "s390x",
            "powerpc64" => "ppc64le",
            other => other,
        };
        assert_eq!(from_elf(&head[..64]).unwrap().architecture, expected);
    }
}
