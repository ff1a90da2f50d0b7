//! Ingest benchmark: simulated agents of one service stream realistic CPU profiles over
//! loopback gRPC into a real in-process collector, once per backend.
//!
//! ```text
//! cargo bench -p holmes-collector --bench ingest                 # full run (minutes)
//! HOLMES_BENCH_QUICK=1 cargo bench -p holmes-collector --bench ingest   # smoke run (seconds)
//! deploy/dev/bench.sh                                            # with a throw-away ClickHouse
//! ```
//!
//! The stream: `HOLMES_BENCH_AGENTS` instances (default 50) of one service send
//! `HOLMES_BENCH_PROFILES` CPU profiles in all (default 1500, a day of captures: their
//! start times are spread over the last 24 hours), each of 1000 samples drawn with
//! Zipf-like popularity from a fixed pool of 4000 stacks 10–40 frames deep, encoded as the
//! agent encodes them (gzipped `profile.proto`: string table, functions, one location per
//! frame, values `[count, nanoseconds]`, a `phase` label). Each agent sends a profile,
//! waits for the acknowledgement that covers it, then sends the next.
//!
//! Reported per backend: profiles/s and samples/s over the run; the CPU seconds of the
//! collector (this process minus the agents' runtime threads, which are counted apart)
//! and of the ClickHouse server (`HOLMES_CH_PID`, as `deploy/dev/clickhouse.sh` exports
//! it), hence profiles/s and samples/s per core; the time from sending a profile's last
//! chunk to its acknowledgement (p50, p99); and the bytes stored per profile, normalized
//! (stacks, samples, heads) and the kept originals, against the raw gzip size. A baseline
//! runs the same profiles through decode + normalize alone. ClickHouse runs when
//! `HOLMES_TEST_CLICKHOUSE_URL` is set and is skipped with a line saying so otherwise.
//! `HOLMES_BENCH_BACKENDS=sqlite|clickhouse` runs only one. Nothing is asserted: these are
//! figures to read, on machines too noisy for thresholds.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use holmes_collector::config::{ClickHouseSection, Config, StoreKind};
use holmes_collector::ingest::normalize::{normalize, Limits};
use holmes_collector::Server;
use holmes_proto::pb::ingest_client::IngestClient;
use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use holmes_proto::{
    pb, AgentBody, AgentMessage, CollectorMessage, Hello, ProfileChunk, ProfileKind,
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Service every simulated agent belongs to.
const SERVICE: &str = "orders";
/// Samples (distinct stacks) per profile.
const SAMPLES_PER_PROFILE: usize = 1000;
/// Sampling period of the simulated CPU profiler (100 Hz).
const PERIOD_NANOS: i64 = 10_000_000;
/// Zipf exponent of stack popularity.
const ZIPF_S: f64 = 1.0;
/// Thread-name prefix of the agents' runtime, so their CPU is counted apart.
const AGENT_THREAD: &str = "bench-agent";

/// What a run is made of.
#[derive(Debug, Clone, Copy)]
struct Params {
    agents: usize,
    profiles: usize,
    pool: usize,
    baseline_profiles: usize,
}

impl Params {
    fn from_env() -> Params {
        let quick = std::env::var("HOLMES_BENCH_QUICK").is_ok_and(|v| v == "1")
            || std::env::args().any(|a| a == "--quick");
        let number = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n| n > 0)
                .unwrap_or(default)
        };
        let (agents, profiles, pool) = if quick {
            (8, 120, 2000)
        } else {
            (50, 1500, 4000)
        };
        let profiles = number("HOLMES_BENCH_PROFILES", profiles);
        Params {
            agents: number("HOLMES_BENCH_AGENTS", agents),
            profiles,
            pool: number("HOLMES_BENCH_POOL", pool),
            baseline_profiles: profiles.min(300),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------

/// SplitMix64: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------------
// A realistic Rust service's functions and stacks
// ---------------------------------------------------------------------------------------

const RUSTC: &str = "/rustc/17067e9ac6d7e98f18d4a2a6ae8a5d9a2a8f8b2a/library";
const REGISTRY: &str = "/home/build/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";

/// Function names and files, each once; frames refer to them by index.
#[derive(Default)]
struct Catalog {
    functions: Vec<(String, String)>,
    index: HashMap<(String, String), usize>,
}

impl Catalog {
    fn add(&mut self, name: &str, file: &str) -> usize {
        let key = (name.to_owned(), file.to_owned());
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.functions.push(key.clone());
        self.index.insert(key, self.functions.len() - 1);
        self.functions.len() - 1
    }

    fn chain(&mut self, frames: &[(&str, &str)]) -> Vec<usize> {
        frames.iter().map(|(n, f)| self.add(n, f)).collect()
    }
}

fn owned(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn std_file(path: &str) -> String {
    format!("{RUSTC}/{path}")
}

fn crate_file(krate: &str, path: &str) -> String {
    format!("{REGISTRY}/{krate}/src/{path}")
}

/// The building blocks stacks are made of, outermost frame first in every chain.
struct Shapes {
    catalog: Catalog,
    worker_root: Vec<usize>,
    blocking_root: Vec<usize>,
    main_root: Vec<usize>,
    idle: Vec<usize>,
    framework: Vec<usize>,
    /// Service functions by layer: handlers, domain logic, storage and messaging.
    layers: [Vec<usize>; 3],
    libraries: Vec<Vec<usize>>,
    leaves: Vec<Vec<usize>>,
}

fn shapes() -> Shapes {
    let mut c = Catalog::default();
    let tokio = |p: &str| crate_file("tokio-1.47.1", p);
    let thread_start: Vec<(String, String)> = vec![
        (
            "clone3".into(),
            "./misc/../sysdeps/unix/sysv/linux/x86_64/clone3.S".into(),
        ),
        ("start_thread".into(), "./nptl/pthread_create.c".into()),
        (
            "std::sys::pal::unix::thread::Thread::new::thread_start".into(),
            std_file("std/src/sys/pal/unix/thread.rs"),
        ),
        (
            "core::ops::function::FnOnce::call_once{{vtable.shim}}".into(),
            std_file("core/src/ops/function.rs"),
        ),
        (
            "std::sys::backtrace::__rust_begin_short_backtrace".into(),
            std_file("std/src/sys/backtrace.rs"),
        ),
        (
            "tokio::runtime::blocking::pool::Inner::run".into(),
            tokio("runtime/blocking/pool.rs"),
        ),
    ];
    let task_poll: Vec<(String, String)> = vec![
        (
            "tokio::runtime::task::raw::poll".into(),
            tokio("runtime/task/raw.rs"),
        ),
        (
            "tokio::runtime::task::harness::Harness<T,S>::poll".into(),
            tokio("runtime/task/harness.rs"),
        ),
        (
            "tokio::runtime::task::core::Core<T,S>::poll".into(),
            tokio("runtime/task/core.rs"),
        ),
    ];
    let mut worker: Vec<(String, String)> = thread_start.clone();
    for (n, p) in [
        (
            "tokio::runtime::blocking::pool::Spawner::spawn_thread::{{closure}}",
            "runtime/blocking/pool.rs",
        ),
        (
            "tokio::runtime::scheduler::multi_thread::worker::run",
            "runtime/scheduler/multi_thread/worker.rs",
        ),
        (
            "tokio::runtime::context::runtime::enter_runtime",
            "runtime/context/runtime.rs",
        ),
        (
            "tokio::runtime::scheduler::multi_thread::worker::Context::run",
            "runtime/scheduler/multi_thread/worker.rs",
        ),
    ] {
        worker.push((n.into(), tokio(p)));
    }
    let worker_base = worker.clone();
    worker.push((
        "tokio::runtime::scheduler::multi_thread::worker::Context::run_task".into(),
        tokio("runtime/scheduler/multi_thread/worker.rs"),
    ));
    worker.extend(task_poll.iter().cloned());
    let worker_root = c.chain(&owned(&worker));

    let mut idle = worker_base;
    for (n, p) in [
        (
            "tokio::runtime::scheduler::multi_thread::worker::Context::park_timeout",
            "runtime/scheduler/multi_thread/worker.rs",
        ),
        (
            "tokio::runtime::scheduler::multi_thread::park::Parker::park",
            "runtime/scheduler/multi_thread/park.rs",
        ),
        ("tokio::runtime::driver::Driver::park", "runtime/driver.rs"),
        (
            "tokio::runtime::io::driver::Driver::turn",
            "runtime/io/driver.rs",
        ),
    ] {
        idle.push((n.into(), tokio(p)));
    }
    idle.push((
        "mio::poll::Poll::poll".into(),
        crate_file("mio-1.0.4", "poll.rs"),
    ));
    idle.push((
        "epoll_wait".into(),
        "./misc/../sysdeps/unix/sysv/linux/epoll_wait.c".into(),
    ));
    let idle = c.chain(&owned(&idle));

    let mut blocking = thread_start;
    blocking.push((
        "tokio::runtime::blocking::task::BlockingTask<T>::poll".into(),
        tokio("runtime/blocking/task.rs"),
    ));
    blocking.extend(task_poll);
    let blocking_root = c.chain(&owned(&blocking));

    let main_root = c.chain(&[
        ("_start", ""),
        ("__libc_start_main_impl", "./csu/../csu/libc-start.c"),
        (
            "__libc_start_call_main",
            "./csu/../sysdeps/nptl/libc_start_call_main.h",
        ),
        ("main", ""),
        ("std::rt::lang_start_internal", &std_file("std/src/rt.rs")),
        (
            "std::rt::lang_start::{{closure}}",
            &std_file("std/src/rt.rs"),
        ),
        (
            "std::sys::backtrace::__rust_begin_short_backtrace",
            &std_file("std/src/sys/backtrace.rs"),
        ),
        ("orders::main", "src/main.rs"),
        (
            "tokio::runtime::runtime::Runtime::block_on",
            &tokio("runtime/runtime.rs"),
        ),
        (
            "tokio::runtime::park::CachedParkThread::block_on",
            &tokio("runtime/park.rs"),
        ),
    ]);

    let hyper = |p: &str| crate_file("hyper-1.7.0", p);
    let framework = c.chain(&[
        (
            "<hyper_util::server::conn::auto::UpgradeableConnection<I,S,E> as core::future::future::Future>::poll",
            &crate_file("hyper-util-0.1.17", "server/conn/auto/mod.rs"),
        ),
        (
            "<hyper::server::conn::http1::UpgradeableConnection<I,S> as core::future::future::Future>::poll",
            &hyper("server/conn/http1.rs"),
        ),
        (
            "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch",
            &hyper("proto/h1/dispatch.rs"),
        ),
        (
            "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_inner",
            &hyper("proto/h1/dispatch.rs"),
        ),
        (
            "hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_loop",
            &hyper("proto/h1/dispatch.rs"),
        ),
        (
            "<hyper::proto::h1::dispatch::Server<S,hyper::body::incoming::Incoming> as hyper::proto::h1::dispatch::Dispatch>::poll_msg",
            &hyper("proto/h1/dispatch.rs"),
        ),
        (
            "<tower_http::trace::future::ResponseFuture<Fut,C,OnResponseT,OnBodyChunkT,OnEosT,OnFailureT> as core::future::future::Future>::poll",
            &crate_file("tower-http-0.6.6", "trace/future.rs"),
        ),
        (
            "<axum::routing::route::RouteFuture<E> as core::future::future::Future>::poll",
            &crate_file("axum-0.8.6", "routing/route.rs"),
        ),
        (
            "<tower::util::oneshot::Oneshot<S,Req> as core::future::future::Future>::poll",
            &crate_file("tower-0.5.2", "util/oneshot.rs"),
        ),
        (
            "<axum::handler::HandlerService<H,T,S> as tower_service::Service<http::request::Request<B>>>::call::{{closure}}",
            &crate_file("axum-0.8.6", "handler/service.rs"),
        ),
    ]);

    let modules: [&[&str]; 3] = [
        &[
            "api::orders",
            "api::payments",
            "api::inventory",
            "api::users",
            "api::search",
        ],
        &[
            "domain::pricing",
            "domain::cart",
            "domain::discounts",
            "domain::tax",
            "domain::fulfilment",
            "auth::session",
        ],
        &[
            "storage::orders_repo",
            "storage::cache",
            "storage::outbox",
            "events::publisher",
            "clients::payments_gateway",
        ],
    ];
    let methods: [&[&str]; 3] = [
        &[
            "create::{{closure}}",
            "get_by_id::{{closure}}",
            "list_page::{{closure}}",
            "update::{{closure}}",
            "cancel::{{closure}}",
            "decode_request",
            "encode_response",
        ],
        &[
            "compute_totals",
            "apply",
            "validate",
            "check_permissions",
            "merge_lines",
            "<impl core::convert::TryFrom<RawLine> for Line>::try_from",
            "evaluate_rules",
        ],
        &[
            "load::{{closure}}",
            "save::{{closure}}",
            "refresh::{{closure}}",
            "publish::{{closure}}",
            "send::{{closure}}",
            "with_transaction::{{closure}}",
        ],
    ];
    let layers = std::array::from_fn(|layer| {
        let mut out = Vec::new();
        for module in modules[layer] {
            let file = format!("src/{}.rs", module.replace("::", "/"));
            for method in methods[layer] {
                out.push(c.add(&format!("orders::{module}::{method}"), &file));
            }
        }
        out
    });

    let lib = |c: &mut Catalog, krate: &str, frames: &[(&str, &str)]| -> Vec<usize> {
        let owned: Vec<(String, String)> = frames
            .iter()
            .map(|(n, p)| ((*n).to_owned(), crate_file(krate, p)))
            .collect();
        c.chain(
            &owned
                .iter()
                .map(|(a, b)| (a.as_str(), b.as_str()))
                .collect::<Vec<_>>(),
        )
    };
    let libraries = vec![
        lib(&mut c, "serde_json-1.0.145", &[
            ("serde_json::ser::to_vec", "ser.rs"),
            ("<orders::api::OrderView as serde::ser::Serialize>::serialize", "ser.rs"),
            ("<serde_json::ser::Compound<W,F> as serde::ser::SerializeStruct>::serialize_field", "ser.rs"),
            ("serde_json::ser::format_escaped_str", "ser.rs"),
            ("serde_json::ser::format_escaped_str_contents", "ser.rs"),
        ]),
        lib(&mut c, "serde_json-1.0.145", &[
            ("serde_json::de::from_slice", "de.rs"),
            ("<orders::api::CreateOrder as serde::de::Deserialize>::deserialize", "de.rs"),
            ("<serde_json::de::MapAccess<R> as serde::de::MapAccess>::next_value_seed", "de.rs"),
            ("serde_json::de::Deserializer<R>::parse_decimal", "de.rs"),
        ]),
        lib(&mut c, "tokio-postgres-0.7.14", &[
            ("tokio_postgres::client::Client::query::{{closure}}", "client.rs"),
            ("tokio_postgres::query::query::{{closure}}", "query.rs"),
            ("tokio_postgres::query::encode", "query.rs"),
            ("postgres_protocol::message::frontend::bind", "message/frontend.rs"),
            ("bytes::bytes_mut::BytesMut::reserve_inner", "bytes_mut.rs"),
        ]),
        lib(&mut c, "tokio-postgres-0.7.14", &[
            ("<tokio_postgres::row::Row>::try_get", "row.rs"),
            ("<alloc::string::String as postgres_types::FromSql>::from_sql", "lib.rs"),
            ("core::str::converts::from_utf8", "str/converts.rs"),
        ]),
        lib(&mut c, "reqwest-0.12.23", &[
            ("<reqwest::async_impl::client::Pending as core::future::future::Future>::poll", "async_impl/client.rs"),
            ("hyper_util::client::legacy::client::Client<C,B>::send_request::{{closure}}", "client/legacy/client.rs"),
            ("h2::proto::streams::send::Send::send_data", "proto/streams/send.rs"),
            ("h2::codec::framed_write::FramedWrite<T,B>::flush", "codec/framed_write.rs"),
            ("rustls::conn::ConnectionCommon<Data>::write_tls", "conn.rs"),
            ("rustls::record_layer::RecordLayer::encrypt_outgoing", "record_layer.rs"),
        ]),
        lib(&mut c, "prost-0.14.1", &[
            ("prost::message::Message::encode_to_vec", "message.rs"),
            ("<orders::events::OrderPlaced as prost::message::Message>::encode_raw", "message.rs"),
            ("prost::encoding::message::encode", "encoding.rs"),
            ("prost::encoding::string::encode", "encoding.rs"),
        ]),
        lib(&mut c, "tracing-subscriber-0.3.20", &[
            ("<tracing_subscriber::layer::layered::Layered<L,S> as tracing_core::subscriber::Subscriber>::event", "layer/layered.rs"),
            ("<tracing_subscriber::fmt::fmt_layer::Layer<S,N,E,W> as tracing_subscriber::layer::Layer<S>>::on_event", "fmt/fmt_layer.rs"),
            ("<tracing_subscriber::fmt::format::Format<F,T> as tracing_subscriber::fmt::format::FormatEvent<S,N>>::format_event", "fmt/format/mod.rs"),
            ("<tracing_subscriber::fmt::format::DefaultVisitor as tracing_core::field::Visit>::record_debug", "fmt/format/mod.rs"),
            ("core::fmt::write", "fmt/mod.rs"),
        ]),
        lib(&mut c, "regex-automata-0.4.11", &[
            ("regex::regex::string::Regex::is_match", "regex/string.rs"),
            ("regex_automata::meta::regex::Regex::search_with", "meta/regex.rs"),
            ("regex_automata::hybrid::search::find_fwd", "hybrid/search.rs"),
            ("regex_automata::hybrid::dfa::Lazy::cache_next_state", "hybrid/dfa.rs"),
        ]),
        lib(&mut c, "hashbrown-0.15.5", &[
            ("hashbrown::map::HashMap<K,V,S,A>::insert", "map.rs"),
            ("hashbrown::raw::RawTable<T,A>::reserve_rehash", "raw/mod.rs"),
            ("<core::hash::sip::Hasher<S> as core::hash::Hasher>::write", "hash/sip.rs"),
        ]),
        lib(&mut c, "tokio-1.47.1", &[
            ("<tokio::net::tcp::stream::TcpStream as tokio::io::async_write::AsyncWrite>::poll_write", "net/tcp/stream.rs"),
            ("tokio::io::poll_evented::PollEvented<E>::poll_write", "io/poll_evented.rs"),
            ("<&mio::net::tcp::stream::TcpStream as std::io::Write>::write", "net/tcp/stream.rs"),
            ("__send", "../sysdeps/unix/sysv/linux/send.c"),
        ]),
    ];
    let leaves = vec![
        c.chain(&[
            (
                "alloc::raw_vec::RawVec<T,A>::grow_one",
                &std_file("alloc/src/raw_vec.rs"),
            ),
            (
                "alloc::raw_vec::finish_grow",
                &std_file("alloc/src/raw_vec.rs"),
            ),
            ("realloc", "./malloc/malloc.c"),
            ("_int_realloc", "./malloc/malloc.c"),
            (
                "__memmove_avx_unaligned_erms",
                "../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S",
            ),
        ]),
        c.chain(&[
            (
                "alloc::alloc::exchange_malloc",
                &std_file("alloc/src/alloc.rs"),
            ),
            ("malloc", "./malloc/malloc.c"),
            ("_int_malloc", "./malloc/malloc.c"),
        ]),
        c.chain(&[
            (
                "core::ptr::drop_in_place<orders::domain::cart::Cart>",
                &std_file("core/src/ptr/mod.rs"),
            ),
            ("free", "./malloc/malloc.c"),
            ("_int_free", "./malloc/malloc.c"),
        ]),
        c.chain(&[(
            "__memmove_avx_unaligned_erms",
            "../sysdeps/x86_64/multiarch/memmove-vec-unaligned-erms.S",
        )]),
        c.chain(&[
            (
                "<alloc::string::String as core::clone::Clone>::clone",
                &std_file("alloc/src/string.rs"),
            ),
            (
                "alloc::alloc::exchange_malloc",
                &std_file("alloc/src/alloc.rs"),
            ),
            ("malloc", "./malloc/malloc.c"),
        ]),
        c.chain(&[
            (
                "core::slice::sort::stable::driftsort_main",
                &std_file("core/src/slice/sort/stable/mod.rs"),
            ),
            (
                "core::slice::sort::stable::drift::sort",
                &std_file("core/src/slice/sort/stable/drift.rs"),
            ),
        ]),
        c.chain(&[
            (
                "std::sync::poison::mutex::Mutex<T>::lock",
                &std_file("std/src/sync/poison/mutex.rs"),
            ),
            (
                "std::sys::sync::mutex::futex::Mutex::lock_contended",
                &std_file("std/src/sys/sync/mutex/futex.rs"),
            ),
            ("syscall", "../sysdeps/unix/sysv/linux/x86_64/syscall.S"),
        ]),
    ];
    Shapes {
        catalog: c,
        worker_root,
        blocking_root,
        main_root,
        idle,
        framework,
        layers,
        libraries,
        leaves,
    }
}

/// One frame: a function of the catalog and the line executing in it.
type Frame = (usize, u32);

/// The line a function is at when it calls `callee` (or, for a leaf, one of a few hot
/// lines): stable, so equal call paths make equal stacks.
fn line_of(function: usize, callee: u64) -> u32 {
    12 + (mix((function as u64) << 32 ^ callee) % 900) as u32
}

/// One random stack, leaf first.
fn random_stack(s: &Shapes, rng: &mut Rng) -> Vec<Frame> {
    let mut funcs: Vec<usize> = Vec::new();
    let roll = rng.below(100);
    if roll < 4 {
        funcs.extend(&s.idle);
    } else {
        if roll < 12 {
            funcs.extend(&s.blocking_root);
        } else if roll < 16 {
            funcs.extend(&s.main_root);
        } else {
            funcs.extend(&s.worker_root);
        }
        if rng.chance(85) {
            funcs.extend(&s.framework);
        } else {
            let k = rng.range(1, s.framework.len());
            funcs.extend(&s.framework[..k]);
        }
        // A walk down the service's layers: a handler, then domain logic and storage.
        let mut layer = 0usize;
        for _ in 0..rng.range(1, 7) {
            let options = &s.layers[layer];
            funcs.push(options[rng.below(options.len())]);
            if layer < 2 && rng.chance(60) {
                layer += 1;
            }
        }
        if rng.chance(65) {
            let lib = &s.libraries[rng.below(s.libraries.len())];
            funcs.extend(&lib[..rng.range(1, lib.len())]);
        }
        if rng.chance(55) {
            let leaf = &s.leaves[rng.below(s.leaves.len())];
            funcs.extend(&leaf[..rng.range(1, leaf.len())]);
        }
    }
    let leaf_line = rng.below(4) as u64;
    let mut frames: Vec<Frame> = funcs
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let callee = funcs.get(i + 1).map_or(1 << 40 | leaf_line, |&c| c as u64);
            (f, line_of(f, callee))
        })
        .collect();
    frames.reverse();
    frames
}

/// `size` distinct stacks 10–40 frames deep, in popularity order (most popular first).
fn stack_pool(s: &Shapes, size: usize) -> Vec<Vec<Frame>> {
    let mut rng = Rng(0x5eed_0001);
    let mut seen = std::collections::HashSet::new();
    let mut pool = Vec::with_capacity(size);
    let mut tries = 0usize;
    while pool.len() < size {
        tries += 1;
        assert!(
            tries < size * 1000,
            "cannot make {size} distinct stacks from the catalog"
        );
        let stack = random_stack(s, &mut rng);
        if (10..=40).contains(&stack.len()) && seen.insert(stack.clone()) {
            pool.push(stack);
        }
    }
    // Shuffle so popularity does not follow generation order.
    for i in (1..pool.len()).rev() {
        let j = rng.below(i + 1);
        pool.swap(i, j);
    }
    pool
}

/// Cumulative Zipf weights over `n` ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|rank| {
            acc += 1.0 / (rank as f64).powf(ZIPF_S);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

// ---------------------------------------------------------------------------------------
// Profiles as the agent encodes them
// ---------------------------------------------------------------------------------------

/// One profile ready to send.
struct GenProfile {
    id: String,
    started_unix_nanos: u64,
    gzip: Vec<u8>,
}

#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    function_ids: HashMap<usize, u64>,
    locations: Vec<Location>,
    location_ids: HashMap<Frame, u64>,
}

