//! A real Alertmanager (Debian's `prometheus-alertmanager`, 0.25 here) on loopback, both
//! ways: Holmes incidents go to it through an `alertmanager` hook and come out of its
//! routing to an on-call webhook, firing then resolved; an alert posted to it is routed
//! to Holmes' `/api/v1/alertmanager`, which asks the service's agent to capture and
//! attaches the profiles to an incident.

use std::collections::BTreeMap;
use std::time::Duration;

use holmes_cli::api_client::ApiClient;
use holmes_collector::alert::{HookConfig, HookKind};
use holmes_proto::{CollectorMessage, Metric, TriggerEvent, TriggerReason};

use crate::support::{self, collector, eventually, free_port, http, Daemon, RawAgent, Receiver};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_both_ways() {
    let Some(alertmanager) = support::tool(
        "prometheus-alertmanager",
        "HOLMES_TEST_REQUIRE_ALERTMANAGER",
    ) else {
        return;
    };
    let am_port = free_port();
    let am = format!("http://127.0.0.1:{am_port}");
    let (server, _data) = collector(|c| {
        c.incidents.quiet = Duration::from_secs(2);
        c.alerts.retry_initial = Duration::from_millis(200);
        c.alerts.retry_max = Duration::from_secs(1);
        c.alerts.hooks.push(HookConfig {
            name: "alertmanager".to_owned(),
            kind: HookKind::Alertmanager,
            url: Some(format!("{am}/api/v2/alerts")),
            routing_key: None,
            routing_key_file: None,
            services: Vec::new(),
            min_severity: Default::default(),
            headers: BTreeMap::new(),
        });
    })
    .await;
    let holmes = format!("http://{}", server.http_addr());
    let mut oncall = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            r#"route:
  receiver: holmes
  group_by: [alertname, service]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
  routes:
    - matchers: ['alertname="HolmesIncident"']
      receiver: oncall
receivers:
  - name: holmes
    webhook_configs:
      - url: {holmes}/api/v1/alertmanager
        send_resolved: false
  - name: oncall
    webhook_configs:
      - url: http://{}/oncall
        send_resolved: true
"#,
            oncall.addr
        ),
    )
    .unwrap();
    let daemon = Daemon::start(
        &alertmanager,
        &[
            format!("--config.file={}", config.display()),
            format!("--storage.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{am_port}"),
            "--cluster.listen-address=".to_owned(),
        ],
        dir.path(),
    );
    eventually(
        Duration::from_secs(60),
        "Alertmanager to be ready",
        || async {
            let (status, _) = http("GET", &format!("{am}/-/ready"), &[], Vec::new()).await?;
            (status == 200).then_some(())
        },
    )
    .await;

    // Out: an incident of `shop` reaches on-call through Alertmanager's routing.
    let mut agent = RawAgent::connect(
        server.grpc_addr(),
        "shop",
        "shop-1",
        BTreeMap::from([("k8s.namespace.name".to_owned(), "prod".to_owned())]),
    )
    .await;
    let now = holmes_collector::clock::unix_nanos_now();
    agent
        .trigger(TriggerEvent {
            event_id: "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1".to_owned(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Abs,
            current: 97.0,
            window: Vec::new(),
            rule: None,
            unix_nanos: now,
            planned: Vec::new(),
            request_id: None,
        })
        .await;
    agent
        .profile(
            "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4",
            "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1",
            now,
            support::cpu_pprof(&[(&["shop::busy_loop", "shop::serve", "main"], 40)], now),
        )
        .await;
    let api = ApiClient::new(&holmes).unwrap();
    let first = eventually(Duration::from_secs(30), "the incident", || async {
        api.incidents(Some("shop"), "1h", None)
            .await
            .ok()?
            .incidents
            .into_iter()
            .next()
    })
    .await;
    let firing = oncall
        .next_json(Duration::from_secs(60), "the firing notification", |j| {
            j["status"] == "firing"
        })
        .await;
    let labels = &firing["alerts"][0]["labels"];
    assert_eq!(labels["alertname"], "HolmesIncident", "{firing}");
    assert_eq!(labels["service"], "shop");
    assert_eq!(labels["metric"], "cpu");
    assert_eq!(labels["severity"], "instance");
    assert_eq!(labels["fingerprint"], first.incident_id.as_str());
    assert!(firing["alerts"][0]["annotations"]["incident_url"]
        .as_str()
        .unwrap()
        .ends_with(&first.incident_id));
    // Alertmanager lists it as an active alert.
    let listed = support::get_json(&format!("{am}/api/v2/alerts"), &[])
        .await
        .unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["labels"]["fingerprint"] == first.incident_id.as_str()),
        "{listed}"
    );
    // Quiet for 2 s: the incident resolves, and so does the alert.
    let resolved = oncall
        .next_json(Duration::from_secs(60), "the resolved notification", |j| {
            j["status"] == "resolved"
        })
        .await;
    assert_eq!(
        resolved["alerts"][0]["labels"]["fingerprint"],
        first.incident_id.as_str()
    );
    // By then the incident's profile is in: the alert names its top suspect, with its
    // share of the CPU and what it was compared with (this service has no other
    // instance to be a control, and no baseline).
    let top = resolved["alerts"][0]["annotations"]["top_suspect"]
        .as_str()
        .unwrap_or_else(|| panic!("no top_suspect: {resolved}"));
    assert_eq!(
        top, "shop::busy_loop (100% of CPU; nothing to compare with)",
        "{resolved}"
    );
    assert_eq!(
        api.incident(&first.incident_id)
            .await
            .unwrap()
            .incident
            .status,
        "resolved"
    );

    // In: an SLO alert of `shop` posted to Alertmanager reaches Holmes, which asks the
    // agent to capture; the capture's profile belongs to the alert's incident.
    let alert = serde_json::json!([{
        "labels": {"alertname": "CheckoutLatencyHigh", "service": "shop", "severity": "page"},
        "annotations": {"summary": "p99 above 2 s"},
    }]);
    let (status, body) = http(
        "POST",
        &format!("{am}/api/v2/alerts"),
        &[("content-type", "application/json")],
        serde_json::to_vec(&alert).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let request = loop {
        match agent.next(Duration::from_secs(60)).await {
            Some(CollectorMessage::CaptureRequest(r)) => break r,
            Some(_) => {}
            None => panic!("no capture request: {}", daemon.output()),
        }
    };
    assert_eq!(request.purpose, holmes_proto::CapturePurpose::Alert);
    assert!(request.request_id.starts_with("alert-"), "{request:?}");
    let captured = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
    let at = holmes_collector::clock::unix_nanos_now();
    agent
        .trigger(TriggerEvent {
            event_id: captured.to_owned(),
            metric: None,
            reason: TriggerReason::Requested,
            current: 0.0,
            window: Vec::new(),
            rule: None,
            unix_nanos: at,
            planned: request.kinds.clone(),
            request_id: Some(request.request_id.clone()),
        })
        .await;
    agent
        .profile(
            "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3",
            captured,
            at,
            support::cpu_pprof(&[(&["shop::slow_query", "shop::handle", "main"], 50)], at),
        )
        .await;
    let detail = eventually(
        Duration::from_secs(30),
        "the alert's incident with its profile",
        || async {
            let list = api.incidents(Some("shop"), "1h", None).await.ok()?;
            let newest = list
                .incidents
                .into_iter()
                .find(|i| i.incident_id != first.incident_id)?;
            let detail = api.incident(&newest.incident_id).await.ok()?;
            // Suspects are computed once the profile is in, and stored.
            (!detail.profiles.is_empty() && !detail.suspects.is_empty()).then_some(detail)
        },
    )
    .await;
    assert_eq!(detail.incident.instances, vec!["alertmanager".to_owned()]);
    assert_eq!(
        detail.profiles[0].profile_id,
        "c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"
    );
    assert_eq!(
        detail.suspects[0].function, "shop::slow_query",
        "{detail:?}"
    );
    // The alert's capture is a capture request like an operator's: stored, with whom it
    // asked and what came back under its id.
    let capture = api.capture_detail(&request.request_id).await.unwrap();
    assert_eq!(capture.request.purpose, "alert", "{capture:?}");
    assert_eq!(capture.request.by, "alertmanager", "{capture:?}");
    assert_eq!(capture.request.asked, 1, "{capture:?}");
    assert_eq!(capture.instances.len(), 1, "{capture:?}");
    let from_capture: Vec<&str> = capture
        .profiles
        .iter()
        .map(|p| p.profile_id.as_str())
        .collect();
    assert_eq!(from_capture, vec!["c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3c3"]);
    // Incidents filter by the agents' Kubernetes labels.
    let (status, body) = http(
        "GET",
        &format!("{holmes}/api/v1/incidents?since=1h&label=k8s.namespace.name=prod"),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let by_label: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> = by_label["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["incident_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![first.incident_id.as_str()],
        "only the agent's incident has an instance in prod"
    );
    let (_, body) = http(
        "GET",
        &format!("{holmes}/api/v1/incidents?since=1h&label=k8s.namespace.name=staging"),
        &[],
        Vec::new(),
    )
    .await
    .unwrap();
    let none: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(none["incidents"].as_array().unwrap().len(), 0);
    drop(agent);
    server.shutdown().await;
}
