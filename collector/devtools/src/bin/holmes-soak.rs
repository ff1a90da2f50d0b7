//! `holmes-soak`: honest agents and hostile clients against one collector process for a
//! bounded time, on loopback only (`holmes_devtools::soak`; `deploy/dev/soak.sh`).
//!
//! It starts the `holmes-collector` binary (SQLite in a temporary folder, an ingest token
//! per honest service and a `"*"` token the hostile clients use, tight `[limits]`, a
//! webhook hook to its own HTTP receiver), runs `--services` × `--instances` honest
//! agents and `--hostile` hostile clients for `--duration`, then checks that every honest
//! trigger, profile and alert arrived exactly once, that the collector's resident memory
//! stayed under `--rss-bound`, and that the hostile traffic was refused with its reasons
//! in the collector's counters (`GET /metrics`) and log. It prints the figures (`--json`:
//! one JSON object) and exits non-zero naming every check that failed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use clap::Parser;
use holmes_devtools::soak::collector::{count_lines, CollectorProcess, CollectorSettings};
use holmes_devtools::soak::honest::{self, HonestAgent, HonestPlan, Ledger};
use holmes_devtools::soak::hostile::{self, HostilePlan, HostileTally, KINDS};
use holmes_devtools::soak::lock;
use holmes_devtools::soak::operator::{self, Looked};
use holmes_devtools::soak::receiver;
use holmes_devtools::soak::verify::{self, Verdict};
use holmes_devtools::synthetic::{mix, ProfileFactory};

