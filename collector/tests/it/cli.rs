//! The `holmes` CLI against a real collector: an error the API answers reaches the user
//! as one line and a non-zero exit; and what a person reads, piped and on a real
//! pseudo-terminal — times local and relative, colour only on a terminal and never with
//! `NO_COLOR`, tables that fit the terminal (or `COLUMNS`), a progress bar on downloads,
//! and no escape sequence an agent sent acted on. (Its failures without a collector are
//! tested in `holmes-cli`.)

use std::process::Command;
use std::time::Duration;

use holmes_cli::api_client::ApiClient;
use holmes_collector::clock::{rfc3339, unix_nanos_now};
use holmes_collector::Server;
use holmes_proto::pprof::{Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use holmes_proto::{AgentBody, CollectorMessage, Metric, ProfileKind, TriggerEvent, TriggerReason};
use prost::Message;

use crate::support::raw_agent::{hello, profile_chunks, RawAgent};
use crate::support::terminal::{run_on_terminal, without_colour};
use crate::support::{cli_time, eventually, holmes_cli_with, split_timed_row, Backend};

fn holmes(args: &[&str]) -> std::process::Output {
    Command::new(holmes_devtools::workspace::bin("holmes"))
        .args(args)
        .env_remove("HOLMES_API")
        .output()
        .unwrap()
}

fn one_line_stderr(out: &std::process::Output) -> String {
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err:?}");
    assert!(out.stdout.is_empty(), "nothing on stdout: {out:?}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_reach_the_user_verbatim() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::support::start(crate::support::Backend::Sqlite, dir.path())
        .await
        .unwrap();
    let api = format!("http://{}", server.http_addr());
    let out = tokio::task::spawn_blocking(move || {
        holmes(&[
            "--api",
            &api,
            "metrics",
            "--service",
            "checkout",
            "--metric",
            "cpu%",
        ])
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_stderr(&out);
    assert!(err.contains("unknown metric \"cpu%\""), "{err}");
    assert!(err.contains("HTTP 400"), "{err}");
    server.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// A CLI a person reads: on a terminal and piped
// ---------------------------------------------------------------------------------------

const SEC: u64 = 1_000_000_000;
/// The agent's host: the collector refuses one with control characters
/// (tests/it/bounds.rs).
const HOST: &str = "web-01";
/// What an agent may send that a terminal would act on, in a label, a function name and
/// an error: clear the screen, set the window title, ring the bell, switch to red.
const LABEL: &str = "pay\x1b]0;pwned\x07ments";
const EVIL_FUNCTION: &str = "shop::\x1b[31mred_alert";
const ERROR: &str = "cannot stop thread 7\x1b[2J";
/// A name wider than a narrow terminal.
const LONG_FUNCTION: &str =
    "shop::checkout::a_function_with_a_name_far_too_long_for_a_narrow_terminal::call";
const PROFILE: &str = "c11c11c11c11c11c11c11c11c11c11c1";
const FAILED: &str = "c11c11c11c11c11c11c11c11c11c11c2";
const EVENT: &str = "checkout-0-cpu-1";

/// A collector holding what one agent of `checkout` sent: its hello (a host and a label
/// with escape sequences), a CPU trigger 4 minutes ago and so an incident, a CPU profile
/// of about 2 MiB (functions with an escape sequence and a long name) and a failed
/// capture whose error has an escape sequence.
struct Seeded {
    server: Server,
    api: String,
    fired_at: u64,
    profile: Vec<u8>,
    dir: tempfile::TempDir,
}

/// The CPU profile: `LONG_FUNCTION` under `EVIL_FUNCTION` under `main`, and 2 MiB of
/// letters in comments (each no longer than the longest name the collector takes), so
/// that its download takes a while.
fn cpu_profile() -> Vec<u8> {
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
    let stack = vec![
        location(LONG_FUNCTION, 30),
        location(EVIL_FUNCTION, 20),
        location("main", 10),
    ];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let comment = (0..512)
        .map(|_| {
            let letters: String = (0..4 << 10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from(b'a' + (x % 26) as u8)
                })
                .collect();
            t.string(&letters)
        })
        .collect();
    t.into_profile(Profile {
        sample_type,
        sample: vec![Sample {
            location_id: stack,
            value: vec![3, 30_000_000],
            label: vec![],
        }],
        comment,
        ..Profile::default()
    })
    .encode_to_vec()
}

async fn seeded() -> Seeded {
    let dir = tempfile::tempdir().unwrap();
    // Keeping originals: a download is then the bytes sent.
    let mut config = crate::support::config(Backend::Sqlite, dir.path()).unwrap();
    config.keep_originals = true;
    let server = Server::start(&config).await.unwrap();
    let mut hello = hello("checkout", "checkout-0", vec![]);
    hello.host = HOST.to_owned();
    hello.labels = [("team".to_owned(), LABEL.to_owned())].into();
    let mut agent = RawAgent::connect(server.grpc_addr(), hello).await;
    let fired_at = unix_nanos_now() - 4 * 60 * SEC - 10 * SEC;
    let trigger = TriggerEvent {
        event_id: EVENT.to_owned(),
        metric: Some(Metric::CpuPercent),
        reason: TriggerReason::Abs,
        current: 92.0,
        window: vec![],
        rule: None,
        unix_nanos: fired_at,
        planned: vec![ProfileKind::Cpu],
        request_id: None,
    };
    agent.send(1, AgentBody::Trigger(trigger)).await;
    assert_eq!(agent.next().await, CollectorMessage::Ack { seq: 1 });
    let profile = cpu_profile();
    let mut seq = 1;
    for chunk in profile_chunks(
        PROFILE,
        EVENT,
        ProfileKind::Cpu,
        fired_at,
        &profile,
        1 << 20,
    )
    .into_iter()
    .chain({
        let mut failed =
            profile_chunks(FAILED, EVENT, ProfileKind::Threads, fired_at, &[], 1 << 20);
        failed[0].error = Some(ERROR.to_owned());
        failed
    }) {
        seq += 1;
        let last = chunk.chunk_index + 1 == chunk.chunk_count;
        agent.send(seq, AgentBody::ProfileChunk(chunk)).await;
        if last {
            assert_eq!(agent.next().await, CollectorMessage::Ack { seq });
        }
    }
    let api = format!("http://{}", server.http_addr());
    let client = ApiClient::new(&api).unwrap();
    eventually(
        Duration::from_secs(30),
        "the trigger's incident",
        || async {
            let list = client.incidents(Some("checkout"), "1h", None).await.ok()?;
            (!list.incidents.is_empty()).then_some(())
        },
    )
    .await;
    Seeded {
        server,
        api,
        fired_at,
        profile,
        dir,
    }
}

/// `holmes` with `args` on a pseudo-terminal `columns` wide that takes colour, in UTC,
/// with `env` set: its exit status and what it showed.
async fn holmes_on_terminal(
    args: &[&str],
    env: &[(&str, &str)],
    columns: u16,
) -> (std::process::ExitStatus, String) {
    let mut cmd = Command::new(holmes_devtools::workspace::bin("holmes"));
    cmd.args(args);
    for var in [
        "HOLMES_API",
        "HOLMES_API_TOKEN",
        "HOLMES_CA_FILE",
        "COLUMNS",
        "NO_COLOR",
        "CLICOLOR",
        "CLICOLOR_FORCE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("TERM", "xterm-256color").env("TZ", "UTC");
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::spawn_blocking(move || run_on_terminal(cmd, columns))
        .await
        .unwrap()
}

/// Asserts that nothing an agent sent reached `text` raw.
fn no_raw_agent_escapes(text: &str) {
    for raw in ["\x1b[2J", "\x1b]0;", "\x07", "\x1b[31mred_alert"] {
        assert!(!text.contains(raw), "{raw:?} passed through: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_output_is_plain_with_local_and_relative_times_and_agent_text_escaped() {
    let s = seeded().await;
    let api = s.api.as_str();
    let mut shown = String::new();
    for args in [
        &["instances", "--service", "checkout"][..],
        &["triggers", "--service", "checkout"],
        &["profiles", "--service", "checkout"],
        &["top", "--service", "checkout", PROFILE],
        &["incidents"],
    ] {
        let out = holmes_cli_with(&[&["--api", api][..], args].concat(), &[]).await;
        assert!(out.status.success(), "{args:?}: {out:?}");
        let text = String::from_utf8(out.stdout).unwrap();
        // Piped: no colour, and no escape sequence of an agent's.
        assert!(!text.contains('\x1b'), "{args:?}: {text:?}");
        no_raw_agent_escapes(&text);
        shown.push_str(&text);
    }
    for escaped in [
        "team=pay\\u{1b}]0;pwned\\u{7}ments",
        "cannot stop thread 7\\u{1b}[2J",
        "shop::\\u{1b}[31mred_alert",
    ] {
        assert!(shown.contains(escaped), "{escaped} in {shown}");
    }
    // An error the API answers quotes the agent's text: escaped too.
    let file = s.dir.path().join("failed.pb.gz");
    let out = holmes_cli_with(
        &[
            "--api",
            api,
            "profile",
            "--service",
            "checkout",
            FAILED,
            "-o",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot stop thread 7\\u{1b}[2J"), "{err:?}");
    no_raw_agent_escapes(&err);

    // Times: absolute in the local zone (TZ), and how long ago.
    let trigger_row = |text: &str| -> String {
        let row = text.lines().nth(2).unwrap_or_default();
        split_timed_row(row).0.to_owned()
    };
    let minutes_ago = || (unix_nanos_now() - s.fired_at) / (60 * SEC);
    let before = minutes_ago();
    let out = holmes_cli_with(&["--api", api, "triggers", "--service", "checkout"], &[]).await;
    let after = minutes_ago();
    let time = trigger_row(&String::from_utf8(out.stdout).unwrap());
    assert!(time.starts_with(&cli_time(&rfc3339(s.fired_at))), "{time}");
    // Fired 4 min 10 s before the collector was seeded: as many whole minutes ago as
    // had passed when the CLI ran (a loaded machine may take minutes to get here).
    assert!(before >= 4, "{before}");
    assert!(
        (before..=after).any(|m| time.ends_with(&format!("({m} min ago)"))),
        "{time}: {before}..={after} min ago"
    );
    // Two hours east of UTC (a POSIX zone: "HOL-2").
    let out = holmes_cli_with(
        &["--api", api, "triggers", "--service", "checkout"],
        &[("TZ", "HOL-2")],
    )
    .await;
    let time = trigger_row(&String::from_utf8(out.stdout).unwrap());
    let two_hours_later = rfc3339(s.fired_at + 2 * 3600 * SEC);
    assert!(time.starts_with(&cli_time(&two_hours_later)), "{time}");
    // --json is the API's own JSON: times as RFC 3339, the agent's text as sent.
    let out = holmes_cli_with(
        &["--api", api, "--json", "instances", "--service", "checkout"],
        &[],
    )
    .await;
    let parsed: Vec<holmes_api::InstanceJson> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(parsed[0].host, HOST);
    assert_eq!(parsed[0].labels["team"], LABEL);
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_on_a_terminal_only_and_never_with_no_color() {
    let s = seeded().await;
    let args = ["--api", s.api.as_str(), "incidents"];
    let (status, text) = holmes_on_terminal(&args, &[], 200).await;
    assert!(status.success(), "{text}");
    // Severity and status in colour: a lone instance's incident in yellow, open in red
    // (or resolved in green, if its quiet period ran out meanwhile).
    assert!(text.contains("\x1b[33minstance"), "{text:?}");
    assert!(
        text.contains("\x1b[31mopen") || text.contains("\x1b[32mresolved"),
        "{text:?}"
    );
    let (_, plain) = holmes_on_terminal(&args, &[("NO_COLOR", "1")], 200).await;
    assert!(!plain.contains('\x1b'), "NO_COLOR: {plain:?}");
    assert!(plain.contains(" instance "), "{plain:?}");
    let piped = holmes_cli_with(&args, &[]).await;
    assert!(!String::from_utf8(piped.stdout).unwrap().contains('\x1b'));
    // On a terminal too, an agent's escape sequences are shown, not acted on.
    let (_, text) = holmes_on_terminal(
        &[
            "--api",
            s.api.as_str(),
            "instances",
            "--service",
            "checkout",
        ],
        &[],
        200,
    )
    .await;
    assert!(text.contains("pay\\u{1b}]0;pwned\\u{7}ments"), "{text:?}");
    no_raw_agent_escapes(&text);
    s.server.shutdown().await;
}

/// The widest line of `text` as a person sees it (colour left out), after the first
/// `skip` lines (a report's title line is not a table).
fn widest_line(text: &str, skip: usize) -> usize {
    without_colour(text)
        .lines()
        .skip(skip)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_fit_the_terminal_or_columns() {
    let s = seeded().await;
    let api = s.api.as_str();
    // Each command, with the report lines before its table.
    for (args, skip) in [
        (&["top", "--service", "checkout", PROFILE][..], 1),
        (&["profiles", "--service", "checkout"], 1),
        (&["instances", "--service", "checkout"], 0),
        (&["incidents"], 0),
    ] {
        let args = [&["--api", api][..], args].concat();
        // Piped, a table is as wide as it is.
        let out = holmes_cli_with(&args, &[]).await;
        let wide = String::from_utf8(out.stdout).unwrap();
        assert!(widest_line(&wide, skip) > 60, "{args:?}: {wide}");
        // A 60-column terminal, and COLUMNS=60 when piped: it fits, wrapping the widest.
        let (status, narrow) = holmes_on_terminal(&args, &[], 60).await;
        assert!(status.success(), "{narrow}");
        assert!(
            widest_line(&narrow, skip) <= 60,
            "{args:?} on a terminal:\n{narrow}"
        );
        let out = holmes_cli_with(&args, &[("COLUMNS", "60")]).await;
        let narrow = String::from_utf8(out.stdout).unwrap();
        assert!(
            widest_line(&narrow, skip) <= 60,
            "{args:?} with COLUMNS=60:\n{narrow}"
        );
        assert!(narrow.lines().count() > wide.lines().count(), "{narrow}");
    }
    // An incident's report: its tables, indented, fit too.
    let client = ApiClient::new(api).unwrap();
    let id = client.incidents(None, "1h", None).await.unwrap().incidents[0]
        .incident_id
        .clone();
    let (_, report) = holmes_on_terminal(&["--api", api, "incident", &id], &[], 60).await;
    let table_lines: Vec<&str> = report.lines().filter(|l| l.starts_with("    ")).collect();
    assert!(table_lines.len() >= 4, "{report}");
    for line in table_lines {
        assert!(without_colour(line).chars().count() <= 60, "{report}");
    }
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_shows_a_progress_bar_on_a_terminal_only() {
    let s = seeded().await;
    let file = s.dir.path().join("cpu.pb");
    let path = file.to_str().unwrap();
    let args = [
        "--api",
        s.api.as_str(),
        "profile",
        "--service",
        "checkout",
        PROFILE,
        "-o",
        path,
    ];
    let (status, text) = holmes_on_terminal(&args, &[], 120).await;
    assert!(status.success(), "{text}");
    assert!(
        std::fs::read(&file).unwrap() == s.profile,
        "the file is the profile"
    );
    // The bar, full at the end, on standard error; the result on standard output.
    assert!(text.contains(&format!("profile {PROFILE}: [")), "{text:?}");
    assert!(text.contains(&format!("[{}]", "=".repeat(30))), "{text:?}");
    assert!(
        text.contains(&format!("wrote {} bytes to {path}", s.profile.len())),
        "{text:?}"
    );
    // Piped: no bar.
    std::fs::remove_file(&file).unwrap();
    let out = holmes_cli_with(&args, &[]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("wrote {} bytes to {path}\n", s.profile.len())
    );
    s.server.shutdown().await;
}
