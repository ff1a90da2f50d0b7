//! The collector's integration tests, one binary (linking the collector and librdkafka
//! once): real collectors on loopback, the real agent, real stores (SQLite, and the
//! ClickHouse server `deploy/dev/clickhouse.sh` starts), a real Kafka-protocol broker
//! (`deploy/dev/kafka.sh`), real HTTP receivers, and the real binaries — the server's
//! `holmes-collector`, the `holmes` CLI and `holmes-demo` ([`holmes_devtools::workspace::bin`]).
//! The demo's own test and the CLI's tests without a collector live in their crates
//! (`holmes-devtools`, `holmes-cli`).
//!
//! One module per subject; tests that run on both stores are declared with
//! [`support::on_each_backend`] and named `<subject>::<test>::sqlite` / `::clickhouse`.
//! `cargo test -p holmes-collector --test it -- kafka::` runs one module.

mod support;

/// This binary's allocator counts per thread, for the decoder's memory bound.
mod alloc_meter;

mod alerts;
mod bad_input;
mod bounds;
mod browser;
mod budget;
mod cli;
mod compression;
mod control;
mod deploy_files;
mod e2e;
mod equivalence;
mod fuzz_normalize;
mod identity;
mod incidents;
mod kafka;
mod kafka_control;
mod openapi;
mod outage;
mod profiles;
mod recurrence;
mod release;
mod retention;
mod rules;
mod security;
mod soak;
mod spool;
mod suspects;
mod symbolize;
mod triggers;
