//! Scenario 6: a CPU burn loop, over before a post-trigger-only profile could catch it.
//!
//! `cargo run -p holmes-agent --example cpu_burn`, then `curl 127.0.0.1:PORT/bug`: a
//! request runs `render_price_table` hot for 1.5 s. The CPU rule fires within about a
//! second, and the flight recorder's pre-trigger profile holds the burst.

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

#[inline(never)]
fn handle_price_request(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::black_box(render_price_table(2_000_000));
    }
}

fn main() {
    let agent = common::agent("cpu-burn", |b| b);
    common::warm_up(&agent, 10);
    common::serve(|| {
        std::thread::spawn(|| handle_price_request(Duration::from_millis(1500)));
    });
}
