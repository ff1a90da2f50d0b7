//! The culprit named against healthy controls, end to end: four real processes of one
//! binary (the agent's `fleet_service` example, built as agent/README.md tells hosts to
//! build: release, line tables only, frame pointers) all spend their time in a shared
//! background function that works through a helper; two of them then run a culprit
//! that works through the same helper. The incident asks the others for their profiles
//! as healthy controls; its stored suspects name the culprit with its full path (not the
//! helper, not the shared function), with sick and control shares; the diff flame graph
//! against the controls shows the culprit grew and the shared function shrank; the
//! webhook's payload names the culprit; and the shared function's stack has one id
//! across the four processes, read from the store. Twice: a CPU burn (about a fifth of
//! a core everywhere, a core more on the sick) and a leak (a ring of buffers everywhere,
//! buffers kept forever on the sick), ranked by CPU samples and by heap bytes in use.
//!
//! Runs with `HOLMES_TEST_RELEASE=1` only ([`crate::support::profiling_example`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use crate::support::receiver::Receiver;
use crate::support::{eventually, holmes_cli, Backend};
use axum::http::StatusCode;
use holmes_api::IncidentDetailJson;
use holmes_cli::api_client::ApiClient;
use holmes_collector::{Config, Server};
use holmes_proto::ProfileKind;
use holmes_storage::sqlite::SqliteStore;
use holmes_storage::{ProfileQuery, StackId, Store};

/// One problem of the fleet host: its service, the incident's metric and profile kind,
/// and the functions involved.
struct Problem {
    /// `FLEET_PROBLEM`.
    name: &'static str,
    service: &'static str,
    metric: &'static str,
    kind: ProfileKind,
    culprit: &'static str,
    shared: &'static str,
    helper: &'static str,
}

const CPU: Problem = Problem {
    name: "cpu",
    service: "fleet",
    metric: "cpu",
    kind: ProfileKind::Cpu,
    culprit: "fleet_service::culprit",
    shared: "fleet_service::background",
    helper: "fleet_service::checksum",
};

