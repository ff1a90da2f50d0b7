//! The hostile clients. Each comes from its own loopback address (`127.0.0.x`, as a
//! hostile host would from its own), so that the collector's per-address caps meet it
//! and not the honest agents on `127.0.0.1`, and each keeps at it until the run ends:
//!
//! - `amplify`: profiles of the amplification shape (`synthetic::amplify`): one long
//!   name at every depth of many distinct stacks, the same name in more locations than
//!   the materialization cap allows, a name over the name cap, stacks over the depth
//!   cap — each under a trigger event, so that the incident's suspects read them too;
//! - `skew`: a well-formed agent whose clock says 1970 (or 2200): metric windows,
//!   triggers and profiles dated then;
//! - `slow-grpc`: agent streams that never read what the collector sends, and send the
//!   first chunk of a profile and never the rest; or first chunks of profiles until
//!   the stream's unfinished bytes pass `max_profile_bytes`;
//! - `slow-http`: HTTP requests whose head is sent a byte every second and never
//!   finished (slowloris), and pipelined requests whose answers are never read;
//! - `ids`: hellos with a 512 KiB host name or instance id, triggers with a 512 KiB
//!   event id, and the `"*"` token bringing a new service on every stream;
//! - `flood`: more agent streams at once than `[limits] max_streams_per_peer`, and
//!   silent TCP connections to both listeners.
//!
//! What each saw (streams opened and refused, by gRPC code; connections cut) is counted
//! in its [`HostileTally`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_proto::{AgentBody, AgentMessage, Hello, ProfileChunk};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::honest::{open, profile_chunk, trigger, window, Stream};
use super::{lock, unix_nanos};
use crate::synthetic::amplify::Amplification;
use crate::synthetic::{mix, ProfileFactory};

/// The kinds of hostile client, in the order clients are given them.
pub const KINDS: [&str; 10] = [
    "amplify",
    "skew",
    "slow-grpc",
    "slow-http",
    "ids",
    "flood",
    "amplify",
    "skew",
    "ids",
    "flood",
];

/// Where the hostile clients go and how hard.
#[derive(Debug, Clone)]
pub struct HostilePlan {
    /// The collector's gRPC endpoint (`http://host:port`).
    pub endpoint: String,
    /// Its gRPC address.
    pub grpc: SocketAddr,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// The `"*"` token.
    pub fleet_token: String,
    /// The collector's `[limits] max_streams_per_peer`.
    pub max_streams_per_peer: usize,
}

/// What one hostile client did and saw.
#[derive(Debug, Default, Clone)]
pub struct HostileTally {
    /// Things sent, by what.
    pub sent: BTreeMap<String, u64>,
    /// Streams or messages the collector refused, by gRPC code.
    pub refused: BTreeMap<String, u64>,
    /// One refusal message per code, as the collector wrote it.
    pub examples: BTreeMap<String, String>,
    /// Connections the collector closed on its own, by listener (`http`, `grpc`).
    pub cut: BTreeMap<String, u64>,
    /// Connections still open when the client gave up waiting, by listener.
    pub still_open: BTreeMap<String, u64>,
}

impl HostileTally {
    fn sent(&mut self, what: &str, n: u64) {
        *self.sent.entry(what.to_owned()).or_default() += n;
    }

    fn refused(&mut self, err: &str) {
        let code = err.split(':').next().unwrap_or("").to_owned();
        *self.refused.entry(code.clone()).or_default() += 1;
        self.examples.entry(code).or_insert_with(|| {
            let mut e = err.to_owned();
            e.truncate(300);
            e
        });
    }
}

/// The loopback address hostile client `index` speaks from.
pub fn address_of(index: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + index as u8))
}

/// Runs hostile client `index` (its kind: [`KINDS`]) until `until`.
pub async fn run(
    plan: Arc<HostilePlan>,
    index: usize,
    factory: Arc<ProfileFactory>,
    tally: Arc<Mutex<HostileTally>>,
    until: Instant,
) {
    let from = address_of(index);
    let service = format!("hostile-{}-{index}", KINDS[index % KINDS.len()]);
    match KINDS[index % KINDS.len()] {
        "amplify" => amplify(&plan, from, &service, index, &tally, until).await,
        "skew" => skew(&plan, from, &service, index, &factory, &tally, until).await,
        "slow-grpc" => slow_grpc(&plan, from, &service, &tally, until).await,
        "slow-http" => slow_http(&plan, from, &tally, until).await,
        "ids" => ids(&plan, from, &service, index, &tally, until).await,
        _ => flood(&plan, from, &service, &tally, until).await,
    }
}

