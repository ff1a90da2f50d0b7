//! The Kafka pipeline: the `ingest` role's sink and the `process` role's consumer (the
//! source), with librdkafka (bundled) through `rdkafka`.
//!
//! - Events are `holmes.v1.PipelineEvent` protobuf values keyed by service. The partition
//!   is chosen here, from a stable hash of the service name ([`partition_of`]), so that
//!   a processor knows which services its partitions hold: one service's events land in
//!   one partition and its correlation state has one owner.
//! - The ingest node acknowledges an agent's message only after the broker acknowledged
//!   the event (`acks=all`), within `produce_timeout`; otherwise the agent's stream
//!   ends with UNAVAILABLE and the agent keeps the message in its spool and resends it.
//! - The process node reads in a consumer group with auto-commit off, processes each
//!   event (store, correlate, alert) and commits its offset only after that: at least once
//!   delivery, and since every write is idempotent, an exactly-once effect in the store.
//!   After a rebalance it rebuilds the correlation state of the services it now owns from
//!   the store before it processes anything else.
//!
//! [`KafkaConfig`] is the `[kafka]` section; [`client`] holds the settings every client
//! shares, [`topic`] creates the topic, [`sink`] is the ingest side and [`consumer`] the
//! process side; those need the `kafka` feature (librdkafka). The partitioning is plain
//! code, the same on every node.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

#[cfg(feature = "kafka")]
pub mod client;
#[cfg(feature = "kafka")]
pub mod consumer;
#[cfg(feature = "kafka")]
pub mod sink;
#[cfg(feature = "kafka")]
pub mod topic;

/// Topic name when nothing else is set.
pub const DEFAULT_TOPIC: &str = "holmes-events";
/// Consumer group when nothing else is set.
pub const DEFAULT_GROUP: &str = "holmes-process";

/// Kafka settings (`[kafka]`), used by the `ingest` and `process` roles.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port[,host:port...]`; required by those roles.
    pub brokers: Option<String>,
    /// The topic events go through; created at start if missing.
    pub topic: String,
    /// Partitions of the topic when the collector creates it. Each service's events go
    /// to one partition (a hash of its name), so this bounds how many processors share
    /// the work. Do not change the partition count of a topic in use.
    pub partitions: i32,
    /// Replication factor of the topic when the collector creates it.
    pub replication_factor: i32,
    /// Consumer group of the `process` role.
    pub group_id: String,
    /// How long an ingest node waits for the broker to acknowledge an event before it
    /// gives up on it (the agent is then not acknowledged and resends later).
    #[serde(with = "humantime_serde")]
    pub produce_timeout: Duration,
    /// Consumer group session timeout: how long a dead processor keeps its partitions
    /// before they move to another.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// Consumer group heartbeat interval (at most a third of the session timeout).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Extra librdkafka settings for both the producer and the consumer
    /// (`[kafka.client] "security.protocol" = "ssl"`); they win over the ones above.
    pub client: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: None,
            topic: DEFAULT_TOPIC.to_owned(),
            partitions: 12,
            replication_factor: 1,
            group_id: DEFAULT_GROUP.to_owned(),
            produce_timeout: Duration::from_secs(10),
            session_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(1),
            client: BTreeMap::new(),
        }
    }
}

/// Why the `[kafka]` section cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KafkaConfigError {
    /// A role that needs Kafka in a build without it.
    #[error(
        "role = \"{role}\" needs Kafka, but this collector was built without the `kafka` feature"
    )]
    NotBuiltIn {
        /// The role.
        role: &'static str,
    },
    /// A role that needs Kafka without brokers.
    #[error("role = \"{role}\" needs Kafka brokers (--kafka-brokers, HOLMES_KAFKA_BROKERS or [kafka] brokers)")]
    NoBrokers {
        /// The role.
        role: &'static str,
    },
    /// A setting out of its range.
    #[error("kafka: {0}")]
    Invalid(String),
}

