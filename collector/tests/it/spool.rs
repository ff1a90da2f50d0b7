//! Delivery that loses nothing, with real processes: the `holmes-collector` binary,
//! killed with SIGKILL and started again on the same store, and agent processes (this
//! test binary run again as [`agent_process`]) with a disk spool, killed and restarted.
//! Every profile and trigger event arrives exactly once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::support::eventually;
use holmes_agent::{Holmes, ProfileKind};
use holmes_cli::api_client::ApiClient;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// What the child agent does: `captures=N,every=MS,end=drain|hang`.
const CHILD_PLAN: &str = "HOLMES_SPOOL_TEST_PLAN";
const SERVICE: &str = "spooler";
const INSTANCE: &str = "spooler-0";

/// The agent process the tests start: `captures` thread dumps asked for with
/// `capture_now`, each trigger event id printed as `EVENT <id>`, the next one `every` ms after
/// the previous dump is in the dump folder (one capture of a kind runs at a time; the
/// first one loads debug info and takes a while); then, with
/// `end=hang`, `READY` once everything is in the spool and a wait to be killed, or with
/// `end=drain`, a wait until the collector acknowledged everything and `STATS <json>`.
#[test]
#[ignore = "the agent process the spool tests start"]
fn agent_process() {
    let Ok(plan) = std::env::var(CHILD_PLAN) else {
        return;
    };
    let plan: BTreeMap<&str, &str> = plan
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    let captures: usize = plan["captures"].parse().unwrap();
    let every = Duration::from_millis(plan["every"].parse().unwrap());
    let agent = Holmes::from_env()
        .unwrap()
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(200))
        .max_backoff(Duration::from_millis(300))
        .flight_recorder(false)
        // stop() waits for the last window's acknowledgement (the test checks that
        // nothing is left unacknowledged); a loaded machine can take longer than 3 s.
        .flush_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let dumps = PathBuf::from(std::env::var("HOLMES_DUMP_DIR").unwrap());
    // Generous: a loaded 2-core machine is slow, and only a lost message must fail.
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in 1..=captures {
        let id = agent.capture_now(&[ProfileKind::Threads]).unwrap();
        println!("EVENT {id}");
        while std::fs::read_dir(&dumps).map_or(0, |d| {
            d.filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                let name = name.to_string_lossy();
                name.starts_with("threads.") && name.ends_with(".pb.gz")
            })
            .count()
        }) < n
        {
            assert!(Instant::now() < deadline, "{:?}", agent.stats());
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(every);
    }
    if plan["end"] == "hang" {
        // A trigger and a one-chunk profile per capture, all on disk.
        let dir = PathBuf::from(std::env::var("HOLMES_SPOOL_DIR").unwrap());
        let count = |kind: &str| {
            spool_files(&dir)
                .iter()
                .filter(|p| p.to_string_lossy().contains(kind))
                .count()
        };
        while count(".t.") < captures || count(".p.") < captures {
            assert!(Instant::now() < deadline, "{:?}", agent.stats());
            std::thread::sleep(Duration::from_millis(20));
        }
        println!("READY");
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    // Metric windows keep coming: wait for everything queued by now (the captures
    // included) to be acknowledged; stop() flushes the rest.
    let queued = agent.stats().queued_seq;
    while {
        let s = agent.stats();
        s.acked_seq < queued || !s.connected
    } {
        assert!(Instant::now() < deadline, "{:?}", agent.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = agent.stop();
    println!(
        "STATS recovered={} dropped={} corrupt={} connections={} sent={} spooled={} unacked={}",
        s.recovered, s.dropped, s.corrupt, s.connections, s.sent, s.spooled, s.unacked
    );
}

/// A `holmes-collector serve` process on fixed addresses and a data folder.
struct Collector {
    child: Child,
}

impl Collector {
    async fn start(grpc: SocketAddr, http: SocketAddr, data: &Path) -> Collector {
        let child = Command::new(env!("CARGO_BIN_EXE_holmes-collector"))
            .arg("serve")
            .arg("--grpc-addr")
            .arg(grpc.to_string())
            .arg("--http-addr")
            .arg(http.to_string())
            .arg("--data-dir")
            .arg(data)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("holmes-collector runs");
        let api = ApiClient::new(&format!("http://{http}")).unwrap();
        eventually(Duration::from_secs(20), "the collector's API", || async {
            api.services().await.ok().map(|_| ())
        })
        .await;
        Collector { child }
    }

    /// SIGKILL: no shutdown, no flush, whatever was not acknowledged stays unacknowledged.
    async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// An agent process running [`agent_process`] with `plan`, the collector at `grpc`,
/// and its spool in `spool`.
struct Agent {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Agent {
    fn start(plan: &str, grpc: SocketAddr, spool: &Path) -> Agent {
        let dumps = spool.with_extension(format!("dumps-{}", crate::support::free_addr().port()));
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spool::agent_process",
                "--ignored",
                "--nocapture",
            ])
            .env(CHILD_PLAN, plan)
            .env("HOLMES_SERVICE", SERVICE)
            .env("HOLMES_INSTANCE", INSTANCE)
            .env("HOLMES_COLLECTOR", format!("http://{grpc}"))
            .env("HOLMES_SPOOL_DIR", spool)
            .env("HOLMES_DUMP_DIR", dumps)
            // Only the requested captures: no rule may fire on its own.
            .env("HOLMES_RULE_CPU", "off")
            .env("HOLMES_RULE_MEMORY", "off")
            .env("HOLMES_RULE_THREADS", "off")
            .env("HOLMES_RULE_TASKS", "off")
            .env("HOLMES_RULE_HEAP", "off")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the agent process runs");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Agent { child, lines }
    }

    /// The next line starting with `prefix`, without it.
    async fn next(&mut self, prefix: &str) -> String {
        let wait = async {
            while let Some(line) = self.lines.next_line().await.unwrap() {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return rest.trim().to_owned();
                }
            }
            panic!("the agent process ended before printing {prefix:?}");
        };
        tokio::time::timeout(Duration::from_secs(120), wait)
            .await
            .unwrap_or_else(|_| panic!("no {prefix:?} from the agent process"))
    }

    async fn events(&mut self, n: usize) -> Vec<String> {
        let mut ids = Vec::new();
        for _ in 0..n {
            ids.push(self.next("EVENT ").await);
        }
        ids
    }

    /// Waits for a `drain` agent to finish; returns its `STATS` fields.
    async fn finish(mut self) -> BTreeMap<String, u64> {
        let stats = self.next("STATS ").await;
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the agent process exits")
            .unwrap();
        assert!(status.success(), "{status:?}");
        stats
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
            .collect()
    }
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "hsp"))
                .collect()
        })
        .unwrap_or_default()
}

