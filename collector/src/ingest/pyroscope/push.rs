//! The `push.v1` message Grafana's Pyroscope clients send: series of labels, each with
//! raw pprof profiles.
//!
//! Pyroscope publishes this API as `push/v1/push.proto` (package `push.v1`, with
//! `types.v1.LabelPair`); no registry package ships the file, so its four messages are
//! declared here with their field numbers, as `prost` would generate them, and checked
//! against the real clients (pyroscope-rs, pyroscope-io) by `collector/interop`'s tests.

/// `push.v1.PushRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PushRequest {
    /// The series pushed.
    #[prost(message, repeated, tag = "1")]
    pub series: Vec<RawProfileSeries>,
}

/// `push.v1.RawProfileSeries`: one series' labels and its profiles.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawProfileSeries {
    /// `__name__` (the profile type, e.g. `process_cpu`), `service_name`, and tags.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<LabelPair>,
    /// The profiles.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<RawSample>,
}

/// `types.v1.LabelPair`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `push.v1.RawSample`: one pprof profile (gzipped or not) and the client's id for it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawSample {
    /// `profile.proto` bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub raw_profile: Vec<u8>,
    /// Unique id the client gave the profile (a UUID).
    #[prost(string, tag = "2")]
    pub id: String,
}
