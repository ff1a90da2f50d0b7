//! Profiles: sent by an agent in chunks, acknowledged only once whole and stored, stored
//! once however often they are resent, listed and downloaded (byte for byte when the
//! collector keeps originals, re-encoded and equivalent otherwise) through the HTTP API
//! and the `holmes` CLI — on SQLite and on ClickHouse. Inconsistent chunks end
//! the sender's stream with a clear INVALID_ARGUMENT while others are still served.

use crate::support::{cli_time, holmes_cli, split_timed_row};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::Backend;
use holmes_api::{download_path, top_path};
use holmes_cli::api_client::{ApiClient, ApiClientError};
use holmes_collector::clock::{rfc3339, unix_nanos_now};
use holmes_collector::Server;
use holmes_proto::{AgentBody, CollectorMessage, MetricWindow, ProfileChunk, ProfileKind};

const SEC: u64 = 1_000_000_000;
const MIB: usize = 1024 * 1024;
const PROFILE_A: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PROFILE_B: &str = "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbb";
const PROFILE_C: &str = "cccccccccccccccc0000000000000003";
const FAILED: &str = "ffffffffffffffff0000000000000001";
const EVENT: &str = "9c0ffee09c0ffee09c0ffee09c0ffee0";

/// A valid, uncompressed pprof profile of exactly `len` bytes (at least 64): one sample,
/// and comments of letters that look like nothing in particular (xorshift from `seed`),
/// each shorter than the longest name the collector takes.
fn profile_bytes(len: usize, seed: u64) -> Vec<u8> {
    use holmes_proto::pprof::{Line, Profile, Sample};
    use holmes_proto::profile_tables::ProfileTables;
    use prost::Message;
    const PIECE: usize = 4000;
    let mut x = seed | 1;
    let mut filler = |n: usize| -> String {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'a' + ((x >> 24) % 26) as u8)
            })
            .collect()
    };
    let mut t = ProfileTables::new();
    let sample_type = vec![t.value_type("samples", "count")];
    let handle = t.function("shop::handle", "", "src/main.rs", 0);
    let location = t.location(
        0,
        0,
        vec![Line {
            function_id: handle,
            line: 7,
            column: 0,
        }],
    );
    let mut p = t.into_profile(Profile {
        sample_type,
        sample: vec![Sample {
            location_id: vec![location],
            value: vec![1],
            label: vec![],
        }],
        ..Profile::default()
    });
    // Whole pieces while they fit, then one more whose length (and its prefixes')
    // converges in a few rounds.
    let first = p.string_table.len();
    while p.encoded_len() + PIECE + 16 < len {
        p.comment.push(p.string_table.len() as i64);
        p.string_table.push("x".repeat(PIECE));
    }
    p.comment.push(p.string_table.len() as i64);
    p.string_table.push(String::new());
    let last = p.string_table.len() - 1;
    let mut want = len.saturating_sub(p.encoded_len());
    for _ in 0..4 {
        p.string_table[last] = "x".repeat(want);
        let size = p.encoded_len();
        want = (want + len).saturating_sub(size);
    }
    for s in &mut p.string_table[first..] {
        *s = filler(s.len());
    }
    let bytes = p.encode_to_vec();
    assert_eq!(bytes.len(), len, "profile_bytes cannot make {len} bytes");
    bytes
}

/// What a pprof profile says, as the collector reads it: equal for a download
/// re-encoded from the store and the bytes the agent sent.
fn meaning(pprof: &[u8]) -> holmes_storage::ProfileContents {
    holmes_collector::process::normalize::normalize_pprof(pprof, Default::default())
        .expect("a profile")
}

/// A plain HTTP/1.1 GET, for the headers the API client does not show.
async fn raw_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete HTTP answer");
        let head = String::from_utf8(answer[..split].to_vec()).unwrap();
        (head.to_ascii_lowercase(), answer[split + 4..].to_vec())
    })
    .await
    .unwrap()
}

async fn api_error(api: &ApiClient, path: &str) -> (u16, String) {
    match api.get_raw(path).await {
        Err(ApiClientError::Api { status, message }) => (status, message),
        other => panic!("{path}: expected an API error, got {other:?}"),
    }
}

async fn send_all(agent: &RawAgent, first_seq: u64, chunks: &[ProfileChunk]) {
    for (seq, chunk) in (first_seq..).zip(chunks) {
        agent
            .send(seq, AgentBody::ProfileChunk(chunk.clone()))
            .await;
    }
}