fn hello(service: &str, instance: &str) -> Hello {
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: service.to_owned(),
        instance_id: instance.to_owned(),
        host: "hostile".to_owned(),
        pid: 666,
        labels: BTreeMap::new(),
        agent_version: "holmes-soak".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: unix_nanos(),
        collect_interval: Duration::from_secs(1),
        rules_version: 0,
        executable: None,
        debuginfo_upload: false,
    }
}

async fn send(stream: &Stream, seq: u64, body: AgentBody) -> bool {
    stream
        .tx
        .send(holmes_proto::pb::AgentMessage::from(&AgentMessage {
            seq,
            body,
        }))
        .await
        .is_ok()
}

/// Waits for the ack of `seq` (or the stream's end, whose status is counted) for at most
/// `wait`; true when acknowledged.
async fn acked(stream: &mut Stream, seq: u64, wait: Duration, tally: &Mutex<HostileTally>) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.inbound.message()).await {
            Ok(Ok(Some(raw))) => {
                if let Ok(holmes_proto::CollectorMessage::Ack { seq: s }) =
                    holmes_proto::CollectorMessage::try_from(raw)
                {
                    if s >= seq {
                        return true;
                    }
                }
            }
            Ok(Ok(None)) => return false,
            Ok(Err(status)) => {
                lock(tally).refused(&format!("{:?}: {}", status.code(), status.message()));
                return false;
            }
            Err(_) => return false,
        }
    }
}

/// The amplifying profiles an `amplify` client sends, in its order (every refusal
/// reason within the first three), each with the reason the collector counts for it.
pub const AMPLIFY_SHAPES: [(&str, Amplification, &str); 4] = [
    (
        "too_deep",
        Amplification::TOO_DEEP,
        "holmes_profiles_refused_total:too_deep",
    ),
    (
        "name_too_long",
        Amplification::NAME_TOO_LONG,
        "holmes_profiles_refused_total:name_too_long",
    ),
    (
        "shared_long_name",
        Amplification::SHARED_LONG_NAME,
        "holmes_profiles_refused_total:amplifies",
    ),
    (
        "many_locations",
        Amplification::MANY_LOCATIONS,
        "holmes_profiles_refused_total:amplifies",
    ),
];

