//! Central control with real agent processes ([`AgentProcess`]) and the real `holmes`
//! CLI: rules set, refused and deleted while the agents run; capture requests that reach
//! every agent (or a selector's, or one) with each answer shown; pauses.

use std::collections::BTreeSet;
use std::time::Duration;

use holmes_api::control::{CaptureDetailJson, CaptureJson, RuleHistoryJson, RulesJson};
use holmes_api::{IncidentsJson, InstanceJson, TriggersJson};
use holmes_cli::api_client::ApiClient;

use crate::support::agent_process::AgentProcess;
use crate::support::{eventually, holmes_cli, on_each_backend, Backend};

on_each_backend!(rules_set_through_the_cli_reach_running_agents);

/// Runs the CLI against `api` with `args`; its standard output, or a failure with its
/// standard error.
pub(crate) async fn cli_ok(api: &str, args: &[&str]) -> String {
    let mut all = vec!["--api", api];
    all.extend_from_slice(args);
    let out = holmes_cli(&all).await;
    assert!(
        out.status.success(),
        "holmes {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The CLI's error for `args`, which must fail.
async fn cli_err(api: &str, args: &[&str]) -> String {
    let mut all = vec!["--api", api];
    all.extend_from_slice(args);
    let out = holmes_cli(&all).await;
    assert!(!out.status.success(), "holmes {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).trim().to_owned()
}

/// Waits until every instance named has reported `version` (connected, nothing
/// pending); returns the instances list.
pub(crate) async fn all_report(
    api: &ApiClient,
    service: &str,
    instances: &[&str],
    version: u64,
) -> Vec<InstanceJson> {
    eventually(
        Duration::from_secs(60),
        &format!("{instances:?} reporting rules version {version}"),
        || async {
            let list = api.instances(service).await.ok()?;
            instances
                .iter()
                .all(|name| {
                    list.iter().any(|i| {
                        i.instance == *name
                            && i.connected == Some(true)
                            && i.rules_version == Some(version)
                            && !i.rules_pending
                    })
                })
                .then_some(list)
        },
    )
    .await
}

/// A rule set through the CLI makes three running agents fire, without restarting
/// anything; the instances list shows the new version on all three; a selector's rule
/// reaches only its agents, one of which refuses it (its host's floor) and says so;
/// deleting the rule gives the agents their own back; the history says who did what.
async fn rules_set_through_the_cli_reach_running_agents(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&url).unwrap();
    let grpc = server.grpc_addr();
    let mut agents = vec![
        AgentProcess::start("fleet", "fleet-0", grpc, "zone=a", &[]),
        AgentProcess::start("fleet", "fleet-1", grpc, "zone=a", &[]),
        AgentProcess::start(
            "fleet",
            "fleet-2",
            grpc,
            "zone=b",
            &[("HOLMES_MIN_PUSHED_COOLDOWN", "1h")],
        ),
    ];
    let names = ["fleet-0", "fleet-1", "fleet-2"];
    for a in &mut agents {
        a.rules_where("its own rules", |l| {
            l.starts_with("v=0 ") && l.ends_with("threads=off")
        })
        .await;
    }
    all_report(&api, "fleet", &names, 0).await;

    // Rules every agent would refuse are refused here, in the agents' words.
    assert_eq!(
        cli_err(&url, &["rules", "set", "--service", "fleet", "cpu", "cooldown=1s"]).await,
        "error: rule cpu \"cooldown=1s\": cooldown 1s is below the agent's floor of 10s (HOLMES_MIN_PUSHED_COOLDOWN) (HTTP 400)"
    );
    let err = cli_err(
        &url,
        &["rules", "set", "--service", "fleet", "cpu", "abs=lots"],
    )
    .await;
    assert!(
        err.contains("rule cpu \"abs=lots\": abs=\"lots\": expected a number"),
        "{err}"
    );
    let err = cli_err(
        &url,
        &["rules", "set", "--service", "fleet", "rss", "abs=1"],
    )
    .await;
    assert!(err.contains("metric \"rss\" has no trigger rule"), "{err}");

    // Set through the CLI: every running agent takes it and fires.
    let set: RulesJson = serde_json::from_str(
        &cli_ok(
            &url,
            &[
                "--json",
                "rules",
                "set",
                "--service",
                "fleet",
                "--by",
                "oncall",
                "--note",
                "catch the thread pile-up",
                "threads",
                "min=1,abs=1,window=2,cooldown=1h",
            ],
        )
        .await,
    )
    .unwrap();
    let v1 = set.version;
    assert!(v1 > 0, "{set:?}");
    assert_eq!(set.rules.len(), 1);
    assert_eq!(set.rules[0].rule.abs, Some(1.0));
    for a in &mut agents {
        a.rules_where("the pushed threads rule", |l| {
            l.starts_with(&format!("v={v1} "))
                && l.ends_with("threads=min=1,diff=25,abs=1,max=0,cooldown=1h,window=2")
        })
        .await;
    }
    let fired = eventually(
        Duration::from_secs(60),
        "a threads trigger from each agent",
        || async {
            let t: TriggersJson = api
                .get("/api/v1/services/fleet/triggers?since=5m&metric=threads")
                .await
                .ok()?;
            let from: BTreeSet<String> = t.triggers.iter().map(|t| t.instance.clone()).collect();
            (from.len() == 3).then_some(from)
        },
    )
    .await;
    assert_eq!(fired, names.iter().map(|n| (*n).to_owned()).collect());
    all_report(&api, "fleet", &names, v1).await;
    let table = cli_ok(&url, &["instances", "--service", "fleet"]).await;
    for name in names {
        let row = table.lines().find(|l| l.starts_with(name)).unwrap_or("");
        assert!(row.contains(&format!("v{v1} ")), "{table}");
    }

    // A selector's layer reaches only its agents; fleet-2's host allows no cooldown
    // under an hour, so it refuses the rule, keeps its own, and the collector shows why.
    let v2 = serde_json::from_str::<RulesJson>(
        &cli_ok(
            &url,
            &[
                "--json",
                "rules",
                "set",
                "--service",
                "fleet",
                "--selector",
                "zone=b",
                "cpu",
                "abs=95,cooldown=2m",
            ],
        )
        .await,
    )
    .unwrap()
    .version;
    let list = all_report(&api, "fleet", &names, v2).await;
    let refused: Vec<(&str, &str, &str)> = list
        .iter()
        .flat_map(|i| {
            i.rules_refused
                .iter()
                .map(move |r| (i.instance.as_str(), r.metric.as_str(), r.reason.as_str()))
        })
        .collect();
    assert_eq!(
        refused,
        vec![(
            "fleet-2",
            "cpu",
            "cooldown 2m is below the agent's floor of 1h (HOLMES_MIN_PUSHED_COOLDOWN)"
        )]
    );
    for a in &mut agents {
        let line = a
            .rules_where("the selector's version", |l| {
                l.starts_with(&format!("v={v2} "))
            })
            .await;
        assert!(line.contains(" cpu=off "), "{}: {line}", a.instance);
    }
    let table = cli_ok(&url, &["instances", "--service", "fleet"]).await;
    assert!(
        table
            .contains("fleet-2 refused its cpu rule: cooldown 2m is below the agent's floor of 1h"),
        "{table}"
    );

    // Deleting the central rule gives every agent its own back.
    let deleted = cli_ok(&url, &["rules", "delete", "--service", "fleet", "threads"]).await;
    assert!(
        deleted.contains("zone=b"),
        "the selector's rule stays: {deleted}"
    );
    let v3 = api.rules("fleet").await.unwrap().version;
    assert!(v3 > v2);
    for a in &mut agents {
        a.rules_where("its own threads rule back", |l| {
            l.starts_with(&format!("v={v3} ")) && l.ends_with("threads=off")
        })
        .await;
    }
    all_report(&api, "fleet", &names, v3).await;

    // The history, newest first, with who and why.
    let history: RuleHistoryJson = serde_json::from_str(
        &cli_ok(&url, &["--json", "rules", "history", "--service", "fleet"]).await,
    )
    .unwrap();
    let changes: Vec<(u64, &str, &str, Option<&str>)> = history
        .changes
        .iter()
        .map(|c| {
            (
                c.version,
                c.selector.as_str(),
                c.metric.as_str(),
                c.text.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (v3, "", "threads", None),
            (v2, "zone=b", "cpu", Some("abs=95,cooldown=2m")),
            (v1, "", "threads", Some("min=1,abs=1,window=2,cooldown=1h")),
        ]
    );
    assert_eq!(history.changes[2].by, "oncall");
    assert_eq!(history.changes[2].note, "catch the thread pile-up");
    let text = cli_ok(&url, &["rules", "history", "--service", "fleet"]).await;
    assert!(
        text.contains("deleted (agents' own rule)") && text.contains("oncall"),
        "{text}"
    );
    for a in agents {
        a.stop().await;
    }
    server.shutdown().await;
}

/// "Capture now" reaches every one of several running agents; each answer is shown —
/// captured with its event and profile, or refused with why (rate limit, a kind it
/// cannot capture) — and a selector or one instance narrows who is asked. The page
/// shows the requests, their answers per instance, and the rules with their history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_now_reaches_every_agent_and_each_answer_is_shown() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&url).unwrap();
    let grpc = server.grpc_addr();
    let names = ["fleet-0", "fleet-1", "fleet-2"];
    let agents: Vec<AgentProcess> = names
        .iter()
        .map(|n| {
            let zone = if *n == "fleet-2" { "zone=b" } else { "zone=a" };
            AgentProcess::start("fleet", n, grpc, zone, &[])
        })
        .collect();
    all_report(&api, "fleet", &names, 0).await;

    let first = capture_wait_for(&url, "fleet", &["--kind", "threads"]).await;
    assert_eq!(
        (
            first.request.asked,
            first.request.captured,
            first.request.pending
        ),
        (3, 3, 0),
        "{first:?}"
    );
    for i in &first.instances {
        assert_eq!(i.captured, vec!["threads"], "{i:?}");
        assert!(i.event_id.is_some() && i.refused.is_empty(), "{i:?}");
    }
    let id = first.request.request_id.clone();
    let detail = eventually(
        Duration::from_secs(60),
        "the three thread dumps under the request",
        || async {
            let d = api.capture_detail(&id).await.ok()?;
            (d.profiles.len() == 3).then_some(d)
        },
    )
    .await;
    let from: BTreeSet<&str> = detail
        .profiles
        .iter()
        .map(|p| p.instance.as_str())
        .collect();
    assert_eq!(from, names.into_iter().collect());
    assert!(detail
        .profiles
        .iter()
        .all(|p| p.kind == "threads" && p.download.is_some()));

    // Asked again at once: every agent refuses, rate-limited, and says so.
    let again = capture_wait_for(&url, "fleet", &["--kind", "threads"]).await;
    assert_eq!(
        (again.request.asked, again.request.refused),
        (3, 3),
        "{again:?}"
    );
    for i in &again.instances {
        assert_eq!(i.refused.len(), 1, "{i:?}");
        assert_eq!(i.refused[0].reason, "rate_limited", "{i:?}");
    }
    let shown = cli_ok(&url, &["capture", "show", &again.request.request_id]).await;
    for name in names {
        let row = shown.lines().find(|l| l.starts_with(name)).unwrap_or("");
        assert!(row.contains("threads rate_limited"), "{shown}");
    }

    // A selector asks only its agents; one instance only itself.
    let zone_b = capture_wait_for(&url, "fleet", &["--kind", "cpu", "--selector", "zone=b"]).await;
    let asked: Vec<&str> = zone_b
        .instances
        .iter()
        .map(|i| i.instance.as_str())
        .collect();
    assert_eq!(asked, vec!["fleet-2"]);
    assert_eq!(zone_b.instances[0].captured, vec!["cpu"], "{zone_b:?}");
    let one = capture_wait_for(&url, "fleet", &["--kind", "heap", "--instance", "fleet-0"]).await;
    let asked: Vec<&str> = one.instances.iter().map(|i| i.instance.as_str()).collect();
    assert_eq!(asked, vec!["fleet-0"]);
    assert_eq!(one.instances[0].refused[0].reason, "unsupported", "{one:?}");
    // Nobody matches: a clear 404, naming whom.
    assert_eq!(
        cli_err(
            &url,
            &[
                "capture",
                "--service",
                "fleet",
                "--kind",
                "cpu",
                "--selector",
                "zone=z"
            ]
        )
        .await,
        "error: no agent of service \"fleet\" matching zone=z is connected now (HTTP 404)"
    );
    let asked: CaptureJson = serde_json::from_str(
        &cli_ok(
            &url,
            &["--json", "capture", "--service", "fleet", "--kind", "tasks"],
        )
        .await,
    )
    .unwrap();
    assert_eq!(asked.instances, names);
    // Every request is listed, the one nobody matched included (asked 0).
    let list = cli_ok(&url, &["captures", "--service", "fleet"]).await;
    let rows: Vec<&str> = list.lines().filter(|l| l.starts_with("20")).collect();
    assert_eq!(rows.len(), 6, "{list}");
    assert!(
        list.contains(&id) && list.contains(&again.request.request_id),
        "{list}"
    );

    // The page: the service's capture requests and rules, and one request's answers.
    api.set_rules(
        "fleet",
        &holmes_api::control::RulesEditJson {
            rules: [("cpu".to_owned(), "abs=95".to_owned())].into(),
            by: "pager".to_owned(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    if let Some(chromium) = crate::support::chromium() {
        let page = format!("{url}/ui/services/fleet");
        let dom = crate::support::chromium_run(&chromium, &page, &["--dump-dom"]).await;
        assert!(dom.contains(r#"data-ready="true""#), "{dom}");
        let captures = dom.split(r#"<table id="captures">"#).nth(1).unwrap_or("");
        assert!(
            captures.contains(&format!("/ui/captures/{id}")),
            "the first request is listed: {dom}"
        );
        let history = dom
            .split(r#"<table id="rule-history">"#)
            .nth(1)
            .unwrap_or("");
        assert!(
            history.contains("pager") && history.contains("abs=95"),
            "{dom}"
        );
        let instances = dom.split(r#"<table id="instances">"#).nth(1).unwrap_or("");
        assert!(instances.contains("fleet-2"), "{dom}");
        let page = format!("{url}/ui/captures/{}", again.request.request_id);
        let dom = crate::support::chromium_run(&chromium, &page, &["--dump-dom"]).await;
        assert!(dom.contains(r#"data-ready="true""#), "{dom}");
        let rows = dom
            .split(r#"<table id="capture-instances">"#)
            .nth(1)
            .unwrap_or("");
        for name in names {
            assert!(rows.contains(name), "{dom}");
        }
        assert!(rows.contains("threads: rate_limited"), "{dom}");
        let page = format!("{url}/ui/captures/{id}");
        let dom = crate::support::chromium_run(&chromium, &page, &["--dump-dom"]).await;
        let profiles = dom
            .split(r#"<table id="capture-profiles">"#)
            .nth(1)
            .unwrap_or("");
        assert_eq!(
            profiles.matches("/api/v1/services/fleet/profiles/").count(),
            3,
            "{dom}"
        );
    }
    for a in agents {
        a.stop().await;
    }
    server.shutdown().await;
}

/// A pause stops captures — rules' and requested ones — without touching rules:
/// triggers still arrive and still form an incident; lifting it lets captures through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_stops_captures_but_not_triggers_or_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&url).unwrap();
    let grpc = server.grpc_addr();
    let names = ["paused-0", "paused-1"];
    let mut agents: Vec<AgentProcess> = names
        .iter()
        .map(|n| AgentProcess::start("paused", n, grpc, "", &[]))
        .collect();
    all_report(&api, "paused", &names, 0).await;

    let out = cli_ok(
        &url,
        &[
            "pause",
            "set",
            "--service",
            "paused",
            "--for",
            "10m",
            "--reason",
            "deploy window",
            "--by",
            "release",
        ],
    )
    .await;
    assert!(
        out.starts_with("service captures paused until ")
            && out.contains("by release: deploy window"),
        "{out}"
    );
    let set = cli_ok(
        &url,
        &[
            "rules",
            "set",
            "--service",
            "paused",
            "threads",
            "min=1,abs=1,window=2,cooldown=1h",
        ],
    )
    .await;
    assert!(set.contains("service captures paused until"), "{set}");
    let version = api.rules("paused").await.unwrap().version;
    for a in &mut agents {
        a.rules_where("the rule", |l| l.starts_with(&format!("v={version} ")))
            .await;
    }
    // Both fire; their triggers plan no profile, and still make one fleet incident.
    let incident = eventually(
        Duration::from_secs(60),
        "an incident of both paused instances",
        || async {
            let list: IncidentsJson = api
                .get("/api/v1/services/paused/incidents?since=5m")
                .await
                .ok()?;
            list.incidents
                .into_iter()
                .find(|i| i.metric == "threads" && i.instances.len() == 2)
        },
    )
    .await;
    assert_eq!(incident.severity, "fleet");
    let refused = capture_wait_for(&url, "paused", &["--kind", "threads"]).await;
    assert_eq!(refused.request.refused, 2, "{refused:?}");
    for i in &refused.instances {
        assert_eq!(i.refused[0].reason, "paused", "{i:?}");
        assert!(i.refused[0].detail.contains("deploy window"), "{i:?}");
    }
    let profiles = api.profiles("paused", "5m").await.unwrap();
    assert!(profiles.profiles.is_empty(), "paused: {profiles:?}");

    // The fleet's pause shows beside the service's; lifting both lets captures through.
    cli_ok(
        &url,
        &[
            "pause", "set", "--fleet", "--for", "1h", "--reason", "freeze",
        ],
    )
    .await;
    let shown = cli_ok(&url, &["pause", "show", "--service", "paused"]).await;
    assert!(
        shown.contains("service captures paused") && shown.contains("fleet captures paused"),
        "{shown}"
    );
    cli_ok(&url, &["pause", "lift", "--service", "paused"]).await;
    let shown = cli_ok(&url, &["pause", "lift", "--fleet"]).await;
    assert!(shown.starts_with("captures are not paused"), "{shown}");
    let version = api.rules("paused").await.unwrap().version;
    all_report(&api, "paused", &names, version).await;
    let captured = capture_wait_for(&url, "paused", &["--kind", "threads"]).await;
    assert_eq!(captured.request.captured, 2, "{captured:?}");
    for a in agents {
        a.stop().await;
    }
    server.shutdown().await;
}

/// An operator's capture requests of one service are at most one every `[control]
/// capture_min_interval`: one sooner is refused with 429, `retry-after` and the time to
/// wait (the CLI says so), and asks no agent; another service is not held back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_capture_requests_are_rate_limited_per_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.control.capture_min_interval = Duration::from_secs(3600);
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&url).unwrap();
    let agents: Vec<holmes_agent::HolmesHandle> = ["limited", "other"]
        .iter()
        .map(|service| {
            holmes_agent::Holmes::builder()
                .service(*service)
                .instance(format!("{service}-0"))
                .collector(format!("http://{}", server.grpc_addr()))
                .start()
                .unwrap()
        })
        .collect();
    eventually(Duration::from_secs(30), "both agents connected", || async {
        agents.iter().all(|a| a.stats().connected).then_some(())
    })
    .await;

    let first: CaptureJson = api
        .post("/api/v1/services/limited/capture?kind=threads")
        .await
        .unwrap();
    assert_eq!(first.instances, vec!["limited-0"]);
    let again = crate::browser::send(
        server.http_addr(),
        "POST",
        "/api/v1/services/limited/capture?kind=threads",
        &[],
    )
    .await;
    assert_eq!(again.status, 429, "{}", again.body);
    let retry: u64 = again.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "retry-after {retry}");
    let error: holmes_api::ErrorJson = serde_json::from_str(&again.body).unwrap();
    assert!(
        error
            .error
            .starts_with("service \"limited\" had a capture request ")
            && error.error.contains("; ask again in ")
            && error
                .error
                .ends_with("(at most one every 1h: [control] capture_min_interval)"),
        "{}",
        error.error
    );
    let err = cli_err(&url, &["capture", "--service", "limited", "--kind", "cpu"]).await;
    assert!(
        err.contains("ask again in") && err.ends_with("(HTTP 429)"),
        "{err}"
    );
    // Refused requests were not made: one request of the service, asking its agent once.
    let list = api.captures("limited", "1h").await.unwrap();
    assert_eq!(list.captures.len(), 1, "{list:?}");
    assert_eq!(list.captures[0].request_id, first.request_id);

    let other: CaptureJson = api
        .post("/api/v1/services/other/capture?kind=threads")
        .await
        .unwrap();
    assert_eq!(other.instances, vec!["other-0"]);
    for a in agents {
        a.stop();
    }
    server.shutdown().await;
}

async fn capture_wait_for(url: &str, service: &str, args: &[&str]) -> CaptureDetailJson {
    let mut all = vec!["--json", "capture", "--service", service, "--wait", "60s"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli_ok(url, &all).await).unwrap()
}
