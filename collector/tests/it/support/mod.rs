//! Shared harness for the collector's tests: real collectors on loopback, real stores.

pub(crate) mod agent_process;
pub(crate) mod pprof;
pub(crate) mod raw_agent;
pub(crate) mod receiver;
pub(crate) mod terminal;
pub(crate) mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use holmes_collector::config::{Config, StoreKind};
use holmes_collector::Server;
use holmes_storage::clickhouse::ClickHouseSettings;

/// Declares, for each `async fn name(backend: Backend)` named, the tests `name::sqlite`
/// and `name::clickhouse` that run it on each store (the ClickHouse one is skipped with
/// `HOLMES_TEST_SKIP_CLICKHOUSE=1`, see [`config`]).
macro_rules! on_each_backend {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clickhouse() {
                super::$name($crate::support::Backend::ClickHouse).await;
            }
        }
    )+};
}
pub(crate) use on_each_backend;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    /// Debian's 18.16 (`HOLMES_TEST_CLICKHOUSE_URL`).
    ClickHouse,
    /// A current server, 26.9 from chdb (`HOLMES_TEST_CLICKHOUSE_CURRENT_URL`).
    ClickHouseCurrent,
}

/// [`on_each_backend`], with the current ClickHouse server besides 18.16.
macro_rules! on_every_server {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clickhouse() {
                super::$name($crate::support::Backend::ClickHouse).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn clickhouse_current() {
                super::$name($crate::support::Backend::ClickHouseCurrent).await;
            }
        }
    )+};
}
pub(crate) use on_every_server;

static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A collector configuration on free loopback ports, or `None` when ClickHouse is asked
/// for but deliberately skipped (`HOLMES_TEST_SKIP_CLICKHOUSE=1`).
pub(crate) fn config(backend: Backend, data_dir: &std::path::Path) -> Option<Config> {
    let mut config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: data_dir.to_owned(),
        ..Config::default()
    };
    // Tests ask a service's agents again at once (to see the agents' own answers); the
    // collector's limit on that is tested on its own
    // (`control::an_operators_capture_requests_are_rate_limited_per_service`).
    config.control.capture_min_interval = Duration::ZERO;
    let variable = match backend {
        Backend::Sqlite => None,
        Backend::ClickHouse => Some("HOLMES_TEST_CLICKHOUSE_URL"),
        Backend::ClickHouseCurrent => Some("HOLMES_TEST_CLICKHOUSE_CURRENT_URL"),
    };
    if let Some(variable) = variable {
        let Ok(url) = std::env::var(variable) else {
            if std::env::var("HOLMES_TEST_SKIP_CLICKHOUSE").as_deref() == Ok("1") {
                eprintln!("skipped: HOLMES_TEST_SKIP_CLICKHOUSE=1");
                return None;
            }
            panic!("{variable} is not set: run deploy/dev/test.sh, or set HOLMES_TEST_SKIP_CLICKHOUSE=1");
        };
        config.store = StoreKind::Clickhouse;
        config.clickhouse = ClickHouseSettings {
            url: Some(url),
            database: format!(
                "holmes_e2e_{}_{}",
                std::process::id(),
                NEXT_DB.fetch_add(1, Ordering::Relaxed)
            ),
            ..ClickHouseSettings::default()
        };
    }
    Some(config)
}

/// Starts a collector; `None` when its backend is skipped.
pub(crate) async fn start(backend: Backend, data_dir: &std::path::Path) -> Option<Server> {
    let config = config(backend, data_dir)?;
    Some(Server::start(&config).await.expect("collector starts"))
}

/// The agent's example `name` built with the workspace's `profiling` profile (release,
/// line tables, frame pointers: how agent/README.md tells hosts to build) into this
/// test's target folder, by cargo (deploy/dev/test.sh builds the examples tests run
/// first, so this finds them built); `None`, the test saying it is skipped, unless
/// `HOLMES_TEST_RELEASE=1` (the release build of the agent and its dependencies takes
/// minutes on two cores).
pub(crate) fn profiling_example(name: &str) -> Option<std::path::PathBuf> {
    if std::env::var("HOLMES_TEST_RELEASE").as_deref() != Ok("1") {
        eprintln!("skipped: set HOLMES_TEST_RELEASE=1 to build the agent's {name} example in release and run it");
        return None;
    }
    let (target, _) = holmes_devtools::workspace::target_of_this_test();
    // With plain rustc, as deploy/dev/test.sh builds them (a host's build would not run
    // clippy-driver, which turns MIR optimisations off).
    let out = holmes_devtools::workspace::cargo(&target)
        .args(["build", "--profile", "profiling", "-p", "holmes-agent"])
        .args(["--example", name, "--locked"])
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo build --profile profiling -p holmes-agent --example {name}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(target.join("profiling").join("examples").join(name))
}

/// A loopback address nothing listens on (yet).
pub(crate) fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Polls `check` until it yields `Some`, failing the test with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// As [`eventually`], for waits whose failure needs what was seen: `check` answers
/// `Err(what it saw)` until satisfied, and the failure shows the last answer.
pub(crate) async fn eventually_seen<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let seen = match check().await {
            Ok(v) => return v,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}; last seen: {seen}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The headless browser for page tests: `chromium` on the PATH. `None` (the test then
/// says it is skipped) unless `HOLMES_TEST_REQUIRE_CHROMIUM=1`, which makes its absence
/// a failure (`deploy/dev/test.sh` installs it and sets that).
pub(crate) fn chromium() -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("HOLMES_TEST_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "chromium is required (HOLMES_TEST_REQUIRE_CHROMIUM=1) but not on the PATH"
        );
        eprintln!("skipped: no chromium on the PATH");
    }
    found
}

