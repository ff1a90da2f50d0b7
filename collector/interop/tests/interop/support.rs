//! The harness: a real collector on loopback (embedded store), third-party programs
//! found on the PATH (skipped, or failed under `HOLMES_TEST_REQUIRE_*`), plain HTTP, a
//! hand-driven agent on the ingest stream, and `go tool pprof` as the reader.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holmes_collector::config::Config;
use holmes_collector::Server;
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::pprof::{Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileChunk, ProfileKind,
};
use http_body_util::{BodyExt, Full};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A collector on free loopback ports with the embedded store, `change` applied to its
/// configuration; the folder holds its data.
pub(crate) async fn collector(change: impl FnOnce(&mut Config)) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    change(&mut config);
    let server = Server::start(&config).await.expect("collector starts");
    (server, dir)
}

/// A free loopback port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `name` on the PATH. Absent: `None` (the test says it is skipped), unless the
/// variable `require` is `1` (deploy/dev/test.sh sets it), which makes it a failure.
pub(crate) fn tool(name: &str, require: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var(require).as_deref() != Ok("1"),
            "{name} is required ({require}=1) but not on the PATH"
        );
        eprintln!("skipped: no {name} on the PATH");
    }
    found
}

/// The Python of `var` (a virtualenv from deploy/dev/pyclients.sh). Absent: `None`,
/// unless `HOLMES_TEST_REQUIRE_PYTHON_CLIENTS=1`.
pub(crate) fn python(var: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("HOLMES_TEST_REQUIRE_PYTHON_CLIENTS").as_deref() != Ok("1"),
            "{var} is required (HOLMES_TEST_REQUIRE_PYTHON_CLIENTS=1): eval \"$(deploy/dev/pyclients.sh)\""
        );
        eprintln!("skipped: {var} is not set (eval \"$(deploy/dev/pyclients.sh)\")");
    }
    found
}

/// A script of `tests/interop/py/`.
pub(crate) fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop/py")
        .join(name)
}

/// Runs a program to its end (at most `timeout`); its stdout, failing on a non-zero exit.
pub(crate) async fn run(program: &Path, args: &[&str], timeout: Duration) -> String {
    let out = tokio::time::timeout(
        timeout,
        tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{} {args:?} did not finish within {timeout:?}",
            program.display()
        )
    })
    .expect("the program runs");
    assert!(
        out.status.success(),
        "{} {args:?}: {}\n{}",
        program.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A program running in the background, killed when dropped; its output in a log file.
pub(crate) struct Daemon {
    child: tokio::process::Child,
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// Starts `program` with `args`, logging into `dir`.
    pub(crate) fn start(program: &Path, args: &[String], dir: &Path) -> Daemon {
        let log = dir.join("daemon.log");
        let file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        Daemon { child, log }
    }

    /// What it logged so far.
    pub(crate) fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Polls `check` until it yields `Some`, failing with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One HTTP request: the status and body (`None` when the server cannot be reached).
pub(crate) async fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Option<(u16, Bytes)> {
    static CLIENT: OnceLock<
        hyper_util::client::legacy::Client<
            hyper_util::client::legacy::connect::HttpConnector,
            Full<Bytes>,
        >,
    > = OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http()
    });
    let mut request = hyper::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

/// GET `url` as JSON (`None` unless it answers 200 with JSON).
pub(crate) async fn get_json(url: &str, headers: &[(&str, &str)]) -> Option<serde_json::Value> {
    let (status, body) = http("GET", url, headers, Vec::new()).await?;
    (status == 200).then(|| serde_json::from_slice(&body).ok())?
}

/// A gzipped CPU profile in the agent's shape (`samples/count`, `cpu/nanoseconds`) of
/// `stacks`: each a list of functions, leaf first, with its sample count.
pub(crate) fn cpu_pprof(stacks: &[(&[&str], i64)], started_unix_nanos: u64) -> Vec<u8> {
    use prost::Message;
    let mut t = ProfileTables::new();
    let sample_type = vec![
        t.value_type("samples", "count"),
        t.value_type("cpu", "nanoseconds"),
    ];
    let sample = stacks
        .iter()
        .map(|(frames, count)| Sample {
            location_id: frames
                .iter()
                .map(|f| {
                    let function = t.function(f, "", "src/lib.rs", 0);
                    t.location(
                        0,
                        0,
                        vec![Line {
                            function_id: function,
                            line: 1,
                            column: 0,
                        }],
                    )
                })
                .collect(),
            value: vec![*count, count * 10_000_000],
            label: Vec::new(),
        })
        .collect();
    let period_type = sample_type.last().copied();
    let profile = t.into_profile(Profile {
        sample_type,
        sample,
        time_nanos: started_unix_nanos as i64,
        duration_nanos: 2_000_000_000,
        period_type,
        period: 10_000_000,
        ..Profile::default()
    });
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &profile.encode_to_vec()).unwrap();
    gz.finish().unwrap()
}

