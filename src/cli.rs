//! Command-line flags (clap), turned into the plain plans the library runs. Nothing below this
//! module knows about clap or `std::env::args`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::archive::{self, Compression, UnpackOptions};
use crate::os::{self, OsDefinition};
use crate::progress::Reporter;

#[derive(Debug, Parser)]
#[command(
    name = "stemcell-builder",
    version,
    about = "Builds hardened Linux OS images and BOSH stemcells"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bootstrap a base, run the OS stages in a chroot, and archive it as an OS image.
    BuildOsImage(Box<BuildOsImageArgs>),
    /// Print the resolved, ordered stage list for an OS (runs nothing).
    ListStages(ListStagesArgs),
    /// Run a command inside a root tree with fresh namespaces, /proc, /sys, /dev and no daemons.
    ChrootExec(ChrootExecArgs),
    /// Archive a directory as an OS image (with .sha256 and .packages.txt beside it).
    Pack(PackArgs),
    /// Unpack an OS image into a directory, verifying its .sha256 first when present.
    Unpack(UnpackArgs),
    /// Upload an OS image to S3 (multipart, sha256 as metadata and as KEY.sha256).
    UploadOsImage(UploadArgs),
    /// Download an OS image from S3, verifying its sha256 before it gets its final name.
    DownloadOsImage(DownloadArgs),
    /// Build a BOSH stemcell from an OS image (a local file or s3://BUCKET/KEY).
    BuildStemcell(Box<BuildStemcellArgs>),
    /// Print a stemcell's manifest and check it the way a director would read it.
    Inspect(InspectArgs),
    /// Make a bootable disk image (raw, qcow2, ovf, vhd) from a root tree that has grub-pc.
    DiskImage(DiskImageArgs),
    /// Check this host for what builds need, and say what to install.
    Doctor(DoctorArgs),
    /// Internal: run a command under a PID-namespace init that dies with the builder.
    #[command(hide = true)]
    Sandbox {
        #[arg(last = true, required = true)]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
pub struct Sources {
    /// Directory holding the stages and collections.yml.
    #[arg(long, env = "STEMCELL_BUILDER_STAGES_DIR")]
    pub stages_dir: Option<PathBuf>,
    /// Directory holding os/*.yml and other shared assets.
    #[arg(long, env = "STEMCELL_BUILDER_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OsChoice {
    /// OS to build: debian-trixie, debian-bookworm, ubuntu-noble, ubuntu-jammy.
    /// Default: from OS_NAME/OS_VERSION when set, else debian-trixie.
    #[arg(long)]
    pub os: Option<String>,
    /// Stage collection from collections.yml (default: the OS definition's).
    #[arg(long)]
    pub collection: Option<String>,
}

#[derive(Debug, Args)]
pub struct BuildOsImageArgs {
    #[command(flatten)]
    pub os: OsChoice,
    #[command(flatten)]
    pub sources: Sources,
    /// Debian architecture (default: this host's).
    #[arg(long)]
    pub arch: Option<String>,
    /// Archive mirror URL (default: the bootstrapper's own default).
    #[arg(long)]
    pub mirror: Option<String>,
    /// Keyring that signs the archive (Ubuntu on Debian hosts needs one).
    #[arg(long)]
    pub keyring: Option<PathBuf>,
    /// Work directory (chroot, logs, settings). Default: /var/tmp/stemcell-builder/OS-ARCH.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Where to write the OS image.
    #[arg(long, default_value = "os-image.tgz", overrides_with = "output")]
    pub output: PathBuf,
    /// Rerun from this stage on the chroot as it stands (reference: resume_from).
    #[arg(long, env = "resume_from")]
    pub resume_from: Option<String>,
    /// Extra setting for stages, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Cache for bootstrapped bases.
    #[arg(long, default_value = "/var/cache/stemcell-builder")]
    pub cache_dir: PathBuf,
    /// Do not read or write the base cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Use this directory or OS image as the base instead of bootstrapping one.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// Compression of the OS image.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Compression,
    /// Which tool bootstraps the base.
    #[arg(long, value_enum, default_value = "auto")]
    pub bootstrapper: crate::base::BootstrapChoice,
}

#[derive(Debug, Args)]
pub struct ListStagesArgs {
    #[command(flatten)]
    pub os: OsChoice,
    #[command(flatten)]
    pub sources: Sources,
}

#[derive(Debug, Args)]
pub struct ChrootExecArgs {
    /// The root tree.
    pub root: PathBuf,
    /// Do not bind the host's /etc/resolv.conf.
    #[arg(long)]
    pub no_resolv_conf: bool,
    /// Bind the host's /dev (loop devices included) instead of a minimal /dev.
    #[arg(long)]
    pub host_dev: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct PackArgs {
    /// The root tree to archive.
    pub source: PathBuf,
    /// The OS image to write.
    pub output: PathBuf,
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Compression,
}

#[derive(Debug, Args)]
pub struct UnpackArgs {
    /// The OS image (gzip, zstd or plain tar: detected).
    pub archive: PathBuf,
    /// An empty or new directory.
    pub target: PathBuf,
    /// Do not check the .sha256 sidecar.
    #[arg(long)]
    pub no_verify: bool,
    /// Which device nodes to create: dev (only under dev/; any other is refused), all (for an
    /// image you trust), none (skip them all).
    #[arg(long, value_enum, default_value = "dev")]
    pub devices: archive::DevicePolicy,
}

/// Where and how to reach S3. Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID /
/// AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles).
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// Endpoint of an S3-compatible store (also AWS_ENDPOINT_URL).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Path-style addressing (http://host/bucket/key), which most S3-compatible stores need.
    #[arg(long, env = "AWS_S3_FORCE_PATH_STYLE", value_parser = clap::builder::FalseyValueParser::new())]
    pub path_style: bool,
    /// Region (default: AWS_REGION, the profile's, else us-east-1).
    #[arg(long)]
    pub region: Option<String>,
    /// Request/response checksums: when-supported (the SDK default) or when-required (for
    /// stores that reject the default). Default: the SDK's, or AWS_REQUEST_CHECKSUM_CALCULATION.
    #[arg(long, value_enum)]
    pub checksums: Option<crate::s3::ChecksumMode>,
}

impl S3Args {
    pub fn options(&self) -> crate::s3::S3Options {
        crate::s3::S3Options {
            endpoint: self.endpoint.clone(),
            path_style: self.path_style,
            region: self.region.clone(),
            checksums: self.checksums,
            max_attempts: 0,
        }
    }
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    /// The OS image to upload (its .sha256 sidecar, when present, must match).
    pub file: PathBuf,
    /// s3://BUCKET/KEY
    pub url: String,
    #[command(flatten)]
    pub s3: S3Args,
    /// Multipart part size in MiB (grown when a file would need more than 10,000 parts).
    #[arg(long, default_value_t = 16)]
    pub part_size_mib: u64,
    /// Parts uploaded at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct DownloadArgs {
    /// s3://BUCKET/KEY
    pub url: String,
    /// Where to write the OS image (a FILE.sha256 is written beside it).
    pub file: PathBuf,
    #[command(flatten)]
    pub s3: S3Args,
    /// Skip the download when FILE already has the object's sha256.
    #[arg(long)]
    pub if_changed: bool,
    /// Accept an object without a sha256 (uploaded by another tool).
    #[arg(long)]
    pub no_verify: bool,
    /// Ranges fetched at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
}

#[derive(Debug, Args)]
pub struct BuildStemcellArgs {
    /// The OS image: a file (its .sha256 is checked when present) or s3://BUCKET/KEY.
    #[arg(long)]
    pub os_image: String,
    /// warden, openstack, aws, vsphere, google or azure (reference: IAAS).
    #[arg(long, env = "IAAS")]
    pub iaas: String,
    /// Default: the IaaS's (boshlite, kvm, xen-hvm, esxi, kvm, hyperv) (reference: HYPERVISOR).
    #[arg(long, env = "HYPERVISOR")]
    pub hypervisor: Option<String>,
    /// The stemcell version, e.g. 1.2.
    #[arg(long)]
    pub version: String,
    /// The bosh-agent binary to install.
    #[arg(long)]
    pub agent: PathBuf,
    /// Where the stemcell tarball goes.
    #[arg(long, default_value = ".")]
    pub output_dir: PathBuf,
    /// Image format (default: the IaaS's; a non-default one adds -FORMAT to the file name).
    #[arg(long, value_enum)]
    pub format: Option<crate::stemcell::iaas::ImageFormat>,
    /// NAME-VERSION of the image's OS (default: its /etc/os-release; reference: OS_NAME/OS_VERSION).
    #[arg(long)]
    pub os: Option<String>,
    /// Stage collection (default: stemcell-IAAS).
    #[arg(long)]
    pub collection: Option<String>,
    /// Disk size in MiB for VM images (default: the tree's size with room to grow, at least 2048).
    #[arg(long)]
    pub disk_size_mib: Option<u64>,
    /// Work directory. Default: /var/tmp/stemcell-builder/stemcell-IAAS-HYPERVISOR.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub sources: Sources,
    /// Rerun from this stage on the chroot as it stands (reference: resume_from).
    #[arg(long, env = "resume_from")]
    pub resume_from: Option<String>,
    /// Extra setting for stages, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    #[command(flatten)]
    pub s3: S3Args,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The stemcell tarball.
    pub stemcell: PathBuf,
}

#[derive(Debug, Args)]
pub struct DiskImageArgs {
    /// The root tree (with a kernel, an initramfs and grub-pc installed).
    pub tree: PathBuf,
    /// Directory for the result (root.img, root.vhd, or image.ovf + image.mf + image-disk1.vmdk).
    pub out_dir: PathBuf,
    #[arg(long, value_enum, default_value = "raw")]
    pub format: crate::disk::DiskFormat,
    /// Disk size in MiB (default: the tree's size with room to grow, at least 2048).
    #[arg(long)]
    pub size_mib: Option<u64>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Where builds will write (free disk is checked there).
    #[arg(long, default_value = "/var/tmp")]
    pub work_dir: PathBuf,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::BuildOsImage(args) => {
            let plan = build_plan(*args)?;
            crate::os_image::build(&plan, &Reporter::detect())?;
        }
        Command::ListStages(args) => {
            let (def, stages_dir) = resolve_os(&args.os, &args.sources)?;
            let collection = args
                .os
                .collection
                .clone()
                .unwrap_or_else(|| def.collection.clone());
            let stages = crate::collections::load_collection(&stages_dir, &collection)?;
            println!(
                "# {} stages of collection '{collection}' for {}",
                stages.len(),
                def.name
            );
            for stage in stages {
                let config = if stage.config_script().is_some() {
                    "  (config.sh)"
                } else {
                    ""
                };
                println!("{:02} {}{config}", stage.position, stage.name);
            }
        }
        Command::ChrootExec(args) => {
            let code = crate::chroot::exec(&crate::chroot::ChrootCommand {
                root: args.root,
                command: args.command,
                resolv_conf: !args.no_resolv_conf,
                host_dev: args.host_dev,
            })?;
            return Ok(exit_code(code));
        }
        Command::Sandbox { command } => {
            let (program, rest) = command.split_first().context("sandbox needs a command")?;
            let mut child = std::process::Command::new(program);
            child.args(rest);
            let code =
                crate::sandbox::run_isolated(crate::sandbox::stage_namespaces(), || Ok(()), child)?;
            return Ok(exit_code(code));
        }
        Command::Pack(args) => {
            crate::stage::process::install_interrupt_handler();
            let files = crate::os_image::write_os_image(
                &args.source,
                &args.output,
                args.compression,
                &Reporter::detect(),
            )?;
            println!("{}  {}", files.sha256, files.image.display());
        }
        Command::Unpack(args) => {
            crate::stage::process::install_interrupt_handler();
            if args.target.read_dir().is_ok_and(|mut d| d.next().is_some()) {
                bail!(
                    "{} is not empty: unpack into a new or empty directory",
                    args.target.display()
                );
            }
            let summary = archive::unpack(
                &args.archive,
                &args.target,
                &UnpackOptions {
                    skip_checksum: args.no_verify,
                    devices: args.devices,
                },
            )?;
            let verified = if summary.checksum_verified {
                "checksum verified"
            } else {
                "no .sha256 beside it"
            };
            let skipped = match summary.skipped_devices {
                0 => String::new(),
                n => format!("; skipped {n} device nodes (--devices none)"),
            };
            println!(
                "unpacked {} entries into {} ({verified}{skipped})",
                summary.entries,
                args.target.display()
            );
        }
        Command::UploadOsImage(args) => {
            let mut plan =
                crate::s3::upload::UploadPlan::new(args.file, args.url.parse()?, args.s3.options());
            plan.part_size = args.part_size_mib.max(5) << 20;
            plan.multipart_threshold = plan.part_size;
            plan.concurrency = args.concurrency;
            let digest = crate::s3::upload::upload(&plan, &Reporter::detect())?;
            println!(
                "uploaded {} to {} (sha256 {digest})",
                plan.file.display(),
                plan.url
            );
        }
        Command::DownloadOsImage(args) => {
            let mut plan = crate::s3::download::DownloadPlan::new(
                args.url.parse()?,
                args.file,
                args.s3.options(),
            );
            plan.if_changed = args.if_changed;
            plan.no_verify = args.no_verify;
            plan.concurrency = args.concurrency;
            match crate::s3::download::download(&plan, &Reporter::detect())? {
                crate::s3::download::Downloaded::UpToDate { digest } => {
                    println!(
                        "{} already has sha256 {digest}: not downloaded",
                        plan.file.display()
                    )
                }
                crate::s3::download::Downloaded::Fetched { digest, bytes } => println!(
                    "downloaded {} to {} ({bytes} bytes, sha256 {})",
                    plan.url,
                    plan.file.display(),
                    digest.as_deref().unwrap_or("not verified")
                ),
            }
        }
        Command::BuildStemcell(args) => {
            let plan = stemcell_plan(*args)?;
            crate::stemcell::build(&plan, &Reporter::detect())?;
        }
        Command::Inspect(args) => {
            let found = crate::stemcell::inspect::inspect(&args.stemcell)?;
            print!("{}", found.manifest_text);
            println!(
                "# ok: members in order, sha1 {} matches image, image holds {}, {} packages",
                found.manifest.sha1,
                found.image_holds.join(", "),
                found.packages
            );
        }
        Command::DiskImage(args) => {
            let plan = crate::disk::DiskPlan {
                tree: args.tree,
                out_dir: args.out_dir,
                format: args.format,
                size_mib: args.size_mib,
            };
            for file in crate::disk::build(&plan, &Reporter::detect())? {
                println!("wrote {}", file.display());
            }
        }
        Command::Doctor(args) => {
            let ok = crate::doctor::print(&crate::doctor::run_checks(&args.work_dir));
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn build_plan(args: BuildOsImageArgs) -> Result<crate::os_image::OsImagePlan> {
    let (def, stages_dir) = resolve_os(&args.os, &args.sources)?;
    let arch = args.arch.clone().unwrap_or_else(host_arch);
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("/var/tmp/stemcell-builder/{}-{arch}", def.name)));
    Ok(crate::os_image::OsImagePlan {
        os: def,
        collection: args.os.collection,
        arch,
        mirror: args.mirror,
        keyring: args.keyring,
        work_dir,
        stages_dir,
        output: args.output,
        resume_from: args.resume_from,
        overrides: args.set,
        cache_dir: (!args.no_cache).then_some(args.cache_dir),
        base: args.base,
        compression: args.compression,
        bootstrapper: args.bootstrapper,
        resume_command: resume_command(std::env::args_os().collect()),
    })
}

fn stemcell_plan(args: BuildStemcellArgs) -> Result<crate::stemcell::StemcellPlan> {
    let target = crate::stemcell::iaas::resolve(&args.iaas, args.hypervisor.as_deref())?;
    let format = target.format(args.format)?;
    let os = args.os.or_else(|| {
        os::from_reference_env(
            std::env::var("OS_NAME").ok(),
            std::env::var("OS_VERSION").ok(),
        )
    });
    let stages = args
        .sources
        .stages_dir
        .clone()
        .unwrap_or_else(|| shipped_dir("stages"));
    let stages_dir = stages.canonicalize().with_context(|| {
        format!(
            "stages directory {} does not exist: pass --stages-dir",
            stages.display()
        )
    })?;
    let work_dir = args.work_dir.unwrap_or_else(|| {
        PathBuf::from(format!(
            "/var/tmp/stemcell-builder/stemcell-{}-{}",
            target.iaas, target.hypervisor
        ))
    });
    Ok(crate::stemcell::StemcellPlan {
        os_image: crate::stemcell::OsImageSource::parse(&args.os_image, args.s3.options())?,
        target,
        format,
        version: args.version,
        agent: args.agent,
        output_dir: args.output_dir,
        work_dir,
        stages_dir,
        collection: args.collection,
        resume_from: args.resume_from,
        overrides: args.set,
        os,
        disk_size_mib: args.disk_size_mib,
        resume_command: resume_command(std::env::args_os().collect()),
    })
}

fn resolve_os(choice: &OsChoice, sources: &Sources) -> Result<(OsDefinition, PathBuf)> {
    let name = choice
        .os
        .clone()
        .or_else(|| {
            os::from_reference_env(
                std::env::var("OS_NAME").ok(),
                std::env::var("OS_VERSION").ok(),
            )
        })
        .unwrap_or_else(|| os::DEFAULT_OS.to_string());
    let assets = sources
        .assets_dir
        .clone()
        .unwrap_or_else(|| shipped_dir("assets"));
    let stages = sources
        .stages_dir
        .clone()
        .unwrap_or_else(|| shipped_dir("stages"));
    // Stages run with their own directory as cwd: every path handed to them is absolute.
    let stages = stages.canonicalize().with_context(|| {
        format!(
            "stages directory {} does not exist: pass --stages-dir",
            stages.display()
        )
    })?;
    Ok((OsDefinition::load(&assets, &name)?, stages))
}

/// Where `stages/` or `assets/` are found when no flag names them: `./NAME` in a checkout,
/// `PREFIX/share/stemcell-builder/NAME` beside an installed binary (scripts/install.sh), the
/// checkout of a binary under `target/`, else the source tree it was built from.
fn shipped_dir(name: &str) -> PathBuf {
    let mut candidates = vec![PathBuf::from(name)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(bin_dir) = exe.parent() {
            if let Some(prefix) = bin_dir.parent() {
                candidates.push(prefix.join("share/stemcell-builder").join(name));
                // target/{debug,release}/stemcell-builder -> checkout root
                if let Some(checkout) = prefix.parent() {
                    candidates.push(checkout.join(name));
                }
            }
        }
    }
    candidates
        .into_iter()
        .find(|dir| {
            dir.join(if name == "stages" {
                "collections.yml"
            } else {
                "os"
            })
            .exists()
        })
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(name))
}

pub fn host_arch() -> String {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64el",
        "s390x" => "s390x",
        other => other,
    }
    .to_string()
}

/// The command line that started the build, shell-quoted, without any --resume-from.
fn resume_command(argv: Vec<OsString>) -> String {
    let mut words: Vec<String> = Vec::new();
    let mut skip = false;
    for (i, arg) in argv.iter().enumerate() {
        let arg = arg.to_string_lossy().into_owned();
        if skip {
            skip = false;
            continue;
        }
        if arg == "--resume-from" {
            skip = true;
            continue;
        }
        if arg.starts_with("--resume-from=") {
            continue;
        }
        if i == 0 {
            words.push(
                std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or(arg),
            );
        } else {
            words.push(arg);
        }
    }
    shell_words::join(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_command_drops_old_resume_flag() {
        let argv = [
            "sb",
            "build-os-image",
            "--resume-from",
            "x",
            "--set",
            "a=b c",
            "--resume-from=y",
        ];
        let cmd = resume_command(argv.iter().map(OsString::from).collect());
        assert!(cmd.ends_with("build-os-image --set 'a=b c'"), "{cmd}");
    }

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