/// Each of the capture events `events` (ids `capture_now` returned) stored once as a
/// requested trigger event and once as a thread dump, and nothing else.
async fn assert_each_event_stored_once(api: &ApiClient, events: &[String]) {
    let triggers = api.triggers(SERVICE, "1h").await.unwrap().triggers;
    let profiles = api.profiles(SERVICE, "1h").await.unwrap().profiles;
    assert!(
        triggers.iter().all(|t| t.request_id.is_some()),
        "only requested captures: {triggers:?}"
    );
    let mut expected: Vec<&str> = events.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(
        triggers.len(),
        events.len(),
        "one trigger event per capture"
    );
    let mut trigger_events: Vec<&str> = triggers.iter().map(|t| t.event_id.as_str()).collect();
    let mut profile_events: Vec<&str> = profiles.iter().map(|p| p.event_id.as_str()).collect();
    trigger_events.sort_unstable();
    profile_events.sort_unstable();
    assert_eq!(trigger_events, expected, "the events capture_now named");
    assert_eq!(profile_events, trigger_events, "one profile per event");
    for p in &profiles {
        assert_eq!(p.kind, "threads");
        assert_eq!(p.error, None, "{p:?}");
        assert_eq!(p.instance, INSTANCE);
        let bytes = api.download_profile(SERVICE, &p.profile_id).await.unwrap();
        assert!(bytes.starts_with(&[0x1f, 0x8b]), "a gzip pprof");
    }
}

