//! Symbolization on the collector, through real agent processes (`holmes-demo`, the
//! agent inside, sending frames as module + offset) and a real collector on loopback:
//! - an executable with debug info: its agents upload it when the collector asks (two
//!   processes of one build, one upload), and profiles read back named with full paths
//!   in the API's top list, the flame graph and the pprof download `go tool pprof`
//!   reads;
//! - an executable that runs stripped (no symbol table: its agent offers nothing): its
//!   frames read as module + offset until CI uploads the debug file with `holmes
//!   debuginfo upload`, then named;
//! - the same stripped executable with nobody uploading its debug file, which a real
//!   debuginfod server (elfutils' `debuginfod`, serving a folder) has: named from there,
//!   each build asked for once.
//!
//! Each prints how long a capture took from the request to a named profile (no timing
//! is asserted).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use holmes_cli::api_client::control::CaptureTarget;
use holmes_cli::api_client::ApiClient;
use tokio::io::AsyncBufReadExt;

use crate::support::pprof::{go_available, pprof};
use crate::support::{eventually, holmes_cli, Backend};

/// The demo's culprit, as its debug info names it.
const HOT_LOOP: &str = "holmes_devtools::demo::hot_loop";
/// What an agent logs when it starts uploading its executable's debug info.
const UPLOADING: &str = "uploading debug info to the collector";

/// A demo instance: a child process with the agent inside, its log kept.
struct Demo {
    _child: tokio::process::Child,
    log: Arc<Mutex<String>>,
}

impl Demo {
    /// `holmes-demo service` from `exe`, bursting CPU most of the time, its agent's
    /// log at info level.
    fn start(exe: &Path, grpc: std::net::SocketAddr, instance: &str) -> Demo {
        let mut child = tokio::process::Command::new(exe)
            .args(["service", "--collector"])
            .arg(format!("http://{grpc}"))
            .args(["--instance", instance, "--burst-every", "1s"])
            .env("RUST_LOG", "holmes=info")
            .env("HOLMES_DEBUGINFO_RATE", "64MiB")
            .env("HOLMES_CPU_PROFILE_DURATION", "2s")
            // The test asks for a second CPU profile well within the agent's default
            // 30 s between two requested captures of a kind.
            .env("HOLMES_CAPTURE_REQUEST_INTERVAL", "1s")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let kept = Arc::clone(&log);
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = kept.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Demo { _child: child, log }
    }

    fn uploads_started(&self) -> usize {
        self.log.lock().unwrap().matches(UPLOADING).count()
    }
}

/// Waits until the store holds the whole debug info of `build_id` (an agent uploading
/// it since `started`); says how much it was and when it was complete.
pub(crate) async fn uploaded(store: &dyn holmes_storage::Store, build_id: &str, started: Instant) {
    // Some 74 MB through debug builds of the agent, the collector and SQLite: 39 s on an
    // idle machine here, past 120 s with the soak test beside it.
    let status = eventually(
        Duration::from_secs(300),
        "the build's debug info uploaded",
        || async {
            store
                .debuginfo_status(build_id)
                .await
                .ok()
                .flatten()
                .filter(|s| s.complete())
        },
    )
    .await;
    eprintln!(
        "debug info of build {build_id}: {} bytes uploaded {:?} after start",
        status.total_bytes,
        started.elapsed()
    );
}

fn build_id_of(exe: &Path) -> String {
    holmes_symbolize::UploadBlob::from_elf_file(exe)
        .unwrap()
        .build_id()
        .expect("the demo has a build id")
        .to_owned()
}

/// Asks the service's agents for a CPU profile now; returns the first that arrives
/// (its id) and when it was asked for.
async fn capture_cpu(api: &ApiClient, service: &str) -> (String, Instant) {
    // Once the agents are connected.
    let (asked, asked_at) = eventually(
        Duration::from_secs(60),
        "a connected agent to ask",
        || async {
            let at = Instant::now();
            let target = CaptureTarget {
                kinds: vec!["cpu".to_owned()],
                selector: String::new(),
                instance: None,
                cpu_duration: None,
                by: "symbolize test".to_owned(),
            };
            api.capture(service, &target).await.ok().map(|a| (a, at))
        },
    )
    .await;
    let profile = eventually(
        Duration::from_secs(60),
        "the requested CPU profile",
        || async {
            let triggers = api.triggers(service, "10m").await.ok()?;
            let events: Vec<String> = triggers
                .triggers
                .iter()
                .filter(|t| t.request_id.as_deref() == Some(asked.request_id.as_str()))
                .map(|t| t.event_id.clone())
                .collect();
            let profiles = api.profiles(service, "10m").await.ok()?;
            profiles
                .profiles
                .into_iter()
                .find(|p| events.contains(&p.event_id) && p.kind == "cpu" && p.error.is_none())
        },
    )
    .await;
    (profile.profile_id, asked_at)
}

