//! A realistic Rust service's functions and the call chains its stacks are made of:
//! tokio's workers and blocking pool, hyper and axum, serde, tokio-postgres, libc and the
//! service's own handlers, domain logic and storage, with real-looking files.

use std::collections::HashMap;

/// The file of the vDSO's functions: the kernel's, mapped into every process.
pub(super) const VDSO: &str = "[vdso]";
const RUSTC: &str = "/rustc/17067e9ac6d7e98f18d4a2a6ae8a5d9a2a8f8b2a/library";
const REGISTRY: &str = "/home/build/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f";

/// Function names and files, each once; frames refer to them by index.
#[derive(Default)]
pub(super) struct Catalog {
    pub(super) functions: Vec<(String, String)>,
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
pub(super) struct Shapes {
    pub(super) catalog: Catalog,
    pub(super) worker_root: Vec<usize>,
    pub(super) blocking_root: Vec<usize>,
    pub(super) main_root: Vec<usize>,
    pub(super) idle: Vec<usize>,
    pub(super) framework: Vec<usize>,
    /// Service functions by layer: handlers, domain logic, storage and messaging.
    pub(super) layers: [Vec<usize>; 3],
    pub(super) libraries: Vec<Vec<usize>>,
    pub(super) leaves: Vec<Vec<usize>>,
}

pub(super) fn shapes() -> Shapes {
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
        c.chain(&[
            ("std::time::Instant::now", &std_file("std/src/time.rs")),
            (
                "std::sys::pal::unix::time::Timespec::now",
                &std_file("std/src/sys/pal/unix/time.rs"),
            ),
            (
                "clock_gettime",
                "../sysdeps/unix/sysv/linux/clock_gettime.c",
            ),
            ("__vdso_clock_gettime", VDSO),
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
