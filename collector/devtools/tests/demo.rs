//! The README's first command: `holmes-demo` brings up a collector and real service
//! processes with the agent, and their data is queryable within seconds.

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
