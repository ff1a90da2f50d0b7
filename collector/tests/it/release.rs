//! A host built the way agent/README.md tells hosts to build: the workspace's
//! `profiling` profile (release, `debug = "line-tables-only"`, not stripped; frame
//! pointers from .cargo/config.toml), running the agent's `cpu_burn` example against a
//! real collector on loopback. Its agent uploads the executable's debug info (line
//! tables and the symbol table only) when the collector asks, and the profile of its
//! spike reads back with full paths, source files and lines, in the API's top list and
//! in the download `go tool pprof` reads. Restarted (other addresses), the process's
//! stacks keep their ids.
//!
//! The release build of the agent and its dependencies takes minutes on two cores, so
//! the test runs only with `HOLMES_TEST_RELEASE=1` (deploy/dev/test.sh sets it and starts
//! that build early, beside its others); without it, it says it is skipped
//! ([`crate::support::profiling_example`]).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use holmes_cli::api_client::ApiClient;
use holmes_storage::StackId;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use crate::support::pprof::{go_available, pprof};
use crate::support::{eventually, Backend};

/// The example's culprit, with the path the symbol table gives it.
const CULPRIT: &str = "cpu_burn::render_price_table";
/// Its caller, also never inlined.
const CALLER: &str = "cpu_burn::handle_price_request";

/// A running example: its child process (killed on drop) and its HTTP port.
struct Example {
    _child: tokio::process::Child,
    port: u16,
}

