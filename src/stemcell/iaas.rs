//! The IaaS/hypervisor pairs a stemcell can target, their default image format and what their
//! stemcell.MF says about the image.

use anyhow::{bail, Result};

use crate::disk::DiskFormat;

/// What `image` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageFormat {
    /// A tarball of the root tree (warden/bosh-lite containers).
    Files,
    Raw,
    Qcow2,
    Ovf,
    Vhd,
}

impl ImageFormat {
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Files => "files",
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Ovf => "ovf",
            ImageFormat::Vhd => "vhd",
        }
    }

    pub fn disk(self) -> Option<DiskFormat> {
        match self {
            ImageFormat::Files => None,
            ImageFormat::Raw => Some(DiskFormat::Raw),
            ImageFormat::Qcow2 => Some(DiskFormat::Qcow2),
            ImageFormat::Ovf => Some(DiskFormat::Ovf),
            ImageFormat::Vhd => Some(DiskFormat::Vhd),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub iaas: &'static str,
    pub hypervisor: &'static str,
    pub default_format: ImageFormat,
}

pub const TARGETS: &[Target] = &[
    Target {
        iaas: "warden",
        hypervisor: "boshlite",
        default_format: ImageFormat::Files,
    },
    Target {
        iaas: "openstack",
        hypervisor: "kvm",
        default_format: ImageFormat::Qcow2,
    },
    Target {
        iaas: "aws",
        hypervisor: "xen-hvm",
        default_format: ImageFormat::Raw,
    },
    Target {
        iaas: "vsphere",
        hypervisor: "esxi",
        default_format: ImageFormat::Ovf,
    },
    Target {
        iaas: "google",
        hypervisor: "kvm",
        default_format: ImageFormat::Raw,
    },
    Target {
        iaas: "azure",
        hypervisor: "hyperv",
        default_format: ImageFormat::Vhd,
    },
];

fn valid_pairs() -> String {
    TARGETS
        .iter()
        .map(|t| format!("{}/{}", t.iaas, t.hypervisor))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The target for `iaas` and `hypervisor` (default: the IaaS's only hypervisor).
pub fn resolve(iaas: &str, hypervisor: Option<&str>) -> Result<&'static Target> {
    let found = TARGETS
        .iter()
        .find(|t| t.iaas == iaas && hypervisor.is_none_or(|h| h == t.hypervisor));
    match found {
        Some(target) => Ok(target),
        None => bail!(
            "unknown IaaS/hypervisor pair {iaas}/{}: valid pairs are {}",
            hypervisor.unwrap_or("(default)"),
            valid_pairs()
        ),
    }
}

impl Target {
    /// Checks a requested format against what this IaaS can take.
    pub fn format(&self, requested: Option<ImageFormat>) -> Result<ImageFormat> {
        let format = requested.unwrap_or(self.default_format);
        let containers = self.default_format == ImageFormat::Files;
        if containers != (format == ImageFormat::Files) {
            bail!(
                "format {} does not fit {}/{}: {} takes {}",
                format.name(),
                self.iaas,
                self.hypervisor,
                self.iaas,
                if containers {
                    "files"
                } else {
                    "raw, qcow2, ovf or vhd"
                }
            );
        }
        Ok(format)
    }

    /// `stemcell_formats` entry, e.g. `openstack-qcow2`, `google-rawdisk`, `warden-tar`.
    pub fn stemcell_format(&self, format: ImageFormat) -> String {
        match (self.iaas, format) {
            ("warden", ImageFormat::Files) => "warden-tar".into(),
            ("google", ImageFormat::Raw) => "google-rawdisk".into(),
            (iaas, format) => format!("{iaas}-{}", format.name()),
        }
    }

    /// `disk_format` in cloud_properties.
    pub fn disk_format(&self, format: ImageFormat) -> &'static str {
        match (self.iaas, format) {
            ("google", ImageFormat::Raw) => "rawdisk",
            (_, format) => format.name(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_defaults_and_errors() {
        assert_eq!(resolve("openstack", None).unwrap().hypervisor, "kvm");
        assert_eq!(
            resolve("aws", Some("xen-hvm")).unwrap().default_format,
            ImageFormat::Raw
        );
        let err = resolve("openstack", Some("esxi")).unwrap_err().to_string();
        assert!(
            err.contains("warden/boshlite") && err.contains("azure/hyperv"),
            "{err}"
        );
        let warden = resolve("warden", None).unwrap();
        assert!(warden.format(Some(ImageFormat::Raw)).is_err());
        let openstack = resolve("openstack", None).unwrap();
        assert_eq!(
            openstack.format(Some(ImageFormat::Raw)).unwrap(),
            ImageFormat::Raw
        );
        assert!(openstack.format(Some(ImageFormat::Files)).is_err());
        assert_eq!(
            resolve("google", None)
                .unwrap()
                .stemcell_format(ImageFormat::Raw),
            "google-rawdisk"
        );
        assert_eq!(warden.stemcell_format(ImageFormat::Files), "warden-tar");
    }
}
