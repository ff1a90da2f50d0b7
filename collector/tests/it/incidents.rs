//! Incidents end to end: three instances of the demo service (real child processes with
//! the agent inside) burn CPU in `hot_loop` at the same time → one fleet incident with
//! the three instances and `hot_loop` as the top suspect; one alert per change at each
//! hook (the webhook fails its first attempts), a resolve alert after the quiet period;
//! the incident read back through the API and the CLI.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::receiver::Receiver;
use crate::support::{eventually, eventually_seen, holmes_cli, Backend};
use axum::http::StatusCode;
use holmes_cli::api_client::ApiClient;
use holmes_collector::{Config, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_spike_is_one_incident_with_its_culprit_and_pages_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let webhook = Receiver::start(2, StatusCode::INTERNAL_SERVER_ERROR).await;
    let pagerduty = Receiver::start(0, StatusCode::OK).await;
    let toml = format!(
        r#"
[incidents]
window = "2m"
quiet = "30s"

# A burst holds one core: CPU % is of every core the process may use, so a low `min`
# lets it fire on any machine (on 16 cores one busy core is 6 %), and `diff` keeps idle
# noise out.
[rules.checkout]
cpu = "min=2,diff=100"

[alerts]
retry_initial = "200ms"
retry_max = "1s"

[[alerts.hooks]]
name = "oncall-webhook"
kind = "webhook"
url = "{}"

[[alerts.hooks]]
name = "pager"
kind = "pagerduty"
url = "{}"
routing_key = "R0UT1NGKEY"
min_severity = "fleet"
"#,
        webhook.url("/hook"),
        pagerduty.url("/v2/enqueue")
    );
    let file = Config::from_toml(&toml, Path::new("incidents.toml")).unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.incidents = file.incidents;
    config.alerts = file.alerts;
    config.rules = file.rules;
    let demo = holmes_devtools::workspace::bin("holmes-demo");
    let server = Server::start(&config).await.unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();

    // The demo's debug info goes up from "CI" first, as the README recommends: agents
    // then send module + offset and none uploads (an uploading instance spends CPU on
    // it, which would lift its CPU window and hold its trigger back for as long).
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "debuginfo",
        "upload",
        demo.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");

    // Three instances, bursting every 15 s from 15 s after they start (after the rules'
    // warm-up); an instance that misses the first burst fires at the next one.
    let dumps = dir.path().join("dumps");
    let mut children = Vec::new();
    for i in 0..3 {
        children.push(
            tokio::process::Command::new(&demo)
                .args(["service", "--collector"])
                .arg(format!("http://{}", server.grpc_addr()))
                .args([
                    "--instance",
                    &format!("checkout-{i}"),
                    "--burst-every",
                    "15s",
                ])
                .env("HOLMES_DUMP_DIR", &dumps)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }
    let incident = eventually(
        Duration::from_secs(60),
        "a fleet incident of three",
        || async {
            let list = api.incidents(Some("checkout"), "10m", None).await.ok()?;
            list.incidents
                .into_iter()
                .find(|i| i.metric == "cpu" && i.instances.len() == 3)
        },
    )
    .await;
    assert_eq!(incident.severity, "fleet");
    let id = incident.incident_id.clone();
    let all = api.incidents(Some("checkout"), "10m", None).await.unwrap();
    assert_eq!(
        all.incidents.iter().filter(|i| i.metric == "cpu").count(),
        1,
        "one incident for the fleet: {all:?}"
    );

    // The suspects come from the instances' CPU profiles: the hot loop leads, named
    // from the uploaded debug info.
    let detail = eventually_seen(
        Duration::from_secs(300),
        "CPU profiles of the incident, named",
        || async {
            let d = api.incident(&id).await.map_err(|e| e.to_string())?;
            if d.sick_profiles >= 3
                && d.suspects
                    .first()
                    .is_some_and(|s| s.function.ends_with("demo::hot_loop"))
            {
                return Ok(d);
            }
            let top: Vec<&str> = d
                .suspects
                .iter()
                .take(3)
                .map(|s| s.function.as_str())
                .collect();
            Err(format!(
                "{} triggers, {} profiles, suspects computed {:?} from {} sick profiles, \
                 top {top:?}, status {}",
                d.triggers.len(),
                d.profiles.len(),
                d.suspects_computed,
                d.sick_profiles,
                d.incident.status
            ))
        },
    )
    .await;
    assert_eq!(detail.suspect_kind.as_deref(), Some("cpu"));
    assert_eq!(detail.triggers.len(), detail.incident.event_ids.len());
    // The captures are in: stop the service, so that nothing fires again (the CPU rule
    // sleeps a minute after firing anyway) and the incident goes quiet.
    for c in &mut children {
        let _ = c.kill().await;
    }

    // Quiet for 30 s: resolved, and a resolve alert.
    let resolved = eventually(Duration::from_secs(60), "the incident resolved", || async {
        let d = api.incident(&id).await.ok()?;
        (d.incident.status == "resolved").then_some(d)
    })
    .await;
    assert!(resolved.incident.resolved.is_some());
    // Hooks are delivered at least once (a retry after a lost answer sends the same
    // alert again): a receiver dedupes by the alert's id, as this one does.
    let events = |r: &Receiver, key: &str| -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        r.accepted()
            .iter()
            .filter(|a| {
                a.body.pointer("/incident/id").and_then(|v| v.as_str()) == Some(id.as_str())
                    || a.body.get("dedup_key").and_then(|v| v.as_str()) == Some(id.as_str())
            })
            .filter(|a| match a.body.get("alert_id").and_then(|v| v.as_str()) {
                Some(alert_id) => seen.insert(alert_id.to_owned()),
                None => true,
            })
            .filter_map(|a| a.body.get(key).and_then(|v| v.as_str()).map(str::to_owned))
            .collect()
    };
    let hook = eventually(
        Duration::from_secs(30),
        "the webhook's resolve alert",
        || async {
            let e = events(&webhook, "event");
            (e.last().map(String::as_str) == Some("resolved")).then_some(e)
        },
    )
    .await;
    // Opened once, escalated for the second and third instance, resolved once: each
    // change once, although the first two attempts failed.
    let timeline: Vec<(String, String)> = resolved
        .triggers
        .iter()
        .map(|t| (t.ts.clone(), t.instance.clone()))
        .collect();
    let requests: Vec<String> = webhook
        .got()
        .iter()
        .map(|r| {
            let field = |path: &str| {
                r.body
                    .pointer(path)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            format!(
                "{} {} {} v{} {}",
                r.answered,
                field("/event"),
                field("/alert_id"),
                field("/incident/version"),
                field("/incident/instances")
            )
        })
        .collect();
    // Each change once, and once its CPU profiles were in, the culprit named once
    // (its suspects computed again as more profiles came, the same top suspect).
    let changes: Vec<&String> = hook.iter().filter(|e| *e != "suspects").collect();
    assert_eq!(
        changes,
        vec!["opened", "escalated", "escalated", "resolved"],
        "webhook requests {requests:#?}, triggers {timeline:?}, resolved {:?}",
        resolved.incident.resolved,
    );
    assert_eq!(
        hook.iter().filter(|e| *e == "suspects").count(),
        1,
        "webhook requests {requests:#?}"
    );
    let named = webhook
        .accepted()
        .into_iter()
        .find(|r| r.body["event"] == "suspects")
        .unwrap();
    let top = named.body["suspects"]["top"][0]["function"]
        .as_str()
        .unwrap_or("");
    assert!(top.ends_with("demo::hot_loop"), "{}", named.body);
    assert!(
        named.body["top_suspect"]
            .as_str()
            .is_some_and(|t| t.contains("demo::hot_loop (") && t.contains("% of CPU")),
        "{}",
        named.body
    );
    assert!(webhook.got().iter().filter(|r| r.answered == 500).count() == 2);
    // PagerDuty only hears of fleet incidents: triggered when it became one, resolved.
    let pd = eventually(Duration::from_secs(30), "PagerDuty's resolve", || async {
        let e = events(&pagerduty, "event_action");
        (e.last().map(String::as_str) == Some("resolve")).then_some(e)
    })
    .await;
    // The culprit named updates the PagerDuty incident if it was a fleet one by then.
    let named_fleet = named.body["incident"]["severity"] == "fleet";
    let triggers = if named_fleet { 3 } else { 2 };
    assert_eq!(
        pd.iter().filter(|e| *e == "trigger").count(),
        triggers,
        "{pd:?}"
    );
    assert_eq!(pd.len(), triggers + 1, "{pd:?}");

    // Through the CLI, as on-call reads it.
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "incidents",
        "--service",
        "checkout",
        "--since",
        "10m",
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&id) && text.contains("fleet"),
        "{text}"
    );
    let out = holmes_cli(&["--api", &api_url, "incident", &id]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("checkout-0, checkout-1, checkout-2"),
        "{text}"
    );
    let first_suspect = text
        .lines()
        .skip_while(|l| !l.contains("suspects"))
        .nth(1)
        .unwrap_or("");
    assert!(first_suspect.ends_with("demo::hot_loop"), "{text}");
    // Its flame graph, merged over the instances, and the diff against the baseline.
    let svg_path = dir.path().join("incident.svg");
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "flamegraph",
        &id,
        "-o",
        svg_path.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("demo::hot_loop ("),
        "{svg}"
    );
    let out = holmes_cli(&["--api", &api_url, "flamegraph", &id, "--diff", "-o", "-"]).await;
    let diff = String::from_utf8_lossy(&out.stdout);
    assert!(diff.contains("points vs baseline"), "{diff}");
    // The incident page in a real browser: rendered by its script from the API, with
    // the suspects, the flame graph and the sparkline; a screenshot with content.
    if let Some(chromium) = crate::support::chromium() {
        let page = format!("{api_url}/ui/incidents/{id}");
        let dom = crate::support::chromium_run(&chromium, &page, &["--dump-dom"]).await;
        assert!(dom.contains(r#"data-ready="true""#), "{dom}");
        let suspects = dom.split(r#"<table id="suspects">"#).nth(1).unwrap_or("");
        let first_row = suspects.split("</tr>").nth(1).unwrap_or("");
        assert!(first_row.contains("demo::hot_loop"), "{dom}");
        assert!(dom.contains("checkout-0, checkout-1, checkout-2"), "{dom}");
        assert!(
            dom.contains(r#"<svg xmlns="http://www.w3.org/2000/svg""#),
            "the flame graph: {dom}"
        );
        assert!(dom.contains(r#"class="spark""#), "the sparkline: {dom}");
        let shot = dir.path().join("incident.png");
        let blank = dir.path().join("blank.png");
        let size = "--window-size=1280,1600";
        crate::support::chromium_run(
            &chromium,
            &page,
            &[size, &format!("--screenshot={}", shot.display())],
        )
        .await;
        crate::support::chromium_run(
            &chromium,
            "about:blank",
            &[size, &format!("--screenshot={}", blank.display())],
        )
        .await;
        let png = std::fs::read(&shot).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        let (w, h) = (
            u32::from_be_bytes(png[16..20].try_into().unwrap()),
            u32::from_be_bytes(png[20..24].try_into().unwrap()),
        );
        assert_eq!((w, h), (1280, 1600));
        let blank_len = std::fs::metadata(&blank).unwrap().len();
        eprintln!(
            "incident page screenshot: {} bytes, a blank page {blank_len}",
            png.len()
        );
        assert!(
            png.len() as u64 > 5 * blank_len,
            "the screenshot is nearly blank: {} bytes against {blank_len}",
            png.len()
        );
        // The home page lists the service and the incident.
        let home =
            crate::support::chromium_run(&chromium, &format!("{api_url}/ui"), &["--dump-dom"])
                .await;
        assert!(
            home.contains(&id) && home.contains("/ui/services/checkout"),
            "{home}"
        );
    }
    server.shutdown().await;
}