/// Runs headless chromium on `url` with `args` (e.g. `--dump-dom`, `--screenshot=F`),
/// letting the page's scripts run for up to 20 s of virtual time; returns stdout.
pub(crate) async fn chromium_run(chromium: &std::path::Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(90),
        tokio::process::Command::new(chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
                "--virtual-time-budget=20000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args)
            .arg(url)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes within 90 s")
    .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium {args:?} {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the `holmes` CLI with `args`, its environment cleared of the `HOLMES_API*` and
/// `HOLMES_CA_FILE` settings a developer may have and of `COLUMNS`, in UTC (so that it
/// shows the API's times: [`cli_time`]), plus `env`.
pub(crate) async fn holmes_cli_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(holmes_devtools::workspace::bin("holmes"));
    cmd.args(args)
        .env_remove("HOLMES_API")
        .env_remove("HOLMES_API_TOKEN")
        .env_remove("HOLMES_CA_FILE")
        .env_remove("COLUMNS")
        .env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().await.expect("holmes runs")
}

/// How the CLI run by [`holmes_cli_with`] shows the RFC 3339 time `rfc3339`, up to how
/// long ago it was: `2026-12-02 03:19:07 (`.
pub(crate) fn cli_time(rfc3339: &str) -> String {
    format!("{} {} (", &rfc3339[..10], &rfc3339[11..19])
}

/// A table row the CLI printed that starts with a time: the time with how long ago
/// (`2026-12-02 03:19:07 (4 min ago)`) and the row's other columns, split at whitespace.
pub(crate) fn split_timed_row(row: &str) -> (&str, Vec<&str>) {
    let end = row
        .find(") ")
        .filter(|end| row[..*end].contains(" ("))
        .unwrap_or_else(|| panic!("no time with how long ago in {row:?}"));
    (&row[..=end], row[end + 1..].split_whitespace().collect())
}

/// [`holmes_cli_with`] without extra environment.
pub(crate) async fn holmes_cli(args: &[&str]) -> std::process::Output {
    holmes_cli_with(args, &[]).await
}

/// Runs `deploy/dev/<script> <command>` (clickhouse.sh, kafka.sh) with `dir_var` set to
/// `dir` when given (the server folder of `stop`/`restart`), and returns the variables it
/// printed as `export NAME=value` lines.
pub(crate) fn dev_script(
    script: &str,
    command: &str,
    dir_var: &str,
    dir: Option<&str>,
) -> Vec<(String, String)> {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/dev")
        .join(script);
    let mut c = std::process::Command::new("bash");
    c.arg(path).arg(command);
    if let Some(dir) = dir {
        c.env(dir_var, dir);
    }
    let out = c.output().unwrap_or_else(|e| panic!("{script} runs: {e}"));
    assert!(
        out.status.success(),
        "{script} {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// After an outage of `outage` while `agent` (service `outage`) kept sending: the threads
/// profile of capture `event_id` arrives, the agent's backlog is acknowledged with nothing
/// dropped, and its `rss` samples cover the outage, none stored twice and no gap of a
/// second or more. Waits up to `wait` for each.
pub(crate) async fn outage_backlog_arrives(
    api: &holmes_cli::api_client::ApiClient,
    agent: &holmes_agent::HolmesHandle,
    event_id: &str,
    outage: Duration,
    wait: Duration,
) {
    eventually(wait, "the profile captured during the outage", || async {
        let p = api.profiles("outage", "5m").await.ok()?;
        p.profiles
            .iter()
            .any(|p| p.event_id == event_id && p.kind == "threads" && p.error.is_none())
            .then_some(())
    })
    .await;
    // Windows keep coming, so the outbox is rarely empty at the instant it is looked
    // at: the backlog is what was queued by now, acknowledged once the
    // acknowledgements reach it.
    let backlog = agent.stats().queued_seq;
    let stats = eventually(wait, "the backlog acknowledged", || async {
        let s = agent.stats();
        (s.acked_seq >= backlog).then_some(s)
    })
    .await;
    assert_eq!(stats.dropped, 0, "{stats:?}");
    // The backlog is acknowledged once the broker has it; the processor stores it
    // after, in the broker's order, so the series fills in over a few polls.
    let widest_gap = |times: &[u64]| times.windows(2).map(|w| w[1] - w[0]).max();
    let mut last_seen = Vec::new();
    let deadline = Instant::now() + wait;
    let times = loop {
        if let Ok(m) = api.metrics("outage", "rss", "5m").await {
            if let Some(series) = m.series.first() {
                last_seen = series
                    .points
                    .iter()
                    .map(|p| p.unix_ms)
                    .collect::<Vec<u64>>();
            }
        }
        let covered = match (last_seen.first(), last_seen.last()) {
            (Some(first), Some(last)) => last - first,
            _ => 0,
        };
        if covered >= outage.as_millis() as u64
            && widest_gap(&last_seen).is_some_and(|gap| gap < 1_000)
        {
            break last_seen;
        }
        assert!(
            Instant::now() < deadline,
            "after {wait:?} the rss samples do not cover the outage of {outage:?} without a \
             gap of a second (widest {:?} ms): {last_seen:?}",
            widest_gap(&last_seen)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut unique = times.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        times.len(),
        "a sample stored twice: {times:?}"
    );
}
