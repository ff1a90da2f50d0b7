//! Scenario 4: a slow leak, one task leaked per request.
//!
//! Every request starts a background "session watcher" task that waits for a session end
//! that never comes. `curl 127.0.0.1:PORT/bug` starts steady traffic (400 requests per
//! second); the task count climbs, the task rule fires (diff against its window), and
//! the task dump shows the leaked tasks in `watch_session_until_it_ends`.

mod common;

use std::time::Duration;

/// The culprit: waits on a signal nobody will ever send.
#[inline(never)]
async fn watch_session_until_it_ends(end: tokio::sync::oneshot::Receiver<()>) {
    let _ = end.await;
}

fn main() {
    // A current-thread runtime driven by its own thread: tokio's multi-thread task dump
    // can hang a runtime with many runnable tasks (see agent/README.md, task dumps).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot build the runtime: {err}");
            std::process::exit(2);
        }
    };
    let driver = runtime.handle().clone();
    std::thread::spawn(move || runtime.block_on(std::future::pending::<()>()));
    let agent = common::agent("task-leak", |b| b.tokio_runtime(driver.clone()));
    common::warm_up(&agent, 10);
    let handle = driver;
    common::serve(move || {
        let handle = handle.clone();
        std::thread::spawn(move || {
            let mut forgotten = Vec::new();
            loop {
                for _ in 0..40 {
                    let (end, watched) = tokio::sync::oneshot::channel::<()>();
                    forgotten.push(end);
                    handle.spawn(watch_session_until_it_ends(watched));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
    });
}
