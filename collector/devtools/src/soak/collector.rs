//! The collector under test: the `holmes-collector` binary as a real process, on the
//! SQLite store in a temporary folder, on free loopback ports, with its log in a file —
//! so that its memory is the process's own (`/proc/<pid>/status`) and what it says is
//! what an operator reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use holmes_cli::api_client::ApiClient;

/// The settings the soak runs the collector with.
#[derive(Debug, Clone)]
pub struct CollectorSettings {
    /// Honest services and their ingest tokens.
    pub service_tokens: Vec<(String, String)>,
    /// The `"*"` token, which the hostile clients use.
    pub fleet_token: String,
    /// `[limits] max_streams_per_peer`.
    pub max_streams_per_peer: usize,
    /// `[limits] max_services`.
    pub max_services: usize,
    /// `[limits] http_header_timeout`.
    pub http_header_timeout: Duration,
    /// `[limits] profile_idle_timeout`.
    pub profile_idle_timeout: Duration,
    /// `[incidents] window`.
    pub incident_window: Duration,
    /// `[incidents] quiet`.
    pub incident_quiet: Duration,
    /// The webhook every alert goes to.
    pub alert_url: String,
}

/// A running `holmes-collector serve`; killed when dropped.
#[derive(Debug)]
pub struct CollectorProcess {
    child: tokio::process::Child,
    /// Its process id.
    pub pid: u32,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// Its log (stdout and stderr).
    pub log: PathBuf,
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn duration(d: Duration) -> String {
    format!("\"{}ms\"", d.as_millis())
}

fn config(settings: &CollectorSettings, grpc: SocketAddr, http: SocketAddr, data: &Path) -> String {
    let mut c = String::new();
    let _ = writeln!(c, "grpc_addr = \"{grpc}\"\nhttp_addr = \"{http}\"");
    let _ = writeln!(
        c,
        "data_dir = {:?}\nstore = \"sqlite\"",
        data.display().to_string()
    );
    let _ = writeln!(c, "\n[limits]");
    let _ = writeln!(
        c,
        "max_streams_per_peer = {}",
        settings.max_streams_per_peer
    );
    let _ = writeln!(c, "max_services = {}", settings.max_services);
    let _ = writeln!(
        c,
        "http_header_timeout = {}",
        duration(settings.http_header_timeout)
    );
    let _ = writeln!(
        c,
        "profile_idle_timeout = {}",
        duration(settings.profile_idle_timeout)
    );
    let _ = writeln!(c, "\n[incidents]");
    let _ = writeln!(c, "window = {}", duration(settings.incident_window));
    let _ = writeln!(c, "quiet = {}", duration(settings.incident_quiet));
    // Every honest profile must arrive: no capture budget, which acknowledges and drops
    // an incident's captures past its count (one incident of a slow run can span more
    // spikes than the budget's ten; the budget has tests of its own).
    let _ = writeln!(c, "max_profiles_per_incident = 0");
    let _ = writeln!(
        c,
        "\n[alerts]\nretry_initial = \"200ms\"\nretry_max = \"2s\""
    );
    let _ = writeln!(c, "\n[[alerts.hooks]]\nname = \"soak\"\nkind = \"webhook\"");
    let _ = writeln!(c, "url = {:?}", settings.alert_url);
    let _ = writeln!(c, "\n[auth.ingest_tokens]");
    for (service, token) in &settings.service_tokens {
        let _ = writeln!(c, "{service:?} = {token:?}");
    }
    let _ = writeln!(c, "\"*\" = {:?}", settings.fleet_token);
    c
}

impl CollectorProcess {
    /// Starts `bin` with `settings` in `dir` and waits (up to a minute) for its API.
    pub async fn start(
        bin: &Path,
        settings: &CollectorSettings,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let (grpc, http) = (free_addr()?, free_addr()?);
        let data = dir.join("data");
        std::fs::create_dir_all(&data)?;
        let config_path = dir.join("collector.toml");
        std::fs::write(&config_path, config(settings, grpc, http, &data))?;
        let log = dir.join("collector.log");
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(bin)
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let pid = child.id().context("the collector has no pid")?;
        let mut process = CollectorProcess {
            child,
            pid,
            grpc,
            http,
            log,
        };
        let api = process.api()?;
        let started = Instant::now();
        while api.services().await.is_err() {
            if let Ok(Some(status)) = process.child.try_wait() {
                bail!(
                    "the collector exited ({status}); its log:\n{}",
                    process.log_text()
                );
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the collector's API did not answer within 60 s; its log:\n{}",
                    process.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(process)
    }

    /// A client of its HTTP API.
    pub fn api(&self) -> anyhow::Result<ApiClient> {
        Ok(ApiClient::new(&format!("http://{}", self.http))?)
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its resident set size now and at its peak (`VmRSS`, `VmHWM`), bytes.
    pub fn memory(&self) -> Option<(u64, u64)> {
        Self::memory_of(self.pid)
    }

    /// [`CollectorProcess::memory`] of the process `pid`; `None` once it is gone.
    pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().strip_suffix("kB"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|kib| kib * 1024)
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its metrics (`GET /metrics`): each series (name with labels) and its value.
    pub async fn metrics(&self) -> anyhow::Result<BTreeMap<String, f64>> {
        let text = self.api()?.get_raw("/metrics").await?;
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect())
    }

    /// Stops it (SIGKILL: the run is over; nothing it would do on the way out is
    /// measured).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Counts the log lines that contain each of `messages`.
pub fn count_lines(log: &str, messages: &[&str]) -> BTreeMap<String, u64> {
    messages
        .iter()
        .map(|m| {
            (
                m.to_string(),
                log.lines().filter(|l| l.contains(m)).count() as u64,
            )
        })
        .collect()
}
