//! Scenario 3: tasks blocked forever on a channel nobody reads.
//!
//! A tokio service publishes every request's audit record to a bounded channel whose
//! consumer died. `curl 127.0.0.1:PORT/bug` sends a burst of 5000 requests; each task
//! blocks in `publish_audit_record`. The task rule fires and the task dump (build with
//! the `taskdump` feature and `RUSTFLAGS="--cfg tokio_unstable --cfg tokio_taskdump"`)
//! shows where they wait. Without task dumps the agent captures the threads instead.

mod common;

use std::sync::Arc;

/// The culprit: awaits room in a channel that will never drain.
#[inline(never)]
async fn publish_audit_record(tx: tokio::sync::mpsc::Sender<u64>, id: u64) {
    let _ = tx.send(id).await;
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
    let agent = common::agent("channel-block", |b| b.tokio_runtime(driver.clone()));
    common::warm_up(&agent, 10);
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1);
    // The consumer is gone, but its receiver is kept, so senders wait forever.
    let _dead_consumer = Arc::new(rx);
    let handle = driver;
    common::serve(move || {
        for id in 0..5_000 {
            handle.spawn(publish_audit_record(tx.clone(), id));
        }
    });
}
