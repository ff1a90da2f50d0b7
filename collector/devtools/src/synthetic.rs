//! Synthetic fleet data: CPU profiles as a realistic Rust service's agent would send
//! them, for the ingest benchmark (`collector/benches/ingest.rs`) and the load generator
//! (`holmes-loadgen`).
//!
//! A [`ProfileFactory`] holds a pool of distinct stacks, 10–40 frames deep, of
//! Rust-looking functions (tokio, hyper, axum, serde, tokio-postgres, libc and the
//! service's own modules) with real-looking files and lines. Each profile draws
//! [`SAMPLES_PER_PROFILE`] distinct stacks from it with Zipf popularity (s = [`ZIPF_S`])
//! and is encoded as the agent encodes it: gzipped `profile.proto`, its own string table,
//! functions, one location per frame, values `[count, nanoseconds]`, a `phase` label.
//! Everything is deterministic: the same seed gives the same bytes.

use std::collections::HashMap;
use std::io::Write as _;

use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use prost::Message as _;

/// Samples (distinct stacks) per profile.
pub const SAMPLES_PER_PROFILE: usize = 1000;
/// Sampling period of the simulated CPU profiler (100 Hz).
pub const PERIOD_NANOS: i64 = 10_000_000;
/// Zipf exponent of stack popularity.
pub const ZIPF_S: f64 = 1.0;

/// A pool of distinct stacks and the CPU profiles drawn from it.
pub struct ProfileFactory {
    shapes: Shapes,
    pool: Vec<Vec<Frame>>,
    cdf: Vec<f64>,
}

impl std::fmt::Debug for ProfileFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileFactory")
            .field("stacks", &self.pool.len())
            .field("functions", &self.shapes.catalog.functions.len())
            .finish()
    }
}

impl ProfileFactory {
    /// A pool of `stacks` distinct stacks (at least one).
    pub fn new(stacks: usize) -> Self {
        let shapes = shapes();
        let pool = stack_pool(&shapes, stacks.max(1));
        let cdf = zipf_cdf(pool.len());
        ProfileFactory { shapes, pool, cdf }
    }

    /// Distinct functions the stacks are made of.
    pub fn functions(&self) -> usize {
        self.shapes.catalog.functions.len()
    }

    /// A gzipped CPU profile of [`SAMPLES_PER_PROFILE`] distinct stacks (fewer if the
    /// pool is smaller) drawn with the randomness of `seed`.
    pub fn cpu_profile(&self, seed: u64, started_unix_nanos: u64) -> Vec<u8> {
        let mut rng = Rng(mix(seed));
        let picks = draw_picks(&self.cdf, &mut rng);
        encode_profile(&self.shapes.catalog, &self.pool, &picks, started_unix_nanos)
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

/// SplitMix64's finalizer: a well-mixed 64-bit value of `z` (for ids and seeds).
pub fn mix(mut z: u64) -> u64 {
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
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
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
