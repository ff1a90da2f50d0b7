//! Downloads are equivalent to what was sent. The collector keeps no originals by
//! default: a download is pprof re-encoded from the stored locations, stacks and
//! samples. `go tool pprof` reads the bytes an agent sent and the download the same way,
//! line for line (`-raw`: sample types, period, time, duration, comments, every sample's
//! values, labels and locations in order, mappings; `-traces`: every sample's frames) —
//! for profiles of every capture kind in the agent's own form (CPU with pre-trigger
//! labels, heap, threads, tasks), self-contained and in the stream form (stacks the
//! store knows left out), and for pprof from other clients, over real gRPC, on SQLite
//! and on ClickHouse.
//!
//! The agent's own form is not pprof; what it "sent", as pprof, is its straightforward
//! conversion ([`as_pprof`], written here apart from the collector's encoder): every
//! module a mapping, native locations at their offset in it, symbolic ones their frames.
//! pprof that arrives with symbolized frames at absolute addresses (agents before the
//! native form) loses those addresses — they differ in every process, and keeping them
//! would make every process's stacks distinct — so for it `-raw` matches once the
//! address of each symbolized location is set aside, and `-traces` matches exactly.

use std::collections::HashMap;
use std::io::Write as _;

use crate::support::pprof::{go_available, pprof};
use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::Backend;
use holmes_cli::api_client::ApiClient;
use holmes_collector::clock::unix_nanos_now;
use holmes_proto::native::{
    Location as NativeLocation, NativeProfile, NativeSample, ProfileLabel, SymbolicFrame,
    ValueType as NativeValueType,
};
use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use holmes_proto::{AgentBody, CollectorMessage, Module, ProfileFormat, ProfileKind};
use prost::Message as _;

const SEC: u64 = 1_000_000_000;
const EVENT: &str = "e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0e0";
/// Every capture kind.
const KINDS: [ProfileKind; 4] = [
    ProfileKind::Cpu,
    ProfileKind::Heap,
    ProfileKind::Threads,
    ProfileKind::Tasks,
];

fn module(name: &str, build_id: &str) -> Module {
    Module {
        name: name.to_owned(),
        build_id: build_id.to_owned(),
    }
}

fn frame(function: &str, file: &str, line: u32) -> SymbolicFrame {
    SymbolicFrame {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
    }
}

fn string_label(key: &str, value: &str) -> ProfileLabel {
    ProfileLabel {
        key: key.to_owned(),
        str: value.to_owned(),
        num: 0,
        unit: String::new(),
    }
}

