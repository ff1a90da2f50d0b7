//! The Kafka pipeline: the `ingest` role's sink and the `process` role's consumer (the
//! source), with librdkafka (bundled) through `rdkafka`.
//!
//! - Events are `holmes.v1.PipelineEvent` protobuf values keyed by service. The partition
//!   is chosen here, from a stable hash of the service name ([`partition_of`]), so that
//!   a processor knows which services its partitions hold: one service's events land in
//!   one partition and its correlation state has one owner.
//! - The ingest node acknowledges an agent's message only after the broker acknowledged
//!   the event (`acks=all`), within `produce_timeout_ms`; otherwise the agent's stream
//!   ends with UNAVAILABLE and the agent keeps the message in its spool and resends it.
//! - The process node reads in a consumer group with auto-commit off, processes each
//!   event (store, correlate, alert) and commits its offset only after that: at least once
//!   delivery, and since every write is idempotent, an exactly-once effect in the store.
//!   After a rebalance it rebuilds the correlation state of the services it now owns from
//!   the store before it processes anything else.
//!
//! [`client`] holds the settings every client shares, [`topic`] creates the topic,
//! [`sink`] is the ingest side and [`consumer`] the process side; they need the `kafka`
//! feature (librdkafka). The partitioning is plain code, the same on every node.

#[cfg(feature = "kafka")]
pub mod client;
#[cfg(feature = "kafka")]
pub mod consumer;
#[cfg(feature = "kafka")]
pub mod sink;
#[cfg(feature = "kafka")]
pub mod topic;

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
    use super::partition_of;

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
