#![doc = include_str!("../README.md")]

mod assemble;
pub mod clickhouse;
mod contents;
mod control;
mod debuginfo;
mod encoding;
mod location;
mod model;
mod numbering;
pub mod sqlite;
mod stored_names;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use contents::{
    KnownByKey, KnownStack, LocationByKey, Mapping, ProfileContents, ProfileHeader, ProfileLabel,
    ProfileSample, StackByKey, TableKeys, ValueType, NO_LOCATIONS_KEPT,
};
pub use control::*;
pub use debuginfo::{DebugInfoChunkRecord, DebugInfoSource, DebugInfoStatus};
pub use location::{Location, LocationId, LocationRef, StackFrame, StackId};
pub use model::*;
pub use numbering::{
    MAX_KNOWN_LOCATIONS, MAX_KNOWN_STACKS, MAX_KNOWN_STACK_ENTRIES, MAX_KNOWN_SYMBOLIC_BYTES,
};

use async_trait::async_trait;

/// Errors of a storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The SQLite database could not be opened or created.
    #[error("cannot open the embedded store at {path}: {source}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A SQLite statement failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A ClickHouse request failed (server down, query refused, ...).
    #[error("clickhouse at {url}: {source}")]
    ClickHouse {
        /// The server URL.
        url: String,
        /// Why.
        source: ::clickhouse::error::Error,
    },
    /// A batched ClickHouse insert failed (server down, insert refused, ...).
    #[error("clickhouse at {url}: insert into {table} failed: {message}")]
    Batch {
        /// The server URL.
        url: String,
        /// The table.
        table: &'static str,
        /// Why.
        message: String,
    },
    /// A schema migration failed.
    #[error("schema migration to version {version} failed: {message}")]
    Migration {
        /// The version being applied.
        version: u32,
        /// Why.
        message: String,
    },
    /// The stored schema is newer than this build understands.
    #[error("the store's schema is version {found}, newer than this build's {supported}; upgrade the collector")]
    SchemaTooNew {
        /// Version found in the store.
        found: u32,
        /// Newest version this build knows.
        supported: u32,
    },
    /// A stored value could not be read back.
    #[error("corrupt stored value in {what}: {value:?}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// The value.
        value: String,
    },
    /// The blocking worker of the embedded store went away.
    #[error("embedded store worker failed: {0}")]
    Worker(String),
    /// A profile left stacks out as known to this writer by key, and the writer no longer
    /// knows them (its memory started over, or the profile's day moved since it was
    /// asked); what was left out must be sent again.
    #[error("{count} stacks of the profile were left out as known by key, but this writer no longer knows them durable on the profile's day; send them again")]
    LeftOutStacks {
        /// How many.
        count: usize,
    },
    /// This writer gave out all 2^32 numbers of its epoch (of locations, or of one
    /// service's stacks); a restart claims a new epoch.
    #[error("this collector numbered 2^32 new locations or stacks of one service since it started; restart it to claim a new numbering epoch")]
    NumbersExhausted,
    /// Another writer holds the store's migration lock for longer than allowed.
    #[error("the store's schema migration lock is held by {holder} (since {since_secs} s); waited {waited_secs} s")]
    MigrationLocked {
        /// Who holds it.
        holder: String,
        /// For how long.
        since_secs: u64,
        /// How long this writer waited.
        waited_secs: u64,
    },
}

