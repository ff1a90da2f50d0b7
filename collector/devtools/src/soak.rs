//! The soak test behind `holmes-soak` (`deploy/dev/soak.sh`): honest agents and hostile
//! clients against one real collector process for a bounded time, on loopback only.
//!
//! - [`collector`]: the `holmes-collector` binary on SQLite in a temporary folder, its
//!   memory read from `/proc`, its metrics and its log;
//! - [`honest`]: agents as protocol clients (holmes-proto's gRPC client, like
//!   `holmes-loadgen`'s) that spike together, reconnect and resend like the agent, and
//!   write down every trigger and profile they send;
//! - [`hostile`]: amplifying profiles, skewed clocks, slow readers and half-sent
//!   requests, oversized ids, connection floods;
//! - [`operator`]: on-call opening what the hostile clients left (incidents with
//!   suspects, flame graphs) after the run;
//! - [`receiver`]: the HTTP server the collector's webhook alerts go to;
//! - [`verify`]: every honest trigger, profile and alert arrived exactly once.

pub mod collector;
pub mod honest;
pub mod hostile;
pub mod operator;
pub mod receiver;
pub mod verify;

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the Unix epoch.
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// `m` locked, whether or not a holder panicked.
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