impl KafkaConfig {
    /// Keys of older releases, each with what replaced it: refused naming the
    /// replacement rather than as unknown keys.
    pub const REPLACED_KEYS: &'static [(&'static str, &'static str)] = &[
        ("produce_timeout_ms", "produce_timeout = \"10s\""),
        ("session_timeout_ms", "session_timeout = \"10s\""),
        ("heartbeat_interval_ms", "heartbeat_interval = \"1s\""),
    ];

    /// Checks the section for `role` (as the config spells it), which needs Kafka.
    pub fn validate_for(&self, role: &'static str) -> Result<(), KafkaConfigError> {
        if !cfg!(feature = "kafka") {
            return Err(KafkaConfigError::NotBuiltIn { role });
        }
        if self.brokers.as_deref().is_none_or(|b| b.trim().is_empty()) {
            return Err(KafkaConfigError::NoBrokers { role });
        }
        let invalid = |why: String| Err(KafkaConfigError::Invalid(why));
        if self.topic.is_empty() || self.group_id.is_empty() {
            return invalid("topic and group_id must not be empty".to_owned());
        }
        if self.partitions < 1 || self.replication_factor < 1 {
            return invalid("partitions and replication_factor must be at least 1".to_owned());
        }
        if self.produce_timeout < Duration::from_millis(1) {
            return invalid(format!(
                "produce_timeout = {:?} is too short; at least 1ms",
                humantime::format_duration(self.produce_timeout).to_string()
            ));
        }
        if self.heartbeat_interval < Duration::from_millis(1)
            || self.heartbeat_interval * 3 > self.session_timeout
        {
            return invalid(format!(
                "heartbeat_interval = {:?} must be at least 1ms and at most a third of session_timeout = {:?}",
                humantime::format_duration(self.heartbeat_interval).to_string(),
                humantime::format_duration(self.session_timeout).to_string()
            ));
        }
        Ok(())
    }
}

/// The partition of `service`'s events among `partitions`: FNV-1a of the name. The same
/// on every node, whatever client library produced the event.
pub fn partition_of(service: &str, partitions: i32) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in service.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(h % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_text_and_checked() {
        let c: KafkaConfig = toml::from_str(
            "brokers = \"k1:9092\"\nproduce_timeout = \"3s\"\nsession_timeout = \"6s\"\nheartbeat_interval = \"500ms\"",
        )
        .unwrap();
        assert_eq!(c.produce_timeout, Duration::from_secs(3));
        assert_eq!(c.heartbeat_interval, Duration::from_millis(500));
        assert_eq!(c.topic, DEFAULT_TOPIC);
        if cfg!(feature = "kafka") {
            c.validate_for("process").unwrap();
            let slow = KafkaConfig {
                heartbeat_interval: Duration::from_secs(5),
                ..c.clone()
            };
            assert_eq!(
                slow.validate_for("process").unwrap_err().to_string(),
                "kafka: heartbeat_interval = \"5s\" must be at least 1ms and at most a third of session_timeout = \"6s\""
            );
            let none = KafkaConfig::default();
            assert_eq!(
                none.validate_for("ingest"),
                Err(KafkaConfigError::NoBrokers { role: "ingest" })
            );
        }
        assert!(toml::from_str::<KafkaConfig>("produce_timeout = 3000").is_err());
    }

    #[test]
    fn a_service_always_maps_to_the_same_partition() {
        assert_eq!(partition_of("checkout", 12), partition_of("checkout", 12));
        let spread: std::collections::BTreeSet<i32> = (0..100)
            .map(|i| partition_of(&format!("svc-{i}"), 6))
            .collect();
        assert_eq!(spread.len(), 6);
        assert!((0..100).all(|i| (0..6).contains(&partition_of(&format!("s{i}"), 6))));
        assert_eq!(partition_of("x", 1), 0);
    }
}