impl Tables {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    fn location(&mut self, catalog: &Catalog, frame: Frame) -> u64 {
        if let Some(&id) = self.location_ids.get(&frame) {
            return id;
        }
        let (f, line) = frame;
        let function_id = match self.function_ids.get(&f) {
            Some(&id) => id,
            None => {
                let (name, file) = &catalog.functions[f];
                let id = self.functions.len() as u64 + 1;
                let function = Function {
                    id,
                    name: self.string(name),
                    system_name: 0,
                    filename: self.string(file),
                    start_line: 0,
                };
                self.functions.push(function);
                self.function_ids.insert(f, id);
                id
            }
        };
        let id = self.locations.len() as u64 + 1;
        self.locations.push(Location {
            id,
            mapping_id: 1,
            address: 0x5555_5555_0000 + (f as u64) * 0x1000 + u64::from(line) * 4,
            line: vec![Line {
                function_id,
                line: i64::from(line),
                column: 0,
            }],
            is_folded: false,
        });
        self.location_ids.insert(frame, id);
        id
    }
}

/// A gzipped CPU profile of `picks` (stack index in `pool`, tick count).
fn encode_profile(
    catalog: &Catalog,
    pool: &[Vec<Frame>],
    picks: &[(usize, i64)],
    started_unix_nanos: u64,
) -> Vec<u8> {
    let mut t = Tables::default();
    t.string("");
    let sample_type = vec![
        ValueType {
            r#type: t.string("samples"),
            unit: t.string("count"),
        },
        ValueType {
            r#type: t.string("cpu"),
            unit: t.string("nanoseconds"),
        },
    ];
    let period_type = Some(ValueType {
        r#type: t.string("cpu"),
        unit: t.string("nanoseconds"),
    });
    let phase_key = t.string("phase");
    let phase = t.string("trigger");
    let sample = picks
        .iter()
        .map(|&(stack, count)| Sample {
            location_id: pool[stack]
                .iter()
                .map(|&frame| t.location(catalog, frame))
                .collect(),
            value: vec![count, count * PERIOD_NANOS],
            label: vec![Label {
                key: phase_key,
                str: phase,
                num: 0,
                num_unit: 0,
            }],
        })
        .collect();
    let comment = vec![
        t.string("holmes trigger cpu profile at 100 Hz"),
        t.string("holmes: 0 samples lost to a full signal ring, 0 beyond the distinct-stack cap (since start)"),
    ];
    let max_address = t.locations.iter().map(|l| l.address).max().unwrap_or(0);
    let mapping = Mapping {
        id: 1,
        memory_start: 0,
        memory_limit: max_address + 1,
        file_offset: 0,
        filename: t.string("/usr/local/bin/orders"),
        build_id: 0,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
    };
    let profile = Profile {
        sample_type,
        sample,
        mapping: vec![mapping],
        location: t.locations,
        function: t.functions,
        string_table: t.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: started_unix_nanos as i64,
        duration_nanos: 10_000_000_000,
        period_type,
        period: PERIOD_NANOS,
        comment,
        default_sample_type: 0,
    };
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap()
}