#[derive(Parser, Debug, Clone)]
#[command(
    name = "holmes-soak",
    version,
    about = "Honest agents and hostile clients against one Holmes collector: nothing lost, memory bounded"
)]
struct Cli {
    /// The `holmes-collector` binary (default: the one beside this program).
    #[arg(long)]
    collector_bin: Option<PathBuf>,
    /// Honest services.
    #[arg(long, default_value_t = 5)]
    services: usize,
    /// Honest agents per service.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Hostile clients (kinds in turn: amplify, skew, slow-grpc, slow-http, ids, flood).
    #[arg(long, default_value_t = 10)]
    hostile: usize,
    /// How long everyone sends.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    duration: Duration,
    /// How often each honest service spikes (a trigger and a profile per instance).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    spike_every: Duration,
    /// The most resident memory the collector may reach, MiB: the honest load (about
    /// 80 MiB), two amplifying profiles decoded at once (the decoder's bound: 18 times
    /// the inflated profile plus twice the 64 MiB materialization cap, about 150 MiB
    /// each), and the suspects of an amplifying client's incident, which read up to 50
    /// of its stored profiles (about 5 MiB each) — with room to spare.
    #[arg(long, default_value_t = 768)]
    rss_bound_mib: u64,
    /// `[limits] max_streams_per_peer` of the collector.
    #[arg(long, default_value_t = 64)]
    max_streams_per_peer: usize,
    /// How long after sending stops the checks wait for the last items and alerts.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    grace: Duration,
    /// Print the figures as one JSON object.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    holmes_devtools::init_logging(std::io::stderr);
    let cli = Cli::parse();
    if cli.services == 0 || cli.instances == 0 {
        bail!("--services and --instances must be at least 1");
    }
    if cli.services * cli.instances >= cli.max_streams_per_peer {
        bail!("--max-streams-per-peer must be more than the honest agents, who share 127.0.0.1");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

/// The reasons each kind of hostile client must show in the collector's counters, given
/// what its clients sent (`sent`: their tallies' labels): an amplifying profile's reason
/// only once a profile of that shape went out, as a slow collector may acknowledge only
/// the first few of them in the time given.
fn expected_reasons(kind: &str, sent: &[&String]) -> Vec<&'static str> {
    match kind {
        "amplify" => {
            let mut reasons: Vec<&'static str> = hostile::AMPLIFY_SHAPES
                .iter()
                .filter(|(shape, _, _)| {
                    let label = format!("profile {shape} ");
                    sent.iter().any(|s| s.starts_with(&label))
                })
                .map(|(_, _, reason)| *reason)
                .collect();
            reasons.dedup();
            reasons
        }
        "skew" => vec!["holmes_ingest_refused_total:clock_skew"],
        "slow-grpc" => vec![
            "holmes_ingest_refused_total:profile_idle",
            "holmes_ingest_refused_total:unfinished_profiles",
        ],
        "slow-http" => vec!["holmes_ingest_refused_total:http_header_timeout"],
        "ids" => vec![
            "holmes_ingest_refused_total:invalid_id",
            "holmes_ingest_refused_total:too_many_services",
        ],
        _ => vec!["holmes_ingest_refused_total:too_many_streams_per_peer"],
    }
}

/// `metric{...reason="r"...}` values summed by `metric:r`.
fn by_reason(metrics: &BTreeMap<String, f64>, metric: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (series, value) in metrics {
        let Some(labels) = series
            .strip_prefix(metric)
            .and_then(|s| s.strip_prefix('{'))
        else {
            continue;
        };
        if let Some(reason) = labels
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            *out.entry(format!("{metric}:{reason}")).or_default() += value;
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let bin = match &cli.collector_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("holmes-collector"),
    };
    let dir = tempfile::Builder::new().prefix("holmes-soak").tempdir()?;
    let (alert_url, alerts) = receiver::start().await?;
    let services: Vec<String> = (0..cli.services).map(|s| format!("svc-{s:02}")).collect();
    let settings = CollectorSettings {
        service_tokens: services
            .iter()
            .map(|s| (s.clone(), format!("token-{s}")))
            .collect(),
        fleet_token: "soak-fleet-token".to_owned(),
        max_streams_per_peer: cli.max_streams_per_peer,
        // Room for the honest services and one per hostile client: the `ids` clients'
        // new services soon meet the cap.
        max_services: cli.services + cli.hostile,
        http_header_timeout: Duration::from_secs(5),
        profile_idle_timeout: Duration::from_secs(10),
        incident_window: Duration::from_secs(5),
        incident_quiet: Duration::from_secs(5),
        alert_url,
    };
    let mut collector = CollectorProcess::start(&bin, &settings, dir.path()).await?;
    let since =
        humantime::format_rfc3339_millis(SystemTime::now() - Duration::from_secs(5)).to_string();
    let started = Instant::now();
    let until = started + cli.duration;
    eprintln!(
        "holmes-soak: collector pid {} (gRPC {}, HTTP {}), {} honest agents, {} hostile clients, {:?}",
        collector.pid, collector.grpc, collector.http, cli.services * cli.instances, cli.hostile, cli.duration
    );

    // Memory, sampled while everything runs; VmHWM catches what falls between samples.
    let pid_memory = collector.pid;
    let sampler = tokio::spawn(async move {
        let mut max = 0u64;
        let mut samples = Vec::new();
        // Until the process is gone.
        while let Some((rss, _)) = CollectorProcess::memory_of(pid_memory) {
            max = max.max(rss);
            samples.push(rss);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        (max, samples)
    });

    let factory = Arc::new(ProfileFactory::new(4000));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let plan = Arc::new(HonestPlan {
        endpoint: format!("http://{}", collector.grpc),
        spike_every: cli.spike_every,
        grace: cli.grace,
    });
    let mut agents = tokio::task::JoinSet::new();
    for (s, service) in services.iter().enumerate() {
        for i in 0..cli.instances {
            let agent = HonestAgent {
                service: service.clone(),
                instance: format!("{service}-{i:03}"),
                token: format!("token-{service}"),
                seed: mix((s * 1000 + i) as u64 + 1),
            };
            agents.spawn(honest::run(
                Arc::clone(&plan),
                agent,
                Arc::clone(&factory),
                Arc::clone(&ledger),
                until,
            ));
        }
    }
    let hostile_plan = Arc::new(HostilePlan {
        endpoint: format!("http://{}", collector.grpc),
        grpc: collector.grpc,
        http: collector.http,
        fleet_token: settings.fleet_token.clone(),
        max_streams_per_peer: cli.max_streams_per_peer,
    });
    let tallies: Vec<Arc<Mutex<HostileTally>>> = (0..cli.hostile).map(|_| Arc::default()).collect();
    let mut hostiles = tokio::task::JoinSet::new();
    for (k, tally) in tallies.iter().enumerate() {
        hostiles.spawn(hostile::run(
            Arc::clone(&hostile_plan),
            k,
            Arc::clone(&factory),
            Arc::clone(tally),
            until,
        ));
    }

    let mut failures: Vec<String> = Vec::new();
    while let Some(done) = agents.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failures.push(format!("honest agent: {err:#}")),
            Err(err) => failures.push(format!("honest agent task: {err}")),
        }
    }
    // Hostile clients stop at `until`; one stuck in a wait is stopped a little later.
    let _ = tokio::time::timeout_at((until + Duration::from_secs(10)).into(), async {
        while hostiles.join_next().await.is_some() {}
    })
    .await;
    hostiles.abort_all();
    let sent_for = started.elapsed();