async fn chunked_profiles_are_acknowledged_once_stored_and_come_back_exactly(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    // Keeping originals: the download is then the bytes sent, whatever chunks they came in.
    let Some(mut config) = crate::support::config(backend, dir.path()) else {
        return;
    };
    config.keep_originals = true;
    let server = Server::start(&config).await.unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();
    let started = unix_nanos_now() - 20 * SEC + 123_456;
    let data = profile_bytes(5 * MIB / 2, 7);

    let mut agent =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    let chunks = profile_chunks(PROFILE_A, EVENT, ProfileKind::Cpu, started, &data, MIB);
    assert_eq!(chunks.len(), 3);
    // Nothing is acknowledged before the last chunk is in and the profile stored ...
    send_all(&agent, 1, &chunks[..2]).await;
    assert_eq!(agent.next_within(Duration::from_millis(500)).await, None);
    // ... and then once, for the last chunk's sequence number.
    send_all(&agent, 3, &chunks[2..]).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 3 });
    agent
        .send(4, AgentBody::MetricWindow(MetricWindow::default()))
        .await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 4 });
    // A failed capture: one empty chunk with the reason.
    let mut failed = profile_chunks(FAILED, EVENT, ProfileKind::Threads, started + SEC, &[], MIB);
    failed[0].error = Some("cannot stop thread 7: permission denied".to_owned());
    send_all(&agent, 5, &failed).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 5 });

    // Listed, with the bytes' size and where to download them.
    let listed = api.profiles("checkout", "5m").await.unwrap();
    let labels: BTreeMap<String, String> = [("phase".to_owned(), "trigger".to_owned())].into();
    let expected = vec![
        holmes_api::ProfileJson {
            profile_id: PROFILE_A.to_owned(),
            event_id: EVENT.to_owned(),
            instance: "checkout-0".to_owned(),
            kind: "cpu".to_owned(),
            started: rfc3339(started),
            unix_ms: started / 1_000_000,
            duration_ms: 10_000,
            labels: labels.clone(),
            error: None,
            size_bytes: data.len() as u64,
            download: Some(format!("/api/v1/services/checkout/profiles/{PROFILE_A}")),
        },
        holmes_api::ProfileJson {
            profile_id: FAILED.to_owned(),
            event_id: EVENT.to_owned(),
            instance: "checkout-0".to_owned(),
            kind: "threads".to_owned(),
            started: rfc3339(started + SEC),
            unix_ms: (started + SEC) / 1_000_000,
            duration_ms: 10_000,
            labels,
            error: Some("cannot stop thread 7: permission denied".to_owned()),
            size_bytes: 0,
            download: None,
        },
    ];
    assert_eq!(listed.service, "checkout");
    assert_eq!(listed.profiles, expected);

    // Filters and limits.
    let base = "/api/v1/services/checkout/profiles?since=5m";
    let get = |query: String| {
        let api = api.clone();
        async move {
            api.get::<holmes_api::ProfilesJson>(&query)
                .await
                .unwrap()
                .profiles
        }
    };
    assert_eq!(get(format!("{base}&kind=threads")).await, expected[1..]);
    assert_eq!(get(format!("{base}&event={EVENT}")).await, expected);
    assert!(get(format!("{base}&event=other")).await.is_empty());
    assert_eq!(get(format!("{base}&limit=1")).await, expected[..1]);
    assert!(
        get("/api/v1/services/checkout/profiles?since=1s".to_owned())
            .await
            .is_empty()
    );
    let (status, message) = api_error(&api, &format!("{base}&kind=cpux")).await;
    assert_eq!(
        (status, message.as_str()),
        (
            400,
            "unknown profile kind \"cpux\"; known kinds: cpu, heap, threads, tasks"
        )
    );
    let (status, message) = api_error(&api, "/api/v1/services/cart/profiles").await;
    assert_eq!(
        (status, message.as_str()),
        (404, "unknown service \"cart\"")
    );

    // Downloaded byte for byte, as a file named after kind, event and profile.
    let downloaded = api.download_profile("checkout", PROFILE_A).await.unwrap();
    assert!(downloaded == data, "the download is byte-identical");
    let (head, body) = raw_get(
        server.http_addr(),
        &format!("/api/v1/services/checkout/profiles/{PROFILE_A}"),
    )
    .await;
    assert!(
        head.contains("\r\nx-holmes-download: original\r\n"),
        "{head}"
    );
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(
        head.contains("\r\ncontent-type: application/octet-stream\r\n"),
        "{head}"
    );
    assert!(
        head.contains(&format!(
            "\r\ncontent-disposition: attachment; filename=\"cpu.{EVENT}.{PROFILE_A}.pb.gz\"\r\n"
        )),
        "{head}"
    );
    assert!(body == data, "the raw body is byte-identical");
    let (status, message) = api_error(
        &api,
        "/api/v1/services/checkout/profiles/0F1E2D3C4B5A69788796A5B4C3D2E1F0",
    )
    .await;
    assert_eq!(
        (status, message.as_str()),
        (
            400,
            "profile id \"0F1E2D3C4B5A69788796A5B4C3D2E1F0\" is not 32 lowercase hex digits"
        )
    );
    let unknown = "00000000000000000000000000000000";
    let (status, message) = api_error(
        &api,
        &format!("/api/v1/services/checkout/profiles/{unknown}"),
    )
    .await;
    assert_eq!(
        (status, message),
        (
            404,
            format!("service \"checkout\" has no profile \"{unknown}\"")
        )
    );
    // Profile ids are scoped to their service: another service has no such profile.
    let (status, _) = api_error(&api, &format!("/api/v1/services/cart/profiles/{PROFILE_A}")).await;
    assert_eq!(status, 404);
    let (status, message) = api_error(
        &api,
        &format!("/api/v1/services/checkout/profiles/{FAILED}"),
    )
    .await;
    assert_eq!(
        (status, message),
        (
            404,
            format!("profile {FAILED} has no data: its capture failed: cannot stop thread 7: permission denied")
        )
    );

    // Through the CLI: the file, standard output, the JSON list and the table.
    let file = dir.path().join("cpu.pb.gz");
    let file_text = file.to_str().unwrap();
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "profile",
        "--service",
        "checkout",
        PROFILE_A,
        "-o",
        file_text,
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("wrote {} bytes to {file_text}\n", data.len())
    );
    assert!(
        std::fs::read(&file).unwrap() == data,
        "the file is byte-identical"
    );
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "profile",
        "--service",
        "checkout",
        PROFILE_A,
        "-o",
        "-",
    ])
    .await;
    assert!(out.status.success(), "{:?}", out.stderr);
    assert!(out.stdout == data, "standard output is byte-identical");
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "profile",
        "--service",
        "checkout",
        FAILED,
        "-o",
        file_text,
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("its capture failed: cannot stop thread 7"),);
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "--json",
        "profiles",
        "--service",
        "checkout",
        "--since",
        "5m",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let parsed: holmes_api::ProfilesJson = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed.profiles, expected);
    let out = holmes_cli(&["--api", &api_url, "profiles", "--service", "checkout"]).await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("checkout profiles since "), "{text}");
    let header: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        header,
        ["TIME", "INSTANCE", "KIND", "DURATION", "SIZE", "PROFILE", "EVENT", "ERROR"],
        "{text}"
    );
    let (time, row) = split_timed_row(lines[2]);
    assert!(time.starts_with(&cli_time(&rfc3339(started))), "{text}");
    assert_eq!(
        row,
        [
            "checkout-0",
            "cpu",
            "10s",
            "2.5",
            "MiB",
            PROFILE_A,
            EVENT,
            "-"
        ],
        "{text}"
    );
    let (_, row) = split_timed_row(lines[3]);
    assert_eq!(
        row[1..7],
        ["threads", "10s", "-", FAILED, EVENT, "cannot"],
        "{text}"
    );
    assert_eq!(lines.len(), 4, "{text}");
    server.shutdown().await;
}

