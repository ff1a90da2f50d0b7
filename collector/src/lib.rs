//! The Holmes collector: receives what agents stream, stores it, and answers queries.
//!
//! What it owns:
//! - [`ingest`]: the gRPC service agents connect to (one bidirectional stream each).
//! - [`pipeline`]: what happens to what agents send: processed in place (single node)
//!   or through Kafka (`ingest` and `process` roles, [`pipeline::kafka`]).
//! - [`query`]: the HTTP JSON API, and [`api_client`], the client the `holmes` CLI uses.
//! - [`server`]: start-up, listeners and shutdown; [`config`]: the TOML file, env
//!   overrides and flags; [`rules`]: the per-service trigger rules pushed to agents.
//! - [`auth`]: bearer tokens on ingest (per service) and on the API; [`tls`]: TLS on
//!   both listeners.
//! - [`aggregate`]: profile contents summed by function (the `top` of a profile).
//! - [`retention`]: removes the days older than `retention_days`.
//! - [`alert`]: alert hooks (webhook, Slack, PagerDuty) fed from a persisted outbox.
//! - [`correlate`]: trigger events of the fleet turned into incidents.
//! - [`incidents`]: correlation at run time: the store, the alert hooks, the ticker.
//! - [`flamegraph`]: flame graphs (and diff flame graphs) as SVG.
//! - [`ui`]: the web page (`/ui`).
//! - [`error`]: the one place that maps failures to gRPC and HTTP statuses.
//! - [`demo`]: the workload of `holmes-demo`, the one-command tour.
//!
//! Binaries: `holmes-collector` (the server), `holmes` (the CLI), `holmes-demo`.

pub mod aggregate;
pub mod alert;
pub mod api_client;
pub mod auth;
pub mod clock;
pub mod config;
pub mod correlate;
pub mod demo;
pub mod error;
pub mod flamegraph;
pub mod incidents;
pub mod ingest;
pub mod pipeline;
pub mod query;
pub mod retention;
pub mod rules;
pub mod server;
pub mod synthetic;
pub mod tls;
pub mod ui;

pub use config::Config;
pub use server::Server;
