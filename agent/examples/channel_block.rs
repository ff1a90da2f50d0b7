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
    let agent = common::agent("channel-block", |b| {
        b.tokio_runtime(runtime.handle().clone())
    });
    common::warm_up(&agent, 10);
    let (tx, rx) = tokio::sync::mpsc::channel::<u64>(1);
    // The consumer is gone, but its receiver is kept, so senders wait forever.
    let _dead_consumer = Arc::new(rx);
    let handle = runtime.handle().clone();
    common::serve(move || {
        for id in 0..5_000 {
            handle.spawn(publish_audit_record(tx.clone(), id));
        }
    });
}