crate::support::on_each_backend!(
    chunked_profiles_are_acknowledged_once_stored_and_come_back_exactly
);

async fn resent_profiles_are_stored_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let started = unix_nanos_now() - 30 * SEC;
    let a = profile_bytes(5 * MIB / 2, 11);
    let a_chunks = profile_chunks(PROFILE_A, EVENT, ProfileKind::Heap, started, &a, MIB);

    // Two chunks, then the connection drops before the third: nothing acknowledged.
    let mut first =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    send_all(&first, 1, &a_chunks[..2]).await;
    assert_eq!(first.next_within(Duration::from_millis(300)).await, None);
    drop(first);

    // The agent reconnects and resends everything unacknowledged, under the same numbers.
    let mut second =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    send_all(&second, 1, &a_chunks).await;
    assert_eq!(second.next().await, CollectorMessage::Ack { seq: 3 });

    // On one stream, a chunk 0 again starts the profile over.
    let b = profile_bytes(3 * MIB / 2, 13);
    let b_chunks = profile_chunks(PROFILE_B, EVENT, ProfileKind::Cpu, started + SEC, &b, MIB);
    send_all(&second, 4, &b_chunks[..1]).await;
    send_all(&second, 4, &b_chunks).await;
    assert_eq!(second.next().await, CollectorMessage::Ack { seq: 5 });
    // And a profile already stored, resent whole, is acknowledged and kept once.
    send_all(&second, 1, &a_chunks).await;
    second
        .send(6, AgentBody::MetricWindow(MetricWindow::default()))
        .await;
    assert_eq!(second.next().await, CollectorMessage::Ack { seq: 6 });
    // Other messages may come between a profile's chunks: they are stored, but the
    // cumulative ack waits for the profile.
    let c = profile_bytes(MIB + 1, 23);
    let c_chunks = profile_chunks(
        PROFILE_C,
        EVENT,
        ProfileKind::Tasks,
        started + 2 * SEC,
        &c,
        MIB,
    );
    send_all(&second, 7, &c_chunks[..1]).await;
    second
        .send(8, AgentBody::MetricWindow(MetricWindow::default()))
        .await;
    assert_eq!(second.next_within(Duration::from_millis(300)).await, None);
    send_all(&second, 9, &c_chunks[1..]).await;
    assert_eq!(second.next().await, CollectorMessage::Ack { seq: 9 });

    let listed = api.profiles("checkout", "5m").await.unwrap();
    let ids: Vec<(&str, u64)> = listed
        .profiles
        .iter()
        .map(|p| (p.profile_id.as_str(), p.size_bytes))
        .collect();
    assert_eq!(
        ids,
        [
            (PROFILE_A, a.len() as u64),
            (PROFILE_B, b.len() as u64),
            (PROFILE_C, c.len() as u64)
        ]
    );
    // Re-encoded from the store (originals are not kept by default): what they say is
    // what was sent.
    for (id, sent) in [(PROFILE_A, &a), (PROFILE_B, &b), (PROFILE_C, &c)] {
        let downloaded = api.download_profile("checkout", id).await.unwrap();
        assert_eq!(meaning(&downloaded), meaning(sent), "profile {id}");
    }
    server.shutdown().await;
}

