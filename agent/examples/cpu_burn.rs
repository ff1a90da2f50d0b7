//! Scenario 6: a short CPU burst, usually over before the CPU rule can fire.
//!
//! `cargo run -p holmes-agent --example cpu_burn`, then `curl 127.0.0.1:PORT/bug`: a
//! request runs `render_price_table` hot on every core this process may use until each
//! thread has had 0.4 s of CPU (0.4 s on an idle machine). The CPU rule is judged once a
//! second, on the sample after the burst started; on an idle machine, when the burst
//! starts at a random moment it is over by then 7 times in 10, and a profile started at
//! the trigger, the only one the Go library takes, would not see it. The flight
//! recorder's pre-trigger profile holds it.

mod common;

use std::time::{Duration, Instant};

/// The culprit: a hot loop with no calls inside.
#[inline(never)]
fn render_price_table(rounds: u64) -> u64 {
    let mut x = rounds | 1;
    let mut i = 0u64;
    while i < rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        i += 1;
    }
    x
}

/// Burns 0.4 s of this thread's CPU (given up after 10 s on a starved machine).
#[inline(never)]
fn handle_price_request() {
    let cpu = Duration::from_millis(400);
    let (from, started) = (common::thread_cpu_time(), Instant::now());
    while common::thread_cpu_time().saturating_sub(from) < cpu
        && started.elapsed() < Duration::from_secs(10)
    {
        std::hint::black_box(render_price_table(200_000));
    }
}

fn main() {
    let agent = common::agent("cpu-burn", |b| b);
    common::warm_up(&agent, 10);
    common::serve(|| common::on_every_core(handle_price_request));
}
