//! Rules from the configuration file seed the central rules: they reach the agents of
//! their service, and no other service's agents.

use std::time::Duration;

use crate::support::raw_agent::{hello, RawAgent};
use crate::support::{eventually, Backend};
use holmes_agent::{Holmes, Rule};
use holmes_api::control::RulesEditJson;
use holmes_api::{RuleJson, TriggersJson};
use holmes_cli::api_client::ApiClient;
use holmes_collector::config::{ConfigError, StoreKind};
use holmes_collector::server::ServeError;
use holmes_collector::Server;
use holmes_proto::rule_spec::default_rule;
use holmes_proto::{
    AgentBody, CollectorMessage, ConfigUpdate, Metric, MetricSeries, MetricWindow, Sample,
};

fn window() -> AgentBody {
    AgentBody::MetricWindow(MetricWindow {
        series: vec![MetricSeries {
            metric: Metric::CpuPercent,
            samples: vec![Sample {
                unix_nanos: holmes_collector::clock::unix_nanos_now(),
                value: 12.5,
            }],
        }],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_rules_reach_the_agents_of_their_service_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.rules = [(
        "checkout".to_owned(),
        [("cpu".to_owned(), "abs=90".to_owned())].into(),
    )]
    .into();
    let server = Server::start(&config).await.unwrap();
    let addr = server.grpc_addr();

    // The file seeds the central rules: version 1, the text over the metric's default
    // rule (as HOLMES_RULE_CPU=abs=90 would be), the whole central set (`replace`), so
    // whatever the agent reported of its own CPU rule does not leak into it.
    let mut reported = default_rule(Metric::CpuPercent).unwrap();
    reported.abs = 70.0;
    reported.diff = 33.0;
    reported.cooldown = Duration::from_secs(5);
    reported.enabled = false;
    let memory = default_rule(Metric::MemoryPercent).unwrap();
    let mut want = default_rule(Metric::CpuPercent).unwrap();
    want.abs = 90.0;
    let update = CollectorMessage::ConfigUpdate(ConfigUpdate {
        version: 1,
        rules: vec![want],
        replace: true,
        pause: None,
    });
    let mut agent = RawAgent::connect(
        addr,
        hello("checkout", "checkout-0", vec![memory, reported.clone()]),
    )
    .await;
    agent.send(1, window()).await;
    assert_eq!(
        agent.next().await,
        update,
        "the update comes first, before any ack"
    );
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
    let mut bare = RawAgent::connect(addr, hello("checkout", "checkout-1", vec![])).await;
    assert_eq!(bare.next().await, update);

    // A service without central rules gets no update: its first message is an ack.
    let mut cart = RawAgent::connect(addr, hello("cart", "cart-0", vec![reported])).await;
    cart.send(1, window()).await;
    assert_eq!(cart.next().await, CollectorMessage::Ack { seq: 1 });
    server.shutdown().await;

    // Started again with the same file, nothing is seeded twice; with the file changed,
    // the seed follows it (the rule was the file's, nobody changed it through the API).
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    assert_eq!(
        api.rule_history("checkout", 10)
            .await
            .unwrap()
            .changes
            .len(),
        1
    );
    server.shutdown().await;
    config.rules = [(
        "checkout".to_owned(),
        [("cpu".to_owned(), "abs=95".to_owned())].into(),
    )]
    .into();
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let history = api.rule_history("checkout", 10).await.unwrap();
    let texts: Vec<(u64, Option<&str>, &str)> = history
        .changes
        .iter()
        .map(|c| (c.version, c.text.as_deref(), c.by.as_str()))
        .collect();
    assert_eq!(
        texts,
        vec![
            (2, Some("abs=95"), "config file"),
            (1, Some("abs=90"), "config file")
        ]
    );
    // Once an operator changed the rule through the API, the file no longer touches it.
    let edit = RulesEditJson {
        rules: [("cpu".to_owned(), "abs=80".to_owned())].into(),
        by: "alice".to_owned(),
        ..RulesEditJson::default()
    };
    assert_eq!(api.set_rules("checkout", &edit).await.unwrap().version, 3);
    server.shutdown().await;
    config.rules = [(
        "checkout".to_owned(),
        [("cpu".to_owned(), "abs=99".to_owned())].into(),
    )]
    .into();
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let rules = api.rules("checkout").await.unwrap();
    assert_eq!(rules.version, 3);
    assert_eq!(
        (rules.rules[0].text.as_str(), rules.rules[0].by.as_str()),
        ("abs=80", "alice")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_collector_with_a_bad_rule_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.store = StoreKind::Sqlite;
    config.rules = [(
        "checkout".to_owned(),
        [("heap_bytes".to_owned(), "abs=1".to_owned())].into(),
    )]
    .into();
    let err = Server::start(&config).await.unwrap_err();
    assert!(
        matches!(err, ServeError::Config(ConfigError::Rules(_))),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(
            "rules.checkout.heap_bytes = \"abs=1\": metric \"heap_bytes\" has no trigger rule"
        ),
        "{err}"
    );
    let store = holmes_collector::server::open_store(&config).await.unwrap();
    let err = Server::start_with_store(&config, store).await.unwrap_err();
    assert!(
        matches!(err, ServeError::Config(ConfigError::Rules(_))),
        "{err:?}"
    );
}

/// With the real agent: a rule pushed from the configuration switches on a thread rule
/// the agent started with disabled, the rule fires, and its trigger is stored and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_rule_makes_a_real_agent_fire_and_its_trigger_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.rules = [(
        "checkout".to_owned(),
        [(
            "threads".to_owned(),
            "min=1,abs=1,window=2,cooldown=1h".to_owned(),
        )]
        .into(),
    )]
    .into();
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let agent = Holmes::builder()
        .service("checkout")
        .instance("checkout-real")
        .collector(format!("http://{}", server.grpc_addr()))
        .thread_rule(Rule::new().enabled(false))
        .collect_interval(Duration::from_millis(100))
        .send_interval(Duration::from_millis(100))
        // stop() waits for the last window's acknowledgement; a loaded machine can take
        // longer than the default 3 s, and the test checks that nothing is lost.
        .flush_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    let fired = eventually(Duration::from_secs(15), "a threads trigger", || async {
        let t: TriggersJson = api
            .get("/api/v1/services/checkout/triggers?since=5m&metric=threads")
            .await
            .ok()?;
        (!t.triggers.is_empty()).then_some(t)
    })
    .await;
    let stats = agent.stop();
    assert_eq!(fired.triggers.len(), 1, "cooldown=1h: {fired:?}");
    let t = &fired.triggers[0];
    assert_eq!(t.instance, "checkout-real");
    assert_eq!(t.reason, "abs");
    assert!(t.current >= 2.0, "{t:?}");
    assert_eq!(t.window.len(), 2, "{t:?}");
    assert_eq!(t.window.last().map(|p| p.value), Some(t.current));
    // The text over the threads metric's default rule: its diff (25) stays.
    assert_eq!(
        t.rule,
        Some(RuleJson {
            enabled: true,
            min: 1.0,
            diff: Some(25.0),
            abs: Some(1.0),
            max: 0.0,
            cooldown_ms: 3_600_000,
            window: 2,
        })
    );
    assert_eq!(t.event_id.len(), 32, "{t:?}");
    assert_eq!(stats.unacked, 0, "the trigger was acknowledged: {stats:?}");
    server.shutdown().await;
}
