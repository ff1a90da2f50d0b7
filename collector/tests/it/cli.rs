//! The `holmes` CLI's failures: one clear line and a non-zero exit.

use std::process::Command;

fn holmes(args: &[&str]) -> std::process::Output {
    Command::new(crate::support::workspace_bin("holmes"))
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

#[test]
fn bad_flags_print_one_line_and_exit_2() {
    for args in [
        &["--bogus", "services"][..],
        &["metrics"][..],
        &["frobnicate"][..],
    ] {
        let out = holmes(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = one_line_stderr(&out);
        assert!(err.contains("see holmes --help"), "{err}");
    }
}

#[test]
fn an_unreachable_api_prints_one_line_and_exits_1() {
    let addr = crate::support::free_addr();
    let out = holmes(&["--api", &format!("http://{addr}"), "services"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = one_line_stderr(&out);
    assert!(
        err.contains(&format!("cannot reach the Holmes API at http://{addr}")),
        "{err}"
    );
    assert!(err.contains("HOLMES_API"), "{err}");
}

#[test]
fn a_malformed_api_address_is_named() {
    let out = holmes(&["--api", "localhost:7071", "services"]);
    assert_eq!(out.status.code(), Some(1));
    let err = one_line_stderr(&out);
    assert!(
        err.contains("invalid API address \"localhost:7071\""),
        "{err}"
    );
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
