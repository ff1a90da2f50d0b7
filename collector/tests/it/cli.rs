//! The `holmes` CLI against a real collector: an error the API answers reaches the user
//! as one line and a non-zero exit. (Its failures without a collector are tested in
//! `holmes-cli`.)

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
