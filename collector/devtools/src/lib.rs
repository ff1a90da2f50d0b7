//! Tools for working on Holmes, apart from the server so that the server never links
//! the agent:
//!
//! - [`demo`] and the `holmes-demo` binary: the one-command tour — a collector on the
//!   embedded store and a few instances of a small service with the agent inside.
//! - the `holmes-loadgen` binary: a simulated fleet against running collectors
//!   (throughput, latency, memory; `deploy/dev/loadgen.sh`).
//! - the `holmes-controlgen` binary: how fast a rule change and a capture request reach
//!   a simulated fleet (collector/README.md, "Central control").
//! - [`soak`] and the `holmes-soak` binary: honest agents and hostile clients against
//!   one collector process; every honest item must arrive exactly once, within a memory
//!   bound (`deploy/dev/soak.sh`).
//! - [`synthetic`]: CPU profiles as a realistic service's agent would send them, for the
//!   load generator and the collector's ingest benchmark.
//! - [`workspace`]: the workspace's programs for the tests that run them, built without
//!   compiling anything again.

pub mod demo;
pub mod soak;
pub mod synthetic;
pub mod workspace;

/// Logs of the devtools binaries to `writer` (stderr where stdout carries a report), at
/// the level `RUST_LOG` asks, else warnings only.
pub fn init_logging<W>(writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(writer)
        .init();
}
