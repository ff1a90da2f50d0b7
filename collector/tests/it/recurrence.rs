//! Fingerprints and recurrence: an incident whose top suspects are those of an earlier
//! incident of its service lists it, with the versions its instances ran, and on-call
//! reads "seen 2 times since version 1.4.2".

use std::time::Duration;

use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::{eventually, holmes_cli, Backend};
use holmes_cli::api_client::ApiClient;
use holmes_collector::clock::unix_nanos_now;
use holmes_proto::{AgentBody, CollectorMessage, Metric, ProfileKind, TriggerEvent, TriggerReason};

const SERVICE: &str = "recurring";

/// One instance running `version` fires once and sends the same CPU profile every
/// time (the same problem); returns the incident it landed in, once its suspects are
/// stored.
async fn spike(
    grpc: std::net::SocketAddr,
    api: &ApiClient,
    n: u64,
    version: &str,
) -> holmes_api::IncidentDetailJson {
    let mut h = hello(SERVICE, &format!("{SERVICE}-{n}"), vec![]);
    h.labels.insert("version".to_owned(), version.to_owned());
    let mut agent = RawAgent::connect(grpc, h).await;
    let at = unix_nanos_now();
    let event = format!("ev-{n}");
    agent
        .send(
            1,
            AgentBody::Trigger(TriggerEvent {
                event_id: event.clone(),
                metric: Some(Metric::CpuPercent),
                reason: TriggerReason::Abs,
                current: 97.0,
                window: Vec::new(),
                rule: None,
                unix_nanos: at,
                planned: vec![ProfileKind::Cpu],
                request_id: None,
            }),
        )
        .await;
    let profile = holmes_devtools::synthetic::ProfileFactory::new(50).cpu_profile(7, at);
    let id = format!("{:032x}", 0x7ec0_0000 + n);
    let chunks = profile_chunks(&id, &event, ProfileKind::Cpu, at, &profile, 1 << 20);
    agent
        .send(2, AgentBody::ProfileChunk(chunks[0].clone()))
        .await;
    while !matches!(agent.next().await, CollectorMessage::Ack { seq: 2 }) {}
    eventually(
        Duration::from_secs(30),
        "the incident with its suspects",
        || async {
            let list = api.incidents(Some(SERVICE), "1h", None).await.ok()?;
            let i = list
                .incidents
                .iter()
                .find(|i| i.event_ids.contains(&event))?;
            let d = api.incident(&i.incident_id).await.ok()?;
            (d.suspects_computed.is_some() && !d.suspects.is_empty()).then_some(d)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_lists_the_earlier_ones_with_its_fingerprint_and_their_versions() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.incidents.quiet = Duration::from_secs(1);
    config.incidents.controls_per_incident = 0;
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();

    let first = spike(server.grpc_addr(), &api, 1, "1.4.2").await;
    assert!(
        first.earlier.is_empty(),
        "nothing before the first: {first:?}"
    );
    assert_eq!(first.versions, ["1.4.2"]);
    let fingerprint = first
        .fingerprint
        .clone()
        .expect("a fingerprint with suspects");
    // It goes quiet and resolves; the same problem comes back in the next version.
    eventually(
        Duration::from_secs(30),
        "the first incident resolved",
        || async {
            let d = api.incident(&first.incident.incident_id).await.ok()?;
            (d.incident.status == "resolved").then_some(())
        },
    )
    .await;
    let second = spike(server.grpc_addr(), &api, 2, "1.4.3").await;
    assert_ne!(second.incident.incident_id, first.incident.incident_id);
    assert_eq!(second.fingerprint.as_ref(), Some(&fingerprint));
    assert_eq!(second.versions, ["1.4.3"]);
    assert_eq!(
        second
            .earlier
            .iter()
            .map(|e| (e.incident_id.as_str(), e.versions.clone()))
            .collect::<Vec<_>>(),
        [(
            first.incident.incident_id.as_str(),
            vec!["1.4.2".to_owned()]
        )]
    );
    assert_eq!(second.earlier[0].first_event, first.incident.first_event);

    let out = holmes_cli(&["--api", &api_url, "incident", &second.incident.incident_id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("seen 2 times since version 1.4.2"), "{text}");
    assert!(text.contains(&first.incident.incident_id), "{text}");
    server.shutdown().await;
}
