//! The ingest bench's foreign clients: the same profiles as the simulated agents send,
//! pushed the way Pyroscope clients push (`POST /push.v1.PusherService/Push`, a gzipped
//! `PushRequest` holding the gzip pprof) and exported as OTLP profiles (over HTTP and
//! gRPC, each an `ExportProfilesServiceRequest` made by the collector's own OTLP export),
//! by as many concurrent clients as agents, each sending its next profile once the one
//! before it is answered. Bodies are encoded before the clock starts: the figures are
//! the collector's. One collector per protocol, on SQLite (ClickHouse adds the same
//! store cost to each; `HOLMES_BENCH_FOREIGN=0` skips this section).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use holmes_collector::config::Config;
use holmes_collector::ingest::pyroscope::push::{
    LabelPair, PushRequest, RawProfileSeries, RawSample,
};
use holmes_collector::process::normalize::{normalize_pprof, Limits};
use holmes_collector::Server;
use holmes_storage::ProfileRecord;
use http_body_util::{BodyExt, Full};
use opentelemetry_proto::tonic::collector::profiles::v1development::profiles_service_client::ProfilesServiceClient;
use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use prost::Message as _;

use super::{percentile, si, CpuMark, GenProfile, Params, SERVICE};

/// How a foreign client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    PyroscopePush,
    OtlpHttp,
    OtlpGrpc,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::PyroscopePush => "Pyroscope push.v1 (HTTP)",
            Protocol::OtlpHttp => "OTLP profiles (HTTP)",
            Protocol::OtlpGrpc => "OTLP profiles (gRPC)",
        }
    }
}

/// One protocol's run.
pub(crate) struct ForeignRun {
    protocol: Protocol,
    profiles: usize,
    body_bytes: u64,
    wall: Duration,
    collector_cpu: f64,
    latencies: Vec<Duration>,
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, data).unwrap();
    gz.finish().unwrap()
}

