//! The collector's own health as Prometheus metrics, served at `GET /metrics` (behind the
//! API token when one is set) in the OpenMetrics text format.
//!
//! One process-wide set of metrics ([`metrics()`]), written where things happen: ingest
//! (agents connected, messages, bytes, streams and messages refused by a bound, profiles
//! ingested and refused by source and reason), the store (write latency and retries; ClickHouse batches through
//! [`holmes_storage::clickhouse::set_batch_observer`]), Kafka (produce latency, consumer
//! lag), incidents open, the alert outbox and its deliveries per hook, captures requested
//! and skipped, and HTTP requests by route ([`http`]). Labels take few values each:
//! sources, kinds, reasons, tables, hook names and route templates from the
//! configuration and the code, never instance or profile ids.

pub mod http;

use std::sync::OnceLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Where a profile came from: `agent`, `pyroscope` or `otlp`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
pub enum Source {
    /// Holmes' own agent, over gRPC.
    Agent,
    /// A Pyroscope client (`/ingest`, `push.v1`).
    Pyroscope,
    /// An OTLP profiles exporter (gRPC or HTTP).
    Otlp,
}

impl Source {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Pyroscope => "pyroscope",
            Source::Otlp => "otlp",
        }
    }
}

/// `{type}`: what kind of agent message.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    /// `metrics`, `trigger`, `profile_chunk`, `heartbeat`, `answer`.
    pub r#type: &'static str,
}

/// `{source}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// [`Source::as_str`].
    pub source: &'static str,
}

/// `{source, kind}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProfileLabels {
    /// [`Source::as_str`].
    pub source: &'static str,
    /// `cpu`, `heap`, `threads`, `tasks`.
    pub kind: &'static str,
}

/// `{source, reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// [`Source::as_str`].
    pub source: &'static str,
    /// A short reason: `malformed`, `too_large`, `unauthorized`, `unsupported_kind`, ...
    pub reason: &'static str,
}

/// `{op}`: which store write.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `metrics`, `trigger`, `profile`, `profile contents`.
    pub op: &'static str,
}

/// `{table}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// A ClickHouse table.
    pub table: &'static str,
}

/// `{partition}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// A partition of the Kafka topic.
    pub partition: i32,
}

/// `{hook, result}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// The hook's configured name.
    pub hook: String,
    /// `delivered`, `retry` (a failed attempt to be retried) or `failed` (given up).
    pub result: &'static str,
}

/// `{purpose}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PurposeLabels {
    /// `operator`, `control`, `alert`.
    pub purpose: &'static str,
}

/// `{reason}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why.
    pub reason: &'static str,
}

/// `{method, route, code}`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The route's template (`/api/v1/incidents/{incident_id}`), `other` when none
    /// matched.
    pub route: String,
    /// The status code.
    pub code: u16,
}

/// Histogram buckets for a family: a function pointer, so the family is `Send + Sync`.
#[derive(Clone)]
pub struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// Latencies: 1 ms to about 33 s.
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Sizes: 1 to about 1 M.
fn sizes() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 4.0, 11))
}

