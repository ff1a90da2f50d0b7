//! The `holmes.v1` protocol between the Holmes agent and the collector.
//!
//! What this crate owns:
//! - [`pb`]: the code generated from `proto/holmes/v1/holmes.proto` (messages, the gRPC
//!   client and server). Only the two transport edges touch it: the agent's sender and
//!   the collector's ingest.
//! - [`model`]: the domain types the rest of Holmes works with.
//! - [`transform`]: conversions between the two, where malformed wire data is rejected
//!   with a [`transform::DecodeError`] naming the offending field.
//! - [`pprof`]: `profile.proto`, the standard profile format agents write and the
//!   collector decodes.
//! - [`names`]: the rules for service names, instance ids and label keys, shared by the
//!   agent (which refuses to start with a bad name) and the collector (which rejects one).

pub mod model;
pub mod names;
pub mod pprof;
pub mod rule_spec;
pub mod transform;

/// Code generated from `holmes.proto`. Use the domain types in [`model`] instead of these
/// structs anywhere but at the transport edge.
#[allow(warnings, missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/holmes.v1.rs"));
}

pub use model::*;

/// The protocol version this crate speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest chunk of profile bytes in one [`model::ProfileChunk`], well below gRPC's
/// default 4 MiB message limit.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
