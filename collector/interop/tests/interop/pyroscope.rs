//! Grafana's Pyroscope clients, unchanged, pointed at a collector: pyroscope-rs 2.1
//! (the `pyroscope` crate with its pprof-rs backend, in this process) and pyroscope-io
//! (PyPI: 1.4 pushes to `push.v1`, 0.8 posts to `/ingest`). Their profiles show in
//! `holmes profiles`, download as pprof that `go tool pprof` reads, and are an
//! incident's baseline.

use std::collections::BTreeMap;
use std::time::Duration;

use holmes_api::{ProfilesJson, TopJson};
use holmes_cli::api_client::ApiClient;
use holmes_proto::{Metric, TriggerEvent, TriggerReason};
use pyroscope::backend::{pprof_backend, BackendConfig, PprofConfig};
use pyroscope::pyroscope::PyroscopeAgentBuilder;

use crate::support::{self, collector, eventually, RawAgent};

/// Spins for `for_how_long`: the function the Rust client's profile should name.
#[inline(never)]
fn baseline_work(for_how_long: Duration) -> u64 {
    let started = std::time::Instant::now();
    let mut x = 0u64;
    while started.elapsed() < for_how_long {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
    x
}

/// The profiles of `service` the API lists (cpu, stored without error), once any.
async fn profiles_of(api: &ApiClient, service: &str) -> Option<ProfilesJson> {
    let listed = api.profiles(service, "1h").await.ok()?;
    listed
        .profiles
        .iter()
        .any(|p| p.kind == "cpu" && p.error.is_none())
        .then_some(listed)
}

/// The first function of `profile_id`'s top that contains `name`.
async fn top_function(
    api: &ApiClient,
    service: &str,
    profile_id: &str,
    name: &str,
) -> Option<String> {
    let top: TopJson = api.top(service, profile_id, Some("cpu"), 200).await.ok()?;
    top.functions
        .into_iter()
        .map(|f| f.function)
        .find(|f| f.contains(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyroscope_rs_profiles_are_listed_downloaded_and_a_baseline() {
    let (server, _data) = collector(|_| {}).await;
    let url = format!("http://{}", server.http_addr());
    let agent = PyroscopeAgentBuilder::new(
        &url,
        "rustapp",
        100,
        "pyroscope-rs",
        "2.1.5",
        pprof_backend(PprofConfig::default(), BackendConfig::default()),
    )
    .tags(vec![("region", "eu")])
    .build()
    .expect("the pyroscope agent builds");
    let running = agent.start().expect("the pyroscope agent starts");
    let api = ApiClient::new(&url).unwrap();
    // pyroscope-rs pushes every 10 s; spin until a profile of it is in.
    let listed = eventually(
        Duration::from_secs(90),
        "a profile pushed by pyroscope-rs",
        || {
            let api = api.clone();
            async move {
                tokio::task::spawn_blocking(|| baseline_work(Duration::from_millis(500)))
                    .await
                    .unwrap();
                profiles_of(&api, "rustapp").await
            }
        },
    )
    .await;
    let ready = running.stop().expect("the pyroscope agent stops");
    ready.shutdown();
    let pushed = listed
        .profiles
        .iter()
        .find(|p| p.kind == "cpu" && p.error.is_none())
        .unwrap()
        .clone();
    assert_eq!(
        pushed.labels.get("source").map(String::as_str),
        Some("pyroscope")
    );
    assert_eq!(
        pushed.labels.get("phase").map(String::as_str),
        Some("baseline")
    );
    assert_eq!(pushed.labels.get("region").map(String::as_str), Some("eu"));

    // `holmes profiles` lists it; `holmes profile` downloads pprof that go reads.
    let holmes = holmes_devtools::workspace::bin("holmes");
    let table = support::run(
        &holmes,
        &[
            "--api",
            &url,
            "profiles",
            "--service",
            "rustapp",
            "--since",
            "1h",
        ],
        Duration::from_secs(60),
    )
    .await;
    assert!(
        table.contains(&pushed.profile_id) && table.contains("cpu"),
        "{table}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rustapp.pb.gz");
    support::run(
        &holmes,
        &[
            "--api",
            &url,
            "profile",
            "--service",
            "rustapp",
            &pushed.profile_id,
            "-o",
            file.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    )
    .await;
    if let Some(top) = support::pprof_top(&file).await {
        assert!(top.contains("baseline_work"), "go tool pprof -top:\n{top}");
    }

    // An incident of the same service two minutes later: its suspects are judged
    // against the pushed profiles (the baseline spans the six hours before it, minus
    // its first two minutes).
    let baseline_fn = eventually(
        Duration::from_secs(30),
        "baseline_work in the profile's top",
        || top_function(&api, "rustapp", &pushed.profile_id, "baseline_work"),
    )
    .await;
    let mut raw = RawAgent::connect(
        server.grpc_addr(),
        "rustapp",
        "rustapp-sick",
        BTreeMap::new(),
    )
    .await;
    let at = holmes_collector::clock::unix_nanos_now() + 180 * 1_000_000_000;
    let event_id = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    raw.trigger(TriggerEvent {
        event_id: event_id.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 99.0,
        window: Vec::new(),
        rule: None,
        unix_nanos: at,
        planned: Vec::new(),
        request_id: None,
    })
    .await;
    raw.profile(
        "6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b6b",
        event_id,
        at,
        support::cpu_pprof(
            &[
                (&["rustapp::hot_path", "main"], 80),
                (&[baseline_fn.as_str(), "main"], 20),
            ],
            at,
        ),
    )
    .await;
    // The incident starts in three minutes: list up to ten minutes ahead.
    let incidents = format!("{url}/api/v1/services/rustapp/incidents?since=1h&until=10m");
    let until = holmes_collector::clock::rfc3339(at + 600 * 1_000_000_000);
    let incidents = incidents.replace("until=10m", &format!("until={until}"));
    let incident_id = eventually(Duration::from_secs(30), "the incident", || async {
        let list = support::get_json(&incidents, &[]).await?;
        list["incidents"][0]["incident_id"]
            .as_str()
            .map(str::to_owned)
    })
    .await;
    // Suspects are computed once the incident's profiles are in, and stored.
    let detail = eventually(
        Duration::from_secs(30),
        "the incident's suspects",
        || async {
            let d = api.incident(&incident_id).await.ok()?;
            (!d.suspects.is_empty()).then_some(d)
        },
    )
    .await;
    assert_eq!(
        detail.comparison.as_deref(),
        Some("baselines"),
        "{detail:?}"
    );
    assert!(detail.comparison_profiles >= 1, "{detail:?}");
    assert_eq!(
        detail.suspects[0].function, "rustapp::hot_path",
        "{detail:?}"
    );
    let from_baseline = detail
        .suspects
        .iter()
        .find(|s| s.function == baseline_fn)
        .unwrap_or_else(|| panic!("{baseline_fn} among the suspects: {detail:?}"));
    assert!(
        from_baseline.comparison_share > 0.0,
        "the pushed profile is the baseline: {from_baseline:?}"
    );
    server.shutdown().await;
}

/// Runs `pyroscope_io_push.py` with `python` against a fresh collector for `app`; the
/// profile it stored.
async fn python_client(python: &std::path::Path, app: &str) {
    let (server, _data) = collector(|_| {}).await;
    let url = format!("http://{}", server.http_addr());
    support::run(
        python,
        &[
            support::script("pyroscope_io_push.py").to_str().unwrap(),
            &url,
            app,
            "12",
        ],
        Duration::from_secs(120),
    )
    .await;
    let api = ApiClient::new(&url).unwrap();
    let listed = eventually(
        Duration::from_secs(30),
        "the python client's profile",
        || profiles_of(&api, app),
    )
    .await;
    let mut found = None;
    for p in listed.profiles.iter().filter(|p| p.error.is_none()) {
        if let Some(f) = top_function(&api, app, &p.profile_id, "interop_py_burn").await {
            found = Some(f);
        }
    }
    assert!(
        found.is_some(),
        "no profile of {app} names interop_py_burn: {listed:?}"
    );
    let instances = api.instances(app).await.unwrap();
    assert!(!instances.is_empty());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyroscope_io_pushes_to_push_v1() {
    let Some(python) = support::python("HOLMES_TEST_PYTHON") else {
        return;
    };
    python_client(&python, "pyapp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyroscope_io_legacy_posts_to_ingest() {
    let Some(python) = support::python("HOLMES_TEST_PYTHON_LEGACY") else {
        return;
    };
    python_client(&python, "pyold").await;
}
