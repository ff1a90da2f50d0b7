//! The fleet's capture budget: an incident keeps `max_profiles_per_incident` captures of
//! each kind from its sick instances; the agents of the rest are told not to send them,
//! what they send anyway is acknowledged and not stored, and the incident counts them.

use std::time::Duration;

use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::{eventually, holmes_cli, Backend};
use holmes_collector::clock::unix_nanos_now;
use holmes_proto::{
    AgentBody, CollectorMessage, Metric, ProfileKind, SkipProfiles, TriggerEvent, TriggerReason,
};

const SERVICE: &str = "budget";
const BUDGET: usize = 2;
const INSTANCES: usize = 5;
const PLANNED: [ProfileKind; 2] = [ProfileKind::Cpu, ProfileKind::Threads];

fn trigger(n: usize, at: u64) -> TriggerEvent {
    TriggerEvent {
        event_id: format!("ev-{n}"),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 95.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: at,
        planned: PLANNED.to_vec(),
        request_id: None,
    }
}

/// What the collector sends up to the acknowledgement of `seq`: the skips among it.
async fn skips_until_ack(agent: &mut RawAgent, seq: u64) -> Vec<SkipProfiles> {
    let mut skips = Vec::new();
    loop {
        match agent.next().await {
            CollectorMessage::Ack { seq: acked } if acked >= seq => return skips,
            CollectorMessage::SkipProfiles(skip) => skips.push(skip),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_spike_keeps_the_budget_and_tells_the_other_agents_not_to_send() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.incidents.max_profiles_per_incident = BUDGET;
    config.incidents.controls_per_incident = 0;
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = holmes_cli::api_client::ApiClient::new(&api_url).unwrap();

    let mut agents = Vec::new();
    for n in 0..INSTANCES {
        let instance = format!("{SERVICE}-{n}");
        agents.push(RawAgent::connect(server.grpc_addr(), hello(SERVICE, &instance, vec![])).await);
    }
    // The spike: every instance fires within a second, each planning CPU and threads.
    let at = unix_nanos_now();
    let mut told = Vec::new();
    for (n, agent) in agents.iter_mut().enumerate() {
        agent
            .send(1, AgentBody::Trigger(trigger(n, at + n as u64)))
            .await;
        told.push(skips_until_ack(agent, 1).await);
    }
    for (n, skips) in told.iter().enumerate() {
        let expected = if n < BUDGET {
            Vec::new()
        } else {
            vec![SkipProfiles {
                event_id: format!("ev-{n}"),
                kinds: PLANNED.to_vec(),
            }]
        };
        assert_eq!(skips, &expected, "what agent {n} was told");
    }

    // Every agent sends its CPU profile anyway (as one whose capture was under way
    // would): all are acknowledged, only those within the budget are stored.
    let factory = holmes_devtools::synthetic::ProfileFactory::new(20);
    for (n, agent) in agents.iter_mut().enumerate() {
        let profile = factory.cpu_profile(n as u64, at);
        let id = format!("{:032x}", 0x00b0_d6e7_0000 + n);
        let chunks = profile_chunks(
            &id,
            &format!("ev-{n}"),
            ProfileKind::Cpu,
            at,
            &profile,
            1 << 20,
        );
        agent
            .send(2, AgentBody::ProfileChunk(chunks[0].clone()))
            .await;
        assert_eq!(skips_until_ack(agent, 2).await, Vec::new());
    }
    // An agent resending its trigger (a lost ack) is told again, and nothing is counted
    // twice.
    agents[4]
        .send(3, AgentBody::Trigger(trigger(4, at + 4)))
        .await;
    assert_eq!(
        skips_until_ack(&mut agents[4], 3).await,
        [SkipProfiles {
            event_id: "ev-4".to_owned(),
            kinds: PLANNED.to_vec(),
        }]
    );

    let skipped = ((INSTANCES - BUDGET) * PLANNED.len()) as u64;
    let incident = eventually(
        Duration::from_secs(20),
        "one incident with every instance",
        || async {
            let list = api.incidents(Some(SERVICE), "1h", None).await.ok()?;
            let i = list.incidents.first()?.clone();
            (list.incidents.len() == 1
                && i.instances.len() == INSTANCES
                && i.skipped_captures == skipped)
                .then_some(i)
        },
    )
    .await;
    let detail = api.incident(&incident.incident_id).await.unwrap();
    let mut stored: Vec<(String, String)> = detail
        .profiles
        .iter()
        .map(|p| (p.instance.clone(), p.kind.clone()))
        .collect();
    stored.sort();
    assert_eq!(
        stored,
        (0..BUDGET)
            .map(|n| (format!("{SERVICE}-{n}"), "cpu".to_owned()))
            .collect::<Vec<_>>(),
        "only the captures within the budget are stored"
    );
    let listed = api.profiles(SERVICE, "1h").await.unwrap();
    assert_eq!(
        listed.profiles.len(),
        BUDGET,
        "nothing else of the service is stored"
    );

    // On-call sees it.
    let out = holmes_cli(&["--api", &api_url, "incident", &incident.incident_id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("{skipped} captures skipped by the budget")),
        "{text}"
    );
    // The collector's metrics count them (at least these: other tests of this process
    // share the counters).
    let metrics = String::from_utf8(api.get_raw("/metrics").await.unwrap().to_vec()).unwrap();
    let counted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("holmes_captures_skipped_total{reason=\"budget\"} "))
        .unwrap_or_else(|| panic!("no budget skips counted in {metrics}"))
        .parse()
        .unwrap();
    assert!(counted >= skipped, "{counted} counted");
    server.shutdown().await;
}
