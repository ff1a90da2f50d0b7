//! The README's first command: `holmes-demo` brings up a collector and real service
//! processes with the agent, their data is queryable within seconds, and their CPU
//! burst becomes an incident naming the hot loop whatever the core count.

use std::process::Stdio;
use std::time::{Duration, Instant};

use holmes_cli::api_client::ApiClient;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_produces_queryable_data_from_real_service_processes() {
    let dir = tempfile::tempdir().unwrap();
    let demo = env!("CARGO_BIN_EXE_holmes-demo");
    // Long enough for a loaded machine; the test ends with the demo.
    let lifetime = Duration::from_secs(30);
    let started = Instant::now();
    let mut demo = tokio::process::Command::new(demo)
        .args([
            "--instances",
            "2",
            "--duration",
            &format!("{}s", lifetime.as_secs()),
            "--burst-every",
            "2s",
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut banner = String::new();
    let api_url = loop {
        let line = lines.next_line().await.unwrap().expect("demo banner");
        banner.push_str(&line);
        banner.push('\n');
        // "  collector: gRPC http://.., API http://.., store .."
        if let Some(rest) = line.split("API http://").nth(1) {
            break format!("http://{}", rest.split(',').next().unwrap());
        }
    };
    while let Some(line) = lines.next_line().await.unwrap() {
        banner.push_str(&line);
        banner.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(
        banner.contains(&format!("--bin holmes -- --api {api_url} services")),
        "the banner says what to run next: {banner}"
    );
    let api = ApiClient::new(&api_url).unwrap();

    // Both instances report, and the CPU bursts of the demo's hot loop show up.
    let mut seen_burst = false;
    let mut first_data = None;
    while started.elapsed() < lifetime {
        if let Ok(services) = api.services().await {
            if services
                .iter()
                .any(|s| s.service == "checkout" && s.instances == 2)
            {
                first_data.get_or_insert(started.elapsed());
                let cpu = api.metrics("checkout", "cpu", "5m").await.unwrap();
                // CPU % is of all the cores the process may use: a burst holds one core
                // (a good share of one on a loaded machine), idle instances use well
                // under 5 % of one.
                let cores = std::thread::available_parallelism().unwrap().get() as f64;
                seen_burst = cpu.series.len() == 2
                    && cpu
                        .series
                        .iter()
                        .any(|s| s.points.iter().any(|p| p.value > 10.0 / cores));
                if seen_burst {
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let first_data = first_data.expect("both demo instances appear");
    assert!(
        first_data < Duration::from_secs(20),
        "first data after {first_data:?}"
    );
    assert!(seen_burst, "a CPU burst is visible in the cpu series");
    let status = tokio::time::timeout(lifetime + Duration::from_secs(30), demo.wait())
        .await
        .expect("the demo stops after --duration")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

/// The demo on a machine with many cores: its service told it has 16 (`HOLMES_CPU_CORES`,
/// what a 16-core laptop without a CPU quota detects) while this machine may have far
/// fewer, so its burst is a small share of the 16 — and it still opens an incident whose
/// suspects name the hot loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_opens_its_incident_when_the_service_counts_16_cores() {
    let dir = tempfile::tempdir().unwrap();
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_holmes-demo"))
        // The first burst comes after the CPU rule's 10 s warm-up.
        .args([
            "--instances",
            "2",
            "--burst-every",
            "15s",
            "--duration",
            "10m",
        ])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("HOLMES_CPU_CORES", "16")
        .env_remove("HOLMES_RULE_CPU")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let api_url = loop {
        let line = lines.next_line().await.unwrap().expect("demo banner");
        if let Some(rest) = line.split("API http://").nth(1) {
            break format!("http://{}", rest.split(',').next().unwrap());
        }
    };
    // Keep reading the demo's output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let api = ApiClient::new(&api_url).unwrap();

    // Generous: the first burst is 15 s in, its profiles follow it; a loaded machine
    // is slower at all of it.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut last = String::new();
    let found = loop {
        assert!(
            Instant::now() < deadline,
            "no incident with hot_loop among its suspects; last seen: {last}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(list) = api.incidents(Some("checkout"), "1h", None).await else {
            continue;
        };
        let Some(incident) = list.incidents.iter().find(|i| i.metric == "cpu") else {
            last = format!("{list:?}");
            continue;
        };
        let Ok(detail) = api.incident(&incident.incident_id).await else {
            continue;
        };
        if detail
            .suspects
            .iter()
            .any(|s| s.function.contains("hot_loop"))
        {
            break detail;
        }
        last = format!("{detail:?}");
    };
    assert_eq!(found.incident.status, "open", "{found:?}");
    // What fired it: CPU % of 16 cores, a small share on this machine.
    let fired = found.triggers.first().expect("its triggers");
    assert_eq!(fired.metric.as_deref(), Some("cpu"));
    let rule = fired.rule.as_ref().expect("the rule that fired");
    assert!(
        rule.min < 1.0,
        "the demo's min is an eighth of one of 16 cores: {rule:?}"
    );
    assert!(fired.current >= rule.min, "{fired:?}");
    demo.kill().await.unwrap();
}
