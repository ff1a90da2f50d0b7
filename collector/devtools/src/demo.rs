//! `holmes-demo`: the one-command tour. It runs a collector on the embedded store and a
//! few instances of a small "checkout" service, each a real child process with the
//! Holmes agent inside, so that data arrives within seconds.
//!
//! The service handles simulated requests and, every so often, burns CPU in a hot loop
//! for a few seconds on every core it may use — the kind of spike Holmes exists to
//! catch. CPU % is the process's CPU over the cores the agent divides by (a quota, else
//! the CPUs; `HOLMES_CPU_CORES` overrides it), so the service sets its CPU rule's `min`
//! to an eighth of one of those cores: the burst opens an incident on any core count,
//! and on a machine too busy to give it all of them.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use holmes_agent::{Holmes, Metric, Rule};
use tokio::process::{Child, Command};

use holmes_collector::config::{Config, StoreKind};
use holmes_collector::Server;

/// What the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Instances of the demo service.
    pub instances: u32,
    /// Folder for the embedded store.
    pub data_dir: PathBuf,
    /// gRPC address of the collector.
    pub grpc_addr: std::net::SocketAddr,
    /// HTTP address of the collector.
    pub http_addr: std::net::SocketAddr,
    /// Stop after this long; `None` runs until Ctrl-C.
    pub duration: Option<Duration>,
    /// Seconds between two CPU bursts in each instance.
    pub burst_every: Duration,
}

/// Runs the collector and the demo service until Ctrl-C (or `duration`).
pub async fn run(opts: DemoOptions) -> anyhow::Result<()> {
    let config = Config {
        grpc_addr: opts.grpc_addr,
        http_addr: opts.http_addr,
        data_dir: opts.data_dir.clone(),
        store: StoreKind::Sqlite,
        // The demo's data is its own: asked to listen on every interface (its container
        // image does, for a published port), it runs open and its collector says so.
        auth: holmes_collector::auth::config::AuthConfig {
            allow_open: true,
            ..Default::default()
        },
        ..Config::default()
    };
    let server = Server::start(&config).await?;
    let collector = format!("http://{}", server.grpc_addr());
    let api = format!("http://{}", server.http_addr());
    let exe = std::env::current_exe()?;
    let mut children: Vec<Child> = Vec::new();
    for i in 0..opts.instances {
        let child = Command::new(&exe)
            .arg("service")
            .arg("--collector")
            .arg(&collector)
            .arg("--instance")
            .arg(format!("checkout-{i}"))
            .arg("--burst-every")
            .arg(format!("{}s", opts.burst_every.as_secs().max(1)))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        children.push(child);
    }
    println!();
    println!("Holmes demo is running.");
    println!(
        "  collector: gRPC {collector}, API {api}, store {}",
        opts.data_dir.display()
    );
    println!(
        "  service:   checkout x{} (child processes with the agent inside; a CPU burst on every core every {}s)",
        opts.instances,
        opts.burst_every.as_secs()
    );
    println!();
    let api_flag = if opts.http_addr == holmes_collector::config::DEFAULT_HTTP_ADDR {
        String::new()
    } else {
        format!(" --api {api}")
    };
    println!("In another terminal, try:");
    println!("  cargo run -q --bin holmes --{api_flag} services");
    println!("  cargo run -q --bin holmes --{api_flag} metrics --service checkout --metric cpu --since 5m");
    println!("  cargo run -q --bin holmes --{api_flag} triggers --service checkout --since 10m   # after the first burst past warm-up (~10 s)");
    println!("  cargo run -q --bin holmes --{api_flag} incidents --service checkout   # the bursts of all instances: one fleet incident");
    println!("  open {api}/ui                                  # the web page: incidents, suspects, flame graphs");
    println!("  curl -s '{api}/api/v1/services/checkout/metrics?metric=rss&since=5m'");
    println!();
    println!("Ctrl-C stops everything.");
    match opts.duration {
        Some(d) => tokio::time::sleep(d).await,
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    for child in &mut children {
        let _ = child.kill().await;
    }
    server.shutdown().await;
    Ok(())
}

/// The CPUs this process may run on (a cgroup CPU quota counted, as the agent does).
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The cores the agent computes CPU % against: `HOLMES_CPU_CORES` when it is set (a
/// bad value is the agent's to refuse), else the CPUs this process may run on.
pub fn cpu_capacity() -> f64 {
    std::env::var("HOLMES_CPU_CORES")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|c| c.is_finite() && *c > 0.0)
        .unwrap_or(available_cores() as f64)
}

/// The demo's CPU rule: the agent's default with `min` at an eighth of one core of
/// `capacity` (at most the default's), so that a burst that gets even a fraction of
/// the cores fires it while the idle service (a few % of one core) never does.
pub fn cpu_rule(capacity: f64) -> Rule {
    let default_min =
        holmes_proto::rule_spec::default_rule(Metric::CpuPercent).map_or(10.0, |r| r.min);
    Rule::default_for(Metric::CpuPercent)
        .unwrap_or_default()
        .min(default_min.min(12.5 / capacity.max(1.0)))
}

/// Bytes per second the demo's agents upload their debug info to the local collector.
const DEMO_DEBUGINFO_RATE: usize = 1 << 30;

/// The demo service's body, run in a child process: the agent plus a fake workload.
/// Returns when the parent goes away.
pub fn run_service(collector: &str, instance: &str, burst_every: Duration) -> anyhow::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let capacity = cpu_capacity();
    let mut agent = Holmes::from_env()?
        .service("checkout")
        .instance(instance)
        .collector(collector)
        .label("demo", "true")
        .collect_interval(Duration::from_secs(1))
        .send_interval(Duration::from_secs(1));
    // A CPU rule given in the environment wins over the demo's.
    if std::env::var_os("HOLMES_RULE_CPU").is_none() {
        agent = agent.cpu_rule(cpu_rule(capacity));
    }
    // The demo's collector is on this machine: the first instance uploads the demo's
    // debug info (a debug build's: some 180 MB) at loopback speed rather than at the
    // 1 MiB/s meant for a fleet's network, so that its first incident is named within
    // seconds, not minutes. A rate given in the environment wins.
    if std::env::var_os("HOLMES_DEBUGINFO_RATE").is_none() {
        agent = agent.debuginfo_rate(DEMO_DEBUGINFO_RATE);
    }
    let holmes = agent.start()?;
    // As many busy threads as the cores CPU % counts, and no more than can run at once.
    let burst_threads = available_cores().min(capacity.ceil() as usize).max(1);
    let mut next_burst = Instant::now() + burst_every;
    let mut cart: Vec<Vec<u8>> = Vec::new();
    while std::os::unix::process::parent_id() == parent {
        handle_request(&mut cart);
        if Instant::now() >= next_burst {
            std::thread::scope(|s| {
                for _ in 0..burst_threads {
                    s.spawn(|| hot_loop(Duration::from_secs(3)));
                }
            });
            next_burst = Instant::now() + burst_every;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    holmes.stop();
    Ok(())
}

/// A cheap simulated request: some allocation and a little arithmetic.
fn handle_request(cart: &mut Vec<Vec<u8>>) {
    cart.push(vec![7u8; 16 * 1024]);
    if cart.len() > 256 {
        cart.drain(..128);
    }
    std::hint::black_box(cart.iter().map(|c| c.len()).sum::<usize>());
}

/// The culprit: a busy loop that holds a core for `d` (run on every core in a burst).
#[inline(never)]
pub fn hot_loop(d: Duration) {
    let until = Instant::now() + d;
    let mut x = 0u64;
    while Instant::now() < until {
        for _ in 0..10_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
}
