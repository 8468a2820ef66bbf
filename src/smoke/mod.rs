//! `stemcell-builder smoke STEMCELL.tgz`: boots a stemcell on this machine as its IaaS would and
//! drives the real BOSH agent in it as the director does, because static checks (ours or the
//! reference's) are not the consumer: the agent is.
//!
//! Warden stemcells run as the warden CPI runs them (a privileged container, [`warden`]); disk
//! stemcells boot in qemu with a config drive ([`vm`]). Either way a fresh nats-server with
//! mutual TLS ([`nats`], [`certs`]) carries the director's requests ([`director`]): ping,
//! get_state with vitals, the ephemeral disk (VMs), ssh setup followed by a real ssh login with
//! sudo, a job installed with upload_blob and apply, started and stopped through monit, and
//! run_script. Each step is reported with its time; the run is bounded by `--timeout`; nothing
//! it started outlives it (qemu, nats-server and the container die with it, the container's
//! mounts and network namespace with the container).

pub mod certs;
pub mod director;
pub mod job;
pub mod nats;
pub mod vm;
pub mod warden;

use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};

use director::Director;

#[derive(Debug, Clone)]
pub struct SmokePlan {
    pub stemcell: PathBuf,
    pub timeout: Duration,
    pub accel: vm::Accel,
    /// Where the run's scratch dir is made (removed afterwards).
    pub scratch_dir: PathBuf,
    /// Keep the scratch dir afterwards (its path is in the report).
    pub keep_scratch: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub step: String,
    pub ok: bool,
    pub seconds: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmokeReport {
    pub stemcell: String,
    pub infrastructure: String,
    pub ok: bool,
    pub steps: Vec<Step>,
    /// The agent's last log lines (warden) or the VM console's (qemu), when a step failed.
    pub agent_log: Vec<String>,
    /// The scratch dir, when it was kept.
    pub kept_scratch: Option<String>,
}

/// The user the ssh step creates through the agent (the agent only removes `bosh_` users).
const SSH_USER: &str = "bosh_smoke";

/// Writes a file only root reads (certificates' keys, settings with them).
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| crate::fsutil::io_error(e, "creating", path))?;
    file.write_all(bytes)
        .map_err(|e| crate::fsutil::io_error(e, "writing", path))
}

/// The last `lines` lines of a text file (empty when it cannot be read).
pub(crate) fn tail_of(path: &Path, lines: usize) -> Vec<String> {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..]
        .iter()
        .map(|l| l.to_string())
        .collect()
}

/// Reports each step as it ends (the CLI prints it).
pub type OnStep<'a> = &'a mut dyn FnMut(&Step);

/// Runs the smoke test; `Ok` holds the report whether the stemcell passed or not.
pub fn run(plan: &SmokePlan, on_step: OnStep) -> Result<SmokeReport> {
    if plan.timeout.is_zero() {
        bail!("--timeout 0 leaves no time to boot: give the seconds smoke may take (e.g. 900)");
    }
    if !plan.scratch_dir.is_dir() {
        bail!(
            "--scratch-dir '{}' is not a directory: pass an existing directory",
            plan.scratch_dir.display()
        );
    }
    let deadline = Instant::now() + plan.timeout;
    let inspection = crate::stemcell::inspect::inspect(&plan.stemcell)?;
    let infrastructure = inspection
        .manifest
        .cloud_properties
        .get("infrastructure")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let architecture = inspection
        .manifest
        .cloud_properties
        .get("architecture")
        .and_then(|v| v.as_str())
        .unwrap_or("x86_64")
        .to_string();
    if !matches!(architecture.as_str(), "x86_64" | "amd64") {
        bail!(
            "{} is a {architecture} stemcell: smoke boots x86_64 stemcells only",
            plan.stemcell.display()
        );
    }
    let scratch = tempfile::Builder::new()
        .prefix(".smoke-")
        .tempdir_in(&plan.scratch_dir)
        .with_context(|| {
            format!(
                "cannot make a scratch dir in {}: pass --scratch-dir",
                plan.scratch_dir.display()
            )
        })?;
    let image = scratch.path().join("image");
    if !extract_member(&plan.stemcell, "image", &image)? {
        bail!("{} has no image member", plan.stemcell.display());
    }
    let agent_id = format!("smoke-{}-{}", std::process::id(), unique());
    let key = ssh_key(scratch.path())?;
    let mut run = Run {
        steps: vec![],
        on_step,
        deadline,
        failed: false,
    };
    let agent_log = if infrastructure == "warden" {
        run_warden(&mut run, scratch.path(), &image, &agent_id, &key)?
    } else {
        run_vm(
            &mut run,
            scratch.path(),
            &image,
            &agent_id,
            &key,
            plan.accel,
        )?
    };
    let kept_scratch = plan
        .keep_scratch
        .then(|| scratch.keep().display().to_string());
    Ok(SmokeReport {
        stemcell: plan.stemcell.display().to_string(),
        infrastructure,
        ok: !run.failed,
        steps: run.steps,
        agent_log: if run.failed { agent_log } else { vec![] },
        kept_scratch,
    })
}