    // The last items and alerts: checked until all is well or the grace period ends.
    let api = collector.api()?;
    let deadline = Instant::now() + cli.grace;
    let verdict = loop {
        let received = lock(&alerts).clone();
        let l = std::mem::take(&mut *lock(&ledger));
        let v = verify::check(&api, &services, &since, &l, &received).await;
        *lock(&ledger) = l;
        match v {
            Ok(v) if v.problem_count == 0 && v.resolved == v.incidents => break v,
            Ok(v) if Instant::now() >= deadline => break v,
            Err(err) if Instant::now() >= deadline => bail!("cannot check what arrived: {err:#}"),
            _ => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    };
    // On-call opens what the hostile clients left. Their incidents went quiet with the
    // honest ones, whose resolution the checks waited for.
    let hostile_services: Vec<String> = api
        .services()
        .await?
        .into_iter()
        .map(|s| s.service)
        .filter(|s| s.starts_with("hostile-"))
        .collect();
    let looked = operator::look(&api, &hostile_services, &since).await?;
    let metrics = collector.metrics().await.context("GET /metrics")?;
    let alive = collector.running();
    let (_, hwm) = collector.memory().unwrap_or((0, 0));
    let log = collector.log_text();
    collector.stop().await;
    let (rss_max, samples) = sampler.await?;
    let rss_max = rss_max.max(hwm);
    let mut reasons = by_reason(&metrics, "holmes_ingest_refused_total");
    reasons.extend(by_reason(&metrics, "holmes_profiles_refused_total"));
    let log_lines = count_lines(
        &log,
        &[
            "rejected agent stream",
            "agent stream ended with an error",
            "profile refused",
            "max_clock_skew",
            "request head in time",
            "panicked",
        ],
    );

    // The checks.
    let ledger = std::mem::take(&mut *lock(&ledger));
    if !alive {
        failures.push("the collector process died during the run".to_owned());
    }
    if log_lines.get("panicked").copied().unwrap_or(0) > 0 {
        failures.push("the collector's log shows a panic".to_owned());
    }
    let bound = cli.rss_bound_mib << 20;
    if rss_max > bound {
        failures.push(format!(
            "the collector's RSS reached {} MiB, over the bound of {} MiB",
            rss_max >> 20,
            cli.rss_bound_mib
        ));
    }
    failures.extend(verdict.problems.iter().map(|p| format!("honest: {p}")));
    failures.extend(looked.failed.iter().map(|f| format!("on-call: {f}")));
    if verdict.problem_count > verdict.problems.len() {
        failures.push(format!(
            "honest: {} more problems",
            verdict.problem_count - verdict.problems.len()
        ));
    }
    if verdict.resolved != verdict.incidents {
        failures.push(format!(
            "{} of {} honest incidents never resolved",
            verdict.incidents - verdict.resolved,
            verdict.incidents
        ));
    }
    let sent_by: Vec<(&str, Vec<String>)> = tallies
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let sent = t
                .lock()
                .map(|t| t.sent.keys().cloned().collect())
                .unwrap_or_default();
            (KINDS[k % KINDS.len()], sent)
        })
        .collect();
    for kind in KINDS.iter().take(cli.hostile) {
        let sent: Vec<&String> = sent_by
            .iter()
            .filter(|(k, _)| k == kind)
            .flat_map(|(_, sent)| sent.iter())
            .collect();
        for reason in expected_reasons(kind, &sent) {
            if reasons.get(reason).copied().unwrap_or(0.0) < 1.0 {
                failures.push(format!(
                    "{kind} traffic ran but the collector counted no {reason}"
                ));
            }
        }
    }

    report(
        &cli, sent_for, &ledger, &verdict, &looked, rss_max, &samples, &reasons, &log_lines,
        &tallies, &failures,
    );
    if !failures.is_empty() {
        bail!(
            "{} checks failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn report(
    cli: &Cli,
    sent_for: Duration,
    ledger: &Ledger,
    verdict: &Verdict,
    looked: &Looked,
    rss_max: u64,
    samples: &[u64],
    reasons: &BTreeMap<String, f64>,
    log_lines: &BTreeMap<String, u64>,
    tallies: &[Arc<Mutex<HostileTally>>],
    failures: &[String],
) {
    let mib = |b: u64| b as f64 / 1048576.0;
    let rss_last = samples.last().copied().unwrap_or(0);
    let hostile: Vec<serde_json::Value> = tallies
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let t = lock(t).clone();
            serde_json::json!({
                "client": k, "kind": KINDS[k % KINDS.len()],
                "sent": t.sent, "refused": t.refused, "examples": t.examples,
                "connections_cut": t.cut, "connections_left_open": t.still_open,
            })
        })
        .collect();
    if cli.json {
        let value = serde_json::json!({
            "honest_agents": cli.services * cli.instances,
            "hostile_clients": cli.hostile,
            "seconds": sent_for.as_secs_f64(),
            "triggers_sent": ledger.triggers.len(),
            "triggers_arrived_once": verdict.triggers_once,
            "triggers_in_one_incident": verdict.triggers_in_one_incident,
            "profiles_sent": ledger.profiles.len(),
            "profiles_arrived_once": verdict.profiles_once,
            "metric_windows_sent": ledger.windows,
            "incidents": verdict.incidents,
            "incidents_resolved": verdict.resolved,
            "alerts_received": verdict.alerts,
            "alerts_received_all": verdict.alerts_all,
            "honest_reconnects": ledger.reconnects,
            "honest_stream_breaks": ledger.breaks,
            "on_call_requests": looked.asked,
            "on_call_slowest_ms": looked.slowest.as_millis() as u64,
            "rss_max_bytes": rss_max,
            "rss_last_bytes": rss_last,
            "rss_bound_bytes": cli.rss_bound_mib << 20,
            "refused_by_reason": reasons,
            "log_lines": log_lines,
            "hostile": hostile,
            "failures": failures,
        });
        println!("{value}");
        return;
    }
    println!(
        "{} honest agents ({} services x {}) and {} hostile clients, {:.0} s",
        cli.services * cli.instances,
        cli.services,
        cli.instances,
        cli.hostile,
        sent_for.as_secs_f64()
    );
    println!(
        "honest: triggers {} sent, {} arrived once ({} in exactly one incident); profiles {} sent, {} arrived once; {} metric windows; {} reconnects",
        ledger.triggers.len(), verdict.triggers_once, verdict.triggers_in_one_incident,
        ledger.profiles.len(), verdict.profiles_once, ledger.windows, ledger.reconnects
    );
    println!(
        "alerts: {} incidents ({} resolved), {} alerts about them received, no alert twice: {}; {} alerts in all",
        verdict.incidents, verdict.resolved, verdict.alerts,
        !verdict.problems.iter().any(|p| p.contains("received")), verdict.alerts_all
    );
    println!(
        "on-call opened what the hostile clients left: {:?}, slowest answer {} ms",
        looked.asked,
        looked.slowest.as_millis()
    );
    println!(
        "collector RSS: max {:.0} MiB (bound {} MiB), at the end {:.0} MiB",
        mib(rss_max),
        cli.rss_bound_mib,
        mib(rss_last)
    );
    println!("refused, by reason (GET /metrics):");
    for (reason, n) in reasons {
        println!("  {reason:<60} {n}");
    }
    println!("collector log lines:");
    for (message, n) in log_lines {
        println!("  {message:<60} {n}");
    }
    let mut cut: BTreeMap<String, u64> = BTreeMap::new();
    let mut left: BTreeMap<String, u64> = BTreeMap::new();
    for t in tallies {
        let t = lock(t);
        for (listener, n) in &t.cut {
            *cut.entry(listener.clone()).or_default() += n;
        }
        for (listener, n) in &t.still_open {
            *left.entry(listener.clone()).or_default() += n;
        }
    }
    println!(
        "hostile connections the collector cut: {cut:?}; still open when their client gave up waiting: {left:?}"
    );
    for h in &hostile {
        println!("hostile {}: {}", h["client"], h);
    }
    for f in failures {
        println!("FAILED: {f}");
    }
}
