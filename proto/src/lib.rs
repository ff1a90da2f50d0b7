//! The `holmes.v1` protocol between the Holmes agent and the collector.
//!
//! What this crate owns:
//! - [`pb`]: the code generated from `proto/holmes/v1/holmes.proto` (messages, the gRPC
//!   client and server). Only the two transport edges touch it: the agent's sender and
//!   the collector's ingest.
//! - [`model`]: the domain types the rest of Holmes works with.
//! - [`native`]: the agent's own profile format (module + offset stacks, each once),
//!   what agents send a collector instead of gzipped pprof.
//! - [`transform`]: conversions between the two, where malformed wire data is rejected
//!   with a [`transform::DecodeError`] naming the offending field.
//! - [`pprof`]: the code generated from Google's `profile.proto` (vendored unchanged
//!   under `proto/perftools/profiles/`), the standard profile format agents write and
//!   the collector decodes.
//! - [`profile_tables`]: the string, function, location and mapping tables a pprof
//!   profile is built from, each entry stored once.
//! - [`names`]: the rules for service names, instance ids and label keys, shared by the
//!   agent (which refuses to start with a bad name) and the collector (which rejects one).
//! - [`rule_spec`] and [`rule_floors`]: the text form of a trigger rule, and the floors
//!   an agent holds the rules a collector pushes to; shared by the agent and the
//!   collector, so both refuse the same rules with the same words.

pub mod model;
pub mod names;
pub mod native;
pub mod profile_tables;
pub mod rule_floors;
pub mod rule_spec;
pub mod transform;

/// Code generated from `holmes.proto`. Use the domain types in [`model`] instead of these
/// structs anywhere but at the transport edge.
#[allow(warnings, missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/holmes.v1.rs"));
}

/// Code generated from `profile.proto` (package `perftools.profiles`): what agents write
/// and the collector reads. Field meanings are those of the vendored file; every integer
/// naming a string is an index into [`pprof::Profile::string_table`]. Build profiles with
/// [`profile_tables::ProfileTables`].
#[allow(warnings, missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
#[rustfmt::skip]
pub mod pprof {
    include!(concat!(env!("OUT_DIR"), "/perftools.profiles.rs"));
}

pub use model::*;

/// The protocol version this crate speaks (`Hello.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest chunk of profile bytes in one [`model::ProfileChunk`], well below gRPC's
/// default 4 MiB message limit.
pub const MAX_CHUNK_BYTES: usize = 1024 * 1024;