/// A hand-driven agent: a raw tonic client on the ingest stream.
pub(crate) struct RawAgent {
    outbound: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::CollectorMessage>,
    next_seq: u64,
}

impl RawAgent {
    /// Opens a stream to `addr` as `service`/`instance` with `labels`.
    pub(crate) async fn connect(
        addr: SocketAddr,
        service: &str,
        instance: &str,
        labels: BTreeMap<String, String>,
    ) -> RawAgent {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .expect("the collector's gRPC port answers");
        let (outbound, rx) = mpsc::channel(64);
        let hello = Hello {
            protocol_version: holmes_proto::PROTOCOL_VERSION,
            service: service.to_owned(),
            instance_id: instance.to_owned(),
            host: "interop-host".to_owned(),
            pid: 4242,
            labels,
            agent_version: "0.0.0-interop".to_owned(),
            rules: Vec::new(),
            started_at_unix_nanos: 1,
            collect_interval: Duration::from_secs(1),
            rules_version: 0,
            executable: None,
            debuginfo_upload: false,
        };
        outbound
            .send(pb::AgentMessage::from(&AgentMessage {
                seq: 0,
                body: AgentBody::Hello(hello),
            }))
            .await
            .unwrap();
        let inbound = IngestClient::new(channel)
            .connect(tonic::Request::new(ReceiverStream::new(rx)))
            .await
            .expect("the collector accepts the stream")
            .into_inner();
        RawAgent {
            outbound,
            inbound,
            next_seq: 1,
        }
    }

    async fn send(&mut self, body: AgentBody) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbound
            .send(pb::AgentMessage::from(&AgentMessage { seq, body }))
            .await
            .expect("the stream is open");
        seq
    }

    /// Sends a trigger event and waits for its acknowledgement.
    pub(crate) async fn trigger(&mut self, event: holmes_proto::TriggerEvent) {
        let seq = self.send(AgentBody::Trigger(event)).await;
        self.acked(seq).await;
    }

    /// Sends `data` as one profile chunk of `event_id` and waits for its acknowledgement.
    pub(crate) async fn profile(
        &mut self,
        profile_id: &str,
        event_id: &str,
        started: u64,
        data: Vec<u8>,
    ) {
        let chunk = ProfileChunk {
            profile_id: profile_id.to_owned(),
            event_id: event_id.to_owned(),
            kind: ProfileKind::Cpu,
            chunk_index: 0,
            chunk_count: 1,
            total_bytes: data.len() as u64,
            data,
            started_unix_nanos: started,
            duration: Duration::from_secs(2),
            error: None,
            labels: [("phase".to_owned(), "trigger".to_owned())].into(),
            format: holmes_proto::ProfileFormat::PprofGzip,
        };
        let seq = self.send(AgentBody::ProfileChunk(chunk)).await;
        self.acked(seq).await;
    }

    /// The next message from the collector within `wait`.
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<CollectorMessage> {
        let raw = tokio::time::timeout(wait, self.inbound.message())
            .await
            .ok()?
            .expect("the stream stays healthy")?;
        Some(CollectorMessage::try_from(raw).expect("a valid collector message"))
    }

    async fn acked(&mut self, seq: u64) {
        loop {
            match self.next(Duration::from_secs(30)).await {
                Some(CollectorMessage::Ack { seq: acked }) if acked >= seq => return,
                Some(_) => {}
                None => panic!("no acknowledgement of message {seq}"),
            }
        }
    }
}

/// `go tool pprof -top` of `file`; `None` (skipped) without go, unless
/// `HOLMES_TEST_REQUIRE_GO=1`.
pub(crate) async fn pprof_top(file: &Path) -> Option<String> {
    let go = tool("go", "HOLMES_TEST_REQUIRE_GO")?;
    Some(
        run(
            &go,
            &["tool", "pprof", "-top", file.to_str().unwrap()],
            Duration::from_secs(120),
        )
        .await,
    )
}

/// A real HTTP receiver on loopback: every request's body, in order.
pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    bodies: mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Receiver {
    /// Listens on a free loopback port and answers every request 200.
    pub(crate) async fn start() -> Receiver {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, bodies) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut request_line = String::new();
                        if stream.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let path = request_line.split(' ').nth(1).unwrap_or("").to_owned();
                        let mut length = 0usize;
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            let line = line.trim_end();
                            if line.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = line.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0; length];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        let _ = tx.send((path, body));
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                        if stream.get_mut().write_all(ok).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Receiver { addr, bodies }
    }

    /// The next JSON body that `want` accepts, within `timeout`.
    pub(crate) async fn next_json(
        &mut self,
        timeout: Duration,
        what: &str,
        want: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (_, body) = tokio::time::timeout(left, self.bodies.recv())
                .await
                .unwrap_or_else(|_| panic!("timed out after {timeout:?} waiting for {what}"))
                .expect("the receiver runs");
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
                if want(&json) {
                    return json;
                }
            }
        }
    }
}