/// The request body of profile `i` for `protocol`, from client `instance`.
fn body(protocol: Protocol, p: &GenProfile, instance: usize) -> Vec<u8> {
    match protocol {
        Protocol::PyroscopePush => gzip(
            &PushRequest {
                series: vec![RawProfileSeries {
                    labels: [
                        ("__name__", "process_cpu"),
                        ("service_name", SERVICE),
                        ("instance", &format!("orders-{instance:03}")),
                        ("region", "eu-west-1"),
                    ]
                    .into_iter()
                    .map(|(name, value)| LabelPair {
                        name: name.to_owned(),
                        value: value.to_owned(),
                    })
                    .collect(),
                    samples: vec![RawSample {
                        raw_profile: p.pprof.clone(),
                        id: p.id.clone(),
                    }],
                }],
            }
            .encode_to_vec(),
        ),
        Protocol::OtlpHttp | Protocol::OtlpGrpc => {
            let contents =
                normalize_pprof(&p.pprof, Limits::default()).expect("a generated profile decodes");
            let record = ProfileRecord {
                profile_id: p.id.clone(),
                event_id: format!("bench-{instance}"),
                service: SERVICE.to_owned(),
                instance_id: format!("orders-{instance:03}"),
                kind: holmes_proto::ProfileKind::Cpu,
                started_unix_nanos: p.started_unix_nanos,
                duration: Duration::from_secs(10),
                labels: [("region".to_owned(), "eu-west-1".to_owned())].into(),
                error: None,
                size_bytes: p.pprof.len() as u64,
                format: holmes_proto::ProfileFormat::PprofGzip,
                contents: Some(contents),
                original: None,
            };
            holmes_collector::query::otlp::export_request(&[record])
                .expect("a generated profile exports")
                .encode_to_vec()
        }
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Sends `bodies` one at a time; the time each took to be answered.
async fn run_client(
    protocol: Protocol,
    http: SocketAddr,
    grpc: SocketAddr,
    bodies: Vec<Vec<u8>>,
) -> Vec<Duration> {
    let client: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build_http();
    let mut otlp = match protocol {
        Protocol::OtlpGrpc => Some(
            ProfilesServiceClient::connect(format!("http://{grpc}"))
                .await
                .unwrap()
                .max_decoding_message_size(64 << 20),
        ),
        _ => None,
    };
    let mut latencies = Vec::with_capacity(bodies.len());
    for body in bodies {
        let sent = Instant::now();
        match protocol {
            Protocol::OtlpGrpc => {
                let request = ExportProfilesServiceRequest::decode(body.as_slice()).unwrap();
                let answer = otlp
                    .as_mut()
                    .unwrap()
                    .export(request)
                    .await
                    .expect("the collector takes the export")
                    .into_inner();
                assert!(answer.partial_success.is_none(), "{answer:?}");
            }
            Protocol::PyroscopePush | Protocol::OtlpHttp => {
                let (path, content_type) = if protocol == Protocol::PyroscopePush {
                    ("/push.v1.PusherService/Push", "application/proto")
                } else {
                    ("/v1development/profiles", "application/x-protobuf")
                };
                let mut request = hyper::Request::post(format!("http://{http}{path}"))
                    .header("content-type", content_type);
                if protocol == Protocol::PyroscopePush {
                    request = request.header("content-encoding", "gzip");
                }
                let response = client
                    .request(request.body(Full::new(Bytes::from(body))).unwrap())
                    .await
                    .expect("the collector answers");
                let status = response.status();
                let answer = response.into_body().collect().await.unwrap().to_bytes();
                assert!(status.is_success(), "{status}: {answer:?}");
            }
        }
        latencies.push(sent.elapsed());
    }
    latencies
}

/// Every protocol against its own collector on SQLite.
pub(crate) fn run(
    params: &Params,
    profiles: &Arc<Vec<GenProfile>>,
    collector_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
) -> Vec<ForeignRun> {
    let mut out = Vec::new();
    for protocol in [
        Protocol::PyroscopePush,
        Protocol::OtlpHttp,
        Protocol::OtlpGrpc,
    ] {
        println!("running {} on SQLite ...", protocol.name());
        let mut per_client: Vec<Vec<Vec<u8>>> = vec![Vec::new(); params.agents];
        let mut body_bytes = 0u64;
        for (i, p) in profiles.iter().enumerate() {
            let instance = i % params.agents;
            let b = body(protocol, p, instance);
            body_bytes += b.len() as u64;
            per_client[instance].push(b);
        }
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.path().to_owned(),
            ..Config::default()
        };
        let server = collector_rt
            .block_on(Server::start(&config))
            .expect("the collector starts");
        let (http, grpc) = (server.http_addr(), server.grpc_addr());
        let before = CpuMark::now(None);
        let started = Instant::now();
        let handles: Vec<_> = per_client
            .into_iter()
            .map(|bodies| agent_rt.spawn(run_client(protocol, http, grpc, bodies)))
            .collect();
        let mut latencies = Vec::with_capacity(profiles.len());
        for h in handles {
            latencies.extend(agent_rt.block_on(h).unwrap());
        }
        let wall = started.elapsed();
        let after = CpuMark::now(None);
        collector_rt.block_on(server.shutdown());
        let clients_cpu = after.agents - before.agents;
        out.push(ForeignRun {
            protocol,
            profiles: profiles.len(),
            body_bytes,
            wall,
            collector_cpu: (after.process - before.process) - clients_cpu,
            latencies,
        });
    }
    out
}

/// The foreign rows, under the agent's (SQLite) for comparison.
pub(crate) fn report(agent: Option<(f64, f64, Duration, Duration)>, runs: &[ForeignRun]) {
    if runs.is_empty() {
        return;
    }
    let samples = holmes_devtools::synthetic::SAMPLES_PER_PROFILE as f64;
    println!();
    println!("== by protocol (SQLite; the same profiles, as many clients as agents, bodies encoded beforehand)");
    println!(
        "  {:<28} {:>12} {:>22} {:>22} {:>20}",
        "protocol", "profiles/s", "profiles/s per core", "samples/s per core", "answer p50 / p99"
    );
    if let Some((per_s, per_core, p50, p99)) = agent {
        println!(
            "  {:<28} {:>12} {:>22} {:>22} {:>20}",
            "holmes agent (gRPC, stream form)",
            si(per_s),
            si(per_core),
            si(per_core * samples),
            format!("{:.2} / {:.2} s", p50.as_secs_f64(), p99.as_secs_f64())
        );
    }
    for r in runs {
        let n = r.profiles as f64;
        let mut sorted = r.latencies.clone();
        sorted.sort();
        println!(
            "  {:<28} {:>12} {:>22} {:>22} {:>20}   ({:.1} KiB a body)",
            r.protocol.name(),
            si(n / r.wall.as_secs_f64()),
            si(n / r.collector_cpu),
            si(n / r.collector_cpu * samples),
            format!(
                "{:.2} / {:.2} s",
                percentile(&sorted, 0.5).as_secs_f64(),
                percentile(&sorted, 0.99).as_secs_f64()
            ),
            r.body_bytes as f64 / n / 1024.0
        );
    }
}