/// Where the collector keeps what agents send. Every backend passes [`testsuite`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Short backend name for logs ("sqlite", "clickhouse").
    fn backend(&self) -> &'static str;

    /// Records an instance or refreshes it. Keyed by `(service, instance_id)`; a call with
    /// an older `last_seen_unix_nanos` than the stored one changes nothing.
    async fn upsert_instance(&self, instance: &InstanceInfo) -> Result<(), StoreError>;

    /// Stores metric points. A point already stored (same service, instance, metric and
    /// timestamp) is kept once.
    async fn insert_metrics(&self, points: &[MetricPoint]) -> Result<(), StoreError>;

    /// Every known service, sorted by name, with the number of its instances seen since
    /// `active_since_unix_nanos` and when any of them was last seen.
    async fn list_services(
        &self,
        active_since_unix_nanos: u64,
    ) -> Result<Vec<ServiceSummary>, StoreError>;

    /// The instances of one service, sorted by instance id.
    async fn list_instances(&self, service: &str) -> Result<Vec<InstanceInfo>, StoreError>;

    /// Points of one metric of one service in `[since, until)`, sorted by instance and
    /// time, at most `limit`.
    async fn query_metrics(&self, query: &MetricQuery) -> Result<Vec<MetricPoint>, StoreError>;

    /// Stores trigger events. An event already stored (same service and event id: an
    /// agent resending after a lost ack) is kept once. Every field reads back exactly,
    /// numbers bit for bit (a NaN may come back as another NaN), except that the rule's
    /// cooldown is kept to the millisecond (as the protocol carries it) and
    /// `request_id: Some("")` reads back as `None`.
    async fn insert_triggers(&self, triggers: &[TriggerRecord]) -> Result<(), StoreError>;

    /// Trigger events of one service in `[since, until)`, of one metric if the query
    /// names one, sorted by time and then event id, at most `limit`.
    async fn query_triggers(&self, query: &TriggerQuery) -> Result<Vec<TriggerRecord>, StoreError>;

    /// Stores a profile: what the agent said about it, its contents (each location once,
    /// each stack once per service, the samples referring to them by the writer's
    /// numbers) and its original bytes if the record has them. One already stored (same
    /// service and profile id: an agent resending after a lost ack) is kept once; a
    /// profile of another service with the same id is another profile. Every field
    /// reads back; the contents as an equal [`ProfileContents`] but for the order of its
    /// locations, stacks and label sets (samples keep theirs), with the symbols known
    /// for its native locations; `error: Some("")` reads back as `None` and a duration
    /// beyond `u64::MAX` nanoseconds as that many.
    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError>;

    /// What this writer knows of `stacks` (of scope `scope`, see [`TableKeys`]) for
    /// `service`, their rows durable on the day of a profile started at
    /// `started_unix_nanos`: a profile may leave those stacks out of its contents, with
    /// what it was told ([`TableKeys::left_out`]). A stack is known by its key once a
    /// profile of the scope had it; one new to the scope, by its locations' keys when
    /// the writer knows each of them and the stack they make (from another scope:
    /// another instance of the service). A location key is known once a profile of the
    /// scope had it, or once told here (`locations`: the scope's locations defined
    /// since it last asked) if the writer knows the location. The answer also says how
    /// many of the scope's locations the writer holds as told
    /// ([`KnownByKey::locations_told`]): a memory bounded in size forgets scopes, and a
    /// scope it forgot is told its locations again. In memory only; by default
    /// nothing.
    fn stacks_known_by_key(
        &self,
        service: &str,
        started_unix_nanos: u64,
        scope: u64,
        stacks: &[StackByKey<'_>],
        locations: &[LocationByKey<'_>],
    ) -> KnownByKey {
        let _ = (service, started_unix_nanos, scope, locations);
        KnownByKey::nothing(stacks.len())
    }

    /// Profiles of one service whose capture started in `[since, until)`, of one event
    /// and one kind if the query names them, without their contents, sorted by start
    /// time and then profile id, at most `limit`.
    async fn query_profiles(&self, query: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError>;

    /// One profile of one service with its contents (and original, if kept); `None` if
    /// the service has no profile with this id.
    async fn get_profile(
        &self,
        service: &str,
        profile_id: &str,
    ) -> Result<Option<ProfileRecord>, StoreError>;

    /// Profiles of one service by id, with their contents, read together (stacks and
    /// locations fetched once for all); unknown ids are left out. In the order of
    /// `profile_ids`, each once.
    async fn get_profiles(
        &self,
        service: &str,
        profile_ids: &[String],
    ) -> Result<Vec<ProfileRecord>, StoreError>;

    /// The profiles of one service and kind started in `[since, until)` (the newest
    /// `limit`), merged into one: one sample per distinct stack, values summed per
    /// sample type. Failed captures count for nothing.
    async fn merge_profiles(&self, query: &MergeQuery) -> Result<MergedProfile, StoreError>;

    /// How many distinct stacks are stored for `service` (by the writers' numbers: a
    /// stack two collectors sharing a store both numbered counts twice).
    async fn stack_count(&self, service: &str) -> Result<u64, StoreError>;

    /// Records the frames native locations stand for (from their module's debug info):
    /// reads show them instead of `name+0x<offset>`. A location's symbols are written
    /// once; writing them again replaces them.
    async fn insert_symbols(
        &self,
        symbols: &[(LocationId, Vec<StackFrame>)],
    ) -> Result<(), StoreError>;

    /// Offsets of the native locations of module `build_id` (never empty) that have no
    /// symbols yet, each once: what symbolizing the build has left to do.
    async fn unsymbolized_offsets(&self, build_id: &str) -> Result<Vec<u64>, StoreError>;

    /// Stores chunks of debug info uploads (see [`DebugInfoChunkRecord`]); a chunk stored
    /// already (same build, source, size and offset) is kept once.
    async fn insert_debuginfo(&self, chunks: &[DebugInfoChunkRecord]) -> Result<(), StoreError>;

    /// How much of `build_id`'s debug info the store holds (a complete upload if there
    /// is one, else the agents' progress); `None` when it holds none.
    async fn debuginfo_status(&self, build_id: &str)
        -> Result<Option<DebugInfoStatus>, StoreError>;

    /// The bytes of `build_id`'s complete debug info upload; `None` if none is complete.
    async fn read_debuginfo(&self, build_id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The build ids whose debug info is complete, sorted.
    async fn debuginfo_builds(&self) -> Result<Vec<String>, StoreError>;

    /// Takes (or, for its holder, refreshes) the claim on uploading `build_id`'s debug
    /// info for `lease`: true if `holder` holds it now. While one collector holds it,
    /// others asking get false, so that at most one agent of the deployment uploads a
    /// build at a time; a claim not refreshed within its lease lapses (its holder died).
    async fn claim_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
        lease: std::time::Duration,
    ) -> Result<bool, StoreError>;

    /// Gives `holder`'s claim on `build_id`'s upload back (nothing if it holds none).
    async fn release_debuginfo_upload(
        &self,
        build_id: &str,
        holder: &str,
    ) -> Result<(), StoreError>;

    /// Removes metric samples, trigger events, profiles (with whatever they alone
    /// refer to: stacks and locations no kept profile uses), incidents whose last event
    /// and instances last seen before the day of `cutoff_unix_nanos` (UTC days: a backend
    /// may drop whole days only, so data of the cutoff's own day may stay until the next
    /// day's run). Data at or after the cutoff is kept. Returns what went, for the log.
    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError>;

    /// Sets an event aside that could not be stored (see [`ParkedEvent`]).
    async fn park_event(&self, event: &ParkedEvent) -> Result<(), StoreError>;

    /// Parked events, newest first, at most `limit`.
    async fn parked_events(&self, limit: u64) -> Result<Vec<ParkedEvent>, StoreError>;

    /// Stores an incident's current state; of several versions of one id, the highest
    /// is what reads return (a lower version written later changes nothing).
    async fn upsert_incident(&self, incident: &IncidentRecord) -> Result<(), StoreError>;

    /// Incidents overlapping `[since, until)` — last event at or after `since`, first
    /// event before `until` — of one service or all, in one status or both, newest first
    /// (by first event time, then id), at most `limit`.
    async fn query_incidents(
        &self,
        query: &IncidentQuery,
    ) -> Result<Vec<IncidentRecord>, StoreError>;

    /// One incident by id; `None` if there is none.
    async fn get_incident(&self, incident_id: &str) -> Result<Option<IncidentRecord>, StoreError>;

    /// Stores an incident's suspects; of several computations of one incident, the one
    /// computed last (`computed_unix_nanos`) is kept.
    async fn put_incident_suspects(&self, suspects: &IncidentSuspects) -> Result<(), StoreError>;

    /// The suspects last stored for the incident `incident_id` of `service`; `None`
    /// before any were computed.
    async fn get_incident_suspects(
        &self,
        service: &str,
        incident_id: &str,
    ) -> Result<Option<IncidentSuspects>, StoreError>;

    /// Incidents of `service` whose suspects as last stored have the fingerprint
    /// `fingerprint` ([`IncidentSuspects::fingerprint`]), the latest computed first, at
    /// most `limit`.
    async fn incidents_with_fingerprint(
        &self,
        service: &str,
        fingerprint: &str,
        limit: u64,
    ) -> Result<Vec<String>, StoreError>;

    // The control plane (`control.rs`): central rules and pauses, capture requests and
    // what agents answer.

    /// Records `edits` under one new control version — one more than the highest rule
    /// or pause version so far — and returns it. (On ClickHouse, two collectors recording
    /// at the same instant may both take the same number; the store stays readable, and
    /// the nodes' comparison of what they push, not of numbers, keeps agents right.)
    async fn change_rules(&self, edits: &[RuleEdit], by: &ChangedBy) -> Result<u64, StoreError>;

    /// The latest change of every `(service, selector, metric)`, of one service or all,
    /// deletions included (their version counts), sorted by service, selector, metric.
    async fn rules_in_force(&self, service: Option<&str>) -> Result<Vec<RuleChange>, StoreError>;

    /// A service's rule changes, newest first (by version, then selector and metric), at
    /// most `limit`.
    async fn rule_history(&self, service: &str, limit: u64) -> Result<Vec<RuleChange>, StoreError>;

    /// Records a pause (or its lifting, `until_unix_nanos: 0`) under a new control
    /// version, like [`Store::change_rules`], and returns the version.
    async fn change_pause(&self, edit: &PauseEdit, by: &ChangedBy) -> Result<u64, StoreError>;

    /// The latest pause change of every scope (lifted ones included), sorted by scope
    /// (the fleet's, scope `""`, first).
    async fn pauses(&self) -> Result<Vec<PauseRecord>, StoreError>;

    /// The highest rule or pause version recorded; 0 when there is none. Cheap: every
    /// node that takes agent streams polls it.
    async fn control_version(&self) -> Result<u64, StoreError>;

    /// Stores a capture request (one already stored under its id is kept once).
    async fn insert_capture_request(
        &self,
        request: &CaptureRequestRecord,
    ) -> Result<(), StoreError>;

    /// Capture requests asked in `[since, until)`, of one service or all, newest first
    /// (then by id), at most `limit`.
    async fn capture_requests(
        &self,
        query: &CaptureRequestQuery,
    ) -> Result<Vec<CaptureRequestRecord>, StoreError>;

    /// One capture request by id; `None` if there is none.
    async fn get_capture_request(
        &self,
        request_id: &str,
    ) -> Result<Option<CaptureRequestRecord>, StoreError>;

    /// Records which agents a node asked for a request; a node's second dispatch of one
    /// request replaces its first.
    async fn record_capture_dispatch(&self, dispatch: &CaptureDispatch) -> Result<(), StoreError>;

    /// The dispatches of these requests, sorted by request id and node.
    async fn capture_dispatches(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureDispatch>, StoreError>;

    /// Stores skip notices (one already stored for its event is kept once).
    async fn insert_skip_notices(&self, notices: &[SkipNotice]) -> Result<(), StoreError>;

    /// Skip notices decided at or after `since_unix_nanos`, oldest first (then by event
    /// id), at most `limit`. Retention drops them with the day they were decided on.
    async fn skip_notices(
        &self,
        since_unix_nanos: u64,
        limit: u64,
    ) -> Result<Vec<SkipNotice>, StoreError>;

    /// Records an agent's answer to a request; its second answer replaces its first.
    async fn record_capture_outcome(
        &self,
        outcome: &CaptureOutcomeRecord,
    ) -> Result<(), StoreError>;

    /// The answers to these requests, sorted by request id and instance.
    async fn capture_outcomes(
        &self,
        request_ids: &[String],
    ) -> Result<Vec<CaptureOutcomeRecord>, StoreError>;

    /// Records what an agent reports about its rules; an older report than the stored
    /// one changes nothing.
    async fn record_agent_report(&self, report: &AgentReport) -> Result<(), StoreError>;

    /// The latest report of every agent of a service, sorted by instance.
    async fn agent_reports(&self, service: &str) -> Result<Vec<AgentReport>, StoreError>;

    /// Records that a node is alive; an older sighting changes nothing.
    async fn record_control_node(&self, node: &ControlNode) -> Result<(), StoreError>;

    /// The nodes seen at or after `seen_since_unix_nanos`, sorted by id.
    async fn control_nodes(
        &self,
        seen_since_unix_nanos: u64,
    ) -> Result<Vec<ControlNode>, StoreError>;
}