crate::support::on_each_backend!(resent_profiles_are_stored_once);

/// Opens a stream, sends `chunks` from sequence number 1 and returns how the collector
/// ended it (failing if it acknowledged anything).
async fn refused(server: &Server, chunks: Vec<ProfileChunk>) -> (tonic::Code, String) {
    let mut agent = RawAgent::connect(
        server.grpc_addr(),
        hello("checkout", "checkout-bad", vec![]),
    )
    .await;
    send_all(&agent, 1, &chunks).await;
    let status = agent.next_error().await;
    (status.code(), status.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inconsistent_profiles_end_the_stream_and_others_are_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.max_profile_bytes = 2 * MIB as u64;
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let mut good = RawAgent::connect(
        server.grpc_addr(),
        hello("checkout", "checkout-good", vec![]),
    )
    .await;
    let started = unix_nanos_now() - 10 * SEC;
    let data = profile_bytes(3 * MIB / 2, 17);
    let chunks = profile_chunks(PROFILE_A, EVENT, ProfileKind::Cpu, started, &data, MIB / 2);
    assert_eq!(chunks.len(), 3);
    let invalid = tonic::Code::InvalidArgument;

    // Chunks out of order.
    assert_eq!(
        refused(&server, vec![chunks[1].clone()]).await,
        (
            invalid,
            format!("profile {PROFILE_A}: chunk 1 of 3 arrived before chunk 0")
        )
    );
    assert_eq!(
        refused(&server, vec![chunks[0].clone(), chunks[2].clone()]).await,
        (
            invalid,
            format!("profile {PROFILE_A}: chunk 2 arrived, expected chunk 1")
        )
    );
    // A chunk count or total that changes on the way.
    let mut recounted = chunks[1].clone();
    recounted.chunk_count = 4;
    assert_eq!(
        refused(&server, vec![chunks[0].clone(), recounted]).await,
        (
            invalid,
            format!("profile {PROFILE_A}: chunk 1 says 4 chunks, chunk 0 said 3")
        )
    );
    // Sizes that do not add up.
    let mut short = chunks.clone();
    short[2].data.truncate(1000);
    assert_eq!(
        refused(&server, short).await,
        (
            invalid,
            format!(
                "profile {PROFILE_A}: its 3 chunks hold {} bytes, total_bytes says {}",
                MIB + 1000,
                data.len()
            )
        )
    );
    let mut long = chunks.clone();
    long[1].data.extend_from_slice(&[0; 10]);
    assert_eq!(
        refused(&server, long).await,
        (
            invalid,
            format!(
                "profile {PROFILE_A}: chunk 2 brings it to {} bytes, more than its total_bytes {}",
                data.len() + 10,
                data.len()
            )
        )
    );
    // Over the configured limit, said before any byte is kept.
    let big = profile_bytes(5 * MIB / 2, 19);
    let too_big = profile_chunks(PROFILE_B, EVENT, ProfileKind::Cpu, started, &big, MIB);
    assert_eq!(
        refused(&server, too_big[..1].to_vec()).await,
        (
            invalid,
            format!(
                "profile {PROFILE_B} is {} bytes, the limit is {}",
                big.len(),
                2 * MIB
            )
        )
    );
    // Ids that cannot be downloaded, and a failed capture that carries data.
    let mut bad_id = chunks[0].clone();
    bad_id.profile_id = "p-1".to_owned();
    assert_eq!(
        refused(&server, vec![bad_id]).await,
        (
            invalid,
            "profile id \"p-1\" is not 32 lowercase hex digits".to_owned()
        )
    );
    let mut failed_with_data = chunks[0].clone();
    failed_with_data.error = Some("timeout".to_owned());
    let (code, message) = refused(&server, vec![failed_with_data]).await;
    assert_eq!(code, invalid);
    assert_eq!(
        message,
        format!("profile {PROFILE_A}: a failed capture (\"timeout\") must be one empty chunk, got chunk 0 of 3 with {} bytes", MIB / 2)
    );

    // Nothing of those was stored; the well-behaved agent is still served.
    send_all(&good, 1, &chunks).await;
    assert_eq!(good.next().await, CollectorMessage::Ack { seq: 3 });
    let listed = api.profiles("checkout", "5m").await.unwrap();
    assert_eq!(listed.profiles.len(), 1, "{listed:?}");
    assert_eq!(listed.profiles[0].instance, "checkout-good");
    let downloaded = api.download_profile("checkout", PROFILE_A).await.unwrap();
    assert_eq!(meaning(&downloaded), meaning(&data));
    server.shutdown().await;
}

/// A chunk without a sequence number cannot be acknowledged: the stream is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_profile_chunk_without_a_sequence_number_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let mut agent =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    let chunks = profile_chunks(
        PROFILE_A,
        EVENT,
        ProfileKind::Cpu,
        unix_nanos_now(),
        &[1, 2],
        10,
    );
    agent
        .send(0, AgentBody::ProfileChunk(chunks[0].clone()))
        .await;
    let status = agent.next_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(status.message(), "profile chunk without a sequence number");
    server.shutdown().await;
}

