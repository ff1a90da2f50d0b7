//! Compression on the wire: the collector accepts gzip and zstd streams from the real
//! agent, and the bytes a realistic stream takes on the wire are measured through a
//! counting TCP proxy (`cargo test -p holmes-collector --test it -- compression::
//! --nocapture` prints them).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::support::raw_agent::{hello, profile_chunks, ConnectOptions, RawAgent};
use crate::support::{eventually, Backend};
use holmes_agent::{Compression, Holmes};
use holmes_cli::api_client::ApiClient;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Metric, MetricSeries, MetricWindow, ProfileKind,
    Sample,
};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::codec::CompressionEncoding;

/// A TCP proxy to `upstream` that counts the bytes clients send through it.
async fn counting_proxy(upstream: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(upstream).await.unwrap();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let n = match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        counter.fetch_add(n as u64, Ordering::Relaxed);
                        if server_write.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let down = async move {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, sent)
}

/// Busy work with many distinct stacks (a path through eight functions to depth 10),
/// so that the CPU profile has the size and variety of a busy service's.
#[inline(never)]
fn branch(x: u64, depth: u32) -> u64 {
    if depth == 0 {
        return (0..200).fold(x, |a, b| a.rotate_left(5) ^ b);
    }
    let next = x
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    match (next >> 61) as u8 {
        0 => step0(next, depth - 1),
        1 => step1(next, depth - 1),
        2 => step2(next, depth - 1),
        3 => step3(next, depth - 1),
        4 => step4(next, depth - 1),
        5 => step5(next, depth - 1),
        6 => step6(next, depth - 1),
        _ => step7(next, depth - 1),
    }
}

macro_rules! steps {
    ($($name:ident),*) => {$(
        #[inline(never)]
        fn $name(x: u64, depth: u32) -> u64 {
            std::hint::black_box(branch(x ^ u64::from(depth), depth))
        }
    )*};
}
steps!(step0, step1, step2, step3, step4, step5, step6, step7);

/// One 5 s window as the agent sends it at the default 1 s interval: six metrics with
/// five samples each, values with the noise real ones have.
fn realistic_window(i: u64, start: u64) -> MetricWindow {
    let mut x = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut noise = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % 10_000) as f64 / 10_000.0
    };
    let metrics = [
        (Metric::CpuPercent, 20.0, 15.0),
        (Metric::MemoryPercent, 41.0, 2.0),
        (
            Metric::RssBytes,
            512.0 * 1024.0 * 1024.0,
            4.0 * 1024.0 * 1024.0,
        ),
        (Metric::Threads, 48.0, 0.0),
        (Metric::OpenFds, 112.0, 3.0),
        (
            Metric::HeapBytes,
            300.0 * 1024.0 * 1024.0,
            8.0 * 1024.0 * 1024.0,
        ),
    ];
    let series = metrics
        .into_iter()
        .map(|(metric, base, spread)| MetricSeries {
            metric,
            samples: (0..5)
                .map(|s| {
                    let value = base + spread * noise();
                    let value = if matches!(metric, Metric::CpuPercent | Metric::MemoryPercent) {
                        value
                    } else {
                        value.round()
                    };
                    Sample {
                        unix_nanos: start + (i * 5 + s) * 1_000_000_000 + 137_000 * s,
                        value,
                    }
                })
                .collect(),
        })
        .collect();
    MetricWindow { series }
}

fn encoded_len(seq: u64, body: &AgentBody) -> u64 {
    pb::AgentMessage::from(&AgentMessage {
        seq,
        body: body.clone(),
    })
    .encoded_len() as u64
}