async fn top_functions(api: &ApiClient, service: &str, profile_id: &str) -> Vec<String> {
    api.top(service, profile_id, None, 200)
        .await
        .map(|t| t.functions.into_iter().map(|f| f.function).collect())
        .unwrap_or_default()
}

/// Waits until the profile's top list names the hot loop; returns the list.
async fn wait_named(api: &ApiClient, service: &str, profile_id: &str) -> Vec<String> {
    wait_named_with(api, service, profile_id, &[HOT_LOOP]).await
}

/// Waits until the profile's top list names the hot loop and has a function starting
/// with each of `prefixes`; returns the list. Names arrive in batches: a location this
/// collector is naming already (the sweep of the build's stored locations, once its
/// upload completed) is named by that sweep's writes, which may land after the profile.
async fn wait_named_with(
    api: &ApiClient,
    service: &str,
    profile_id: &str,
    prefixes: &[&str],
) -> Vec<String> {
    eventually(
        Duration::from_secs(120),
        "the profile's functions named",
        || async {
            let functions = top_functions(api, service, profile_id).await;
            let named = functions.iter().any(|f| f == HOT_LOOP)
                && prefixes
                    .iter()
                    .all(|p| functions.iter().any(|f| f.starts_with(p)));
            named.then_some(functions)
        },
    )
    .await
}

/// The names in the flame graph and in the download (`go tool pprof -raw`).
async fn check_reads(api: &ApiClient, service: &str, profile_id: &str, dir: &Path) {
    let svg = api.profile_flamegraph(service, profile_id).await.unwrap();
    let svg = String::from_utf8(svg).unwrap();
    assert!(svg.contains(HOT_LOOP), "flame graph without {HOT_LOOP}");
    if !go_available() {
        return;
    }
    let bytes = api.download_profile(service, profile_id).await.unwrap();
    let file = dir.join(format!("{profile_id}.pb.gz"));
    std::fs::write(&file, bytes).unwrap();
    let raw = pprof(&["-raw"], &file);
    let line = raw
        .lines()
        .find(|l| l.contains(HOT_LOOP))
        .unwrap_or_else(|| panic!("go tool pprof -raw shows no {HOT_LOOP}:\n{raw}"));
    // Named with its source file and line, from the uploaded DWARF.
    assert!(
        line.contains("collector/devtools/src/demo.rs:"),
        "no file of {HOT_LOOP}: {line}"
    );
}

async fn agent_uploads_and_profiles_are_named(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let demo = holmes_devtools::workspace::bin("holmes-demo");
    let build_id = build_id_of(&demo);
    let store = server.store();

    // Two processes of one build: the collector asks one of them.
    let started = Instant::now();
    let demos = [
        Demo::start(&demo, server.grpc_addr(), "checkout-0"),
        Demo::start(&demo, server.grpc_addr(), "checkout-1"),
    ];
    uploaded(store.as_ref(), &build_id, started).await;
    let uploads: usize = demos.iter().map(Demo::uploads_started).sum();
    assert_eq!(uploads, 1, "two processes of one build upload once");

    let (profile_id, asked_at) = capture_cpu(&api, "checkout").await;
    let arrived = asked_at.elapsed();
    // The full path of every frame of the program, through the demo's module: the hot
    // loop runs on a scoped thread that `run_service` spawns (its closure).
    wait_named_with(
        &api,
        "checkout",
        &profile_id,
        &["holmes_devtools::demo::run_service::{{closure}}"],
    )
    .await;
    eprintln!(
        "capture requested → profile stored {arrived:?}, → named {:?}",
        asked_at.elapsed()
    );
    check_reads(&api, "checkout", &profile_id, dir.path()).await;
    // Still one upload: the profiles did not start another.
    let uploads: usize = demos.iter().map(Demo::uploads_started).sum();
    assert_eq!(uploads, 1);
    drop(demos);
    server.shutdown().await;
}

