//! Scenario 5: an allocation-heavy hot path under load.
//!
//! `curl 127.0.0.1:PORT/bug` starts 6 s of load on every core this process may use:
//! requests that each format a report by building thousands of small strings in
//! `format_report_rows`. CPU climbs, the CPU rule fires, and the CPU profile shows the
//! time spent allocating inside the culprit.

mod common;

use std::time::{Duration, Instant};

/// The culprit: allocates a String per cell, for every row, on every request.
#[inline(never)]
fn format_report_rows(rows: usize) -> usize {
    let mut out: Vec<String> = Vec::new();
    for r in 0..rows {
        for c in 0..8 {
            out.push(format!("row {r} col {c}"));
        }
    }
    out.iter().map(String::len).sum()
}

#[inline(never)]
fn serve_reports_under_load() {
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        std::hint::black_box(format_report_rows(2_000));
    }
}

fn main() {
    let agent = common::agent("alloc-hot-path", |b| b);
    common::warm_up(&agent, 10);
    common::serve(|| {
        common::on_every_core(serve_reports_under_load);
    });
}