impl Example {
    async fn start(exe: &Path, grpc: std::net::SocketAddr, instance: &str) -> Example {
        let mut child = tokio::process::Command::new(exe)
            .env("HOLMES_COLLECTOR", format!("http://{grpc}"))
            .env("HOLMES_INSTANCE", instance)
            .env("HOLMES_DEBUGINFO_RATE", "64MiB")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{} runs: {e}", exe.display()));
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut port = 0;
        // It prints "warm" (its rule windows full), then listens.
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(p) = line.strip_prefix("listening on http://127.0.0.1:") {
                port = p.trim().parse().unwrap();
                break;
            }
        }
        assert!(port > 0, "{} listens", exe.display());
        Example {
            _child: child,
            port,
        }
    }

    /// `GET /bug`: a burst of `render_price_table` on every core the process may use.
    async fn trigger(&self) {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        s.write_all(b"GET /bug HTTP/1.0\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).await.unwrap();
        assert!(reply.contains("bug started"), "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_build_is_named_with_full_paths_and_keeps_its_stack_ids_across_a_restart() {
    let Some(exe) = crate::support::profiling_example("cpu_burn") else {
        return;
    };
    let blob = holmes_symbolize::UploadBlob::from_elf_file(&exe).unwrap();
    let build_id = blob.build_id().expect("a build id").to_owned();
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let api = ApiClient::new(&format!("http://{}", server.http_addr())).unwrap();
    let example = Example::start(&exe, server.grpc_addr(), "release-0").await;

    // Its agent uploads the debug info of its build when the collector asks.
    crate::symbolize::uploaded(server.store().as_ref(), &build_id, Instant::now()).await;

    let (profile_id, functions) = culprit_profile(&api, &example, &[]).await;
    eprintln!("top functions: {:?}", &functions[..functions.len().min(12)]);
    // The program's frames carry their crate's path even where the line tables give
    // the short name only: no frame of the example is a bare `render_price_table`.
    assert!(
        !functions
            .iter()
            .any(|f| f == "render_price_table" || f == "handle_price_request"),
        "{functions:?}"
    );
    // Nothing of the executable is left as module + offset once its debug info is in.
    assert!(
        !functions.iter().any(|f| f.starts_with("cpu_burn+0x")),
        "{functions:?}"
    );

    if go_available() {
        let bytes = api.download_profile("cpu-burn", &profile_id).await.unwrap();
        let file = dir.path().join(format!("{profile_id}.pb.gz"));
        std::fs::write(&file, bytes).unwrap();
        // Named with its source file and line, from the line tables.
        let raw = pprof(&["-raw"], &file);
        let line = raw
            .lines()
            .find(|l| l.contains(CULPRIT))
            .unwrap_or_else(|| panic!("go tool pprof -raw shows no {CULPRIT}:\n{raw}"));
        assert!(
            line.contains("agent/examples/cpu_burn.rs:"),
            "no file of {CULPRIT}: {line}"
        );
        // The culprit under its caller in the stacks, full paths both.
        let traces = pprof(&["-traces"], &file);
        let called = traces.split("-----------+").any(|trace| {
            let frames: Vec<&str> = trace.lines().map(str::trim).collect();
            frames
                .iter()
                .zip(frames.iter().skip(1))
                .any(|(callee, caller)| callee.ends_with(CULPRIT) && caller.ends_with(CALLER))
        });
        assert!(
            called,
            "no {CALLER} → {CULPRIT} in go tool pprof -traces:\n{traces}"
        );
    }

    // Restarted, the process maps its executable and libc at other addresses (ASLR);
    // the same code paths keep their stack ids. Every stored stack id is the id of one
    // distinct path (its locations: module + offset, or named frames), over the profiles
    // of both processes, and the path to the burst's culprit has one id in both.
    drop(example);
    let before = profile_ids(&api, true).await;
    let example = Example::start(&exe, server.grpc_addr(), "release-0").await;
    let (after_id, _) = culprit_profile(&api, &example, &before).await;
    let store = server.store();
    let ids = |profile: &holmes_storage::ProfileRecord| -> (Vec<StackId>, Vec<StackId>) {
        let contents = profile.contents.as_ref().expect("contents");
        let mut all = Vec::new();
        let mut culprit = Vec::new();
        for stack in &contents.stacks {
            let id = StackId::of(stack.iter().map(|&l| contents.locations[l as usize].id()));
            let leaf = stack.first().map(|&l| {
                contents
                    .location_frames(l)
                    .first()
                    .map(|f| f.function.clone())
            });
            if leaf.flatten().as_deref() == Some(CULPRIT) {
                // The culprit's path from its caller up: which instruction of the
                // culprit's loop a sample caught varies from profile to profile (a
                // profile of a loaded machine holds only a few of them).
                culprit.push(StackId::of(
                    stack[1..]
                        .iter()
                        .map(|&l| contents.locations[l as usize].id()),
                ));
            }
            all.push(id);
        }
        (all, culprit)
    };
    drop(example);
    // Counted while no profile arrives (the last one in flight lands first).
    let (stored, distinct, profiles) = eventually(
        Duration::from_secs(60),
        "the stored stacks counted while no profile arrives",
        || async {
            let count = store.stack_count("cpu-burn").await.ok()?;
            let listed = profile_ids(&api, false).await;
            let records = store.get_profiles("cpu-burn", &listed).await.ok()?;
            let mut distinct = std::collections::BTreeSet::new();
            for r in records.iter().filter(|r| r.contents.is_some()) {
                distinct.extend(ids(r).0);
            }
            let settled = store.stack_count("cpu-burn").await.ok()? == count
                && profile_ids(&api, false).await == listed;
            settled.then_some((count, distinct.len(), records.len()))
        },
    )
    .await;
    let first = store
        .get_profile("cpu-burn", &profile_id)
        .await
        .unwrap()
        .unwrap();
    let second = store
        .get_profile("cpu-burn", &after_id)
        .await
        .unwrap()
        .unwrap();
    let (_, first_culprit) = ids(&first);
    let (_, second_culprit) = ids(&second);
    assert!(
        first_culprit.iter().any(|id| second_culprit.contains(id)),
        "the path to the burst's culprit has another stack id after the restart"
    );
    assert_eq!(
        stored, distinct as u64,
        "stored stacks of {profiles} profiles from before and after a restart"
    );
    eprintln!("{distinct} distinct stacks over {profiles} profiles of two processes of the build");
    server.shutdown().await;
}

/// The ids of the service's profiles that hold samples (its CPU profiles only, or all).
async fn profile_ids(api: &ApiClient, cpu_only: bool) -> Vec<String> {
    api.profiles("cpu-burn", "1h")
        .await
        .map(|l| l.profiles)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| (!cpu_only || p.kind == "cpu") && p.error.is_none())
        .map(|p| p.profile_id)
        .collect()
}

/// Bursts until a CPU profile of the example's instance, not one of `seen`, names the
/// culprit in its top list: that profile's id and top list. The burst fires the CPU rule
/// and the flight recorder's pre-trigger profile holds it; a burst the rule misses (it
/// can end between two samples on a loaded machine) is started again.
async fn culprit_profile(
    api: &ApiClient,
    example: &Example,
    seen: &[String],
) -> (String, Vec<String>) {
    let last_burst: std::sync::Mutex<Option<Instant>> = std::sync::Mutex::new(None);
    eventually(
        Duration::from_secs(180),
        "a CPU profile of the burst naming its culprit",
        || async {
            let due = last_burst
                .lock()
                .unwrap()
                .is_none_or(|t| t.elapsed() > Duration::from_secs(20));
            if due {
                example.trigger().await;
                *last_burst.lock().unwrap() = Some(Instant::now());
            }
            let listed = api.profiles("cpu-burn", "10m").await.ok()?;
            for p in listed.profiles.iter().filter(|p| {
                p.instance == "release-0"
                    && p.kind == "cpu"
                    && p.error.is_none()
                    && !seen.contains(&p.profile_id)
            }) {
                let top = api.top("cpu-burn", &p.profile_id, None, 500).await.ok()?;
                let functions: Vec<String> =
                    top.functions.into_iter().map(|f| f.function).collect();
                if functions.iter().any(|f| f == CULPRIT) {
                    return Some((p.profile_id.clone(), functions));
                }
            }
            None
        },
    )
    .await
}