struct Run<'a> {
    steps: Vec<Step>,
    on_step: OnStep<'a>,
    deadline: Instant,
    failed: bool,
}

impl Run<'_> {
    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn record(&mut self, name: &str, started: Instant, result: Result<String>) -> bool {
        let (ok, detail) = match result {
            Ok(detail) => (true, detail),
            Err(err) => (false, format!("{err:#}")),
        };
        let step = Step {
            step: name.to_string(),
            ok,
            seconds: started.elapsed().as_secs_f64(),
            detail,
        };
        (self.on_step)(&step);
        self.steps.push(step);
        self.failed |= !ok;
        ok
    }
}

fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{nanos:08x}")
}

/// Copies the member `name` of a gzip tar (the stemcell, or its `image`) to `to`; `false`
/// when the archive has no such member.
fn extract_member(archive: &Path, name: &str, to: &Path) -> Result<bool> {
    let file = fs::File::open(archive)?;
    let mut archive = tar::Archive::new(flate2::read::MultiGzDecoder::new(file));
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        if path == name {
            let mut out = fs::File::create(to)?;
            std::io::copy(&mut entry, &mut out)?;
            return Ok(true);
        }
    }
    Ok(false)
}

/// Runs a host tool to its end; its stderr is the error when it fails.
pub(crate) fn run_tool(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// An ed25519 key pair for the ssh step; returns the private key's path.
fn ssh_key(dir: &Path) -> Result<PathBuf> {
    let key = dir.join("id_ed25519");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "smoke", "-f"])
            .arg(&key),
        "ssh-keygen (apt-get install -y openssh-client)",
    )?;
    Ok(key)
}

/// The agent's settings: what the CPI (warden) or the config drive (VMs) hands it.
fn settings(
    agent_id: &str,
    mbus: &str,
    certs: &certs::NatsCertificates,
    networks: Value,
    disks: Value,
) -> Value {
    json!({
        "agent_id": agent_id,
        "vm": {"name": agent_id},
        "mbus": mbus,
        "ntp": [],
        "networks": networks,
        "disks": disks,
        "env": {"bosh": {
            "mbus": {"cert": {
                "ca": certs.ca,
                "certificate": certs.agent.certificate,
                "private_key": certs.agent.private_key,
            }},
            "blobstores": [{"provider": "local", "options": {"blobstore_path": "/var/vcap/data/blobs"}}],
        }},
    })
}

fn run_warden(
    run: &mut Run,
    scratch: &Path,
    image: &Path,
    agent_id: &str,
    key: &Path,
) -> Result<Vec<String>> {
    let root = scratch.join("root");
    let data = scratch.join("data");
    let persistent = scratch.join("persistent");
    for dir in [&root, &data, &persistent] {
        fs::create_dir(dir)?;
    }
    crate::archive::unpack(
        image,
        &root,
        &crate::archive::UnpackOptions {
            skip_checksum: true,
            devices: crate::archive::DevicePolicy::Dev,
        },
    )
    .context("unpacking the warden stemcell's tree")?;
    let agent_log = root.join("var/vcap/bosh/log/current");
    let addresses = warden::Addresses::pick(std::process::id())?;
    let started = Instant::now();
    let container = warden::Container::create(
        &root,
        &data,
        &persistent,
        &scratch.join("container.log"),
        addresses,
    );
    let mut container = match container {
        Ok(c) => c,
        Err(err) => {
            run.record("boot", started, Err(err));
            return Ok(vec![]);
        }
    };
    let certs = certs::make(&[addresses.host.to_string()], agent_id)?;
    let (server, files) =
        nats::NatsServer::start(IpAddr::V4(addresses.host), &certs, &scratch.join("nats"))?;
    let env = settings(
        agent_id,
        &format!("nats://{}", server.address),
        &certs,
        json!({"default": {
            "type": "manual",
            "ip": addresses.container.to_string(),
            "netmask": "255.255.255.252",
            "gateway": addresses.host.to_string(),
            "dns": [],
            "default": ["dns", "gateway"],
            "preconfigured": true,
        }}),
        json!({"system": "", "ephemeral": null, "persistent": {}}),
    );
    let tree = crate::inroot::TreeRoot::open(&root)?;
    tree.write_file(
        Path::new("var/vcap/bosh/warden-cpi-agent-env.json"),
        &serde_json::to_vec_pretty(&env)?,
        0o600,
    )?;
    let booted = container.start().map(|_| {
        format!(
            "container {} at {} (init pid {})",
            root.display(),
            addresses.container,
            container.init_pid
        )
    });
    if run.record("boot", started, booted) {
        drive(
            run,
            server.address,
            &files,
            agent_id,
            key,
            (&addresses.container.to_string(), 22),
            false,
        )?;
    }
    drop(container);
    Ok(tail_of(&agent_log, 30))
}

