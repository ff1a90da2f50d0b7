//! The Holmes collector (the server): receives what agents stream, stores it, groups
//! spikes into incidents, pages on-call and answers queries.
//!
//! Its modules follow the data, stage by stage:
//! - [`ingest`]: the gRPC service agents connect to (one bidirectional stream each):
//!   authentication, profile chunks put together, and the registry of the agents
//!   connected to this node; and what foreign programs send: Pyroscope clients
//!   ([`ingest::pyroscope`]), OTLP profiles exporters ([`ingest::otlp`]),
//!   Alertmanager's webhook ([`ingest::alertmanager`]).
//! - [`control`]: central rules and pauses as data in the store, pushed live to every
//!   agent on whichever node it is connected to, and capture requests that reach the
//!   whole fleet of a service.
//! - [`process`]: what happens to what agents send: profiles decoded and normalized
//!   (each distinct stack once), stored, handed to the incidents — in place (single
//!   node) or through Kafka (`ingest` and `process` roles, [`process::kafka`]); and
//!   [`process::retention`], which removes the days older than `retention_days`.
//! - [`incident`]: trigger events of the fleet correlated into incidents, and their
//!   suspect functions.
//! - [`alert`]: alert hooks (webhook, Slack, PagerDuty) fed from a persisted outbox.
//! - [`symbolize`]: native locations (module + offset) named from their module's debug
//!   info, uploaded by agents ([`ingest::debuginfo`]) or CI, once per build.
//! - [`query`]: the HTTP JSON API (its documents are `holmes-api`'s), flame graphs and
//!   the web page (`/ui`).
//!
//! Around them: [`server`] (start-up, listeners, shutdown; the HTTP accept loop with its
//! header deadline is `http_serve`), [`config`] (the TOML file,
//! env overrides and flags; each section is owned by the module that uses it), [`auth`]
//! (bearer tokens on ingest and on the API), [`tls`] (TLS on both listeners), [`error`]
//! (the one place that maps failures to gRPC and HTTP statuses), [`clock`] and
//! [`metrics`] (the collector's own Prometheus metrics, `GET /metrics`).
//!
//! The binary is `holmes-collector`; the `holmes` CLI is the `holmes-cli` crate, the
//! demo and the load generator are `holmes-devtools`.

pub mod alert;
pub mod auth;
pub mod clock;
pub mod config;
pub mod control;
pub mod error;
mod http_serve;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod process;
pub mod query;
pub mod server;
pub mod symbolize;
pub mod tls;

pub use config::Config;
pub use server::Server;