/// Draws ticks by popularity until `SAMPLES_PER_PROFILE` distinct stacks have some.
fn draw_picks(cdf: &[f64], rng: &mut Rng) -> Vec<(usize, i64)> {
    let mut counts: HashMap<usize, i64> = HashMap::new();
    let mut order = Vec::new();
    while order.len() < SAMPLES_PER_PROFILE.min(cdf.len()) {
        let u = rng.unit();
        let stack = cdf.partition_point(|&c| c < u).min(cdf.len() - 1);
        let n = counts.entry(stack).or_insert(0);
        if *n == 0 {
            order.push(stack);
        }
        *n += 1;
    }
    order.into_iter().map(|s| (s, counts[&s])).collect()
}

/// The day of captures: `n` profiles, started over the last 24 hours in order.
fn generate(params: &Params) -> (Vec<GenProfile>, usize) {
    let shapes = shapes();
    let pool = stack_pool(&shapes, params.pool);
    let cdf = zipf_cdf(pool.len());
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let day = 86_400_000_000_000u64;
    let first = now - day;
    let step = day / params.profiles as u64;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out: Vec<Option<GenProfile>> = (0..params.profiles).map(|_| None).collect();
    std::thread::scope(|scope| {
        let (shapes, pool, cdf) = (&shapes, &pool, &cdf);
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..params.profiles)
                        .step_by(threads)
                        .map(|i| {
                            let mut rng = Rng(mix(i as u64 + 1));
                            let picks = draw_picks(cdf, &mut rng);
                            let started = first + i as u64 * step;
                            let id = format!("{:016x}{:016x}", mix(i as u64), mix(!(i as u64)));
                            let gzip = encode_profile(&shapes.catalog, pool, &picks, started);
                            (
                                i,
                                GenProfile {
                                    id,
                                    started_unix_nanos: started,
                                    gzip,
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            for (i, p) in h.join().unwrap() {
                out[i] = Some(p);
            }
        }
    });
    let functions = shapes.catalog.functions.len();
    (out.into_iter().map(Option::unwrap).collect(), functions)
}

// ---------------------------------------------------------------------------------------
// CPU accounting
// ---------------------------------------------------------------------------------------

fn timeval_secs(tv: libc::timeval) -> f64 {
    tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6
}

/// User + system CPU seconds of `who` (`RUSAGE_SELF`, `RUSAGE_THREAD`).
fn rusage_secs(who: libc::c_int) -> f64 {
    // SAFETY: getrusage only writes into the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    assert_eq!(rc, 0, "getrusage failed");
    timeval_secs(ru.ru_utime) + timeval_secs(ru.ru_stime)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// (command name, user + system CPU seconds) from a `/proc/.../stat` file.
fn proc_stat(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_owned();
    let fields: Vec<&str> = text[close + 1..].split_whitespace().collect();
    // Fields 14 and 15 of stat(5) (utime, stime); the split starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / clock_ticks()))
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
fn threads_cpu(prefix: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| proc_stat(&format!("{}/stat", e.path().display())))
        .filter(|(comm, _)| comm.starts_with(prefix))
        .map(|(_, cpu)| cpu)
        .sum()
}

/// CPU seconds of the ClickHouse server whose pid `HOLMES_CH_PID` names, if any.
fn clickhouse_cpu() -> Option<f64> {
    let pid = std::env::var("HOLMES_CH_PID").ok()?;
    proc_stat(&format!("/proc/{pid}/stat")).map(|(_, cpu)| cpu)
}

/// CPU used so far: the whole process, the agents' threads, the ClickHouse server.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    process: f64,
    agents: f64,
    clickhouse: Option<f64>,
}

impl CpuMark {
    fn now() -> CpuMark {
        CpuMark {
            process: rusage_secs(libc::RUSAGE_SELF),
            agents: threads_cpu(AGENT_THREAD),
            clickhouse: clickhouse_cpu(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Simulated agents
// ---------------------------------------------------------------------------------------

fn hello(instance: usize) -> Hello {
    Hello {
        protocol_version: holmes_proto::PROTOCOL_VERSION,
        service: SERVICE.to_owned(),
        instance_id: format!("orders-{instance:03}"),
        host: format!("node-{:02}", instance % 12),
        pid: 1000 + instance as u32,
        labels: [("region".to_owned(), "eu-west-1".to_owned())].into(),
        agent_version: "0.1.0".to_owned(),
        rules: Vec::new(),
        started_at_unix_nanos: 1,
        collect_interval: Duration::from_secs(1),
    }
}

/// Sends the profiles of `indices` one at a time, each once the one before it is
/// acknowledged; returns the time from each profile's last chunk to its ack.
async fn run_agent(
    addr: SocketAddr,
    instance: usize,
    profiles: Arc<Vec<GenProfile>>,
    indices: Vec<usize>,
) -> Vec<Duration> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    let first = AgentMessage {
        seq: 0,
        body: AgentBody::Hello(hello(instance)),
    };
    tx.send(pb::AgentMessage::from(&first)).await.unwrap();
    let mut inbound = IngestClient::new(channel)
        .connect(tonic::Request::new(ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let mut seq = 0u64;
    let mut latencies = Vec::with_capacity(indices.len());
    for i in indices {
        let p = &profiles[i];
        let pieces: Vec<&[u8]> = p.gzip.chunks(holmes_proto::MAX_CHUNK_BYTES).collect();
        for (index, piece) in pieces.iter().enumerate() {
            seq += 1;
            let chunk = ProfileChunk {
                profile_id: p.id.clone(),
                event_id: format!("bench-{instance}-{i}"),
                kind: ProfileKind::Cpu,
                chunk_index: index as u32,
                chunk_count: pieces.len() as u32,
                total_bytes: p.gzip.len() as u64,
                data: piece.to_vec(),
                started_unix_nanos: p.started_unix_nanos,
                duration: Duration::from_secs(10),
                error: None,
                labels: [("phase".to_owned(), "trigger".to_owned())].into(),
            };
            let msg = AgentMessage {
                seq,
                body: AgentBody::ProfileChunk(chunk),
            };
            tx.send(pb::AgentMessage::from(&msg)).await.unwrap();
        }
        let sent = Instant::now();
        loop {
            let raw = inbound
                .message()
                .await
                .expect("the stream stays healthy")
                .expect("the stream stays open");
            if let CollectorMessage::Ack { seq: acked } = CollectorMessage::try_from(raw).unwrap() {
                if acked >= seq {
                    break;
                }
            }
        }
        latencies.push(sent.elapsed());
    }
    latencies
}

// ---------------------------------------------------------------------------------------
// One backend
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    ClickHouse,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::ClickHouse => "ClickHouse",
        }
    }
}

/// Stored bytes by table.
type TableBytes = Vec<(String, u64)>;

struct RunResult {
    backend: Backend,
    profiles: usize,
    wall: Duration,
    collector_cpu: f64,
    agents_cpu: f64,
    clickhouse_cpu: Option<f64>,
    latencies: Vec<Duration>,
    /// Bytes by table as written, and (ClickHouse) after merging every table to one
    /// part per partition.
    bytes: TableBytes,
    merged: Option<TableBytes>,
    parts: Option<(u64, u64)>,
    /// ClickHouse: compressed bytes of each `profile_samples` column, merged.
    sample_columns: TableBytes,
}

fn run_backend(
    backend: Backend,
    params: &Params,
    profiles: &Arc<Vec<GenProfile>>,
    collector_rt: &tokio::runtime::Runtime,
    agent_rt: &tokio::runtime::Runtime,
) -> RunResult {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let database = format!("holmes_bench_{}", std::process::id());
    let url = std::env::var("HOLMES_TEST_CLICKHOUSE_URL").ok();
    if backend == Backend::ClickHouse {
        config.store = StoreKind::Clickhouse;
        config.clickhouse = ClickHouseSection {
            url: url.clone(),
            database: database.clone(),
            ..ClickHouseSection::default()
        };
        if let Some(ms) = std::env::var("HOLMES_BENCH_BATCH_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            config.clickhouse.batch_delay_ms = ms;
        }
    }
    let server = collector_rt
        .block_on(Server::start(&config))
        .expect("the collector starts");
    let addr = server.grpc_addr();

    let mut per_agent: Vec<Vec<usize>> = vec![Vec::new(); params.agents];
    for i in 0..profiles.len() {
        per_agent[i % params.agents].push(i);
    }
    let before = CpuMark::now();
    let started = Instant::now();
    let handles: Vec<_> = per_agent
        .into_iter()
        .enumerate()
        .map(|(instance, indices)| {
            agent_rt.spawn(run_agent(addr, instance, Arc::clone(profiles), indices))
        })
        .collect();
    let mut latencies = Vec::with_capacity(profiles.len());
    for h in handles {
        latencies.extend(agent_rt.block_on(h).unwrap());
    }
    let wall = started.elapsed();
    let after = CpuMark::now();
    collector_rt.block_on(server.shutdown());

    let agents_cpu = after.agents - before.agents;
    let clickhouse_cpu = match (backend, before.clickhouse, after.clickhouse) {
        (Backend::ClickHouse, Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let (bytes, merged, parts, sample_columns) = match backend {
        Backend::Sqlite => (sqlite_bytes(dir.path()), None, None, Vec::new()),
        Backend::ClickHouse => {
            let url = url.expect("ClickHouse runs only with a URL");
            let (bytes, merged, parts, columns) =
                collector_rt.block_on(clickhouse_bytes(&url, &database));
            (bytes, Some(merged), Some(parts), columns)
        }
    };
    RunResult {
        backend,
        profiles: profiles.len(),
        wall,
        collector_cpu: (after.process - before.process) - agents_cpu,
        agents_cpu,
        clickhouse_cpu,
        latencies,
        bytes,
        merged,
        parts,
        sample_columns,
    }
}

/// Bytes of each table (its indexes included) from SQLite's `dbstat`.
fn sqlite_bytes(data_dir: &std::path::Path) -> TableBytes {
    let conn = rusqlite::Connection::open(data_dir.join(holmes_storage::sqlite::DB_FILE)).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT coalesce(m.tbl_name, d.name), sum(d.pgsize) FROM dbstat d
             LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY 1 ORDER BY 1",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[derive(clickhouse::Row, serde::Deserialize)]
struct PartsRow {
    table: String,
    bytes: u64,
    parts: u64,
}

/// Bytes on disk of each table as written, then after `OPTIMIZE … FINAL`; and the active
/// parts before and after. Drops the database afterwards.
#[derive(clickhouse::Row, serde::Deserialize)]
struct ColumnRow {
    name: String,
    bytes: u64,
}

/// What [`clickhouse_bytes`] measures: bytes by table as written and merged, active parts
/// before and after merging, and bytes by column of `profile_samples`.
type ClickHouseBytes = (TableBytes, TableBytes, (u64, u64), TableBytes);

async fn clickhouse_bytes(url: &str, database: &str) -> ClickHouseBytes {
    let client = clickhouse::Client::default()
        .with_url(url)
        .with_validation(false)
        .with_compression(clickhouse::Compression::None);
    let read = || async {
        let rows: Vec<PartsRow> = client
            .query(
                "SELECT table, toUInt64(sum(bytes_on_disk)) AS bytes, toUInt64(count()) AS parts
                 FROM system.parts WHERE active AND database = ? GROUP BY table ORDER BY table",
            )
            .bind(database)
            .fetch_all()
            .await
            .unwrap();
        let parts = rows.iter().map(|r| r.parts).sum::<u64>();
        (
            rows.into_iter()
                .map(|r| (r.table, r.bytes))
                .collect::<TableBytes>(),
            parts,
        )
    };
    let (written, parts_before) = read().await;
    for (table, _) in &written {
        client
            .query(&format!("OPTIMIZE TABLE {database}.{table} FINAL"))
            .execute()
            .await
            .unwrap();
    }
    let (merged, parts_after) = read().await;
    let columns: Vec<ColumnRow> = client
        .query(
            "SELECT name, toUInt64(data_compressed_bytes) AS bytes FROM system.columns
             WHERE database = ? AND table = 'profile_samples' ORDER BY bytes DESC",
        )
        .bind(database)
        .fetch_all()
        .await
        .unwrap();
    client
        .query(&format!("DROP DATABASE IF EXISTS {database}"))
        .execute()
        .await
        .unwrap();
    (
        written,
        merged,
        (parts_before, parts_after),
        columns.into_iter().map(|c| (c.name, c.bytes)).collect(),
    )
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn kib(bytes: f64) -> String {
    if bytes >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", bytes / 1024.0 / 1024.0)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}

fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e4 {
        format!("{:.0} k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

const NORMALIZED: [&str; 3] = ["stacks", "profile_samples", "profile_contents"];

fn table_sum(bytes: &TableBytes, tables: &[&str]) -> u64 {
    bytes
        .iter()
        .filter(|(t, _)| tables.contains(&t.as_str()))
        .map(|(_, b)| b)
        .sum()
}

fn print_bytes(label: &str, bytes: &TableBytes, profiles: usize, raw_per_profile: f64) {
    let n = profiles as f64;
    let per = |b: u64| b as f64 / n;
    let ratio = |b: u64| raw_per_profile / per(b).max(1e-9);
    let normalized = table_sum(bytes, &NORMALIZED);
    let originals = table_sum(bytes, &["profiles"]);
    let total: u64 = bytes.iter().map(|(_, b)| b).sum();
    println!("  {label}");
    for t in NORMALIZED {
        println!(
            "    {t:<34}{:>12} /profile",
            kib(per(table_sum(bytes, &[t])))
        );
    }
    println!(
        "    {:<34}{:>12} /profile   {:>6.1}x smaller than raw gzip",
        "normalized (the three above)",
        kib(per(normalized)),
        ratio(normalized)
    );
    println!(
        "    {:<34}{:>12} /profile   {:>6.1}x",
        "originals kept (profiles)",
        kib(per(originals)),
        ratio(originals)
    );
    println!(
        "    {:<34}{:>12} /profile   {:>6.1}x",
        "everything stored",
        kib(per(total)),
        ratio(total)
    );
}

fn report(params: &Params, raw_total: u64, baseline: Option<(f64, f64)>, runs: &[RunResult]) {
    let samples = SAMPLES_PER_PROFILE as f64;
    let raw_per_profile = raw_total as f64 / params.profiles as f64;
    println!();
    println!(
        "== throughput ({} agents, {} profiles of {SAMPLES_PER_PROFILE} samples each)",
        params.agents, params.profiles
    );
    if let Some((count, cpu)) = baseline {
        println!(
            "  decode + normalize only (one thread): {} profiles/s per core, {} samples/s per core ({count:.0} profiles, {cpu:.2} s CPU)",
            si(count / cpu),
            si(count / cpu * samples),
        );
    }
    for r in runs {
        let n = r.profiles as f64;
        let wall = r.wall.as_secs_f64();
        let mut sorted = r.latencies.clone();
        sorted.sort();
        println!("  {}", r.backend.name());
        println!(
            "    sustained                         {:>8} profiles/s  {:>8} samples/s   ({:.1} s wall)",
            si(n / wall),
            si(n / wall * samples),
            wall
        );
        println!(
            "    per core of the collector         {:>8} profiles/s  {:>8} samples/s   ({:.2} s CPU; agents apart: {:.2} s)",
            si(n / r.collector_cpu),
            si(n / r.collector_cpu * samples),
            r.collector_cpu,
            r.agents_cpu
        );
        if let Some(ch) = r.clickhouse_cpu {
            let both = r.collector_cpu + ch;
            println!(
                "    per core, collector + ClickHouse  {:>8} profiles/s  {:>8} samples/s   (server {ch:.2} s CPU during the run)",
                si(n / both),
                si(n / both * samples),
            );
        }
        if let Some((count, cpu)) = baseline {
            let share = (cpu / count) / (r.collector_cpu / n);
            println!(
                "    decode + normalize share of the collector's CPU: {:.0} %",
                share * 100.0
            );
        }
        println!(
            "    last chunk -> ack                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            percentile(&sorted, 0.50).as_secs_f64() * 1e3,
            percentile(&sorted, 0.99).as_secs_f64() * 1e3,
            sorted.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
    }
    println!();
    println!(
        "== stored bytes per profile (raw gzip: {} /profile, {} in all)",
        kib(raw_per_profile),
        kib(raw_total as f64)
    );
    for r in runs {
        println!("  {}", r.backend.name());
        match (&r.merged, r.parts) {
            (Some(merged), Some((before, after))) => {
                print_bytes(
                    &format!("as written ({before} active parts)"),
                    &r.bytes,
                    r.profiles,
                    raw_per_profile,
                );
                print_bytes(
                    &format!("after OPTIMIZE ... FINAL ({after} active parts)"),
                    merged,
                    r.profiles,
                    raw_per_profile,
                );
            }
            _ => print_bytes(
                "dbstat, indexes included",
                &r.bytes,
                r.profiles,
                raw_per_profile,
            ),
        }
        let other: Vec<String> = r
            .merged
            .as_ref()
            .unwrap_or(&r.bytes)
            .iter()
            .filter(|(t, _)| !NORMALIZED.contains(&t.as_str()) && t != "profiles")
            .map(|(t, b)| format!("{t} {}", kib(*b as f64)))
            .collect();
        println!("    other tables: {}", other.join(", "));
        if !r.sample_columns.is_empty() {
            let samples = (r.profiles * SAMPLES_PER_PROFILE) as f64;
            let columns: Vec<String> = r
                .sample_columns
                .iter()
                .map(|(c, b)| format!("{c} {:.2}", *b as f64 / samples))
                .collect();
            println!(
                "    profile_samples, bytes per sample by column: {}",
                columns.join(", ")
            );
        }
    }
}

fn main() {
    let params = Params::from_env();
    println!(
        "holmes ingest bench: {} agents of service {SERVICE:?}, {} CPU profiles of {SAMPLES_PER_PROFILE} samples over 24 h, stacks from a pool of {} (10-40 frames, Zipf s={ZIPF_S})",
        params.agents, params.profiles, params.pool
    );
    let t = Instant::now();
    let (profiles, functions) = generate(&params);
    let raw_total: u64 = profiles.iter().map(|p| p.gzip.len() as u64).sum();
    println!(
        "generated in {:.1} s: {functions} functions, {} raw gzip in all",
        t.elapsed().as_secs_f64(),
        kib(raw_total as f64)
    );

    // Baseline: the same bytes through decode + normalize alone, on this thread; then,
    // apart, what two of its steps cost: inflate + protobuf decode, and hashing the stacks.
    let sample = &profiles[..params.baseline_profiles];
    let cpu0 = rusage_secs(libc::RUSAGE_THREAD);
    let mut stacks_seen = std::collections::HashSet::new();
    let mut contents = Vec::new();
    for p in sample {
        let c = normalize(
            &p.gzip,
            Limits::default(),
            &p.id,
            SERVICE,
            p.started_unix_nanos,
        )
        .expect("a generated profile normalizes");
        assert_eq!(c.samples.len(), SAMPLES_PER_PROFILE);
        stacks_seen.extend(c.stacks.iter().map(|s| s.stack_id));
        if contents.len() < 50 {
            contents.push(c);
        }
    }
    let cpu1 = rusage_secs(libc::RUSAGE_THREAD);
    for p in sample {
        let mut raw = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&p.gzip[..]), &mut raw)
            .unwrap();
        std::hint::black_box(Profile::decode(&raw[..]).unwrap());
    }
    let cpu2 = rusage_secs(libc::RUSAGE_THREAD);
    let mut h = 0u64;
    for c in &contents {
        for s in &c.stacks {
            h ^= holmes_storage::stack_id(&s.frames);
        }
    }
    std::hint::black_box(h);
    let cpu3 = rusage_secs(libc::RUSAGE_THREAD);
    let n = sample.len() as f64;
    let baseline = Some((n, (cpu1 - cpu0).max(1e-6)));
    println!(
        "decode + normalize per profile: {:.1} ms CPU, of which inflate + protobuf decode {:.1} ms and stack content hashes {:.1} ms; {} distinct stacks in {} profiles",
        (cpu1 - cpu0) / n * 1e3,
        (cpu2 - cpu1) / n * 1e3,
        (cpu3 - cpu2) / contents.len().max(1) as f64 * 1e3,
        stacks_seen.len(),
        sample.len(),
    );
    drop(contents);

    let collector_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("collector")
        .build()
        .unwrap();
    let agent_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name(AGENT_THREAD)
        .build()
        .unwrap();
    let profiles = Arc::new(profiles);
    let only = std::env::var("HOLMES_BENCH_BACKENDS").unwrap_or_default();
    let mut runs = Vec::new();
    for backend in [Backend::Sqlite, Backend::ClickHouse] {
        if !only.is_empty() && !only.to_lowercase().contains(&backend.name().to_lowercase()) {
            continue;
        }
        if backend == Backend::ClickHouse && std::env::var("HOLMES_TEST_CLICKHOUSE_URL").is_err() {
            println!("ClickHouse skipped: HOLMES_TEST_CLICKHOUSE_URL is not set (deploy/dev/bench.sh starts one)");
            continue;
        }
        println!("running {} ...", backend.name());
        runs.push(run_backend(
            backend,
            &params,
            &profiles,
            &collector_rt,
            &agent_rt,
        ));
    }
    report(&params, raw_total, baseline, &runs);
}
