//! The `holmes` CLI's failures: one clear line and a non-zero exit. (An error the API
//! answers reaching the user is tested against a real collector, in the collector's
//! tests.)

use std::process::Command;

fn holmes(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_holmes"))
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

/// A loopback address nothing listens on.
fn free_addr() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
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
    let addr = free_addr();
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