fn run_vm(
    run: &mut Run,
    scratch: &Path,
    image: &Path,
    agent_id: &str,
    key: &Path,
    accel: vm::Accel,
) -> Result<Vec<String>> {
    let (disk, format) = extract_disk(image, scratch)?;
    let certs = certs::make(&["127.0.0.1".into(), vm::HOST_FROM_GUEST.into()], agent_id)?;
    let (server, files) = nats::NatsServer::start(
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        &certs,
        &scratch.join("nats"),
    )?;
    let env = settings(
        agent_id,
        &format!("nats://{}:{}", vm::HOST_FROM_GUEST, server.address.port()),
        &certs,
        json!({"default": {
            "type": "dynamic",
            "dns": [vm::GUEST_DNS],
            "default": ["dns", "gateway"],
        }}),
        json!({"system": "/dev/vda", "ephemeral": "/dev/vdb", "persistent": {}}),
    );
    let public_key = fs::read_to_string(key.with_extension("pub"))?;
    let meta = json!({
        "instance-id": agent_id,
        "public-keys": {"0": {"openssh-key": public_key.trim()}},
    });
    let config = vm::config_drive(
        scratch,
        &serde_json::to_vec(&env)?,
        &serde_json::to_vec(&meta)?,
    )?;
    let started = Instant::now();
    let mut machine = match vm::Vm::boot(scratch, &disk, format, &config, accel) {
        Ok(m) => m,
        Err(err) => {
            run.record("boot", started, Err(err));
            return Ok(vec![]);
        }
    };
    let accel_name = format!("{accel:?}").to_lowercase();
    run.record(
        "boot",
        started,
        Ok(format!(
            "qemu ({accel_name}), ssh forwarded from 127.0.0.1:{}",
            machine.ssh_port
        )),
    );
    let port = machine.ssh_port;
    drive(
        run,
        server.address,
        &files,
        agent_id,
        key,
        ("127.0.0.1", port),
        true,
    )?;
    let alive = machine.check_running(scratch);
    let mut tail = machine.console_tail(30);
    if let Err(err) = alive {
        tail.push(format!("{err:#}"));
    }
    Ok(tail)
}

/// The disk inside a VM stemcell's `image` (a tgz of root.img), and its qemu format.
fn extract_disk(image: &Path, scratch: &Path) -> Result<(PathBuf, &'static str)> {
    let disk = scratch.join("root.img");
    if !extract_member(image, "root.img", &disk)? {
        bail!("the stemcell's image holds no root.img: smoke boots raw and qcow2 stemcells (and warden ones)");
    }
    let mut magic = [0u8; 4];
    fs::File::open(&disk)?.read_exact(&mut magic)?;
    Ok((disk, if &magic == b"QFI\xfb" { "qcow2" } else { "raw" }))
}

