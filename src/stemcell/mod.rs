//! `build-stemcell`: an OS image (local or in S3) unpacked into a fresh chroot, the stemcell
//! stages run on it with the same runner as `build-os-image`, then `image` in the IaaS's format,
//! the manifest, package list, dev-tools list and SBOMs, tarred in BOSH's order.

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

use crate::archive::{self, Compression, UnpackOptions};
use crate::collections::{self, Stage};
use crate::progress::Reporter;
use crate::s3::{S3Options, S3Url};
use crate::settings::BuildSettings;
use crate::stage::report::Report;
use crate::stage::{run_stages, RunPlan};
use crate::workspace::Workspace;
use iaas::{ImageFormat, Target};
use manifest::{ManifestInput, StemcellManifest};

#[derive(Debug, Clone)]
pub enum OsImageSource {
    Local(PathBuf),
    S3(S3Url, S3Options),
}

impl OsImageSource {
    pub fn parse(text: &str, s3: S3Options) -> Result<Self> {
        if S3Url::is_s3(text) {
            Ok(Self::S3(text.parse()?, s3))
        } else {
            Ok(Self::Local(PathBuf::from(text)))
        }
    }
}

#[derive(Debug, Clone)]
pub struct StemcellPlan {
    pub os_image: OsImageSource,
    pub target: &'static Target,
    pub format: ImageFormat,
    pub version: String,
    pub agent: PathBuf,
    pub output_dir: PathBuf,
    pub work_dir: PathBuf,
    pub stages_dir: PathBuf,
    pub collection: Option<String>,
    pub resume_from: Option<String>,
    pub overrides: Vec<String>,
    /// `debian-trixie`; default: read from the image's /etc/os-release.
    pub os: Option<String>,
    pub disk_size_mib: Option<u64>,
    pub resume_command: String,
}

impl StemcellPlan {
    pub fn collection_name(&self) -> String {
        self.collection
            .clone()
            .unwrap_or_else(|| format!("stemcell-{}", self.target.iaas))
    }

    pub fn stages(&self) -> Result<Vec<Stage>> {
        Ok(collections::load_collection(
            &self.stages_dir,
            &self.collection_name(),
        )?)
    }

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
}

/// What the image's /etc/os-release says: (`debian`, `trixie`). Read inside the tree, as the
/// tree itself sees it (`crate::tree_read`), never through a symlink to the host's file.
pub fn os_release(root: &Path) -> Result<(String, String)> {
    const MAX: u64 = 64 << 10;
    let (path, bytes) = match crate::tree_read::read_in_root(root, "etc/os-release", MAX)? {
        Some(bytes) => ("etc/os-release", bytes),
        None => match crate::tree_read::read_in_root(root, "usr/lib/os-release", MAX)? {
            Some(bytes) => ("usr/lib/os-release", bytes),
            None => bail!("the OS image has no /etc/os-release: pass --os NAME-VERSION"),
        },
    };
    let fields = parse_os_release(&String::from_utf8_lossy(&bytes));
    let field = |key: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| !v.is_empty())
    };
    match (field("ID"), field("VERSION_CODENAME")) {
        (Some(id), Some(codename)) => Ok((id, codename)),
        _ => bail!(
            "{} names no ID and VERSION_CODENAME: pass --os NAME-VERSION",
            root.join(path).display()
        ),
    }
}

/// `KEY=VALUE` lines of an os-release file (os-release(5)): values are shell words, quoted
/// with `"` or `'` and escaped with `\`, so `shell-words` unquotes them; comments, blank and
/// malformed lines are skipped.
pub fn parse_os_release(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return None;
            }
            let words = shell_words::split(value).ok()?;
            Some((key.to_string(), words.join(" ")))
        })
        .collect()
}

fn check_inputs(plan: &StemcellPlan) -> Result<()> {
    if plan.version.trim().is_empty()
        || plan.version.contains('/')
        || plan.version.contains(char::is_whitespace)
    {
        bail!(
            "--version '{}' is not a stemcell version: use something like 1.2 or 1.2.3",
            plan.version
        );
    }
    let agent = std::fs::metadata(&plan.agent).with_context(|| {
        format!(
            "agent {} does not exist: pass the bosh-agent binary with --agent",
            plan.agent.display()
        )
    })?;
    if !agent.is_file() || agent.permissions().mode() & 0o111 == 0 {
        bail!(
            "agent {} is not an executable file: chmod +x it or pass the bosh-agent binary",
            plan.agent.display()
        );
    }
    if !plan.output_dir.is_dir() {
        bail!(
            "output directory {} does not exist: create it or pass another --output-dir",
            plan.output_dir.display()
        );
    }
    if let OsImageSource::Local(path) = &plan.os_image {
        if !path.is_file() {
            bail!(
                "OS image {} does not exist: build one with build-os-image or pass s3://BUCKET/KEY",
                path.display()
            );
        }
    }
    if let Some(os) = &plan.os {
        if os.split_once('-').is_none() {
            bail!("--os {os}: write NAME-VERSION, e.g. debian-trixie");
        }
    }
    Ok(())
}

