//! Command-line flags (clap), turned into the plain plans the library runs. Nothing below this
//! module knows about clap or `std::env::args`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::archive::{self, Compression, UnpackOptions};
use crate::os::{self, OsDefinition};
use crate::pipeline::settings::Override;
use crate::pipeline::{ArchSource, BaseSource, OsSource};
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
    /// Show and bound the build cache (bases, stage layers, apt lists, packages).
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Open a shell (or run a command) in a work dir's layered tree, e.g. after a failed stage.
    Shell(ShellArgs),
    /// Check an OS image, a stemcell or a root directory against the hardening checks.
    Audit(AuditArgs),
    /// Compare two package lists; bump a semver file only when a package changed (exit 0
    /// bumped, 3 nothing changed, 1 error).
    Bump(BumpArgs),
    /// Make a container root filesystem from an OS image: Cloud Foundry stack, docker import, OCI.
    Export(ExportArgs),
    /// Boot a stemcell here as its IaaS would and drive the real BOSH agent in it (ping,
    /// get_state, disks, ssh, a job started and stopped, run_script) before you upload it.
    Smoke(SmokeArgs),
    /// Internal: run a command under a PID-namespace init that dies with the builder.
    #[command(hide = true)]
    Sandbox(SandboxArgs),
    /// Internal: smoke's warden container (the CPI's start command in a stemcell's tree).
    #[command(hide = true)]
    Container(ContainerArgs),
    /// Internal: the package cache, for the stages' pkg_mgr and the bootstrap's hooks.
    #[command(subcommand, hide = true)]
    PackageCache(PackageCacheCommand),
}

/// What the stages' `pkg_mgr`/`apt_update` and mmdebstrap's hooks ask of the package cache.
#[derive(Debug, Subcommand)]
pub enum PackageCacheCommand {
    /// Copy cached packages into ROOT's apt archive: those `apt-get --print-uris` listed in
    /// URIS, or (without --uris) the newest of each package of ARCH.
    Provide {
        root: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        arch: String,
        #[arg(long)]
        uris: Option<PathBuf>,
        /// Fail, naming the package, when one of URIS is not cached.
        #[arg(long)]
        offline: bool,
    },
    /// Keep the packages in ROOT's apt archive.
    Store {
        root: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
    },
    /// Put the cached package lists for ROOT's apt sources into ROOT.
    ListsIn {
        root: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        arch: String,
        /// Fail when there are none.
        #[arg(long)]
        offline: bool,
    },
    /// Keep ROOT's package lists for its apt sources.
    ListsOut {
        root: PathBuf,
        #[arg(long)]
        cache_dir: PathBuf,
        #[arg(long)]
        arch: String,
    },
}

#[derive(Debug, Args)]
pub struct SmokeArgs {
    /// The stemcell tarball (warden, or a raw or qcow2 disk: openstack and the like).
    pub stemcell: PathBuf,
    /// Give up after this many seconds, the boot included.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// How qemu runs a VM stemcell: tcg (software, works everywhere) or kvm.
    #[arg(long, value_enum, default_value = "tcg")]
    pub accel: crate::smoke::vm::Accel,
    #[arg(long, value_enum, default_value = "text")]
    pub format: SmokeFormat,
    /// Where the run's scratch dir (the unpacked stemcell, certificates, logs) is made; it is
    /// removed afterwards.
    #[arg(long, default_value = "/var/tmp")]
    pub scratch_dir: PathBuf,
    /// Keep the scratch dir (the tree or disk as the agent left it, its logs, nats-server's
    /// log) for a post-mortem; its path is printed.
    #[arg(long)]
    pub keep_scratch: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SmokeFormat {
    /// One line per step as it ends, then the agent's last log lines on failure.
    Text,
    /// One JSON document at the end.
    Json,
}

#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Where the container's start command writes its output.
    #[arg(long)]
    pub log: PathBuf,
    /// HOST_DIR:PATH_IN_TREE, bound in (repeatable).
    #[arg(long, value_parser = parse_bind)]
    pub bind: Vec<(PathBuf, PathBuf)>,
    /// The stemcell's tree.
    pub root: PathBuf,
}

