//! The culprit named against healthy controls, end to end: four real processes of one
//! binary (`holmes-demo fleet-service`, agent inside) all spend about a fifth of a core
//! in a shared background function that spends its time in a helper; two of them then
//! burn CPU in a culprit that spends its time in the same helper. The incident asks the
//! others for their flight recorder's seconds as healthy controls; its stored suspects
//! name the culprit (not the helper, not the shared function), with sick and control
//! shares; the webhook's payload names it; and the shared function's stack has one id
//! across the four processes, read from the store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::support::receiver::Receiver;
use crate::support::{eventually, holmes_cli, Backend};
use axum::http::StatusCode;
use holmes_cli::api_client::ApiClient;
use holmes_collector::{Config, Server};
use holmes_proto::ProfileKind;
use holmes_storage::sqlite::SqliteStore;
use holmes_storage::{ProfileQuery, StackId, Store};

const CULPRIT: &str = "holmes_devtools::fleet::culprit";
const SHARED: &str = "holmes_devtools::fleet::background";
const HELPER: &str = "holmes_devtools::fleet::checksum";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_culprit_is_named_against_healthy_controls_and_paged() {
    let dir = tempfile::tempdir().unwrap();
    let webhook = Receiver::start(0, StatusCode::OK).await;
    let toml = format!(
        r#"
[incidents]
window = "2m"
quiet = "2m"
controls_per_incident = 3

[[alerts.hooks]]
name = "oncall"
kind = "webhook"
url = "{}"
"#,
        webhook.url("/hook")
    );
    let file = Config::from_toml(&toml, Path::new("suspects.toml")).unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.incidents = file.incidents;
    config.alerts = file.alerts;
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.data_dir).unwrap());
    let server = Server::start_with_store(&config, Arc::clone(&store))
        .await
        .unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();
    let host = holmes_devtools::workspace::bin("holmes-demo");
    // The host's debug info goes up from "CI" first, as the agent's README recommends:
    // no instance spends CPU uploading its own.
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "debuginfo",
        "upload",
        host.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");

    // Four instances; fleet-2 and fleet-3 start their culprit after the rules' warm-up.
    let mut children = Vec::new();
    for i in 0..4 {
        let mut command = tokio::process::Command::new(&host);
        command
            .args(["fleet-service", "--collector"])
            .arg(format!("http://{}", server.grpc_addr()))
            .args(["--instance", &format!("fleet-{i}")]);
        if i >= 2 {
            command.args(["--culprit-after", "25s"]);
        }
        children.push(
            command
                .env("RUST_LOG", "warn")
                .env("HOLMES_DUMP_DIR", dir.path().join("dumps"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap(),
        );
    }

    // The incident of the sick ones, its suspects computed against the controls'
    // profiles once they are in.
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut last = String::from("no incident");
    let detail = loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no suspects against healthy controls within 300 s; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(list) = api.incidents(Some("fleet"), "10m", None).await else {
            continue;
        };
        let Some(incident) = list.incidents.into_iter().find(|i| i.metric == "cpu") else {
            continue;
        };
        let Ok(d) = api.incident(&incident.incident_id).await else {
            continue;
        };
        // Both sick instances in, and the suspects computed since the last of them
        // joined (times in one RFC 3339 form compare as text).
        let computed = d.suspects_computed.clone().unwrap_or_default();
        if d.incident.instances.len() == 2
            && computed > d.incident.last_event
            && d.comparison.as_deref() == Some("controls")
            && d.comparison_profiles >= 1
            && !d.suspects.is_empty()
        {
            break d;
        }
        let captures = api.captures("fleet", "10m").await;
        last = format!("{d:?}\ncaptures: {captures:?}");
    };
    let names: Vec<&str> = detail
        .suspects
        .iter()
        .map(|s| s.function.as_str())
        .collect();
    assert_eq!(
        detail.incident.instances,
        ["fleet-2", "fleet-3"],
        "only the sick fired: {detail:?}"
    );
    assert_eq!(detail.suspect_kind.as_deref(), Some("cpu"));
    assert_eq!(names[0], CULPRIT, "{names:?}\n{detail:#?}");
    assert!(
        !names[..3.min(names.len())].contains(&SHARED),
        "the shared function is not among the top three: {names:?}"
    );
    let top = &detail.suspects[0];
    assert!(detail.sick_profiles >= 1, "{detail:?}");
    assert!(top.sick_share > 0.2, "{top:?}");
    assert_eq!(top.comparison_share, 0.0, "healthy instances never run it");
    // The shared function is as busy on healthy instances as it is everywhere: its
    // control share is large, and it did not grow.
    if let Some(shared) = detail.suspects.iter().find(|s| s.function == SHARED) {
        assert!(shared.comparison_share > 0.5, "{shared:?}");
        assert!(shared.sick_share < shared.comparison_share, "{shared:?}");
    }
    if let Some(helper) = detail.suspects.iter().find(|s| s.function == HELPER) {
        assert!(helper.comparison_share > 0.5, "{helper:?}");
    }

    // The diff flame graph, sick against the healthy controls: the culprit's frame is
    // deep red (it grew by its whole share), the shared function's blue (it shrank).
    let svg = api
        .get_raw(&format!(
            "/api/v1/incidents/{}/flamegraph.svg?diff=controls",
            detail.incident.incident_id
        ))
        .await
        .unwrap();
    let svg = String::from_utf8(svg.to_vec()).unwrap();
    assert!(svg.contains("of healthy controls"), "{svg}");
    let fill = |name: &str| -> (u8, u8, u8) {
        let frame = svg
            .split("<g class=\"frame\">")
            .find(|g| g.starts_with(&format!("<title>{name} (")))
            .unwrap_or_else(|| panic!("no frame of {name} in {svg}"));
        let rgb = frame
            .split("fill=\"rgb(")
            .nth(1)
            .and_then(|f| f.split(')').next())
            .unwrap_or_else(|| panic!("no fill in {frame}"));
        let c: Vec<u8> = rgb.split(',').map(|v| v.parse().unwrap()).collect();
        (c[0], c[1], c[2])
    };
    let (r, g, _) = fill(CULPRIT);
    assert!(r == 255 && g < 128, "the culprit grew: rgb({r},{g},..)");
    let (r, _, b) = fill(SHARED);
    assert!(
        b == 255 && r < 255,
        "the shared function shrank: rgb({r},..,{b})"
    );

    // The page names the culprit, with its evidence.
    let paged = eventually(
        Duration::from_secs(60),
        "an alert naming the culprit",
        || async {
            webhook.accepted().into_iter().find(|r| {
                r.body["event"] == "suspects" && r.body["suspects"]["top"][0]["function"] == CULPRIT
            })
        },
    )
    .await;
    assert_eq!(
        paged.body["suspects"]["comparison"], "controls",
        "{}",
        paged.body
    );
    let line = paged.body["top_suspect"].as_str().unwrap_or("");
    assert!(
        line.starts_with(&format!("{CULPRIT} (")) && line.ends_with("% on healthy instances)"),
        "{line}"
    );

    // The shared function's stack has one id across the four processes. Its stack is
    // the part of a sampled stack from its own frame to the root (what it calls, the
    // sampled address inside the helper, varies with each sample): the same code path,
    // so the same locations and the same id in every process, whatever ASLR did. From
    // the stored profiles, per instance.
    let listed = store
        .query_profiles(&ProfileQuery {
            service: "fleet".to_owned(),
            event_id: None,
            kind: Some(ProfileKind::Cpu),
            since_unix_nanos: 0,
            until_unix_nanos: u64::MAX / 2,
            limit: 10_000,
        })
        .await
        .unwrap();
    let ids: Vec<String> = listed.iter().map(|p| p.profile_id.clone()).collect();
    let records = store.get_profiles("fleet", &ids).await.unwrap();
    let mut per_instance: BTreeMap<String, BTreeSet<StackId>> = BTreeMap::new();
    let mut samples: BTreeMap<StackId, i64> = BTreeMap::new();
    for r in &records {
        let Some(c) = &r.contents else { continue };
        let index = c.value_index(None).unwrap();
        for (n, locations) in c.stacks.iter().enumerate() {
            let holds = |l: u32, f: &str| c.location_frames(l).iter().any(|x| x.function == f);
            if locations.iter().any(|&l| holds(l, CULPRIT)) {
                continue;
            }
            let Some(own) = locations.iter().position(|&l| holds(l, SHARED)) else {
                continue;
            };
            let id = StackId::of(
                locations[own..]
                    .iter()
                    .map(|&l| c.locations[l as usize].id()),
            );
            per_instance
                .entry(r.instance_id.clone())
                .or_default()
                .insert(id);
            let v: i64 = c
                .samples
                .iter()
                .filter(|s| s.stack as usize == n)
                .map(|s| s.values[index])
                .sum();
            *samples.entry(id).or_default() += v;
        }
    }
    assert_eq!(
        per_instance.keys().collect::<Vec<_>>(),
        ["fleet-0", "fleet-1", "fleet-2", "fleet-3"],
        "every instance's profiles hold the shared function"
    );
    let hottest = samples
        .iter()
        .max_by_key(|(_, v)| **v)
        .map(|(id, _)| *id)
        .unwrap();
    for (instance, stacks) in &per_instance {
        assert!(
            stacks.contains(&hottest),
            "{instance} has the shared function's stack {hottest} under the same id: {per_instance:?}"
        );
    }

    for c in &mut children {
        let _ = c.kill().await;
    }
    server.shutdown().await;
}
