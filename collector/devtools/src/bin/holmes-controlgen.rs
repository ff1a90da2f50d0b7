//! `holmes-controlgen`: how fast central control reaches a simulated fleet.
//!
//! `--agents` simulated agents of one service connect to the collector's gRPC ingest
//! (`--ingest`; several comma-separated addresses split them over ingest nodes) and answer
//! as the agent does: every `ConfigUpdate` with `ConfigApplied` for its version, every
//! `CaptureRequest` with a `CaptureOutcome` (captured; no profile is sent), and a
//! heartbeat every second carrying the rules version in force. Then, `--rounds` times,
//! through the query API (`--api`):
//!
//! - a rule change (`PUT …/rules`, what `holmes rules set` does), timed until the last
//!   agent received it and until the instances endpoint shows the new version on every
//!   agent (what an operator checks);
//! - a capture request (`POST …/capture`, what `holmes capture` does), timed until the
//!   last agent received it and until every agent's answer is recorded
//!   (`GET /api/v1/captures/{id}`).
//!
//! It prints each round and the medians; `--json` prints them as one JSON object.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use holmes_api::control::RulesEditJson;
use holmes_cli::api_client::control::CaptureTarget;
use holmes_cli::api_client::{ApiClient, ApiClientError, ClientOptions};
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CaptureOutcome, CollectorMessage, ConfigApplied, Heartbeat, Hello,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "holmes-controlgen",
    version,
    about = "Simulated agents: time from a rule change or a capture request to the whole fleet"
)]
struct Cli {
    /// The collector's gRPC ingest endpoints, comma-separated (agents are split over them).
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    ingest: String,
    /// The query API the changes and requests are made through.
    #[arg(long, default_value = "http://127.0.0.1:7071")]
    api: String,
    /// Simulated agents.
    #[arg(long, default_value_t = 50)]
    agents: usize,
    /// Rule changes and capture requests made.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The simulated service.
    #[arg(long, default_value = "controlgen")]
    service: String,
    /// How long one round may take before it is a failure.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    timeout: Duration,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// When each agent last received a rule version and a capture request.
#[derive(Default)]
struct Seen {
    versions: HashMap<usize, (u64, Instant)>,
    requests: HashMap<(usize, String), Instant>,
}

fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One simulated agent: connects, then answers until the process ends.
async fn agent(
    cli: Arc<Cli>,
    ingest: String,
    n: usize,
    seen: Arc<Mutex<Seen>>,
) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(ingest.clone())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("cannot connect to {ingest}"))?;
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(64);
    let send = |body| pb::AgentMessage::from(&AgentMessage { seq: 0, body });
    tx.send(send(AgentBody::Hello(Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: cli.service.clone(),
        instance_id: format!("{}-{n:03}", cli.service),
        host: format!("node-{:02}", n % 16),
        pid: 1000 + n as u32,
        labels: [("zone".to_owned(), ["a", "b"][n % 2].to_owned())].into(),
        agent_version: "controlgen".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: unix_nanos(),
        collect_interval: Duration::from_secs(1),
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    })))
    .await?;
    let mut inbound = IngestClient::new(channel)
        .connect(tonic::Request::new(ReceiverStream::new(rx)))
        .await
        .context("the collector refused the stream")?
        .into_inner();
    let mut version = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                tx.send(send(AgentBody::Heartbeat(Heartbeat {
                    unix_nanos: unix_nanos(),
                    dropped_messages: 0,
                    unacked_messages: 0,
                    rules_version: version,
                }))).await?;
            }
            message = inbound.message() => {
                let Some(raw) = message? else { bail!("the collector closed the stream") };
                match CollectorMessage::try_from(raw) {
                    Ok(CollectorMessage::ConfigUpdate(update)) => {
                        version = update.version;
                        seen.lock().unwrap_or_else(|p| p.into_inner()).versions.insert(n, (version, Instant::now()));
                        tx.send(send(AgentBody::ConfigApplied(ConfigApplied { version, refused: Vec::new() }))).await?;
                    }
                    Ok(CollectorMessage::CaptureRequest(request)) => {
                        seen.lock().unwrap_or_else(|p| p.into_inner()).requests.insert((n, request.request_id.clone()), Instant::now());
                        tx.send(send(AgentBody::CaptureOutcome(CaptureOutcome {
                            request_id: request.request_id,
                            event_id: Some(format!("{:032x}", unix_nanos() ^ n as u64)),
                            captured: request.kinds,
                            refused: Vec::new(),
                        }))).await?;
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Polls `check` every 20 ms until it is true or `timeout` passed.
async fn until<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while !check().await? {
        if Instant::now() >= deadline {
            bail!("{what} not within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Arc::new(Cli::parse());
    let api = ApiClient::with_options(&cli.api, &ClientOptions::default())?;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let ingests: Vec<String> = cli.ingest.split(',').map(str::to_owned).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..cli.agents {
        let ingest = ingests[n % ingests.len()].clone();
        tasks.spawn(agent(Arc::clone(&cli), ingest, n, Arc::clone(&seen)));
    }
    let deadline = Instant::now() + cli.timeout;
    loop {
        if let Some(Ok(Err(err))) = tasks.try_join_next() {
            return Err(err);
        }
        let list = api.instances(&cli.service).await.unwrap_or_default();
        if list.iter().filter(|i| i.connected == Some(true)).count() >= cli.agents {
            break;
        }
        if Instant::now() >= deadline {
            bail!("not every agent connected within {:?}", cli.timeout);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (mut rule_last, mut rule_api, mut cap_answer, mut cap_last, mut cap_api) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..cli.rounds {
        let t0 = Instant::now();
        let set = api
            .set_rules(
                &cli.service,
                &RulesEditJson {
                    selector: String::new(),
                    rules: [(
                        "cpu".to_owned(),
                        format!("abs={},cooldown=1m", 80 + round % 15),
                    )]
                    .into(),
                    by: "controlgen".to_owned(),
                    note: String::new(),
                },
            )
            .await?;
        until(cli.timeout, "the version on every instance", || async {
            let list = api.instances(&cli.service).await?;
            Ok(list
                .iter()
                .filter(|i| i.rules_version == Some(set.version))
                .count()
                >= cli.agents)
        })
        .await?;
        rule_api.push(ms(t0.elapsed()));
        let last = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            s.versions
                .values()
                .filter(|(v, _)| *v == set.version)
                .map(|(_, at)| *at)
                .max()
        };
        rule_last.push(last.map_or(0.0, |at| ms(at - t0)));

        // The collector takes one request of a service every `[control]
        // capture_min_interval`: a round sooner waits its turn (not timed).
        let waiting = Instant::now();
        let target = CaptureTarget {
            kinds: vec!["threads".to_owned()],
            selector: String::new(),
            instance: None,
            cpu_duration: None,
            by: "controlgen".to_owned(),
        };
        let (t0, asked) = loop {
            let t0 = Instant::now();
            match api.capture(&cli.service, &target).await {
                Err(ApiClientError::Api { status: 429, .. }) if waiting.elapsed() < cli.timeout => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                answer => break (t0, answer?),
            }
        };
        cap_answer.push(ms(t0.elapsed()));
        until(cli.timeout, "every agent's answer", || async {
            let d = api.capture_detail(&asked.request_id).await?;
            Ok(d.request.captured as usize >= cli.agents)
        })
        .await?;
        cap_api.push(ms(t0.elapsed()));
        let last = {
            let s = seen.lock().unwrap_or_else(|p| p.into_inner());
            s.requests
                .iter()
                .filter(|((_, id), _)| *id == asked.request_id)
                .map(|(_, at)| *at)
                .max()
        };
        cap_last.push(last.map_or(0.0, |at| ms(at - t0)));
        if !cli.json {
            println!(
                "round {round}: rule v{} last agent {:.0} ms, on every instance {:.0} ms; capture asked {} in {:.0} ms, last agent {:.0} ms, every answer {:.0} ms",
                set.version,
                rule_last[round],
                rule_api[round],
                asked.instances.len(),
                cap_answer[round],
                cap_last[round],
                cap_api[round]
            );
        }
    }
    let report = serde_json::json!({
        "agents": cli.agents,
        "ingest_nodes": ingests.len(),
        "rounds": cli.rounds,
        "rule_last_agent_ms": median(rule_last),
        "rule_every_instance_ms": median(rule_api),
        "capture_answered_ms": median(cap_answer),
        "capture_last_agent_ms": median(cap_last),
        "capture_every_answer_ms": median(cap_api),
    });
    if cli.json {
        println!("{report}");
    } else {
        println!("medians: {report}");
    }
    tasks.abort_all();
    Ok(())
}
