//! Scenario 7: a thread explosion from blocking calls (the case the Go library lists as
//! unsupported): every request starts an OS thread that blocks in a slow call.
//!
//! `curl 127.0.0.1:PORT/bug` sends a burst of 100 requests. The thread rule fires and the
//! thread dump shows where the threads wait: `call_the_slow_inventory_service`.

mod common;

use std::time::Duration;

/// The culprit: a blocking call made on a fresh thread per request.
#[inline(never)]
fn call_the_slow_inventory_service() {
    std::thread::sleep(Duration::from_secs(120));
    std::hint::black_box(());
}

fn main() {
    let agent = common::agent("thread-explosion", |b| b);
    common::warm_up(&agent, 10);
    common::serve(|| {
        for _ in 0..100 {
            let _ = std::thread::Builder::new()
                .name("inventory-call".to_owned())
                .spawn(call_the_slow_inventory_service);
        }
    });
}
