//! `stemcell.MF`: what a BOSH director reads first.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StemcellManifest {
    pub name: String,
    pub version: String,
    pub bosh_protocol: u32,
    pub api_version: u32,
    /// SHA-1 of the `image` member as stored.
    pub sha1: String,
    pub operating_system: String,
    pub stemcell_formats: Vec<String>,
    pub cloud_properties: BTreeMap<String, serde_yaml_ng::Value>,
}

/// Every field cloud_properties must carry, whatever the IaaS.
pub const REQUIRED_CLOUD_PROPERTIES: &[&str] = &[
    "name",
    "version",
    "infrastructure",
    "hypervisor",
    "disk",
    "disk_format",
    "container_format",
    "os_type",
    "os_distro",
    "architecture",
];

pub struct ManifestInput<'a> {
    pub iaas: &'a str,
    pub hypervisor: &'a str,
    pub os_name: &'a str,
    pub os_version: &'a str,
    pub version: &'a str,
    pub arch: &'a str,
    pub disk_mib: u64,
    pub stemcell_format: String,
    pub disk_format: &'a str,
    pub image_sha1: String,
}

impl StemcellManifest {
    pub fn name_for(iaas: &str, hypervisor: &str, os_name: &str, os_version: &str) -> String {
        format!("bosh-{iaas}-{hypervisor}-{os_name}-{os_version}-go_agent")
    }

    pub fn new(input: &ManifestInput) -> Self {
        use serde_yaml_ng::Value;
        let name = Self::name_for(
            input.iaas,
            input.hypervisor,
            input.os_name,
            input.os_version,
        );
        let architecture = match input.arch {
            "amd64" => "x86_64",
            "arm64" => "aarch64",
            other => other,
        };
        let mut cloud = BTreeMap::new();
        let mut put = |k: &str, v: Value| {
            cloud.insert(k.to_string(), v);
        };
        put("name", name.clone().into());
        put("version", input.version.into());
        put("infrastructure", input.iaas.into());
        put("hypervisor", input.hypervisor.into());
        put("disk", input.disk_mib.into());
        put("disk_format", input.disk_format.into());
        put("container_format", "bare".into());
        put("os_type", "linux".into());
        put("os_distro", input.os_name.into());
        put("architecture", architecture.into());
        match input.iaas {
            "openstack" => put("auto_disk_config", true.into()),
            "aws" => {
                put("root_device_name", "/dev/sda1".into());
                put("virtualization_type", "hvm".into());
            }
            _ => {}
        }
        StemcellManifest {
            name,
            version: input.version.to_string(),
            bosh_protocol: 1,
            api_version: 3,
            sha1: input.image_sha1.clone(),
            operating_system: format!("{}-{}", input.os_name, input.os_version),
            stemcell_formats: vec![input.stemcell_format.clone()],
            cloud_properties: cloud,
        }
    }

    pub fn to_yaml(&self) -> anyhow::Result<String> {
        Ok(serde_yaml_ng::to_string(self)?)
    }

    /// Problems a director would trip over, as sentences.
    pub fn problems(&self) -> Vec<String> {
        let mut out = vec![];
        if self.bosh_protocol != 1 {
            out.push(format!(
                "bosh_protocol is {}, expected 1",
                self.bosh_protocol
            ));
        }
        if self.api_version != 3 {
            out.push(format!("api_version is {}, expected 3", self.api_version));
        }
        if self.sha1.len() != 40 || !self.sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
            out.push(format!("sha1 '{}' is not a SHA-1", self.sha1));
        }
        if self.stemcell_formats.is_empty() {
            out.push("stemcell_formats is empty".into());
        }
        for key in REQUIRED_CLOUD_PROPERTIES {
            if !self.cloud_properties.contains_key(*key) {
                out.push(format!("cloud_properties has no {key}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_has_everything() {
        let manifest = StemcellManifest::new(&ManifestInput {
            iaas: "aws",
            hypervisor: "xen-hvm",
            os_name: "debian",
            os_version: "trixie",
            version: "1.2",
            arch: "amd64",
            disk_mib: 3072,
            stemcell_format: "aws-raw".into(),
            disk_format: "raw",
            image_sha1: "a".repeat(40),
        });
        assert!(manifest.problems().is_empty(), "{:?}", manifest.problems());
        let yaml = manifest.to_yaml().unwrap();
        assert!(
            yaml.contains("version: '1.2'") || yaml.contains("version: \"1.2\""),
            "version stays a string: {yaml}"
        );
        assert!(yaml.contains("root_device_name: /dev/sda1"), "{yaml}");
        let back: StemcellManifest = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(back, manifest);
        assert_eq!(manifest.name, "bosh-aws-xen-hvm-debian-trixie-go_agent");
        assert_eq!(manifest.operating_system, "debian-trixie");
    }
}
