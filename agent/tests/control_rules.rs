//! Rules pushed by a collector, against a real collector's side of holmes.v1 on
//! loopback: versioned, answered with `ConfigApplied`, reported in hellos and
//! heartbeats; a replacing update without a metric gives the agent its own rule back;
//! an older version changes nothing; a rule below the host's floors is refused with the
//! field named. Also what the agent says about itself in its hello (Kubernetes labels).

use std::time::Duration;

use holmes_agent::{Holmes, Metric, Rule};
use holmes_proto::rule_spec;
use holmes_proto::{AgentBody, CollectorMessage, ConfigApplied, ConfigUpdate, RuleConfig};

mod support;
use support::collector::TestCollector;
use support::{eventually, quiet_agent};

fn rule(metric: Metric, spec: &str) -> RuleConfig {
    let base = rule_spec::default_rule(metric).unwrap();
    rule_spec::apply(&base, spec).unwrap()
}

fn update(version: u64, replace: bool, rules: Vec<RuleConfig>) -> CollectorMessage {
    CollectorMessage::ConfigUpdate(ConfigUpdate {
        version,
        rules,
        replace,
        pause: None,
    })
}

fn applied(c: &TestCollector, version: u64) -> ConfigApplied {
    c.wait_for(&format!("ConfigApplied {version}"), |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::ConfigApplied(a) if a.version == version => Some(a.clone()),
            _ => None,
        })
    })
}

/// The hello of stream `n`.
fn hello(c: &TestCollector, n: usize) -> holmes_proto::Hello {
    c.wait_for(&format!("the hello of stream {n}"), |msgs| {
        msgs.iter().find_map(|(stream, m)| match &m.body {
            AgentBody::Hello(h) if *stream == n => Some(h.clone()),
            _ => None,
        })
    })
}

#[test]
fn pushed_rules_are_versioned_and_a_deleted_central_rule_gives_the_agent_its_own_back() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let agent = quiet_agent("rules-push", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .start()
        .unwrap();
    let own = agent.rules()[&Metric::Threads];
    assert!(!own.is_enabled());
    assert_eq!(hello(&c, 0).rules_version, 0, "the agent's own rules only");

    // A central threads rule that fires on the second sample, once (cooldown 1 h).
    let central = rule(Metric::Threads, "min=1,abs=1,window=2,cooldown=1h");
    assert_eq!(c.send(&update(3, true, vec![central.clone()])), 1);
    assert_eq!(
        applied(&c, 3),
        ConfigApplied {
            version: 3,
            refused: vec![]
        }
    );
    assert_eq!(agent.stats().rules_version, 3);
    let fired = c.wait_for("a threads trigger", |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::Trigger(t) if t.metric == Some(Metric::Threads) => Some(t.clone()),
            _ => None,
        })
    });
    assert_eq!(
        fired.rule,
        Some(central.clone()),
        "fired by the pushed rule"
    );

    // A new stream announces the version in force, and the rules with it.
    c.drop_streams();
    let again = hello(&c, 1);
    assert_eq!(again.rules_version, 3);
    assert!(again.rules.contains(&central), "{:?}", again.rules);

    // An older version changes nothing and gets no answer; the central rule is then
    // deleted (a replacing update without it): the agent's own rule is back.
    c.send(&update(2, true, vec![rule(Metric::Threads, "abs=5")]));
    c.send(&update(4, true, vec![]));
    applied(&c, 4);
    let versions: Vec<u64> = c.bodies(|b| match b {
        AgentBody::ConfigApplied(a) => Some(a.version),
        _ => None,
    });
    assert_eq!(versions, [3, 4], "no answer to the older update");
    assert_eq!(agent.rules()[&Metric::Threads], own);
    let stats = agent.stop();
    assert_eq!(stats.rules_version, 4);
}