/// Every metric the collector exports.
pub struct Metrics {
    registry: Registry,
    /// Agent streams open now.
    pub agents_connected: Gauge,
    /// Bytes the agent streams' tables hold now (`[limits] max_stream_table_bytes`).
    pub ingest_stream_table_bytes: Gauge,
    /// Agent messages received, by type.
    pub ingest_messages: Family<MessageLabels, Counter>,
    /// Bytes of profiles received, by source (agents: profile chunk data; HTTP: bodies).
    pub ingest_bytes: Family<SourceLabels, Counter>,
    /// Agent streams and messages refused by a bound or a check of what identifies them,
    /// by reason.
    pub ingest_refused: Family<ReasonLabels, Counter>,
    /// Profiles handed to processing, by source and kind.
    pub profiles_ingested: Family<ProfileLabels, Counter>,
    /// Profiles refused, by source and reason.
    pub profiles_refused: Family<RefusedLabels, Counter>,
    /// Store writes (retries included), by operation.
    pub store_write_seconds: Family<OpLabels, Histogram, Buckets>,
    /// Store writes that failed and were retried, by operation.
    pub store_retries: Family<OpLabels, Counter>,
    /// Rows per ClickHouse batch, by table.
    pub store_batch_rows: Family<TableLabels, Histogram, Buckets>,
    /// ClickHouse batch `INSERT`s, by table.
    pub store_batch_seconds: Family<TableLabels, Histogram, Buckets>,
    /// ClickHouse batch `INSERT`s that failed, by table.
    pub store_batch_failures: Family<TableLabels, Counter>,
    /// Kafka produce → broker acknowledgement.
    pub kafka_produce_seconds: Histogram,
    /// Kafka produce attempts the broker did not acknowledge.
    pub kafka_produce_failures: Counter,
    /// Messages of a partition not consumed yet (librdkafka's `consumer_lag`).
    pub kafka_consumer_lag: Family<PartitionLabels, Gauge>,
    /// Partitions of the Kafka topic this processor consumes now.
    pub kafka_assigned_partitions: Gauge,
    /// Incidents open now (on this processor).
    pub incidents_open: Gauge,
    /// Alerts waiting in the outbox.
    pub alert_outbox_pending: Gauge,
    /// Incident changes that had to wait for room in a full alert outbox.
    pub alert_outbox_waits: Counter,
    /// Alert delivery attempts, by hook and result.
    pub alert_deliveries: Family<DeliveryLabels, Counter>,
    /// Agents asked to capture, by purpose (one per agent reached).
    pub captures_requested: Family<PurposeLabels, Counter>,
    /// Captures not made, by reason (the agent's refusal, or `queue_full`, `no_agent`).
    pub captures_skipped: Family<ReasonLabels, Counter>,
    /// HTTP requests, by method, route and status code.
    pub http_request_seconds: Family<HttpLabels, Histogram, Buckets>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            agents_connected: Gauge::default(),
            ingest_stream_table_bytes: Gauge::default(),
            ingest_messages: Family::default(),
            ingest_bytes: Family::default(),
            ingest_refused: Family::default(),
            profiles_ingested: Family::default(),
            profiles_refused: Family::default(),
            store_write_seconds: Family::new_with_constructor(Buckets(seconds)),
            store_retries: Family::default(),
            store_batch_rows: Family::new_with_constructor(Buckets(sizes)),
            store_batch_seconds: Family::new_with_constructor(Buckets(seconds)),
            store_batch_failures: Family::default(),
            kafka_produce_seconds: seconds(),
            kafka_produce_failures: Counter::default(),
            kafka_consumer_lag: Family::default(),
            kafka_assigned_partitions: Gauge::default(),
            incidents_open: Gauge::default(),
            alert_outbox_pending: Gauge::default(),
            alert_outbox_waits: Counter::default(),
            alert_deliveries: Family::default(),
            captures_requested: Family::default(),
            captures_skipped: Family::default(),
            http_request_seconds: Family::new_with_constructor(Buckets(seconds)),
        };
        let r = &mut m.registry;
        r.register(
            "holmes_agents_connected",
            "Agent streams open now",
            m.agents_connected.clone(),
        );
        r.register(
            "holmes_ingest_stream_table_bytes",
            "Bytes the agent streams' tables hold on this collector",
            m.ingest_stream_table_bytes.clone(),
        );
        r.register(
            "holmes_ingest_messages",
            "Agent messages received, by type",
            m.ingest_messages.clone(),
        );
        r.register(
            "holmes_ingest_received_bytes",
            "Bytes of profiles received, by source",
            m.ingest_bytes.clone(),
        );
        r.register(
            "holmes_ingest_refused",
            "Agent streams and messages refused by a resource bound or an identity check, by reason",
            m.ingest_refused.clone(),
        );
        r.register(
            "holmes_profiles_ingested",
            "Profiles handed to processing, by source and kind",
            m.profiles_ingested.clone(),
        );
        r.register(
            "holmes_profiles_refused",
            "Profiles refused, by source and reason",
            m.profiles_refused.clone(),
        );
        r.register(
            "holmes_store_write_duration_seconds",
            "Store writes, retries included, by operation",
            m.store_write_seconds.clone(),
        );
        r.register(
            "holmes_store_write_retries",
            "Store writes that failed and were retried, by operation",
            m.store_retries.clone(),
        );
        r.register(
            "holmes_store_batch_rows",
            "Rows per ClickHouse batch INSERT, by table",
            m.store_batch_rows.clone(),
        );
        r.register(
            "holmes_store_batch_duration_seconds",
            "ClickHouse batch INSERTs, by table",
            m.store_batch_seconds.clone(),
        );
        r.register(
            "holmes_store_batch_failures",
            "ClickHouse batch INSERTs that failed, by table",
            m.store_batch_failures.clone(),
        );
        r.register(
            "holmes_kafka_produce_duration_seconds",
            "Kafka produce until the broker acknowledged",
            m.kafka_produce_seconds.clone(),
        );
        r.register(
            "holmes_kafka_produce_failures",
            "Kafka produces the broker did not acknowledge",
            m.kafka_produce_failures.clone(),
        );
        r.register(
            "holmes_kafka_consumer_lag_messages",
            "Messages of a partition not consumed yet, by partition",
            m.kafka_consumer_lag.clone(),
        );
        r.register(
            "holmes_kafka_assigned_partitions",
            "Partitions of the Kafka topic this processor consumes now (its correlation state rebuilt)",
            m.kafka_assigned_partitions.clone(),
        );
        r.register(
            "holmes_incidents_open",
            "Incidents open now on this processor",
            m.incidents_open.clone(),
        );
        r.register(
            "holmes_alert_outbox_pending",
            "Alerts waiting for delivery in the outbox",
            m.alert_outbox_pending.clone(),
        );
        r.register(
            "holmes_alert_outbox_waits",
            "Incident changes that waited for room in a full alert outbox (their triggers are acknowledged once queued)",
            m.alert_outbox_waits.clone(),
        );
        r.register(
            "holmes_alert_deliveries",
            "Alert delivery attempts, by hook and result",
            m.alert_deliveries.clone(),
        );
        r.register(
            "holmes_captures_requested",
            "Agents asked to capture, by purpose",
            m.captures_requested.clone(),
        );
        r.register(
            "holmes_captures_skipped",
            "Captures not made, by reason",
            m.captures_skipped.clone(),
        );
        r.register(
            "holmes_http_request_duration_seconds",
            "HTTP requests, by method, route and status code",
            m.http_request_seconds.clone(),
        );
        m
    }

    /// Everything in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a profile handed to processing.
    pub fn profile_ingested(&self, source: Source, kind: holmes_proto::ProfileKind) {
        self.profiles_ingested
            .get_or_create(&ProfileLabels {
                source: source.as_str(),
                kind: kind.as_str(),
            })
            .inc();
    }

    /// Counts a refused profile.
    pub fn profile_refused(&self, source: Source, reason: &'static str) {
        self.profiles_refused
            .get_or_create(&RefusedLabels {
                source: source.as_str(),
                reason,
            })
            .inc();
    }

    /// Counts received profile bytes.
    pub fn bytes_in(&self, source: Source, bytes: usize) {
        self.ingest_bytes
            .get_or_create(&SourceLabels {
                source: source.as_str(),
            })
            .inc_by(bytes as u64);
    }

    /// Counts an agent stream or message refused by a bound or an identity check.
    pub fn ingest_refused(&self, reason: &'static str) {
        self.ingest_refused
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts a capture not made.
    pub fn capture_skipped(&self, reason: &'static str) {
        self.captures_skipped
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Counts one alert delivery attempt of `hook`.
    pub fn alert_delivery(&self, hook: &str, result: &'static str) {
        self.alert_deliveries
            .get_or_create(&DeliveryLabels {
                hook: hook.to_owned(),
                result,
            })
            .inc();
    }
}

/// The collector's metrics (created, with the ClickHouse batch observer, on first use).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        holmes_storage::clickhouse::set_batch_observer(observe_batch);
        Metrics::new()
    })
}

