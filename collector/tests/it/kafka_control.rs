//! Central control in the Kafka topology: two ingest nodes and one processor sharing a
//! store, real agent processes split between the ingest nodes. A rule change and a
//! capture request made through the processor's API (which holds no agent) reach the
//! agents on both ingest nodes; the answers and the profiles come back through Kafka.
#![cfg(feature = "kafka")]

use std::collections::BTreeSet;
use std::time::Duration;

use holmes_api::control::{CaptureJson, RulesJson};
use holmes_cli::api_client::ApiClient;
use holmes_collector::config::Role;
use holmes_collector::Server;

use crate::control::{all_report, cli_ok};
use crate::kafka::{brokers, kafka_section, role_config};
use crate::support::agent_process::AgentProcess;
use crate::support::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_captures_reach_agents_on_both_ingest_nodes() {
    let Some(brokers) = brokers() else { return };
    let dir = tempfile::tempdir().unwrap();
    let kafka = kafka_section(&brokers, "control");
    let ingest_a = Server::start(&role_config(Role::Ingest, dir.path(), &kafka))
        .await
        .unwrap();
    let ingest_b = Server::start(&role_config(Role::Ingest, dir.path(), &kafka))
        .await
        .unwrap();
    let process = Server::start(&role_config(Role::Process, dir.path(), &kafka))
        .await
        .unwrap();
    let url = format!("http://{}", process.http_addr());
    let api = ApiClient::new(&url).unwrap();
    let names = ["split-0", "split-1", "split-2", "split-3"];
    let mut agents: Vec<AgentProcess> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let node = if i % 2 == 0 { &ingest_a } else { &ingest_b };
            AgentProcess::start("split", n, node.grpc_addr(), "", &[])
        })
        .collect();
    // The instances are recorded by the ingest nodes, in the shared store.
    all_report(&api, "split", &names, 0).await;

    // A rule set through the processor's API reaches the agents of both ingest nodes.
    let set: RulesJson = serde_json::from_str(
        &cli_ok(
            &url,
            &[
                "--json",
                "rules",
                "set",
                "--service",
                "split",
                "cpu",
                "abs=97,cooldown=5m",
            ],
        )
        .await,
    )
    .unwrap();
    for a in &mut agents {
        a.rules_where("the rule set through the processor", |l| {
            l.starts_with(&format!("v={} ", set.version))
                && l.contains(" cpu=min=10,diff=25,abs=97,")
        })
        .await;
    }
    all_report(&api, "split", &names, set.version).await;

    // A capture asked of the processor reaches all four, through both ingest nodes.
    let asked: CaptureJson = serde_json::from_str(
        &cli_ok(
            &url,
            &[
                "--json",
                "capture",
                "--service",
                "split",
                "--kind",
                "threads",
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(asked.instances, names, "{asked:?}");
    assert_eq!(asked.nodes.len(), 2, "both ingest nodes asked: {asked:?}");
    assert!(asked.pending_nodes.is_empty(), "{asked:?}");
    let detail = eventually(
        Duration::from_secs(90),
        "four answers and four thread dumps, through Kafka",
        || async {
            let d = api.capture_detail(&asked.request_id).await.ok()?;
            (d.request.captured == 4 && d.profiles.len() == 4).then_some(d)
        },
    )
    .await;
    let from: BTreeSet<&str> = detail
        .profiles
        .iter()
        .map(|p| p.instance.as_str())
        .collect();
    assert_eq!(from, names.into_iter().collect());
    let by_node: BTreeSet<Option<&str>> =
        detail.instances.iter().map(|i| i.node.as_deref()).collect();
    assert_eq!(by_node.len(), 2, "{detail:?}");
    for a in agents {
        a.stop().await;
    }
    for s in [ingest_a, ingest_b, process] {
        s.shutdown().await;
    }
}