const LEAK: Problem = Problem {
    name: "leak",
    service: "fleet-leak",
    metric: "heap",
    kind: ProfileKind::Heap,
    culprit: "fleet_service::leak",
    shared: "fleet_service::background_buffers",
    helper: "fleet_service::fill_buffer",
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_culprit_is_named_against_healthy_controls_and_paged() {
    named_against_healthy_controls(&CPU).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leak_is_named_against_healthy_controls_and_paged() {
    named_against_healthy_controls(&LEAK).await;
}

async fn named_against_healthy_controls(problem: &Problem) {
    let Some(host) = crate::support::profiling_example("fleet_service") else {
        return;
    };
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

    // Four instances; the last two start their culprit after the rules' warm-up.
    let mut children = Vec::new();
    for i in 0..4 {
        let mut command = tokio::process::Command::new(&host);
        command
            .env("HOLMES_COLLECTOR", format!("http://{}", server.grpc_addr()))
            .env("HOLMES_INSTANCE", format!("{}-{i}", problem.service))
            .env("FLEET_PROBLEM", problem.name);
        if i >= 2 {
            command.env("FLEET_CULPRIT_AFTER", "25s");
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

    let detail = suspects_against_controls(&api, problem).await;
    check_suspects(problem, &detail);
    diff_against_controls(&api, problem, &detail).await;

    // The page names the culprit, with its evidence.
    let culprit = problem.culprit;
    let paged = eventually(
        Duration::from_secs(60),
        "an alert naming the culprit",
        || async {
            webhook.accepted().into_iter().find(|r| {
                r.body["event"] == "suspects" && r.body["suspects"]["top"][0]["function"] == culprit
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
        line.starts_with(&format!("{culprit} (")) && line.ends_with("% on healthy instances)"),
        "{line}"
    );

    shared_stack_has_one_id(store.as_ref(), problem).await;
    for c in &mut children {
        let _ = c.kill().await;
    }
    server.shutdown().await;
}

/// The incident of the sick instances, once its suspects were computed against the
/// controls' profiles after both sick instances joined.
async fn suspects_against_controls(api: &ApiClient, problem: &Problem) -> IncidentDetailJson {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    let mut last = String::from("no incident");
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no suspects against healthy controls within 300 s; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(list) = api.incidents(Some(problem.service), "10m", None).await else {
            continue;
        };
        let Some(incident) = list
            .incidents
            .into_iter()
            .find(|i| i.metric == problem.metric)
        else {
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
            return d;
        }
        let captures = api.captures(problem.service, "10m").await;
        last = format!("{d:?}\ncaptures: {captures:?}");
    }
}

/// The culprit leads, with its share on the sick instances and none on the healthy
/// ones; the shared function, as busy everywhere, is not among the top three.
fn check_suspects(problem: &Problem, detail: &IncidentDetailJson) {
    let names: Vec<&str> = detail
        .suspects
        .iter()
        .map(|s| s.function.as_str())
        .collect();
    assert_eq!(
        detail.incident.instances,
        [
            format!("{}-2", problem.service),
            format!("{}-3", problem.service)
        ],
        "only the sick fired: {detail:?}"
    );
    assert_eq!(detail.suspect_kind.as_deref(), Some(problem.kind.as_str()));
    assert_eq!(names[0], problem.culprit, "{names:?}\n{detail:#?}");
    assert!(
        !names[..3.min(names.len())].contains(&problem.shared),
        "the shared function is not among the top three: {names:?}"
    );
    let top = &detail.suspects[0];
    assert!(detail.sick_profiles >= 1, "{detail:?}");
    assert!(top.sick_share > 0.2, "{top:?}");
    assert_eq!(
        top.comparison_share, 0.0,
        "healthy instances never run it: {detail:#?}"
    );
    // The shared function is as busy on healthy instances as it is everywhere: its
    // control share is large, and it did not grow.
    if let Some(shared) = detail
        .suspects
        .iter()
        .find(|s| s.function == problem.shared)
    {
        assert!(shared.comparison_share > 0.5, "{shared:?}");
        assert!(shared.sick_share < shared.comparison_share, "{shared:?}");
    }
    if let Some(helper) = detail
        .suspects
        .iter()
        .find(|s| s.function == problem.helper)
    {
        assert!(helper.comparison_share > 0.5, "{helper:?}");
    }
}

/// The diff flame graph, sick against the healthy controls: the culprit's frame is deep
/// red (it grew by its whole share), the shared function's blue (it shrank).
async fn diff_against_controls(api: &ApiClient, problem: &Problem, detail: &IncidentDetailJson) {
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
    let (r, g, _) = fill(problem.culprit);
    assert!(r == 255 && g < 128, "the culprit grew: rgb({r},{g},..)");
    let (r, _, b) = fill(problem.shared);
    assert!(
        b == 255 && r < 255,
        "the shared function shrank: rgb({r},..,{b})"
    );
}

/// The shared function's stack has one id across the four processes. Its stack is the
/// part of a sampled stack from its own frame to the root (what it calls, the sampled
/// address inside the helper, varies with each sample): the same code path, so the same
/// locations and the same id in every process, whatever ASLR did. From the stored
/// profiles, per instance.
async fn shared_stack_has_one_id(store: &dyn Store, problem: &Problem) {
    let listed = store
        .query_profiles(&ProfileQuery {
            service: problem.service.to_owned(),
            event_id: None,
            kind: Some(problem.kind),
            since_unix_nanos: 0,
            until_unix_nanos: u64::MAX / 2,
            limit: 10_000,
        })
        .await
        .unwrap();
    let ids: Vec<String> = listed.iter().map(|p| p.profile_id.clone()).collect();
    let records = store.get_profiles(problem.service, &ids).await.unwrap();
    let mut per_instance: BTreeMap<String, BTreeSet<StackId>> = BTreeMap::new();
    let mut weight: BTreeMap<StackId, i64> = BTreeMap::new();
    for r in &records {
        let Some(c) = &r.contents else { continue };
        let index = c.value_index(None).unwrap();
        for (n, locations) in c.stacks.iter().enumerate() {
            let holds = |l: u32, f: &str| c.location_frames(l).iter().any(|x| x.function == f);
            if locations.iter().any(|&l| holds(l, problem.culprit)) {
                continue;
            }
            let Some(own) = locations.iter().position(|&l| holds(l, problem.shared)) else {
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
            *weight.entry(id).or_default() += v;
        }
    }
    let all: Vec<String> = (0..4).map(|i| format!("{}-{i}", problem.service)).collect();
    assert_eq!(
        per_instance.keys().cloned().collect::<Vec<_>>(),
        all,
        "every instance's profiles hold the shared function"
    );
    let heaviest = weight
        .iter()
        .max_by_key(|(_, v)| **v)
        .map(|(id, _)| *id)
        .unwrap();
    for (instance, stacks) in &per_instance {
        assert!(
            stacks.contains(&heaviest),
            "{instance} has the shared function's stack {heaviest} under the same id: {per_instance:?}"
        );
    }
}
