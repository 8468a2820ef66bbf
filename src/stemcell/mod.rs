//! The stemcell artifact: `build-stemcell` runs the common pipeline (`crate::pipeline`) on an OS
//! image (local or in S3) as its base, then this packager writes `image` in the IaaS's format,
//! the manifest, package list, dev-tools list and SBOMs, tarred in BOSH's order.

pub mod commit;
pub mod iaas;
pub mod inspect;
pub mod manifest;
pub mod sbom;
pub mod tarball;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha1::{Digest, Sha1};

use crate::archive::Compression;
use crate::pipeline::settings::{BuildSettings, OsIdentity};
use crate::pipeline::workspace::Workspace;
use crate::pipeline::Packager;
use crate::progress::Reporter;
use iaas::{ImageFormat, Target};
use manifest::{ManifestInput, StemcellManifest};

/// `build-stemcell`'s packager: the agent in, the stemcell settings, then `image`, the
/// manifest, the package lists and SBOMs, tarred in BOSH's order.
#[derive(Debug, Clone)]
pub struct StemcellPackager {
    pub target: &'static Target,
    pub format: ImageFormat,
    pub version: String,
    pub agent: PathBuf,
    pub output_dir: PathBuf,
    pub disk_size_mib: Option<u64>,
    /// The collection the stages come from (named when the disk is missing).
    pub collection: String,
    /// The commit the stemcell records (`commit::for_stemcell`): the stages' checkout's, else
    /// the builder's own.
    pub builder_commit: Option<String>,
}

impl StemcellPackager {
    /// `bosh-stemcell-VERSION-IAAS-HYPERVISOR-OSNAME-OSVERSION-go_agent[-FORMAT].tgz`
    pub fn file_name(&self, os_name: &str, os_version: &str) -> String {
        let suffix = if self.format == self.target.default_format {
            String::new()
        } else {
            format!("-{}", self.format.name())
        };
        format!(
            "bosh-stemcell-{}-{}-{}-{os_name}-{os_version}-go_agent{suffix}.tgz",
            self.version, self.target.iaas, self.target.hypervisor
        )
    }

    fn agent_copy(work: &Path) -> PathBuf {
        work.join("inputs").join("bosh-agent")
    }

    fn disk_dir(work: &Path) -> PathBuf {
        work.join("disk")
    }
}

impl Packager for StemcellPackager {
    fn step_name(&self) -> &'static str {
        "package"
    }

    fn check(&self) -> Result<()> {
        let version = &self.version;
        if version.trim().is_empty()
            || version.contains('/')
            || version.contains(char::is_whitespace)
            || version.starts_with('.')
        {
            bail!(
                "--version '{version}' is not a stemcell version: use something like 1.2 or 1.2.3"
            );
        }
        let agent = std::fs::metadata(&self.agent).with_context(|| {
            format!(
                "agent {} does not exist: pass the bosh-agent binary with --agent",
                self.agent.display()
            )
        })?;
        if !agent.is_file() || agent.permissions().mode() & 0o111 == 0 {
            bail!(
                "agent {} is not an executable file: chmod +x it or pass the bosh-agent binary",
                self.agent.display()
            );
        }
        if !self.output_dir.is_dir() {
            bail!(
                "output directory {} does not exist: create it or pass another --output-dir",
                self.output_dir.display()
            );
        }
        Ok(())
    }

    fn prepare(&self, workspace: &Workspace, resuming: bool) -> Result<()> {
        // The agent is (re)copied on resume too: fixing the agent is a reason to resume.
        workspace.private_dir("inputs")?;
        let agent = Self::agent_copy(&workspace.work);
        std::fs::copy(&self.agent, &agent)
            .with_context(|| format!("copying agent {}", self.agent.display()))?;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;
        if !resuming {
            crate::fsutil::remove_tree(&Self::disk_dir(&workspace.work))?;
        }
        Ok(())
    }

    fn settings(&self, work: &Path, os: &OsIdentity, settings: &mut BuildSettings) -> Result<()> {
        let target = self.target;
        settings.fixed("stemcell_infrastructure", target.iaas, "--iaas");
        settings.fixed("stemcell_hypervisor", target.hypervisor, "--hypervisor");
        settings.fixed("stemcell_version", &self.version, "--version");
        settings.fixed(
            "stemcell_name",
            StemcellManifest::name_for(target.iaas, target.hypervisor, &os.os_name, &os.os_version),
            "--iaas",
        );
        settings.fixed("image_format", self.format.name(), "--format");
        if let Some(sha) = &self.builder_commit {
            settings.default_value("stemcell_git_sha1", sha);
        }
        // vSphere stemcells boot with EFI, as the reference's (image_create_efi).
        settings.fixed(
            "firmware",
            if target.iaas == "vsphere" {
                "efi"
            } else {
                "bios"
            },
            "--iaas",
        );
        settings.fixed(
            "disk_dir",
            Self::disk_dir(work).display().to_string(),
            "--work-dir",
        );
        settings.fixed(
            "disk_size_mib",
            self.disk_size_mib
                .map(|m| m.to_string())
                .unwrap_or_default(),
            "--disk-size-mib",
        );
        settings.fixed(
            "agent_binary",
            Self::agent_copy(work).display().to_string(),
            "--agent",
        );
        Ok(())
    }

    fn layer_inputs(&self) -> Result<Vec<(String, String)>> {
        // Stages get the agent by path (`agent_binary`): its content is what they install.
        Ok(vec![(
            "agent".into(),
            crate::checksum::sha256_file(&self.agent)?,
        )])
    }

    fn package(
        &self,
        workspace: &Workspace,
        os: &OsIdentity,
        settings: &BuildSettings,
        reporter: &Reporter,
    ) -> Result<PathBuf> {
        let arch = settings.get("arch").unwrap_or_default();
        package(self, workspace, &os.os_name, &os.os_version, arch, reporter)
    }
}