/// A profile in the agent's own form: the executable, libc and the vDSO as modules.
fn native(kind: ProfileKind, started: u64) -> NativeProfile {
    let exe = NativeLocation::Native {
        module: 0,
        offset: 0x5_2340,
    };
    let exe_caller = NativeLocation::Native {
        module: 0,
        offset: 0x5_1000,
    };
    let libc = NativeLocation::Native {
        module: 1,
        offset: 0x2_9d8f,
    };
    let vdso = NativeLocation::Native {
        module: 2,
        offset: 0xa3c,
    };
    let mut p = NativeProfile {
        period_type: NativeValueType::new("cpu", "nanoseconds"),
        period: 10_000_000,
        time_unix_nanos: started,
        duration_nanos: 10 * SEC,
        comments: vec!["holmes trigger profile".to_owned()],
        modules: vec![
            module("shop", "5f1c0e3a9b27d4c8"),
            module("libc.so.6", "2e01923fea4ad9f7"),
            module("[vdso]", ""),
        ],
        locations: vec![exe, exe_caller, libc, vdso],
        stacks: vec![vec![0, 1, 2], vec![3, 1, 2], vec![1, 2]],
        ..NativeProfile::default()
    };
    let labels = |phase: &str, thread: &str| {
        vec![string_label("phase", phase), string_label("thread", thread)]
    };
    match kind {
        ProfileKind::Cpu => {
            p.sample_types = vec![
                NativeValueType::new("samples", "count"),
                NativeValueType::new("cpu", "nanoseconds"),
            ];
            p.samples = vec![
                NativeSample {
                    stack: 0,
                    values: vec![7, 70_000_000],
                    labels: labels("pre-trigger", "worker-1"),
                },
                NativeSample {
                    stack: 1,
                    values: vec![2, 20_000_000],
                    labels: labels("pre-trigger", "worker-2"),
                },
                NativeSample {
                    stack: 0,
                    values: vec![40, 400_000_000],
                    labels: labels("trigger", "worker-1"),
                },
            ];
        }
        ProfileKind::Heap => {
            p.sample_types = [
                "alloc_objects",
                "alloc_space",
                "inuse_objects",
                "inuse_space",
            ]
            .iter()
            .map(|t| {
                NativeValueType::new(
                    *t,
                    if t.ends_with("space") {
                        "bytes"
                    } else {
                        "count"
                    },
                )
            })
            .collect();
            p.period_type = NativeValueType::new("space", "bytes");
            p.period = 524_288;
            p.samples = vec![
                NativeSample {
                    stack: 0,
                    values: vec![10, 40_960, 4, 16_384],
                    labels: vec![ProfileLabel {
                        key: "bytes".to_owned(),
                        str: String::new(),
                        num: 4096,
                        unit: "bytes".to_owned(),
                    }],
                },
                NativeSample {
                    stack: 2,
                    values: vec![1, 1 << 30, 1, 1 << 30],
                    labels: vec![],
                },
            ];
        }
        ProfileKind::Threads => {
            p.sample_types = vec![NativeValueType::new("threads", "count")];
            p.period_type = NativeValueType::new("threads", "count");
            p.period = 1;
            p.samples = vec![
                NativeSample {
                    stack: 1,
                    values: vec![1],
                    labels: vec![string_label("thread", "tokio-runtime-worker")],
                },
                NativeSample {
                    stack: 2,
                    values: vec![3],
                    labels: vec![string_label("thread", "blocking")],
                },
            ];
        }
        ProfileKind::Tasks => {
            // A task dump: the agent names the frames itself.
            p.modules.clear();
            p.locations = vec![
                NativeLocation::Symbolic(vec![
                    frame("shop::db::query", "src/db.rs", 88),
                    frame("shop::handler::checkout", "src/handler.rs", 30),
                ]),
                NativeLocation::Symbolic(vec![frame("shop::main::{{closure}}", "src/main.rs", 12)]),
            ];
            p.stacks = vec![vec![0, 1], vec![1]];
            p.sample_types = vec![NativeValueType::new("tasks", "count")];
            p.period_type = NativeValueType::new("tasks", "count");
            p.period = 1;
            p.samples = vec![
                NativeSample {
                    stack: 0,
                    values: vec![120],
                    labels: vec![string_label("state", "idle")],
                },
                NativeSample {
                    stack: 1,
                    values: vec![1],
                    labels: vec![],
                },
            ];
        }
    }
    p
}

/// The string table of a pprof profile being written.
#[derive(Default)]
struct Strings(Vec<String>, HashMap<String, i64>);

impl Strings {
    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.1.get(s) {
            return i;
        }
        if self.0.is_empty() {
            self.0.push(String::new());
            self.1.insert(String::new(), 0);
            if s.is_empty() {
                return 0;
            }
        }
        self.0.push(s.to_owned());
        self.1.insert(s.to_owned(), self.0.len() as i64 - 1);
        self.0.len() as i64 - 1
    }
}