fn parse_bind(arg: &str) -> std::result::Result<(PathBuf, PathBuf), String> {
    let (host, inside) = arg
        .rsplit_once(':')
        .ok_or_else(|| format!("{arg}: give HOST_DIR:PATH_IN_TREE"))?;
    Ok((PathBuf::from(host), PathBuf::from(inside)))
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Mount an overlay of these layers before the command (all five flags together).
    #[arg(long, requires_all = ["overlay_lower", "overlay_upper", "overlay_work", "overlay_target"])]
    pub overlay_dir: Option<PathBuf>,
    /// Lower layers, topmost first, comma-separated (names in --overlay-dir).
    #[arg(long, value_delimiter = ',', requires = "overlay_dir")]
    pub overlay_lower: Vec<String>,
    #[arg(long, requires = "overlay_dir")]
    pub overlay_upper: Option<String>,
    #[arg(long, requires = "overlay_dir")]
    pub overlay_work: Option<String>,
    #[arg(long, requires = "overlay_dir")]
    pub overlay_target: Option<PathBuf>,
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

impl SandboxArgs {
    fn overlay(&self) -> Option<crate::layers::OverlayMount> {
        Some(crate::layers::OverlayMount {
            layers_dir: self.overlay_dir.clone()?,
            lowers: self.overlay_lower.clone(),
            upper: self.overlay_upper.clone()?,
            workdir: self.overlay_work.clone()?,
            target: self.overlay_target.clone()?,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List what the cache holds: kind, key, name, size, last use.
    Ls(CacheDirArg),
    /// Remove entries: beyond the N most recently used of each kind, unused for DAYS, or the
    /// least recently used beyond SIZE of each kind.
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct CacheDirArg {
    /// The cache directory.
    #[arg(long, default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub cache: CacheDirArg,
    /// Keep the N most recently used entries of each kind (bases, layers, lists; packages are
    /// bounded by --older-than and --max-size).
    #[arg(long, value_name = "N", required_unless_present_any = ["older_than", "max_size"])]
    pub keep: Option<usize>,
    /// Remove entries not used for more than DAYS days.
    #[arg(long, value_name = "DAYS")]
    pub older_than: Option<u64>,
    /// Keep at most SIZE of each kind (bytes, or with K, M, G, T), least recently used removed
    /// first: e.g. --max-size 5G bounds the package cache to 5 GB.
    #[arg(long, value_name = "SIZE", value_parser = crate::cache::listing::parse_size)]
    pub max_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The work dir of a layered build.
    pub work_dir: PathBuf,
    /// The tree after this stage (default: after the last layer there, a failed one included).
    #[arg(long)]
    pub stage: Option<String>,
    /// A command to run instead of an interactive shell.
    #[arg(last = true)]
    pub command: Vec<OsString>,
}

const DEFAULT_CACHE_DIR: &str = "/var/cache/stemcell-builder";

/// Flags of both build commands that shape how stages run.
#[derive(Debug, Args)]
pub struct StageRunArgs {
    /// Rerun from this stage (reference: resume_from). With layers: on exactly the tree it
    /// first saw; with --no-layers: on the chroot as it stands.
    #[arg(long, env = "resume_from")]
    pub resume_from: Option<String>,
    /// Stop after this stage (for debugging); no artifact is written.
    #[arg(long, value_name = "STAGE")]
    pub until: Option<String>,
    /// When a stage fails and stdin is a terminal, open a shell in its tree first.
    #[arg(long)]
    pub shell_on_failure: bool,
    /// Run every stage in one plain directory (hosts without overlayfs); no stage layers.
    #[arg(long)]
    pub no_layers: bool,
    /// Cache for bootstrapped bases, finished stage layers, apt package lists and downloaded
    /// packages.
    #[arg(long, default_value = DEFAULT_CACHE_DIR)]
    pub cache_dir: PathBuf,
    /// Neither read nor write the cache (every stage runs, every package is downloaded).
    #[arg(long)]
    pub no_cache: bool,
    /// Download nothing: the base, package lists and packages come from the cache alone; a
    /// missing package stops the build, naming it.
    #[arg(long)]
    pub offline: bool,
}

impl StageRunArgs {
    fn cache(&self) -> Option<PathBuf> {
        (!self.no_cache).then(|| self.cache_dir.clone())
    }

    fn check(&self) -> Result<()> {
        if self.offline && self.no_cache {
            bail!("--offline builds from the cache and --no-cache forbids it: drop one of them");
        }
        Ok(())
    }
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
    #[command(flatten)]
    pub run: StageRunArgs,
    /// Extra setting for stages, KEY=VALUE (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Use this instead of bootstrapping a base: a directory, an OS image, tarball:PATH (any
    /// root tarball, e.g. from docker export) or binaries:PROG,PROG (host programs and their
    /// libraries).
    #[arg(long, value_name = "DIR|IMAGE|tarball:PATH|binaries:PROG,...")]
    pub base: Option<PathBuf>,
    /// Compression of the OS image.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Compression,
    /// Which tool bootstraps the base.
    #[arg(long, value_enum, default_value = "auto")]
    pub bootstrapper: crate::pipeline::bootstrap::BootstrapChoice,
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
    /// Also bind this host device into the fresh /dev (repeatable; only what the command
    /// needs, e.g. the loop device GRUB installs onto).
    #[arg(long = "device", value_name = "DEVICE")]
    pub devices: Vec<PathBuf>,
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
    #[command(flatten)]
    pub run: StageRunArgs,
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
    /// How the disk boots: bios (MBR, grub-pc) or efi (GPT with an EFI system partition,
    /// grub-efi-amd64; an OVF descriptor then says firmware=efi).
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: crate::disk::Firmware,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The OS image (gzip, zstd or plain tar; its .sha256 is checked when present).
    pub os_image: PathBuf,
    /// The file (garden-rootfs, docker) or new directory (oci) to write.
    pub output: PathBuf,
    /// garden-rootfs (Cloud Foundry stack), docker (for docker import) or oci (image layout).
    #[arg(long, value_enum)]
    pub format: crate::export::ExportFormat,
    /// Environment of the container, KEY=VALUE (repeatable); PATH gets a default when not given.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// User the container runs as: NAME, UID, NAME:GROUP or UID:GID (must exist in the image).
    #[arg(long)]
    pub user: Option<String>,
    /// Command (OCI Cmd, docker CMD), split as a shell would; default: the image's /bin/sh.
    #[arg(long, allow_hyphen_values = true)]
    pub cmd: Option<String>,
    /// Entrypoint (OCI Entrypoint, docker ENTRYPOINT), split as a shell would.
    #[arg(long, allow_hyphen_values = true)]
    pub entrypoint: Option<String>,
    /// Working directory of the container (absolute).
    #[arg(long)]
    pub workdir: Option<String>,
    /// oci: the reference name (default: latest); docker: the image name in the printed
    /// `docker import` command (default: os-image:latest).
    #[arg(long)]
    pub tag: Option<String>,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Where builds will write (free disk is checked there).
    #[arg(long, default_value = "/var/tmp")]
    pub work_dir: PathBuf,
}

// --- audit ---------------------------------------------------------------------------------
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// An OS image, a stemcell tarball (warden) or a root directory.
    pub target: PathBuf,
    #[arg(long, value_enum, default_value = "table")]
    pub format: AuditFormat,
    /// Directory holding checks/*.yml (default: the shipped assets).
    #[arg(long, env = "STEMCELL_BUILDER_ASSETS_DIR")]
    pub assets_dir: Option<PathBuf>,
    /// What a directory TARGET is (archives say it themselves).
    #[arg(long, value_enum)]
    pub kind: Option<crate::audit::checks::TargetKind>,
    /// The IaaS of a stemcell directory (a stemcell tarball names its own).
    #[arg(long)]
    pub iaas: Option<String>,
    /// When `command` checks run inside the tree (through chroot-exec, as root).
    #[arg(long, value_enum, default_value = "auto")]
    pub commands: crate::audit::Commands,
    /// Where archives are unpacked (a temp dir inside it, removed afterwards).
    #[arg(long, default_value = "/var/tmp")]
    pub scratch_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AuditFormat {
    Table,
    Json,
}

fn audit(args: AuditArgs) -> Result<ExitCode> {
    if let Some(iaas) = &args.iaas {
        crate::stemcell::iaas::resolve(iaas, None)?;
    }
    let assets = args.assets_dir.unwrap_or_else(|| shipped_dir("assets"));
    let plan = crate::audit::AuditPlan {
        target: args.target,
        checks_dir: assets.join("checks"),
        kind: args.kind,
        iaas: args.iaas,
        commands: args.commands,
        builder: std::env::current_exe().context("locating the stemcell-builder binary")?,
        scratch_dir: args.scratch_dir,
    };
    let report = crate::audit::run(&plan)?;
    match args.format {
        AuditFormat::Table => crate::out!("{}", report.table())?,
        AuditFormat::Json => crate::outln!("{}", report.json())?,
    }
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
// --- end audit -----------------------------------------------------------------------------
#[derive(Debug, Args)]
pub struct BumpArgs {
    /// The previous OS image's .packages.txt.
    #[arg(long)]
    pub previous: PathBuf,
    /// The new OS image's .packages.txt.
    #[arg(long)]
    pub current: PathBuf,
    /// File holding one semantic version (e.g. Concourse's version/number), rewritten when bumped.
    #[arg(long)]
    pub version_file: PathBuf,
    #[arg(long, value_enum, default_value = "patch")]
    pub level: crate::bump::Level,
    #[arg(long, value_enum, default_value = "text")]
    pub format: crate::bump::Format,
}

/// Variables the flags fall back to. Set but empty (`HYPERVISOR=` in a CI task's params) means
/// "not given", as for the reference builder's rake tasks, not "the empty value".
const FLAG_VARIABLES: &[&str] = &[
    "STEMCELL_BUILDER_STAGES_DIR",
    "STEMCELL_BUILDER_ASSETS_DIR",
    "resume_from",
    "IAAS",
    "HYPERVISOR",
    "OS_NAME",
    "OS_VERSION",
];

pub fn main() -> ExitCode {
    for name in FLAG_VARIABLES {
        if std::env::var_os(name).is_some_and(|v| v.is_empty()) {
            // Single-threaded here: nothing else reads the environment yet.
            std::env::remove_var(name);
        }
    }
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        // A reader that stopped reading (`| head`) wanted no more: not an error.
        Err(err) if crate::output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::BuildOsImage(args) => {
            let (plan, packager) = os_image_build(*args)?;
            crate::pipeline::run(&plan, &packager, &Reporter::detect())?;
        }
        Command::Cache(CacheCommand::Ls(args)) => {
            let cache = crate::cache::Cache::new(&args.cache_dir);
            crate::out!("{}", crate::cache::render_list(&cache, &cache.list()?))?;
        }
        Command::Cache(CacheCommand::Prune(args)) => {
            let cache = crate::cache::Cache::new(&args.cache.cache_dir);
            let removed = crate::cache::prune(
                &cache,
                crate::cache::PrunePolicy {
                    keep: args.keep,
                    older_than_days: args.older_than,
                    max_bytes: args.max_size,
                },
            )?;
            let freed: u64 = removed.iter().map(|e| e.bytes).sum();
            for entry in &removed {
                crate::outln!("removed {} {} {}", entry.kind.name(), entry.key, entry.name)?;
            }
            crate::outln!(
                "removed {} entries, {} freed",
                removed.len(),
                crate::cache::listing::human_bytes(freed)
            )?;
        }
        Command::PackageCache(command) => package_cache(command)?,
        Command::Shell(args) => {
            // Before any thread: the merged tree is mounted in this process's own namespace.
            crate::layers::enter_private_mount_namespace()?;
            let code =
                crate::layers::shell::run(&args.work_dir, args.stage.as_deref(), &args.command)?;
            return Ok(exit_code(code));
        }
        Command::ListStages(args) => {
            let (def, stages_dir) = resolve_os(&args.os, &args.sources)?;
            let collection = args
                .os
                .collection
                .clone()
                .unwrap_or_else(|| def.collection.clone());
            let stages = crate::pipeline::resolve_collection(&stages_dir, &collection)?.stages;
            crate::outln!(
                "# {} stages of collection '{collection}' for {}",
                stages.len(),
                def.name
            )?;
            for stage in stages {
                let config = if stage.config_script().is_some() {
                    "  (config.sh)"
                } else {
                    ""
                };
                crate::outln!("{:02} {}{config}", stage.position, stage.name)?;
            }
        }
        Command::ChrootExec(args) => {
            let code = crate::chroot::exec(&crate::chroot::ChrootCommand {
                root: args.root,
                command: args.command,
                resolv_conf: !args.no_resolv_conf,
                devices: args.devices,
            })?;
            return Ok(exit_code(code));
        }
        Command::Smoke(args) => return smoke(args),
        Command::Container(args) => {
            let code = crate::smoke::warden::container_main(&args.root, &args.bind, &args.log)?;
            return Ok(exit_code(code));
        }
        Command::Sandbox(args) => {
            let (program, rest) = args
                .command
                .split_first()
                .context("sandbox needs a command")?;
            let mut child = std::process::Command::new(program);
            child.args(rest);
            // The stage's layer is mounted in the sandbox's own mount namespace, so it is
            // visible to the stage and to the chroot-exec it calls, and dies with the stage.
            let overlay = args.overlay();
            let code = crate::sandbox::run_isolated(
                crate::sandbox::stage_namespaces(),
                move || overlay.map_or(Ok(()), |o| o.mount()),
                child,
                None,
            )?;
            return Ok(exit_code(code));
        }
        Command::Pack(args) => {
            crate::stage::process::install_interrupt_handler();
            let files = crate::os_image::write_os_image(
                &args.source,
                &args.output,
                args.compression,
                None,
                &Reporter::detect(),
            )?;
            crate::outln!("{}  {}", files.sha256, files.image.display())?;
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
            crate::outln!(
                "unpacked {} entries into {} ({verified}{skipped})",
                summary.entries,
                args.target.display()
            )?;
        }
        Command::UploadOsImage(args) => {
            let mut plan =
                crate::s3::upload::UploadPlan::new(args.file, args.url.parse()?, args.s3.options());
            plan.part_size = args.part_size_mib.max(5) << 20;
            plan.multipart_threshold = plan.part_size;
            plan.concurrency = args.concurrency;
            plan.state_dir = Some(state_dir());
            let digest = crate::s3::upload::upload(&plan, &Reporter::detect())?;
            crate::outln!(
                "uploaded {} to {} (sha256 {digest})",
                plan.file.display(),
                plan.url
            )?;
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
                crate::s3::download::Downloaded::UpToDate { digest } => crate::outln!(
                    "{} already has sha256 {digest}: not downloaded",
                    plan.file.display()
                )?,
                crate::s3::download::Downloaded::Fetched { digest, bytes } => crate::outln!(
                    "downloaded {} to {} ({bytes} bytes, sha256 {})",
                    plan.url,
                    plan.file.display(),
                    digest.as_deref().unwrap_or("not verified")
                )?,
            }
        }
        Command::BuildStemcell(args) => {
            let (plan, packager) = stemcell_build(*args)?;
            crate::pipeline::run(&plan, &packager, &Reporter::detect())?;
        }
        Command::Inspect(args) => {
            let found = crate::stemcell::inspect::inspect(&args.stemcell)?;
            crate::out!("{}", found.manifest_text)?;
            crate::outln!(
                "# ok: members in order, sha1 {} matches image, image holds {}, {} packages",
                found.manifest.sha1,
                found.image_holds.join(", "),
                found.packages
            )?;
        }
        Command::DiskImage(args) => {
            let plan = crate::disk::DiskPlan {
                tree: args.tree,
                out_dir: args.out_dir,
                format: args.format,
                size_mib: args.size_mib,
                firmware: args.firmware,
            };
            for file in crate::disk::build(&plan, &Reporter::detect())? {
                crate::outln!("wrote {}", file.display())?;
            }
        }
        Command::Audit(args) => return audit(args),
        Command::Bump(a) => {
            return crate::bump::main(&crate::bump::BumpPlan {
                previous: a.previous,
                current: a.current,
                version_file: a.version_file,
                level: a.level,
                format: a.format,
            })
        }
        Command::Export(args) => export(args)?,
        Command::Doctor(args) => {
            let ok = crate::doctor::print(&crate::doctor::run_checks(&args.work_dir))?;
            return Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn smoke(args: SmokeArgs) -> Result<ExitCode> {
    let plan = crate::smoke::SmokePlan {
        stemcell: args.stemcell,
        timeout: std::time::Duration::from_secs(args.timeout),
        accel: args.accel,
        scratch_dir: args.scratch_dir,
        keep_scratch: args.keep_scratch,
    };
    let text = matches!(args.format, SmokeFormat::Text);
    let mut print = |step: &crate::smoke::Step| {
        if text {
            let _ = crate::outln!(
                "{:<4}  {:<14} {:>6.1}s  {}",
                if step.ok { "ok" } else { "FAIL" },
                step.step,
                step.seconds,
                step.detail
            );
        }
    };
    let report = crate::smoke::run(&plan, &mut print)?;
    if text {
        if !report.agent_log.is_empty() {
            crate::outln!("# the agent's last log lines ({})", report.infrastructure)?;
            for line in &report.agent_log {
                crate::outln!("  {line}")?;
            }
        }
        if let Some(dir) = &report.kept_scratch {
            crate::outln!("# kept {dir}")?;
        }
        let passed = report.steps.iter().filter(|s| s.ok).count();
        crate::outln!(
            "{} {}: {passed} of {} steps passed",
            if report.ok { "PASSED" } else { "FAILED" },
            report.stemcell,
            report.steps.len()
        )?;
    } else {
        crate::outln!("{}", serde_json::to_string_pretty(&report)?)?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn exit_code(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn os_image_build(
    args: BuildOsImageArgs,
) -> Result<(crate::pipeline::BuildPlan, crate::os_image::OsImagePackager)> {
    args.run.check()?;
    let (def, stages_dir) = resolve_os(&args.os, &args.sources)?;
    let arch = match args.arch {
        Some(arch) => checked_arch(arch)?,
        None => host_arch(),
    };
    let work_dir = args
        .work_dir
        .unwrap_or_else(|| default_work_dir(&format!("{}-{arch}", def.name)));
    let keyring = def.resolve_keyring(args.keyring.as_deref())?;
    let base = match args.base.map(special_base) {
        Some(Ok(special)) => special,
        Some(Err(given)) if given.is_dir() => BaseSource::Tree(given),
        Some(Err(given)) if given.is_file() => BaseSource::Image(given),
        Some(Err(given)) => bail!(
            "--base {} is neither a directory nor an OS image file (nor tarball:PATH or binaries:PROG,...)",
            given.display()
        ),
        None => BaseSource::Bootstrap {
            spec: crate::pipeline::bootstrap::BaseSpec {
                suite: def.suite.clone(),
                arch: arch.clone(),
                variant: def.variant.clone(),
                components: def.components.clone(),
                mirror: args.mirror.clone(),
                keyring,
                packages: def.packages.clone(),
            },
            tool: args.bootstrapper,
            cache_dir: args.run.cache(),
            offline: args.run.offline,
        },
    };
    let plan = crate::pipeline::BuildPlan {
        work_dir,
        stages_dir,
        collection: args.os.collection.unwrap_or_else(|| def.collection.clone()),
        resume_from: args.run.resume_from.clone(),
        base,
        os: OsSource::Definition(def),
        arch: ArchSource::Given(arch),
        mirror: args.mirror,
        overrides: overrides(&args.set)?,
        argv: argv(),
        layers: !args.run.no_layers,
        cache_dir: args.run.cache(),
        offline: args.run.offline,
        until: args.run.until.clone(),
        shell_on_failure: args.run.shell_on_failure,
    };
    let packager = crate::os_image::OsImagePackager {
        output: args.output,
        compression: args.compression,
    };
    Ok((plan, packager))
}

fn package_cache(command: PackageCacheCommand) -> Result<()> {
    use crate::cache::packages::{parse_print_uris, PackageCache};
    match command {
        PackageCacheCommand::Provide {
            root,
            cache_dir,
            arch,
            uris,
            offline,
        } => {
            let cache = PackageCache::new(&cache_dir);
            let wanted = match &uris {
                Some(file) => Some(parse_print_uris(
                    &std::fs::read_to_string(file)
                        .with_context(|| format!("reading {}", file.display()))?,
                )),
                None => None,
            };
            let provided = cache.provide(&root, wanted.as_deref(), &arch)?;
            for file in &provided.dropped {
                eprintln!(
                    "package cache: {file} no longer matched its sha256: removed from the cache, apt downloads it again"
                );
            }
            if offline && !provided.missing.is_empty() {
                const SHOWN: usize = 5;
                let mut names: Vec<String> = provided
                    .missing
                    .iter()
                    .take(SHOWN)
                    .map(|w| w.describe())
                    .collect();
                if provided.missing.len() > SHOWN {
                    names.push(format!("and {} more", provided.missing.len() - SHOWN));
                }
                let (what, are, them) = match provided.missing.len() {
                    1 => ("package", "is", "it"),
                    _ => ("packages", "are", "them"),
                };
                bail!(
                    "--offline: {what} {} {are} not in the package cache {}: build once without --offline to fetch {them}",
                    names.join(", "),
                    cache.dir().display()
                );
            }
            crate::outln!(
                "package cache: {} packages ({}) from the cache, {} to download",
                provided.files,
                crate::cache::listing::human_bytes(provided.bytes),
                provided.missing.len()
            )?;
        }
        PackageCacheCommand::Store { root, cache_dir } => {
            let stored = PackageCache::new(&cache_dir).store(&root)?;
            crate::outln!(
                "package cache: kept {} new packages ({})",
                stored.files,
                crate::cache::listing::human_bytes(stored.bytes)
            )?;
        }
        PackageCacheCommand::ListsIn {
            root,
            cache_dir,
            arch,
            offline,
        } => {
            let cache = PackageCache::new(&cache_dir);
            if !cache.restore_lists(&root, &arch)? && offline {
                bail!(
                    "--offline: the cache {} has no package lists for this tree's apt sources ({arch}): build once without --offline to fetch them",
                    cache_dir.display()
                );
            }
        }
        PackageCacheCommand::ListsOut {
            root,
            cache_dir,
            arch,
        } => {
            PackageCache::new(&cache_dir).save_lists(&root, &arch)?;
        }
    }
    Ok(())
}

fn stemcell_build(
    args: BuildStemcellArgs,
) -> Result<(
    crate::pipeline::BuildPlan,
    crate::stemcell::StemcellPackager,
)> {
    args.run.check()?;
    let target = crate::stemcell::iaas::resolve(&args.iaas, args.hypervisor.as_deref())?;
    let format = target.format(args.format)?;
    let given_os = match args.os.or_else(|| {
        os::from_reference_env(
            std::env::var("OS_NAME").ok(),
            std::env::var("OS_VERSION").ok(),
        )
    }) {
        Some(os) => match os.split_once('-') {
            Some((name, version))
                if crate::stage::collection::is_plain_name(name)
                    && crate::stage::collection::is_plain_name(version) =>
            {
                Some((name.to_string(), version.to_string()))
            }
            _ => bail!("--os {os}: write NAME-VERSION, e.g. debian-trixie"),
        },
        None => None,
    };
    let stages_dir = canonical_dir(
        args.sources
            .stages_dir
            .clone()
            .unwrap_or_else(|| shipped_dir("stages")),
        "stages",
    )?;
    let assets_dir = args
        .sources
        .assets_dir
        .clone()
        .unwrap_or_else(|| shipped_dir("assets"));
    let work_dir = args.work_dir.unwrap_or_else(|| {
        default_work_dir(&format!("stemcell-{}-{}", target.iaas, target.hypervisor))
    });
    let base = if crate::s3::S3Url::is_s3(&args.os_image) {
        BaseSource::S3 {
            url: args.os_image.parse()?,
            options: args.s3.options(),
            offline: args.run.offline,
        }
    } else {
        BaseSource::Image(PathBuf::from(&args.os_image))
    };
    let collection = args
        .collection
        .unwrap_or_else(|| format!("stemcell-{}", target.iaas));
    let builder_commit = crate::stemcell::commit::for_stemcell(&stages_dir);
    let plan = crate::pipeline::BuildPlan {
        work_dir,
        stages_dir,
        collection: collection.clone(),
        resume_from: args.run.resume_from.clone(),
        base,
        os: OsSource::FromTree {
            given: given_os,
            assets_dir,
        },
        arch: ArchSource::FromTree {
            fallback: host_arch(),
        },
        mirror: None,
        overrides: overrides(&args.set)?,
        argv: argv(),
        layers: !args.run.no_layers,
        cache_dir: args.run.cache(),
        offline: args.run.offline,
        until: args.run.until.clone(),
        shell_on_failure: args.run.shell_on_failure,
    };
    let packager = crate::stemcell::StemcellPackager {
        target,
        format,
        version: args.version,
        agent: args.agent,
        output_dir: args.output_dir,
        disk_size_mib: args.disk_size_mib,
        collection,
        builder_commit,
    };
    Ok((plan, packager))
}

/// `--base tarball:PATH` and `--base binaries:A,B`; any other value is a path (`Err`).
fn special_base(given: PathBuf) -> std::result::Result<BaseSource, PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = given.as_os_str().as_bytes();
    if let Some(path) = bytes.strip_prefix(b"tarball:") {
        return Ok(BaseSource::Tarball(PathBuf::from(
            std::ffi::OsStr::from_bytes(path),
        )));
    }
    if let Some(list) = bytes.strip_prefix(b"binaries:") {
        let names = String::from_utf8_lossy(list)
            .split(',')
            .map(|n| n.trim().to_string())
            .collect();
        return Ok(BaseSource::Binaries(names));
    }
    Err(given)
}

fn export(args: ExportArgs) -> Result<()> {
    use crate::export::{ExportFormat, ExportPlan, ImageSettings};
    let settings = ImageSettings::parse(
        &args.env,
        args.user.as_deref(),
        args.entrypoint.as_deref(),
        args.cmd.as_deref(),
        args.workdir.as_deref(),
    )?;
    let plan = ExportPlan {
        image: args.os_image,
        format: args.format,
        output: args.output,
        settings,
        tag: args.tag,
    };
    let summary = crate::export::export(&plan, &Reporter::detect())?;
    let verified = if summary.checksum_verified {
        "sha256 of the OS image verified"
    } else {
        "no .sha256 beside the OS image"
    };
    let dropped = if summary.dropped_devices > 0 {
        format!(
            ", {} device nodes left out (runtimes make /dev)",
            summary.dropped_devices
        )
    } else {
        String::new()
    };
    crate::outln!(
        "wrote {} ({} entries{dropped}; {verified})",
        summary.output.display(),
        summary.entries
    )?;
    match plan.format {
        ExportFormat::GardenRootfs => crate::outln!(
            "holds rootfs/ and metadata.json; see the README for registering it as a stack"
        )?,
        ExportFormat::Docker => {
            if let Some(command) = &summary.docker_import {
                crate::outln!("import it with:\n  {command}")?;
            }
        }
        ExportFormat::Oci => {
            if let Some(oci) = &summary.oci {
                crate::outln!(
                    "manifest {} ({}/linux), layer {} ({} bytes, diff_id {})",
                    oci.manifest_digest,
                    oci.platform.architecture,
                    oci.layer_digest,
                    oci.layer_size,
                    oci.diff_id
                )?;
                crate::outln!(
                    "try: skopeo inspect oci:{dir}:{tag}  (or podman run oci:{dir}:{tag})",
                    dir = summary.output.display(),
                    tag = oci.tag
                )?;
            }
        }
    }
    Ok(())
}

/// `--set` pairs; a bare KEY takes its value from the environment.
fn overrides(pairs: &[String]) -> Result<Vec<Override>> {
    pairs
        .iter()
        .map(|pair| Override::parse(pair, |key| std::env::var(key).ok()))
        .collect()
}

fn argv() -> Vec<String> {
    let mut words: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // The binary by its full path, so the resume command works from any directory.
    if let (Some(first), Ok(exe)) = (words.first_mut(), std::env::current_exe()) {
        *first = exe.display().to_string();
    }
    words
}

/// Work dirs live under /var/tmp/stemcell-builder unless `--work-dir` says otherwise.
fn default_work_dir(name: &str) -> PathBuf {
    PathBuf::from("/var/tmp/stemcell-builder").join(name)
}

/// `--arch` names a directory (the default work dir) and a dpkg architecture: a plain word.
fn checked_arch(arch: String) -> Result<String> {
    if arch.is_empty()
        || !arch
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        bail!("--arch {arch:?} is not a Debian architecture: use amd64, arm64, ppc64el, ...");
    }
    Ok(arch)
}

fn canonical_dir(dir: PathBuf, what: &str) -> Result<PathBuf> {
    // Stages run with their own directory as cwd: every path handed to them is absolute.
    dir.canonicalize().with_context(|| {
        format!(
            "{what} directory {} does not exist: pass --{what}-dir",
            dir.display()
        )
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
    let stages = canonical_dir(
        sources
            .stages_dir
            .clone()
            .unwrap_or_else(|| shipped_dir("stages")),
        "stages",
    )?;
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

/// Where the tool keeps state between runs (multipart uploads in flight):
/// `STEMCELL_BUILDER_STATE_DIR`, else /var/lib/stemcell-builder.
fn state_dir() -> PathBuf {
    std::env::var_os("STEMCELL_BUILDER_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/stemcell-builder"))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