async fn amplify(
    plan: &HostilePlan,
    from: IpAddr,
    service: &str,
    index: usize,
    tally: &Mutex<HostileTally>,
    until: Instant,
) {
    // Encoded once: the attacker's cost is the sending, the collector's the decoding.
    let encoded: Vec<(&str, Vec<u8>)> = AMPLIFY_SHAPES
        .iter()
        .map(|(name, shape, _)| (*name, shape.pprof_gzip(mix(index as u64))))
        .collect();
    let mut n = 0u64;
    while Instant::now() < until {
        let instance = format!("{service}-i");
        let mut stream = match open(
            &plan.endpoint,
            Some(from),
            &plan.fleet_token,
            hello(service, &instance),
            8,
        )
        .await
        {
            Ok(s) => s,
            Err(err) => {
                lock(tally).refused(&format!("{err:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut seq = 0;
        while Instant::now() < until {
            let (name, data) = &encoded[(n % encoded.len() as u64) as usize];
            n += 1;
            let now = unix_nanos();
            let event_id = format!("amp{:016x}", mix(n ^ index as u64));
            let profile_id = format!("{:016x}{:016x}", mix(now), mix(n));
            seq += 1;
            if !send(
                &stream,
                seq,
                AgentBody::Trigger(trigger(event_id.clone(), now)),
            )
            .await
            {
                break;
            }
            seq += 1;
            let chunk = profile_chunk(profile_id, event_id, data.clone(), now);
            if !send(&stream, seq, AgentBody::ProfileChunk(chunk)).await {
                break;
            }
            lock(tally).sent(&format!("profile {name} ({} bytes)", data.len()), 1);
            if !acked(&mut stream, seq, Duration::from_secs(60), tally).await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}

async fn skew(
    plan: &HostilePlan,
    from: IpAddr,
    service: &str,
    index: usize,
    factory: &ProfileFactory,
    tally: &Mutex<HostileTally>,
    until: Instant,
) {
    // 1970-01-02 for the first skew client, 2200-01-01 for the second, and so on.
    let nth = KINDS[..index % KINDS.len()]
        .iter()
        .filter(|k| **k == "skew")
        .count();
    let (when, label) = if nth % 2 == 0 {
        (86_400_000_000_000u64, "1970")
    } else {
        (7_258_118_400_000_000_000u64, "2200")
    };
    while Instant::now() < until {
        let mut stream = match open(
            &plan.endpoint,
            Some(from),
            &plan.fleet_token,
            hello(service, &format!("{service}-i")),
            64,
        )
        .await
        {
            Ok(s) => s,
            Err(err) => {
                lock(tally).refused(&format!("{err:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let mut seq = 0;
        let mut second = 0u64;
        while Instant::now() < until {
            second += 1;
            // Each window spreads its points over a thousand days.
            let mut w = window(when, second % 10 == 0);
            for s in &mut w.series {
                s.samples = (0..1000u64)
                    .map(|d| holmes_proto::Sample {
                        unix_nanos: when + d * 86_400_000_000_000,
                        value: 1.0,
                    })
                    .collect();
            }
            seq += 1;
            if !send(&stream, seq, AgentBody::MetricWindow(w)).await {
                break;
            }
            lock(tally).sent(&format!("metric window dated {label}"), 1);
            if second % 10 == 0 {
                let event_id = format!("skew{:016x}", mix(second ^ index as u64 ^ unix_nanos()));
                seq += 1;
                if !send(
                    &stream,
                    seq,
                    AgentBody::Trigger(trigger(event_id.clone(), when)),
                )
                .await
                {
                    break;
                }
                let data = factory.cpu_profile(mix(second), when);
                let profile_id = format!("{:016x}{:016x}", mix(unix_nanos()), mix(second));
                seq += 1;
                if !send(
                    &stream,
                    seq,
                    AgentBody::ProfileChunk(profile_chunk(profile_id, event_id, data, when)),
                )
                .await
                {
                    break;
                }
                lock(tally).sent(&format!("trigger + profile dated {label}"), 1);
            }
            if !acked(&mut stream, seq, Duration::from_secs(30), tally).await {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn first_chunk(profile_id: String, total: usize, piece: usize) -> ProfileChunk {
    let mut chunk = profile_chunk(
        profile_id,
        "slow".to_owned(),
        vec![0x1f; piece],
        unix_nanos(),
    );
    chunk.chunk_count = total.div_ceil(piece) as u32;
    chunk.total_bytes = total as u64;
    chunk
}

async fn slow_grpc(
    plan: &HostilePlan,
    from: IpAddr,
    service: &str,
    tally: &Mutex<HostileTally>,
    until: Instant,
) {
    let mut round = 0u64;
    while Instant::now() < until {
        round += 1;
        let instance = format!("{service}-{}", round % 2);
        let mut stream = match open(
            &plan.endpoint,
            Some(from),
            &plan.fleet_token,
            hello(service, &instance),
            64,
        )
        .await
        {
            Ok(s) => s,
            Err(err) => {
                lock(tally).refused(&format!("{err:#}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if round % 2 == 1 {
            // Half a profile, then silence; nothing the collector sends is read until
            // it gives up on the profile.
            let chunk = first_chunk(format!("{:032x}", u128::from(mix(round))), 4 << 20, 1 << 20);
            if send(&stream, 1, AgentBody::ProfileChunk(chunk)).await {
                lock(tally).sent("half a profile, then silence", 1);
            }
        } else {
            // First chunks of ever more profiles: the unfinished bytes one stream holds.
            for i in 0..40u64 {
                let chunk = first_chunk(
                    format!("{:032x}", u128::from(mix(round ^ (i << 8)))),
                    16 << 20,
                    1 << 20,
                );
                if !send(&stream, i + 1, AgentBody::ProfileChunk(chunk)).await {
                    break;
                }
                lock(tally).sent("first chunk of an unfinished profile", 1);
            }
        }
        // Read nothing but the stream's end.
        let left = until.saturating_duration_since(Instant::now());
        let end = tokio::time::timeout(left, async {
            loop {
                match stream.inbound.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await;
        if let Ok(Some(status)) = end {
            lock(tally).refused(&format!("{:?}: {}", status.code(), status.message()));
        }
    }
}

async fn connect_from(from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(to).await
}

/// Waits until `until` for the peer to close `conn`; true if it did.
async fn closed_by_peer(conn: &mut TcpStream, until: Instant) -> bool {
    let mut buf = [0u8; 4096];
    let left = until.saturating_duration_since(Instant::now());
    let ended = tokio::time::timeout(left, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    ended.is_ok()
}

async fn slow_http(plan: &HostilePlan, from: IpAddr, tally: &Mutex<HostileTally>, until: Instant) {
    // A pipelined stream of requests whose answers are never read, on one connection.
    let reader = async {
        let Ok(mut conn) = connect_from(from, plan.http).await else {
            return;
        };
        let request = format!(
            "GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
            plan.http.port()
        );
        let mut n = 0u64;
        while Instant::now() < until {
            match tokio::time::timeout(Duration::from_secs(1), conn.write_all(request.as_bytes()))
                .await
            {
                Ok(Ok(())) => n += 1,
                Ok(Err(_)) => break,
                // The collector stopped reading: its socket buffers are full.
                Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        lock(tally).sent("pipelined request never read", n);
    };
    // Slowloris: heads that never end, one byte a second, 50 connections at a time.
    let loris = async {
        while Instant::now() < until {
            let mut conns = Vec::new();
            for _ in 0..50 {
                if let Ok(mut c) = connect_from(from, plan.http).await {
                    let head = format!(
                        "GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nX-Slow: ",
                        plan.http.port()
                    );
                    if c.write_all(head.as_bytes()).await.is_ok() {
                        conns.push(c);
                    }
                }
            }
            lock(tally).sent("unfinished request head", conns.len() as u64);
            let round_end = (Instant::now() + Duration::from_secs(60)).min(until);
            let mut open = conns;
            while Instant::now() < round_end && !open.is_empty() {
                let mut still = Vec::new();
                for mut c in open {
                    if c.write_all(b"a").await.is_ok() {
                        still.push(c);
                    } else {
                        *lock(tally).cut.entry("http".to_owned()).or_default() += 1;
                    }
                }
                open = still;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            *lock(tally).still_open.entry("http".to_owned()).or_default() += open.len() as u64;
        }
    };
    tokio::join!(reader, loris);
}

async fn ids(
    plan: &HostilePlan,
    from: IpAddr,
    service: &str,
    index: usize,
    tally: &Mutex<HostileTally>,
    until: Instant,
) {
    let huge = "a".repeat(512 * 1024);
    let mut n = 0u64;
    while Instant::now() < until {
        n += 1;
        let (what, hello, event_id) = match n % 4 {
            0 => {
                let mut h = hello(service, &format!("{service}-i"));
                h.host = huge.clone();
                ("hello with a 512 KiB host", h, None)
            }
            1 => (
                "hello with a 512 KiB instance id",
                hello(service, &huge),
                None,
            ),
            2 => (
                "trigger with a 512 KiB event id",
                hello(service, &format!("{service}-i")),
                Some(huge.clone()),
            ),
            _ => {
                // The "*" token brings a new service on every stream.
                let fresh = format!("{service}-new-{index}-{n}");
                (
                    "hello of a new service",
                    hello(&fresh, &format!("{fresh}-i")),
                    None,
                )
            }
        };
        lock(tally).sent(what, 1);
        match open(&plan.endpoint, Some(from), &plan.fleet_token, hello, 8).await {
            Ok(mut stream) => {
                if let Some(event_id) = event_id {
                    send(
                        &stream,
                        1,
                        AgentBody::Trigger(trigger(event_id, unix_nanos())),
                    )
                    .await;
                }
                // Refused after the hello (or the trigger): the stream ends with the reason.
                let _ = acked(&mut stream, 1, Duration::from_secs(5), tally).await;
            }
            Err(err) => lock(tally).refused(&format!("{err:#}")),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn flood(
    plan: &HostilePlan,
    from: IpAddr,
    service: &str,
    tally: &Mutex<HostileTally>,
    until: Instant,
) {
    while Instant::now() < until {
        // Twice the per-address cap of agent streams, each on its own connection.
        let n = plan.max_streams_per_peer * 2;
        let opens = (0..n).map(|i| {
            let hello = hello(service, &format!("{service}-{i}"));
            open(&plan.endpoint, Some(from), &plan.fleet_token, hello, 4)
        });
        let mut held = Vec::new();
        for opening in opens {
            match opening.await {
                Ok(s) => held.push(s),
                Err(err) => lock(tally).refused(&format!("{err:#}")),
            }
        }
        lock(tally).sent("agent stream", n as u64);
        // Silent TCP connections to both listeners.
        let mut silent = Vec::new();
        for _ in 0..100 {
            for (name, to) in [("http", plan.http), ("grpc", plan.grpc)] {
                if let Ok(c) = connect_from(from, to).await {
                    silent.push((name, c));
                }
            }
        }
        lock(tally).sent("silent TCP connection", silent.len() as u64);
        // One after another against one deadline: those cut meanwhile answer at once.
        let round_end = (Instant::now() + Duration::from_secs(30)).min(until);
        for (name, mut c) in silent {
            let cut = closed_by_peer(&mut c, round_end).await;
            let mut t = lock(tally);
            let count = if cut { &mut t.cut } else { &mut t.still_open };
            *count.entry(name.to_owned()).or_default() += 1;
        }
        drop(held);
    }
}