/// The collector is SIGKILLed while an agent captures, and started again a moment later
/// on the same store: the captures made meanwhile wait in the spool, and every profile
/// and trigger event arrives exactly once (resends of what the collector stored but
/// never acknowledged are deduplicated by id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_arrive_exactly_once_across_a_collector_killed_and_restarted() {
    let dir = tempfile::tempdir().unwrap();
    let (data, spool) = (dir.path().join("data"), dir.path().join("spool"));
    let (grpc, http) = (crate::support::free_addr(), crate::support::free_addr());
    let collector = Collector::start(grpc, http, &data).await;
    let mut agent = Agent::start("captures=12,every=300,end=drain", grpc, &spool);

    let mut events = agent.events(4).await;
    collector.kill().await;
    events.extend(agent.events(4).await);
    let collector = Collector::start(grpc, http, &data).await;
    events.extend(agent.events(4).await);
    let stats = agent.finish().await;
    assert_eq!(stats["dropped"], 0, "{stats:?}");
    assert_eq!(stats["corrupt"], 0, "{stats:?}");
    assert_eq!(stats["unacked"], 0, "{stats:?}");
    assert!(stats["connections"] >= 2, "{stats:?}");

    let api = ApiClient::new(&format!("http://{http}")).unwrap();
    assert_each_event_stored_once(&api, &events).await;
    assert_eq!(
        spool_files(&spool),
        Vec::<PathBuf>::new(),
        "acknowledged messages leave the spool"
    );
    collector.kill().await;
}

/// An agent process captures while no collector runs and is SIGKILLed; the next one,
/// started on the same spool once a collector is up, sends what it finds there. Then
/// the same spool contents, as if the collector had stored them without the agent ever
/// seeing the acknowledgement, are sent again by a third process: nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_restarted_on_its_spool_resends_what_was_not_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (data, spool) = (dir.path().join("data"), dir.path().join("spool"));
    let (grpc, http) = (crate::support::free_addr(), crate::support::free_addr());

    let mut first = Agent::start("captures=5,every=150,end=hang", grpc, &spool);
    let events = first.events(5).await;
    first.next("READY").await;
    first.child.kill().await.unwrap();
    let left = spool_files(&spool);
    // The process keeps writing metric windows until it dies, and SIGKILL may cut one
    // write short: a `.tmp` file, which the next start deletes and counts as corrupt
    // and dropped (the captures were all in place before READY).
    let interrupted = std::fs::read_dir(&spool)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.ends_with(".tmp")
        })
        .count() as u64;
    assert!(interrupted <= 1, "one writer: at most one write cut short");
    assert!(left.len() >= 10, "triggers, profiles and windows: {left:?}");

    // The same files, kept aside to be resent after they were stored.
    let copy = dir.path().join("spool-copy");
    std::fs::create_dir(&copy).unwrap();
    for f in &left {
        std::fs::copy(f, copy.join(f.file_name().unwrap())).unwrap();
    }

    let collector = Collector::start(grpc, http, &data).await;
    let api = ApiClient::new(&format!("http://{http}")).unwrap();
    let second_started_ms = now_ms();
    let second = Agent::start("captures=0,every=0,end=drain", grpc, &spool);
    let resent_in = Instant::now();
    let stats = second.finish().await;
    let resend_took = resent_in.elapsed();
    assert_eq!(stats["recovered"] as usize, left.len(), "{stats:?}");
    assert_eq!(
        (stats["dropped"], stats["corrupt"]),
        (interrupted, interrupted),
        "{stats:?}"
    );
    assert_each_event_stored_once(&api, &events).await;
    assert!(spool_files(&spool).is_empty());
    // The first process's metric windows came along.
    let rss = api.metrics(SERVICE, "rss", "1h").await.unwrap();
    let points = &rss.series[0].points;
    let first_process_points = points
        .iter()
        .filter(|p| p.unix_ms < second_started_ms)
        .count();
    assert!(first_process_points >= 3, "{points:?}");

    let third = Agent::start("captures=0,every=0,end=drain", grpc, &copy);
    let stats = third.finish().await;
    assert_eq!(stats["recovered"] as usize, left.len(), "{stats:?}");
    assert_each_event_stored_once(&api, &events).await;
    let again = api.metrics(SERVICE, "rss", "1h").await.unwrap();
    let mut ts: Vec<u64> = again.series[0].points.iter().map(|p| p.unix_ms).collect();
    let n = ts.len();
    ts.dedup();
    assert_eq!(ts.len(), n, "no sample stored twice");
    eprintln!(
        "resend after restart: {} spooled messages delivered and acknowledged in {resend_took:?} (process start included)",
        left.len()
    );
    collector.kill().await;
}

fn now_ms() -> u64 {
    holmes_collector::clock::unix_nanos_now() / 1_000_000
}
