//! What every Kafka client of the collector shares: the brokers, timeouts and the
//! `[kafka.client]` overrides, and the error of setting a client up.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;

use super::KafkaConfig;

/// How long the admin and metadata requests at start may take.
pub const START_TIMEOUT: Duration = Duration::from_secs(15);

/// Why the Kafka side could not start.
#[derive(Debug, thiserror::Error)]
pub enum KafkaStartError {
    /// A client could not be created (a bad setting, say).
    #[error("cannot create the Kafka {what}: {source}")]
    Client {
        /// Which client.
        what: &'static str,
        /// Why.
        source: KafkaError,
    },
    /// The topic could not be created or described.
    #[error("Kafka topic {topic:?}: {why}")]
    Topic {
        /// The topic.
        topic: String,
        /// Why.
        why: String,
    },
}

pub(crate) fn base_config(section: &KafkaConfig) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set(
        "bootstrap.servers",
        section.brokers.as_deref().unwrap_or_default(),
    )
    .set("client.id", "holmes-collector")
    .set("socket.timeout.ms", "10000")
    .set("socket.connection.setup.timeout.ms", "10000");
    c
}

pub(crate) fn apply_client_overrides(c: &mut ClientConfig, section: &KafkaConfig) {
    for (k, v) in &section.client {
        c.set(k, v);
    }
}

/// A duration as librdkafka's `*.ms` settings spell it.
pub(crate) fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}
