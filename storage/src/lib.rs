#![doc = include_str!("../README.md")]

pub mod clickhouse;
mod control;
mod known_stacks;
mod model;
pub mod sqlite;
mod stored_names;
#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use control::*;
pub use known_stacks::MAX_KNOWN_STACKS;
pub use model::*;

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

    /// Stores a profile. One already stored (same service and profile id: an agent
    /// resending after a lost ack) is kept once. Its bytes read back exactly; every other
    /// field too, except that `error: Some("")` reads back as `None` and a duration
    /// beyond `u64::MAX` nanoseconds as that many.
    async fn insert_profile(&self, profile: &ProfileRecord) -> Result<(), StoreError>;

    /// Profiles of one service whose capture started in `[since, until)`, of one event
    /// and one kind if the query names them, without their bytes, sorted by start time
    /// and then profile id, at most `limit`.
    async fn query_profiles(&self, query: &ProfileQuery) -> Result<Vec<ProfileMeta>, StoreError>;

    /// One profile with its bytes, by its id alone (ids are 128 random bits, unique
    /// across services); `None` if no profile has this id.
    async fn get_profile(&self, profile_id: &str) -> Result<Option<ProfileRecord>, StoreError>;

    /// Stores a profile's normalized contents: each of its stacks once across all
    /// profiles (keyed by [`Stack::stack_id`]), its samples referring to them. Storing
    /// the same contents again (a resend) keeps one copy. The ingest stores the contents
    /// before the [`ProfileRecord`], so a listed profile has its contents.
    ///
    /// `contents.stacks` may leave out stacks for which [`Store::has_stack`] said yes:
    /// samples may refer to stacks stored with earlier profiles.
    async fn insert_profile_contents(&self, contents: &ProfileContents) -> Result<(), StoreError>;

    /// Whether the stack `stack_id` is known to be stored already, from a bounded memory
    /// of the stacks this store wrote (`false` when unsure). The ingest leaves such
    /// stacks out of [`ProfileContents::stacks`]: copying and writing a stack the fleet
    /// repeats in every profile once, not every time, is most of the ingest's savings.
    fn has_stack(&self, stack_id: u64) -> bool {
        let _ = stack_id;
        false
    }

    /// Removes metric samples, trigger events and profiles (bytes and contents) of the
    /// days before the day of `cutoff_unix_nanos` (UTC days: a backend may drop whole days
    /// only, so data of the cutoff's own day may stay until the next day's run). Data at
    /// or after the cutoff is kept. Instances and stacks are kept: both are small, and
    /// stacks are shared by profiles of all ages. Returns what went, for the log.
    async fn expire_before(&self, cutoff_unix_nanos: u64) -> Result<Expired, StoreError>;

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

    /// A profile's normalized contents by its id: sample types, samples in the order
    /// stored, and the stacks they use, in order of first use. `None` if none were stored.
    async fn get_profile_contents(
        &self,
        profile_id: &str,
    ) -> Result<Option<ProfileContents>, StoreError>;

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