/// What a `NativeProfile` says, as pprof: each module a mapping from 0 to past its last
/// offset, native locations at their offsets without frames, symbolic ones their frames.
fn as_pprof(n: &NativeProfile) -> Vec<u8> {
    let mut s = Strings::default();
    s.get("");
    let mut mapping: Vec<Mapping> = n
        .modules
        .iter()
        .enumerate()
        .map(|(i, m)| Mapping {
            id: i as u64 + 1,
            filename: s.get(&m.name),
            build_id: s.get(&m.build_id),
            ..Mapping::default()
        })
        .collect();
    let mut functions: Vec<Function> = Vec::new();
    let mut location = Vec::new();
    for (i, l) in n.locations.iter().enumerate() {
        location.push(match l {
            NativeLocation::Native { module, offset } => {
                let m = &mut mapping[*module as usize];
                m.memory_limit = m.memory_limit.max(offset + 1);
                Location {
                    id: i as u64 + 1,
                    mapping_id: u64::from(*module) + 1,
                    address: *offset,
                    ..Location::default()
                }
            }
            NativeLocation::Symbolic(frames) => Location {
                id: i as u64 + 1,
                line: frames
                    .iter()
                    .map(|f| {
                        functions.push(Function {
                            id: functions.len() as u64 + 1,
                            name: s.get(&f.function),
                            system_name: 0,
                            filename: s.get(&f.file),
                            start_line: 0,
                        });
                        Line {
                            function_id: functions.len() as u64,
                            line: i64::from(f.line),
                            column: 0,
                        }
                    })
                    .collect(),
                ..Location::default()
            },
        });
    }
    let sample = n
        .samples
        .iter()
        .map(|x| Sample {
            location_id: n.stacks[x.stack as usize]
                .iter()
                .map(|&l| u64::from(l) + 1)
                .collect(),
            value: x.values.clone(),
            label: x
                .labels
                .iter()
                .map(|l| Label {
                    key: s.get(&l.key),
                    str: if l.str.is_empty() { 0 } else { s.get(&l.str) },
                    num: l.num,
                    num_unit: s.get(&l.unit),
                })
                .collect(),
        })
        .collect();
    let p = Profile {
        sample_type: n
            .sample_types
            .iter()
            .map(|t| ValueType {
                r#type: s.get(&t.name),
                unit: s.get(&t.unit),
            })
            .collect(),
        sample,
        mapping,
        location,
        function: functions,
        time_nanos: n.time_unix_nanos as i64,
        duration_nanos: n.duration_nanos as i64,
        period_type: Some(ValueType {
            r#type: s.get(&n.period_type.name),
            unit: s.get(&n.period_type.unit),
        }),
        period: n.period,
        comment: n.comments.iter().map(|c| s.get(c)).collect(),
        string_table: std::mem::take(&mut s.0),
        ..Profile::default()
    };
    gzip(&p.encode_to_vec())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// pprof as a Pyroscope client (pprof-rs) sends it: symbolized frames without addresses
/// or mappings, a label per sample.
fn foreign(started: u64) -> Vec<u8> {
    let mut s = Strings::default();
    s.get("");
    let names = ["main", "shop::serve", "shop::render", "shop::render::row"];
    let function = names
        .iter()
        .enumerate()
        .map(|(i, n)| Function {
            id: i as u64 + 1,
            name: s.get(n),
            system_name: s.get(n),
            filename: s.get("src/main.rs"),
            start_line: 0,
        })
        .collect();
    let location = (1..=4u64)
        .map(|id| Location {
            id,
            line: vec![Line {
                function_id: id,
                line: 10 * id as i64,
                column: 0,
            }],
            ..Location::default()
        })
        .collect();
    let sample = vec![
        Sample {
            location_id: vec![4, 3, 2, 1],
            value: vec![30],
            label: vec![Label {
                key: s.get("thread"),
                str: s.get("main"),
                ..Label::default()
            }],
        },
        Sample {
            location_id: vec![2, 1],
            value: vec![5],
            label: vec![],
        },
    ];
    let p = Profile {
        sample_type: vec![ValueType {
            r#type: s.get("cpu"),
            unit: s.get("count"),
        }],
        sample,
        location,
        function,
        time_nanos: started as i64,
        duration_nanos: 10 * SEC as i64,
        period_type: Some(ValueType {
            r#type: s.get("cpu"),
            unit: s.get("nanoseconds"),
        }),
        period: 10_000_000,
        string_table: std::mem::take(&mut s.0),
        ..Profile::default()
    };
    gzip(&p.encode_to_vec())
}

/// `-raw` with the address (and mapping) of each symbolized location set aside.
fn without_symbolized_addresses(raw: &str) -> String {
    raw.lines()
        .map(|l| {
            let t = l.trim_start();
            let is_location = t
                .split(':')
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok())
                && t.contains(": 0x");
            let symbolized = l.split_whitespace().count() > 3;
            if is_location && symbolized {
                let mut words: Vec<&str> = l.split_whitespace().collect();
                words.retain(|w| !w.starts_with("0x") && !w.starts_with("M="));
                words.join(" ")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn downloads_are_equivalent_to_what_was_sent(backend: Backend) {
    if !go_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let mut agent = RawAgent::connect(server.grpc_addr(), hello("shop", "shop-0", vec![])).await;
    let started = unix_nanos_now() - 60 * SEC;
    let factory = holmes_devtools::synthetic::ProfileFactory::new(200);
    let old_agent = factory.capture(3, started, 1, 42).pprof_gzip;
    // (id, kind, format, bytes sent, the same as pprof, whether symbolized addresses go)
    type Sent = (String, ProfileKind, ProfileFormat, Vec<u8>, Vec<u8>, bool);
    let mut sent: Vec<Sent> = Vec::new();
    for (n, kind) in KINDS.into_iter().enumerate() {
        let p = native(kind, started + n as u64 * SEC);
        sent.push((
            format!("{:032x}", 0xa0 + n),
            kind,
            ProfileFormat::Native,
            p.encode(),
            as_pprof(&p),
            false,
        ));
    }
    // The same kinds in the stream form, on the same stream, twice each: the second of
    // a kind leaves out every stack (the store knows them by key once the first is
    // stored), and still downloads as what was sent.
    let mut tables = holmes_proto::native::stream::StreamEncoder::new();
    for round in 0..2u64 {
        for (n, kind) in KINDS.into_iter().enumerate() {
            let p = native(kind, started + (10 + 4 * round + n as u64) * SEC);
            sent.push((
                format!("{:032x}", 0xc0 + 4 * round as usize + n),
                kind,
                ProfileFormat::NativeStream,
                tables.encode(&p),
                as_pprof(&p),
                false,
            ));
        }
    }
    let f = foreign(started);
    sent.push((
        format!("{:032x}", 0xb0),
        ProfileKind::Cpu,
        ProfileFormat::PprofGzip,
        f.clone(),
        f,
        false,
    ));
    sent.push((
        format!("{:032x}", 0xb1),
        ProfileKind::Cpu,
        ProfileFormat::PprofGzip,
        old_agent.clone(),
        old_agent,
        true,
    ));
    for (seq, (id, kind, format, bytes, _, _)) in (1..).zip(&sent) {
        let mut chunks = profile_chunks(id, EVENT, *kind, started, bytes, 1 << 20);
        for c in &mut chunks {
            c.format = *format;
        }
        agent
            .send(seq, AgentBody::ProfileChunk(chunks.remove(0)))
            .await;
        assert_eq!(agent.next().await, CollectorMessage::Ack { seq });
    }
    for (id, kind, format, _, reference, addresses_go) in &sent {
        let what = format!("{} {} profile {id}", format.as_str(), kind.as_str());
        let listed = api.profiles("shop", "5m").await.unwrap();
        let meta = listed
            .profiles
            .iter()
            .find(|p| &p.profile_id == id)
            .unwrap();
        assert_eq!(meta.error, None, "{what}");
        let downloaded = api.download_profile("shop", id).await.unwrap();
        let (a, b) = (
            dir.path().join("sent.pb.gz"),
            dir.path().join("downloaded.pb.gz"),
        );
        std::fs::write(&a, reference).unwrap();
        std::fs::write(&b, &downloaded).unwrap();
        let (raw_sent, raw_downloaded) = (pprof(&["-raw"], &a), pprof(&["-raw"], &b));
        if *addresses_go {
            assert_ne!(
                raw_sent, raw_downloaded,
                "{what}: symbolized addresses are set aside"
            );
            assert_eq!(
                without_symbolized_addresses(&raw_sent),
                without_symbolized_addresses(&raw_downloaded),
                "{what}: -raw"
            );
        } else {
            assert_eq!(raw_sent, raw_downloaded, "{what}: -raw");
        }
        assert!(
            raw_downloaded.lines().count() > 10,
            "{what}: {raw_downloaded}"
        );
        assert_eq!(
            pprof(&["-traces"], &a),
            pprof(&["-traces"], &b),
            "{what}: -traces"
        );
    }
    server.shutdown().await;
}

crate::support::on_each_backend!(downloads_are_equivalent_to_what_was_sent);