#[test]
fn heartbeats_carry_the_rules_version_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    c.on_connect(update(7, true, vec![rule(Metric::MemoryPercent, "abs=95")]));
    // One metric window at once, then nothing to send for an hour: heartbeats.
    let agent = quiet_agent("rules-heartbeat", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_secs(3600))
        .start()
        .unwrap();
    applied(&c, 7);
    let beat = c.wait_for("a heartbeat", |msgs| {
        msgs.iter().find_map(|(_, m)| match &m.body {
            AgentBody::Heartbeat(h) => Some(*h),
            _ => None,
        })
    });
    assert_eq!(beat.rules_version, 7);
    agent.stop();
}

#[test]
fn a_pushed_rule_below_the_hosts_floors_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let agent = quiet_agent("rules-floors", dir.path())
        .collector(c.url())
        .send_interval(Duration::from_millis(100))
        .min_pushed_cooldown(Duration::from_secs(120))
        .start()
        .unwrap();
    let before = agent.rules();
    let memory = rule(Metric::MemoryPercent, "abs=95,cooldown=5m");
    hello(&c, 0);
    c.send(&update(
        1,
        false,
        vec![
            rule(Metric::CpuPercent, "abs=1,cooldown=1m"),
            rule(Metric::Threads, "abs=1,window=1"),
            memory.clone(),
        ],
    ));
    let answer = applied(&c, 1);
    let refused: Vec<(Metric, &str)> = answer
        .refused
        .iter()
        .map(|r| (r.metric, r.reason.as_str()))
        .collect();
    assert_eq!(
        refused,
        [
            (
                Metric::CpuPercent,
                "cooldown 1m is below the agent's floor of 2m (HOLMES_MIN_PUSHED_COOLDOWN)"
            ),
            (
                Metric::Threads,
                "window 1 is below the agent's floor of 2 (HOLMES_MIN_PUSHED_WINDOW)"
            ),
        ]
    );
    let after = agent.rules();
    assert_eq!(after[&Metric::CpuPercent], before[&Metric::CpuPercent]);
    assert_eq!(after[&Metric::Threads], before[&Metric::Threads]);
    assert_eq!(
        after[&Metric::MemoryPercent],
        Rule::new()
            .min(memory.min)
            .diff(memory.diff)
            .abs(95.0)
            .cooldown(Duration::from_secs(300)),
        "the rule above the floors is applied"
    );
    // Still the version applied: the collector shows which rules did not take.
    assert_eq!(agent.stop().rules_version, 1);
}

#[test]
fn the_hello_carries_kubernetes_labels_under_which_explicit_labels_win() {
    let dir = tempfile::tempdir().unwrap();
    let c = TestCollector::start();
    let env = |var: &str| {
        match var {
            "POD_NAME" => Some("checkout-7f9c5d8b6-x2x4q"),
            "POD_NAMESPACE" => Some("shop"),
            "NODE_NAME" => Some("node-3"),
            "OTEL_RESOURCE_ATTRIBUTES" => {
                Some("service.version=1.4.2,k8s.deployment.name=checkout")
            }
            "HOLMES_LABELS" => Some("k8s.node.name=pinned,zone=a"),
            _ => None,
        }
        .map(str::to_owned)
    };
    let agent = Holmes::builder()
        .service("labels")
        .collector(c.url())
        .dump_dir(dir.path())
        .prewarm_symbols(false)
        .label("zone", "b")
        .with_env_from(env)
        .unwrap()
        .start()
        .unwrap();
    let labels = hello(&c, 0).labels;
    let labels: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("k8s.deployment.name", "checkout"),
            ("k8s.namespace.name", "shop"),
            ("k8s.node.name", "pinned"),
            ("k8s.pod.name", "checkout-7f9c5d8b6-x2x4q"),
            ("service.version", "1.4.2"),
            ("zone", "b"),
        ]
    );
    eventually(Duration::from_secs(30), "a connection", || {
        agent.stats().connected
    });
    agent.stop();
}