/// The director's steps against a booted agent.
#[allow(clippy::too_many_arguments)]
fn drive(
    run: &mut Run,
    nats: std::net::SocketAddr,
    files: &nats::CertificateFiles,
    agent_id: &str,
    key: &Path,
    ssh_to: (&str, u16),
    vm: bool,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let started = Instant::now();
        let connected = Director::connect(nats, files, agent_id).await;
        let mut director = match connected {
            Ok(d) => {
                run.record(
                    "nats",
                    started,
                    Ok(format!("mutual TLS to nats-server at {nats}")),
                );
                d
            }
            Err(err) => {
                run.record("nats", started, Err(err));
                return Ok(());
            }
        };
        macro_rules! step {
            ($name:expr, |$left:ident| $body:expr) => {{
                if !run.failed {
                    let started = Instant::now();
                    let $left = run.left();
                    let result: Result<String> = async { $body }.await;
                    run.record($name, started, result);
                }
            }};
        }
        step!("ping", |left| {
            director.wait_for_pong(left).await?;
            Ok("pong".to_string())
        });
        step!("get_state", |left| {
            let state = director.call("get_state", json!(["full"]), left).await?;
            let vitals = state
                .get("vitals")
                .ok_or_else(|| anyhow!("get_state full has no vitals: {state}"))?;
            for part in ["cpu", "mem", "disk", "load"] {
                if vitals.get(part).is_none() {
                    bail!("get_state's vitals lack {part}: {vitals}");
                }
            }
            Ok(format!(
                "job_state {}, load {}, mem {}%",
                state["job_state"], vitals["load"][0], vitals["mem"]["percent"]
            ))
        });
        if vm {
            step!("ephemeral disk", |left| {
                let state = director.call("get_state", json!(["full"]), left).await?;
                let ephemeral = &state["vitals"]["disk"]["ephemeral"];
                if ephemeral.is_null() {
                    bail!(
                        "no ephemeral disk in get_state's vitals: {}",
                        state["vitals"]["disk"]
                    );
                }
                Ok(format!("mounted, {}% used", ephemeral["percent"]))
            });
        }
        step!("ssh setup", |left| {
            let public_key = fs::read_to_string(key.with_extension("pub"))?;
            let answer = director
                .call(
                    "ssh",
                    json!(["setup", {"user": SSH_USER, "public_key": public_key.trim()}]),
                    left,
                )
                .await?;
            if answer["status"] != "success" {
                bail!("ssh setup answered {answer}");
            }
            Ok(format!("user {SSH_USER}"))
        });
        step!("ssh login", |left| ssh_login(key, ssh_to, left).await);
        let (archive, sha1) = job::rendered_templates()?;
        step!("upload_blob", |left| {
            director
                .call_to_end("upload_blob", job::upload_argument(&archive, &sha1), left)
                .await?;
            Ok(format!("{} ({} bytes)", job::BLOB_ID, archive.len()))
        });
        step!("apply", |left| {
            let answer = director
                .call_to_end("apply", job::apply_spec(&sha1), left)
                .await?;
            Ok(format!("{answer}"))
        });
        step!("start", |left| {
            let answer = director.call("start", json!([]), left).await?;
            if answer != "started" {
                bail!("start answered {answer}");
            }
            wait_for_job_state(&mut director, "running", left).await
        });
        step!("stop", |left| {
            let answer = director.call_to_end("stop", json!([]), left).await?;
            if answer != "stopped" {
                bail!("stop answered {answer}");
            }
            wait_for_job_state(&mut director, "stopped", left).await
        });
        step!("run_script", |left| {
            let answer = director
                .call_to_end("run_script", json!(["pre-start", {}]), left)
                .await?;
            Ok(format!("pre-start: {answer}"))
        });
        Ok::<(), anyhow::Error>(())
    })
}

async fn wait_for_job_state(director: &mut Director, want: &str, left: Duration) -> Result<String> {
    let deadline = Instant::now() + left.min(Duration::from_secs(120));
    loop {
        let state = director
            .call("get_state", json!([]), Duration::from_secs(30))
            .await?;
        let now = state["job_state"].as_str().unwrap_or_default().to_string();
        if now == want {
            return Ok(format!("job_state {now}"));
        }
        if Instant::now() > deadline {
            bail!(
                "job_state is {now}, not {want}, after waiting: {}",
                state["processes"]
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A real login as the user the agent made, and sudo without a password (bosh_sudoers).
async fn ssh_login(key: &Path, (host, port): (&str, u16), left: Duration) -> Result<String> {
    let deadline = Instant::now() + left.min(Duration::from_secs(120));
    loop {
        let out = tokio::process::Command::new("ssh")
            .arg("-i")
            .arg(key)
            .args(["-p", &port.to_string()])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("{SSH_USER}@{host}"))
            .arg("sudo -n id -un")
            .stdin(Stdio::null())
            .output()
            .await
            .context("running ssh: apt-get install -y openssh-client")?;
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && said == "root" {
            return Ok(format!("{SSH_USER}@{host}:{port}, sudo -n id -un: root"));
        }
        if Instant::now() > deadline {
            bail!(
                "ssh {SSH_USER}@{host} -p {port} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