/// Sends `bodies` from `first_seq` on and waits for the last one's ack.
async fn send_and_wait(agent: &mut RawAgent, first_seq: u64, bodies: &[AgentBody]) {
    let last = first_seq + bodies.len() as u64 - 1;
    for (i, body) in bodies.iter().enumerate() {
        agent.send(first_seq + i as u64, body.clone()).await;
    }
    loop {
        match agent.next().await {
            CollectorMessage::Ack { seq } if seq >= last => return,
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_streams_are_accepted_and_their_bytes_measured() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();

    // The real agent with each compression: its metrics arrive; with "none" it also
    // captures real profiles (CPU and thread stacks of this process) to replay below.
    for (service, compression) in [
        ("agent-zstd", Compression::Zstd),
        ("agent-gzip", Compression::Gzip),
        ("agent-none", Compression::None),
    ] {
        let agent = Holmes::builder()
            .service(service)
            .collector(format!("http://{}", server.grpc_addr()))
            .compression(compression)
            .collect_interval(Duration::from_millis(100))
            .send_interval(Duration::from_millis(200))
            .cpu_profile_duration(Duration::from_secs(2))
            .start()
            .unwrap();
        eventually(Duration::from_secs(15), "metrics of the agent", || async {
            let m = api.metrics(service, "rss", "5m").await.ok()?;
            (!m.series.first()?.points.is_empty()).then_some(())
        })
        .await;
        if compression == Compression::None {
            let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let busy: Vec<_> = (0..2)
                .map(|t| {
                    let stop = Arc::clone(&stop);
                    std::thread::spawn(move || {
                        let mut x = t;
                        while !stop.load(Ordering::Relaxed) {
                            x = branch(x, 10);
                        }
                        x
                    })
                })
                .collect();
            agent
                .capture_now(&[ProfileKind::Cpu, ProfileKind::Threads])
                .unwrap();
            eventually(Duration::from_secs(30), "the captured profiles", || async {
                let p = api.profiles(service, "10m").await.ok()?;
                let ok = p.profiles.iter().filter(|p| p.error.is_none()).count();
                (ok >= 2).then_some(())
            })
            .await;
            stop.store(true, Ordering::Relaxed);
            for b in busy {
                b.join().unwrap();
            }
        }
        agent.stop();
    }

    // The replayed stream: an hour of metric windows (720 at 5 s), then the real profiles.
    let mut profiles = Vec::new();
    for p in api.profiles("agent-none", "10m").await.unwrap().profiles {
        if p.error.is_none() {
            let kind = match p.kind.as_str() {
                "cpu" => ProfileKind::Cpu,
                "threads" => ProfileKind::Threads,
                "heap" => ProfileKind::Heap,
                _ => ProfileKind::Tasks,
            };
            profiles.push((
                kind,
                api.download_profile("agent-none", &p.profile_id)
                    .await
                    .unwrap(),
            ));
        }
    }
    let start = 1_750_000_000_000_000_000;
    let windows: Vec<AgentBody> = (0..720)
        .map(|i| AgentBody::MetricWindow(realistic_window(i, start)))
        .collect();
    let mut chunks = Vec::new();
    for (n, (kind, data)) in profiles.iter().enumerate() {
        let id = format!("{:032x}", 0xabc0 + n);
        for chunk in profile_chunks(&id, "ev-replay", *kind, start, data, 1024 * 1024) {
            chunks.push(AgentBody::ProfileChunk(chunk));
        }
    }
    let window_bytes: u64 = windows
        .iter()
        .enumerate()
        .map(|(i, b)| encoded_len(i as u64 + 1, b))
        .sum();
    let chunk_bytes: u64 = chunks
        .iter()
        .enumerate()
        .map(|(i, b)| encoded_len(i as u64 + 721, b))
        .sum();
    let profile_bytes: usize = profiles.iter().map(|(_, d)| d.len()).sum();

    let mut rows = Vec::new();
    for (name, encoding) in [
        ("none", None),
        ("gzip", Some(CompressionEncoding::Gzip)),
        ("zstd", Some(CompressionEncoding::Zstd)),
    ] {
        let (proxy, sent) = counting_proxy(server.grpc_addr()).await;
        let service = format!("replay-{name}");
        let options = ConnectOptions {
            compression: encoding,
            ..ConnectOptions::default()
        };
        let mut agent = RawAgent::try_connect(proxy, hello(&service, "i-0", vec![]), &options)
            .await
            .unwrap_or_else(|s| panic!("{name} stream accepted: {s:?}"));
        let t0 = std::time::Instant::now();
        send_and_wait(&mut agent, 1, &windows).await;
        let metrics_wire = sent.load(Ordering::Relaxed);
        send_and_wait(&mut agent, 721, &chunks).await;
        let profiles_wire = sent.load(Ordering::Relaxed) - metrics_wire;
        let elapsed = t0.elapsed();
        let stored = api
            .profiles(&service, "2025-01-01T00:00:00Z")
            .await
            .unwrap()
            .profiles;
        assert_eq!(stored.len(), profiles.len(), "{name}: every profile stored");
        for (s, (_, data)) in stored.iter().zip(&profiles) {
            assert_eq!(s.size_bytes, data.len() as u64, "{name}: stored whole");
        }
        rows.push((name, metrics_wire, profiles_wire, elapsed));
    }

    println!(
        "wire bytes, client to collector (HTTP/2 framing included), {} metric windows = {} B of protobuf; {} profiles = {} B of gzip pprof in {} chunks = {} B of protobuf",
        windows.len(),
        window_bytes,
        profiles.len(),
        profile_bytes,
        chunks.len(),
        chunk_bytes
    );
    let (_, base_metrics, base_profiles, _) = rows[0];
    for (name, metrics, profiles, elapsed) in &rows {
        println!(
            "{name:>5}: metric windows {metrics:>9} B ({:>5.1} % of none), profile chunks {profiles:>9} B ({:>5.1} % of none), {elapsed:?}",
            100.0 * *metrics as f64 / base_metrics as f64,
            100.0 * *profiles as f64 / base_profiles as f64,
        );
    }
    // Metric windows compress well; gzip pprof does not compress further, but must not
    // grow by more than the framing.
    for (name, metrics, profiles, _) in &rows[1..] {
        assert!(
            (*metrics as f64) < 0.8 * base_metrics as f64,
            "{name}: {metrics} vs {base_metrics}"
        );
        assert!(
            (*profiles as f64) < 1.02 * base_profiles as f64,
            "{name}: {profiles} vs {base_profiles}"
        );
    }
    server.shutdown().await;
}