pub fn build(plan: &StemcellPlan, reporter: &Reporter) -> Result<PathBuf> {
    check_inputs(plan)?;
    let stages = plan.stages()?;
    let start_at = match &plan.resume_from {
        Some(name) => collections::position_of(&stages, name)?,
        None => 0,
    };
    let mut overrides = BuildSettings::default();
    overrides.apply_overrides(&plan.overrides)?; // malformed pairs fail before anything runs
    let workspace = Workspace::open(&plan.work_dir)?;
    let mut report = Report::default();
    let result = (|| -> Result<PathBuf> {
        let inputs = workspace.work.join("inputs");
        if plan.resume_from.is_some() {
            workspace.require_base()?;
        } else {
            let started = Instant::now();
            workspace.reset()?;
            std::fs::create_dir_all(&inputs)?;
            let image = fetch_os_image(plan, &inputs, reporter)?;
            let step = reporter.step("unpack OS image");
            let unpacked = archive::unpack(&image, &workspace.chroot, &UnpackOptions::default())?;
            step.finish(&format!("{} entries", unpacked.entries), started.elapsed());
            workspace.mark_base_done()?;
            report.add(
                "00-os-image",
                started.elapsed(),
                if unpacked.checksum_verified {
                    "ok (sha256 verified)"
                } else {
                    "ok"
                },
            );
        }
        // The agent is (re)copied on resume too: fixing the agent is a reason to resume.
        std::fs::create_dir_all(&inputs)?;
        let agent = inputs.join("bosh-agent");
        std::fs::copy(&plan.agent, &agent)
            .with_context(|| format!("copying agent {}", plan.agent.display()))?;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;

        let (os_name, os_version) = match &plan.os {
            Some(os) => {
                let (n, v) = os.split_once('-').expect("checked");
                (n.to_string(), v.to_string())
            }
            None => os_release(&workspace.chroot)?,
        };
        let arch = dpkg_arch(&workspace.chroot);
        let disk_dir = workspace.work.join("disk");
        let mut settings = BuildSettings::default();
        settings.set("os", format!("{os_name}-{os_version}"))?;
        settings.set("os_name", &os_name)?;
        settings.set("os_version", &os_version)?;
        settings.set("arch", &arch)?;
        settings.set("stemcell_operating_system", &os_name)?;
        settings.set("stemcell_operating_system_version", &os_version)?;
        settings.set("stemcell_infrastructure", plan.target.iaas)?;
        settings.set("stemcell_hypervisor", plan.target.hypervisor)?;
        settings.set("stemcell_version", &plan.version)?;
        settings.set(
            "stemcell_name",
            StemcellManifest::name_for(
                plan.target.iaas,
                plan.target.hypervisor,
                &os_name,
                &os_version,
            ),
        )?;
        settings.set("image_format", plan.format.name())?;
        settings.set("disk_dir", disk_dir.display().to_string())?;
        settings.set(
            "disk_size_mib",
            plan.disk_size_mib
                .map(|m| m.to_string())
                .unwrap_or_default(),
        )?;
        settings.set("agent_binary", agent.display().to_string())?;
        settings.apply_overrides(&plan.overrides)?;
        if plan.resume_from.is_none() {
            crate::fsutil::remove_tree(&disk_dir)?;
        }

        let run = RunPlan {
            stages: &stages,
            start_at,
            work: workspace.work.clone(),
            chroot: workspace.chroot.clone(),
            stages_dir: plan.stages_dir.clone(),
            settings: &settings,
            resume_command: plan.resume_command.clone(),
        };
        run_stages(&run, reporter, &mut report)?;

        let started = Instant::now();
        crate::chroot::policy_rc::remove_stale(&workspace.chroot)?;
        let output = package(
            plan,
            &workspace,
            &os_name,
            &os_version,
            &arch,
            &disk_dir,
            reporter,
        )?;
        report.add("package", started.elapsed(), "ok");
        Ok(output)
    })();
    print!("{}", report.render());
    let output = result?;
    println!("wrote {}", output.display());
    Ok(output)
}

fn fetch_os_image(plan: &StemcellPlan, inputs: &Path, reporter: &Reporter) -> Result<PathBuf> {
    match &plan.os_image {
        OsImageSource::Local(path) => Ok(path.clone()),
        OsImageSource::S3(url, options) => {
            let local = inputs.join("os-image.tgz");
            let mut download =
                crate::s3::download::DownloadPlan::new(url.clone(), local.clone(), options.clone());
            download.if_changed = true;
            crate::s3::download::download(&download, reporter)?;
            Ok(local)
        }
    }
}

fn dpkg_arch(root: &Path) -> String {
    crate::packages::installed(root)
        .ok()
        .and_then(|p| p.into_iter().find(|p| p.name == "dpkg").map(|p| p.arch))
        .unwrap_or_else(crate::cli::host_arch)
}

/// The `image` member and everything around it, then the tarball.
fn package(
    plan: &StemcellPlan,
    workspace: &Workspace,
    os_name: &str,
    os_version: &str,
    arch: &str,
    disk_dir: &Path,
    reporter: &Reporter,
) -> Result<PathBuf> {
    let chroot = &workspace.chroot;
    let staging = workspace.work.join("stemcell");
    crate::fsutil::remove_tree(&staging)?;
    std::fs::create_dir_all(&staging)?;

    let image = staging.join("image");
    let disk_mib = match plan.format.disk() {
        None => {
            crate::os_image::pack_tree(chroot, &image, Compression::Gzip, reporter)?;
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
                        plan.collection_name(),
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
    let dev_tools = chroot.join("var/vcap/bosh/etc/dev_tools_file_list");
    if !dev_tools.exists() {
        bail!(
            "{} is missing: the dev_tools_config stage must run before packaging",
            dev_tools.display()
        );
    }
    std::fs::copy(&dev_tools, staging.join("dev_tools_file_list.txt"))?;

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