/// The `image` member and everything around it, then the tarball.
fn package(
    plan: &StemcellPackager,
    workspace: &Workspace,
    os_name: &str,
    os_version: &str,
    arch: &str,
    reporter: &Reporter,
) -> Result<PathBuf> {
    let chroot = &workspace.chroot;
    let disk_dir = &StemcellPackager::disk_dir(&workspace.work);
    let staging = workspace.work.join("stemcell");
    crate::fsutil::remove_tree(&staging)?;
    workspace.private_dir("stemcell")?;

    let image = staging.join("image");
    let disk_mib = match plan.format.disk() {
        None => {
            let blocks = workspace.work.join("image-blocks");
            crate::os_image::pack_tree(chroot, &image, Compression::Gzip, Some(&blocks), reporter)?;
            crate::fsutil::disk_usage_mib(chroot).unwrap_or(0)
        }
        Some(disk) => {
            let mut members = vec![];
            for name in crate::disk::output_files(disk) {
                let path = disk_dir.join(name);
                if !path.exists() {
                    bail!(
                        "{} is missing: the image_disk stage must run (collection '{}') and write the {} disk",
                        path.display(),
                        plan.collection,
                        plan.format.name()
                    );
                }
                // GCE imports a tarball holding disk.raw.
                let inner = if plan.target.iaas == "google" && *name == "root.img" {
                    "disk.raw"
                } else {
                    name
                };
                members.push((inner.to_string(), path));
            }
            let step = reporter.step("image");
            let started = Instant::now();
            tarball::write_tgz(&image, &members)?;
            step.finish(
                &format!(
                    "{:?}",
                    members.iter().map(|m| m.0.as_str()).collect::<Vec<_>>()
                ),
                started.elapsed(),
            );
            virtual_size_mib(&members.last().expect("a disk file").1)?
        }
    };

    let packages = crate::packages::installed(chroot)?;
    std::fs::write(
        staging.join("packages.txt"),
        crate::packages::render(&packages),
    )?;
    // Read inside the tree: an image whose list links to a host file must not ship that file.
    const DEV_TOOLS: &str = "var/vcap/bosh/etc/dev_tools_file_list";
    let Some(dev_tools) = crate::inroot::read_if_exists(chroot, DEV_TOOLS, 16 << 20)? else {
        bail!(
            "/{DEV_TOOLS} is missing from {}: the dev_tools_config stage must run before packaging",
            chroot.display()
        );
    };
    std::fs::write(staging.join("dev_tools_file_list.txt"), dev_tools)?;

    let name = StemcellManifest::name_for(
        plan.target.iaas,
        plan.target.hypervisor,
        os_name,
        os_version,
    );
    let subject = sbom::SbomSubject {
        name: &name,
        version: &plan.version,
        os_name,
        os_version,
        packages: &packages,
    };
    std::fs::write(
        staging.join("sbom.spdx.json"),
        serde_json::to_vec_pretty(&sbom::spdx(&subject))?,
    )?;
    std::fs::write(
        staging.join("sbom.cdx.json"),
        serde_json::to_vec_pretty(&sbom::cyclonedx(&subject))?,
    )?;

    let manifest = StemcellManifest::new(&ManifestInput {
        iaas: plan.target.iaas,
        hypervisor: plan.target.hypervisor,
        os_name,
        os_version,
        version: &plan.version,
        arch,
        disk_mib,
        stemcell_format: plan.target.stemcell_format(plan.format),
        disk_format: plan.target.disk_format(plan.format),
        image_sha1: sha1_file(&image)?,
    });
    std::fs::write(staging.join("stemcell.MF"), manifest.to_yaml()?)?;

    let output = plan.output_dir.join(plan.file_name(os_name, os_version));
    let members: Vec<(String, PathBuf)> = tarball::MEMBERS
        .iter()
        .map(|m| (m.to_string(), staging.join(m)))
        .collect();
    let step = reporter.step(&format!("stemcell {}", output.display()));
    let started = Instant::now();
    let written = tarball::write_tgz(&output, &members)?;
    step.finish("written", started.elapsed());
    Ok(written)
}

fn sha1_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha1::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The disk's size as the VM sees it (qcow2 and vmdk files are smaller than the disk).
fn virtual_size_mib(file: &Path) -> Result<u64> {
    let mut command = std::process::Command::new("qemu-img");
    command.args(["info", "--output=json"]);
    // A fixed VHD probes as raw (its footer is at the end): name the format.
    if file.extension().is_some_and(|e| e == "vhd") {
        command.args(["-f", "vpc"]);
    }
    let out = command
        .arg(file)
        .output()
        .context("running qemu-img info (apt-get install -y qemu-utils)")?;
    if !out.status.success() {
        bail!(
            "qemu-img info {} failed: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let info: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bytes = info["virtual-size"]
        .as_u64()
        .context("qemu-img info reported no virtual-size")?;
    Ok(bytes.div_ceil(1 << 20))
}