/// A gzipped CPU profile in which `burn_the_cpu` (called from `handle`) is the leaf of 9
/// samples of 10 ms and `handle` of 1; the stack of the 9 is the same each time.
fn cpu_profile() -> Vec<u8> {
    use holmes_proto::pprof::{Line, Profile, Sample};
    use holmes_proto::profile_tables::ProfileTables;
    use prost::Message;
    let mut t = ProfileTables::new();
    let sample_type = vec![
        t.value_type("samples", "count"),
        t.value_type("cpu", "nanoseconds"),
    ];
    let mut location = |name: &str, line: i64| {
        let function_id = t.function(name, "", "src/main.rs", 0);
        t.location(
            0,
            0,
            vec![Line {
                function_id,
                line,
                column: 0,
            }],
        )
    };
    let main = location("main", 10);
    let handle = location("shop::handle", 20);
    let burn = location("shop::burn_the_cpu", 30);
    let sample = |stack: Vec<u64>| Sample {
        location_id: stack,
        value: vec![1, 10_000_000],
        label: vec![],
    };
    let mut samples = vec![sample(vec![handle, main])];
    samples.extend((0..9).map(|_| sample(vec![burn, handle, main])));
    let p = t.into_profile(Profile {
        sample_type,
        sample: samples,
        ..Profile::default()
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&p.encode_to_vec()).unwrap();
    gz.finish().unwrap()
}

/// Profiles that are not pprof, that inflate past the limit, or whose stacks are too deep
/// are acknowledged and listed as refused with the reason (so the agent does not resend
/// them forever); the stream goes on, and a good profile after them is decoded: its top
/// function is the one that burned the CPU.
async fn bad_profiles_are_refused_with_the_reason(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut config) = crate::support::config(backend, dir.path()) else {
        return;
    };
    config.max_decoded_profile_bytes = 4 * MIB as u64;
    let server = Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let agent =
        RawAgent::connect(server.grpc_addr(), hello("checkout", "checkout-0", vec![])).await;
    let mut agent = agent;
    let started = unix_nanos_now() - 10 * SEC;

    // 16 MiB of zeros, gzipped to about 16 KiB.
    let bomb = {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for _ in 0..16 {
            gz.write_all(&vec![0u8; MIB]).unwrap();
        }
        gz.finish().unwrap()
    };
    let deep = {
        use holmes_proto::pprof::Profile;
        use prost::Message;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&cpu_profile()[..])
            .read_to_end(&mut raw)
            .unwrap();
        let mut p = Profile::decode(&raw[..]).unwrap();
        p.sample[0].location_id = vec![1; 5000];
        p.encode_to_vec()
    };
    let ids = [
        "b0000000000000000000000000000001",
        "b0000000000000000000000000000002",
        "b0000000000000000000000000000003",
        "b0000000000000000000000000000004",
    ];
    let bodies = [
        b"this is not a profile at all".to_vec(),
        bomb,
        deep,
        cpu_profile(),
    ];
    for (seq, (id, body)) in (1..).zip(ids.iter().zip(&bodies)) {
        let chunks = profile_chunks(id, EVENT, ProfileKind::Cpu, started + seq * SEC, body, MIB);
        send_all(&agent, seq, &chunks).await;
        assert_eq!(agent.next().await, CollectorMessage::Ack { seq });
    }

    let listed = api.profiles("checkout", "5m").await.unwrap().profiles;
    let errors: Vec<Option<&str>> = listed.iter().map(|p| p.error.as_deref()).collect();
    assert_eq!(listed.len(), 4, "{listed:?}");
    let refused = "refused by the collector: ";
    assert!(
        errors[0].is_some_and(|e| e.starts_with(&format!("{refused}not a valid profile"))),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        Some(
            format!(
                "{refused}the profile decompresses to more than {} bytes",
                4 * MIB
            )
            .as_str()
        )
    );
    assert_eq!(
        errors[2],
        Some(format!("{refused}sample 0 is 5000 frames deep, more than the 1024 allowed").as_str())
    );
    assert_eq!(errors[3], None);
    assert_eq!(
        listed[3].download.as_deref(),
        Some(download_path("checkout", ids[3]).as_str())
    );

    let top = api.top("checkout", ids[3], None, 10).await.unwrap();
    assert_eq!(
        (top.sample_type.as_str(), top.unit.as_str()),
        ("cpu", "nanoseconds")
    );
    assert_eq!((top.total, top.samples, top.stacks), (100_000_000, 10, 2));
    assert_eq!(top.functions[0].function, "shop::burn_the_cpu");
    assert_eq!(
        (top.functions[0].flat, top.functions[0].cum),
        (90_000_000, 90_000_000)
    );
    let main = top.functions.iter().find(|f| f.function == "main").unwrap();
    assert_eq!((main.flat, main.cum), (0, 100_000_000));
    let by_count = api
        .top("checkout", ids[3], Some("samples"), 1)
        .await
        .unwrap();
    assert_eq!(by_count.functions.len(), 1);
    assert_eq!(by_count.functions[0].flat, 9);
    // The same through the CLI, as a person reads it.
    let api_url = format!("http://{}", server.http_addr());
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "top",
        "--service",
        "checkout",
        ids[3],
        "--limit",
        "2",
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("cpu: 100000000 nanoseconds in 10 samples, 2 distinct stacks"),
        "{text}"
    );
    assert!(
        lines[2].contains("90.0%") && lines[2].ends_with("shop::burn_the_cpu"),
        "{text}"
    );
    // A refused profile has no top; the reason is given.
    let (status, message) = api_error(&api, &top_path("checkout", ids[1])).await;
    assert_eq!(status, 404);
    assert!(message.contains("decompresses to more than"), "{message}");
    let (status, message) = api_error(
        &api,
        &format!("{}?sample_type=alloc", top_path("checkout", ids[3])),
    )
    .await;
    assert_eq!(
        (status, message.as_str()),
        (
            400,
            "no sample type \"alloc\"; this profile has: samples, cpu"
        )
    );
    server.shutdown().await;
}

crate::support::on_each_backend!(bad_profiles_are_refused_with_the_reason);