/// On SQLite only: the demo's debug build uploads some 180 MB of DWARF, which takes
/// minutes on a loaded machine; ClickHouse's side of uploads, claims and symbols is in
/// storage's conformance suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_uploads_its_debug_info_once_per_build_and_profiles_are_named() {
    agent_uploads_and_profiles_are_named(Backend::Sqlite).await;
}

/// The demo as it would ship stripped, and its debug file, in `dir`.
fn stripped_demo(dir: &Path) -> (PathBuf, PathBuf) {
    let demo = holmes_devtools::workspace::bin("holmes-demo");
    let folder = dir.join("stripped");
    std::fs::create_dir_all(&folder).unwrap();
    let exe = folder.join("holmes-demo");
    let debug = folder.join("holmes-demo.debug");
    std::fs::copy(&demo, &exe).unwrap();
    let objcopy = |args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new("objcopy")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "objcopy {args:?}: {out:?}");
    };
    objcopy(&[
        "--only-keep-debug".as_ref(),
        exe.as_os_str(),
        debug.as_os_str(),
    ]);
    objcopy(&["--strip-all".as_ref(), exe.as_os_str()]);
    (exe, debug)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripped_binary_is_named_once_ci_uploads_its_debug_file() {
    let dir = tempfile::tempdir().unwrap();
    let (exe, debug) = stripped_demo(dir.path());
    let build_id = build_id_of(&exe);
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let api_url = format!("http://{}", server.http_addr());
    let api = ApiClient::new(&api_url).unwrap();
    let demo = Demo::start(&exe, server.grpc_addr(), "checkout-stripped");

    // A few seconds of work (bursts) for the flight recorder to hold.
    eventually(
        Duration::from_secs(60),
        "the demo running for a while",
        || async {
            let m = api.metrics("checkout", "rss", "5m").await.ok()?;
            (m.series.first()?.points.len() >= 5).then_some(())
        },
    )
    .await;
    // Nobody uploaded its debug info: its frames are module + offset.
    let (profile_id, _) = capture_cpu(&api, "checkout").await;
    let top = api.top("checkout", &profile_id, None, 200).await.unwrap();
    let functions: Vec<String> = top.functions.into_iter().map(|f| f.function).collect();
    assert!(
        functions.iter().any(|f| f.starts_with("holmes-demo+0x")),
        "{functions:?}"
    );
    assert!(!functions.iter().any(|f| f == HOT_LOOP), "{functions:?}");
    assert_eq!(
        demo.uploads_started(),
        0,
        "a stripped binary has nothing to upload"
    );

    // A debug file of another build is refused by the CLI.
    let holmes = holmes_devtools::workspace::bin("holmes");
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "debuginfo",
        "upload",
        exe.to_str().unwrap(),
        "--debug-file",
        holmes.to_str().unwrap(),
    ])
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is the debug file of build"), "{stderr}");

    // CI uploads the debug file: the same profile reads named.
    let uploaded_at = Instant::now();
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "debuginfo",
        "upload",
        exe.to_str().unwrap(),
        "--debug-file",
        debug.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("uploaded ")
            && stdout.trim_end().ends_with(&format!("of build {build_id}")),
        "{stdout}"
    );
    wait_named(&api, "checkout", &profile_id).await;
    eprintln!(
        "CI upload → stored profile named {:?}",
        uploaded_at.elapsed()
    );
    check_reads(&api, "checkout", &profile_id, dir.path()).await;

    // New profiles are named as they arrive.
    let (next, asked_at) = capture_cpu(&api, "checkout").await;
    let arrived = asked_at.elapsed();
    wait_named(&api, "checkout", &next).await;
    eprintln!(
        "capture requested → profile stored {arrived:?}, → named {:?}",
        asked_at.elapsed()
    );

    // Uploading again changes nothing.
    let out = holmes_cli(&[
        "--api",
        &api_url,
        "--json",
        "debuginfo",
        "upload",
        exe.to_str().unwrap(),
        "--debug-file",
        debug.to_str().unwrap(),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let again: holmes_api::DebugInfoUploadJson = serde_json::from_slice(&out.stdout).unwrap();
    assert!(!again.stored);
    assert_eq!(again.build_id, build_id);
    drop(demo);
    server.shutdown().await;
}

/// elfutils' `debuginfod` on the PATH (Debian's `debuginfod`), or `None`: the test then
/// says it is skipped, unless `HOLMES_TEST_REQUIRE_DEBUGINFOD=1` makes that a failure.
fn debuginfod_bin() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("debuginfod"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("HOLMES_TEST_REQUIRE_DEBUGINFOD").as_deref() != Ok("1"),
            "debuginfod is required (HOLMES_TEST_REQUIRE_DEBUGINFOD=1) but not on the PATH"
        );
        eprintln!("skipped: no debuginfod on the PATH (apt-get install debuginfod)");
    }
    found
}

