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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("cannot build the runtime: {err}");
            std::process::exit(2);
        }
    };
    let agent = common::agent("task-leak", |b| b.tokio_runtime(runtime.handle().clone()));
    common::warm_up(&agent, 10);
    let handle = runtime.handle().clone();
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