fn observe_batch(table: &'static str, rows: usize, took: Duration, ok: bool) {
    let m = metrics();
    let labels = TableLabels { table };
    m.store_batch_rows
        .get_or_create(&labels)
        .observe(rows as f64);
    m.store_batch_seconds
        .get_or_create(&labels)
        .observe(took.as_secs_f64());
    if !ok {
        m.store_batch_failures.get_or_create(&labels).inc();
    }
}

/// A short, fixed reason for a profile the normalizer refused (a metric label).
pub fn normalize_reason(err: &crate::process::normalize::NormalizeError) -> &'static str {
    use crate::process::normalize::NormalizeError as E;
    match err {
        E::Decompress(_) => "decompress",
        E::TooLarge { .. } => "too_large",
        E::Malformed(_) => "malformed",
        E::TooMany { .. } => "too_many",
        E::Dangling { .. } => "dangling",
        E::DuplicateId { .. } => "duplicate_id",
        E::ValueCount { .. } => "value_count",
        E::TooDeep { .. } => "too_deep",
        E::NameTooLong { .. } => "name_too_long",
        E::Amplifies { .. } => "amplifies",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let m = metrics();
        m.profile_ingested(Source::Pyroscope, holmes_proto::ProfileKind::Cpu);
        m.store_write_seconds
            .get_or_create(&OpLabels { op: "profile" })
            .observe(0.01);
        let text = m.encode();
        assert!(
            text.contains("holmes_profiles_ingested_total{source=\"pyroscope\",kind=\"cpu\"}"),
            "{text}"
        );
        assert!(text.contains("# TYPE holmes_store_write_duration_seconds histogram"));
        assert!(
            text.contains(
                "holmes_store_write_duration_seconds_bucket{le=\"0.016\",op=\"profile\"} 1"
            ) || text.contains(
                "holmes_store_write_duration_seconds_bucket{op=\"profile\",le=\"0.016\"} 1"
            ),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