/// A debuginfod serving the folder `served` on a free loopback port (its log in
/// `dir/debuginfod.log`), once it serves `build_id`'s debug file: its process and port. A port found free may be taken by
/// another test before debuginfod binds it, which then exits: it starts again on
/// another port.
async fn debuginfod_serving(
    bin: &Path,
    served: &Path,
    dir: &Path,
    build_id: &str,
) -> (tokio::process::Child, u16) {
    let log_path = dir.join("debuginfod.log");
    let log_text = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let wanted = format!("/buildid/{build_id}/debuginfo");
    for _ in 0..3 {
        let port = crate::support::free_addr().port();
        let log = std::fs::File::create(&log_path).unwrap();
        let mut server = tokio::process::Command::new(bin)
            .arg("-F")
            .arg(served)
            .args(["-p", &port.to_string(), "-v", "-d"])
            .arg(dir.join("debuginfod.sqlite"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        // debuginfod scans the folder and indexes the debug file first: seconds alone,
        // over a minute on a loaded 2-core machine (seen in CI).
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            if http_status(port, &wanted).await == 200 {
                return (server, port);
            }
            if let Ok(Some(status)) = server.try_wait() {
                eprintln!(
                    "debuginfod ended ({status}) on port {port}:\n{}",
                    log_text()
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "debuginfod not serving the debug file after 240 s; its log:\n{}",
                log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    panic!(
        "debuginfod did not stay up on three ports; its last log:\n{}",
        log_text()
    );
}

/// The HTTP status of `GET path` on 127.0.0.1:`port` (0 when nothing answers).
async fn http_status(port: u16, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    let request = format!("GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n");
    if s.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_err() {
        return 0;
    }
    // "HTTP/1.x NNN"
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_nobody_uploaded_is_named_from_debuginfod() {
    let Some(debuginfod) = debuginfod_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (exe, debug) = stripped_demo(dir.path());
    let build_id = build_id_of(&exe);
    // A debuginfod server holding the debug file, as a distribution's or a CI's would.
    let served = dir.path().join("served");
    std::fs::create_dir_all(&served).unwrap();
    std::fs::rename(&debug, served.join("holmes-demo.debug")).unwrap();
    let (_server, port) = debuginfod_serving(&debuginfod, &served, dir.path(), &build_id).await;

    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.symbolize.debuginfod_urls = vec![format!("http://127.0.0.1:{port}")];
    let server = holmes_collector::Server::start(&config).await.unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let demo = Demo::start(&exe, server.grpc_addr(), "checkout-debuginfod");

    // A few seconds of work (bursts) for the flight recorder to hold.
    eventually(
        Duration::from_secs(60),
        "the demo running for a while",
        || async {
            let m = api.metrics("checkout", "rss", "5m").await.ok()?;
            (m.series.first()?.points.len() >= 5).then_some(())
        },
    )
    .await;
    // Nobody uploads (a stripped binary offers nothing): the collector fetches it.
    let (profile_id, asked_at) = capture_cpu(&api, "checkout").await;
    wait_named(&api, "checkout", &profile_id).await;
    eprintln!(
        "capture requested → profile named from debuginfod {:?}",
        asked_at.elapsed()
    );
    check_reads(&api, "checkout", &profile_id, dir.path()).await;
    assert_eq!(demo.uploads_started(), 0);
    let status = server
        .store()
        .debuginfo_status(&build_id)
        .await
        .unwrap()
        .expect("the fetched debug info is stored");
    assert!(status.complete());
    assert_eq!(status.source, holmes_storage::DebugInfoSource::Upload);

    // Later profiles are named as they arrive, and no build is asked for twice: the
    // demo's once, and each module no server has (libc, the vDSO) once.
    let (next, _) = capture_cpu(&api, "checkout").await;
    wait_named(&api, "checkout", &next).await;
    // The collector's requests in debuginfod's log, by their user agent
    // (`holmes-collector/<version>`, which debuginfod logs without its `-`; the
    // readiness probe above sends none).
    let log = std::fs::read_to_string(dir.path().join("debuginfod.log")).unwrap();
    let mut asked: BTreeMap<&str, usize> = BTreeMap::new();
    for line in log.lines().filter(|l| l.contains("UA:holmes")) {
        if let Some(rest) = line.split("GET /buildid/").nth(1) {
            let id = rest.split('/').next().unwrap_or_default();
            *asked.entry(id).or_default() += 1;
        }
    }
    assert_eq!(asked.get(build_id.as_str()), Some(&1), "{log}");
    let twice: Vec<_> = asked.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "asked more than once: {twice:?}\n{log}");
    drop(demo);
    server.shutdown().await;
}

/// An agent of `build_id` that offers its upload (a hand-driven one).
fn offering_hello(instance: &str, build_id: &str) -> holmes_proto::Hello {
    let mut hello = crate::support::raw_agent::hello("checkout", instance, Vec::new());
    hello.executable = Some(holmes_proto::Module {
        name: "checkout".to_owned(),
        build_id: build_id.to_owned(),
    });
    hello.debuginfo_upload = true;
    hello
}

fn chunk_of(build_id: &str, blob: &[u8], from: usize, to: usize) -> holmes_proto::AgentBody {
    holmes_proto::AgentBody::DebugInfoChunk(holmes_proto::DebugInfoChunk {
        build_id: build_id.to_owned(),
        offset: from as u64,
        total_bytes: blob.len() as u64,
        data: blob[from..to].to_vec(),
    })
}

/// The agent uploading goes away half-way: the other agent of the build is asked for
/// the rest, from the bytes the store holds, and the upload completes whole; an agent
/// of the build connecting after that is asked for nothing.
async fn an_upload_cut_off_resumes_with_another_agent_of_the_build(backend: Backend) {
    use crate::support::raw_agent::RawAgent;
    use holmes_proto::{CollectorMessage, DebugInfoRequest};
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = crate::support::start(backend, dir.path()).await else {
        return;
    };
    let build = "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";
    let blob: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut first =
        RawAgent::connect(server.grpc_addr(), offering_hello("checkout-0", build)).await;
    assert_eq!(
        first.next().await,
        CollectorMessage::DebugInfoRequest(DebugInfoRequest {
            build_id: build.to_owned(),
            offset: 0
        })
    );
    let mut second =
        RawAgent::connect(server.grpc_addr(), offering_hello("checkout-1", build)).await;
    assert_eq!(
        second.next_within(Duration::from_secs(1)).await,
        None,
        "one agent of a build uploads at a time"
    );
    first.send(0, chunk_of(build, &blob, 0, 1 << 20)).await;
    first
        .send(0, chunk_of(build, &blob, 1 << 20, 2 << 20))
        .await;
    // A sequenced message after the chunks: once it is acknowledged, the collector
    // has taken the chunks (a stream is handled in order). Then the agent goes away.
    first
        .send(
            1,
            holmes_proto::AgentBody::MetricWindow(holmes_proto::MetricWindow {
                series: Vec::new(),
            }),
        )
        .await;
    assert_eq!(first.next().await, CollectorMessage::Ack { seq: 1 });
    drop(first);
    assert_eq!(
        second.next().await,
        CollectorMessage::DebugInfoRequest(DebugInfoRequest {
            build_id: build.to_owned(),
            offset: 2 << 20
        })
    );
    second
        .send(0, chunk_of(build, &blob, 2 << 20, 3 << 20))
        .await;
    let store = server.store();
    let status = eventually(Duration::from_secs(30), "the upload complete", || async {
        store
            .debuginfo_status(build)
            .await
            .ok()
            .flatten()
            .filter(|s| s.complete())
    })
    .await;
    assert_eq!(status.total_bytes, blob.len() as u64);
    assert_eq!(store.read_debuginfo(build).await.unwrap(), Some(blob));
    let mut third =
        RawAgent::connect(server.grpc_addr(), offering_hello("checkout-2", build)).await;
    assert_eq!(third.next_within(Duration::from_secs(1)).await, None);
    server.shutdown().await;
}

crate::support::on_each_backend!(an_upload_cut_off_resumes_with_another_agent_of_the_build);
