//! The Kafka pipeline: the `ingest` role's [`KafkaSink`] and the `process` role's
//! [`Consumer`] (the source), with librdkafka (bundled) through `rdkafka`.
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

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::{PipelineEvent, Processor, Sink, SinkError};
use crate::config::KafkaSection;

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

fn base_config(section: &KafkaSection) -> ClientConfig {
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

fn apply_client_overrides(c: &mut ClientConfig, section: &KafkaSection) {
    for (k, v) in &section.client {
        c.set(k, v);
    }
}

/// Creates the topic if it does not exist (with `partitions` and `replication_factor`)
/// and returns its partition count.
pub async fn ensure_topic(section: &KafkaSection) -> Result<i32, KafkaStartError> {
    let mut config = base_config(section);
    apply_client_overrides(&mut config, section);
    let admin: AdminClient<DefaultClientContext> =
        config.create().map_err(|source| KafkaStartError::Client {
            what: "admin client",
            source,
        })?;
    let topic_err = |why: String| KafkaStartError::Topic {
        topic: section.topic.clone(),
        why,
    };
    let new = NewTopic::new(
        &section.topic,
        section.partitions,
        TopicReplication::Fixed(section.replication_factor),
    );
    let options = AdminOptions::new()
        .operation_timeout(Some(START_TIMEOUT))
        .request_timeout(Some(START_TIMEOUT));
    let created = tokio::time::timeout(
        START_TIMEOUT + Duration::from_secs(1),
        admin.create_topics([&new], &options),
    )
    .await
    .map_err(|_| {
        topic_err(format!(
            "no answer from the brokers within {START_TIMEOUT:?}"
        ))
    })?
    .map_err(|e| topic_err(e.to_string()))?;
    for result in created {
        match result {
            Ok(_) => {
                tracing::info!(topic = %section.topic, partitions = section.partitions, "Kafka topic created")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(topic_err(format!("cannot create it: {code}"))),
        }
    }
    let admin = Arc::new(admin);
    let topic = section.topic.clone();
    let metadata = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&topic), START_TIMEOUT)
            .map(|m| {
                m.topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or(0, |t| t.partitions().len())
            })
    })
    .await
    .map_err(|e| topic_err(e.to_string()))?
    .map_err(|e| topic_err(e.to_string()))?;
    let partitions = i32::try_from(metadata).unwrap_or(0);
    if partitions == 0 {
        return Err(topic_err("the brokers report no partitions".to_owned()));
    }
    Ok(partitions)
}

/// The `ingest` role's sink: produces each event and returns once the broker has it.
pub struct KafkaSink {
    producer: FutureProducer,
    topic: String,
    partitions: i32,
    timeout: Duration,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

impl KafkaSink {
    /// A producer for `section`'s topic of `partitions` partitions; messages up to
    /// `max_message_bytes` (the largest profile, plus room for its metadata).
    pub fn new(
        section: &KafkaSection,
        partitions: i32,
        max_message_bytes: u64,
    ) -> Result<KafkaSink, KafkaStartError> {
        let timeout = Duration::from_millis(section.produce_timeout_ms);
        let mut config = base_config(section);
        config
            .set("acks", "all")
            // One delivery deadline: the sink waits for the report no longer than this.
            .set("message.timeout.ms", section.produce_timeout_ms.to_string())
            .set("linger.ms", "2")
            // A bounded queue: a full one makes `deliver` fail, not grow.
            .set("queue.buffering.max.messages", "100000")
            .set(
                "message.max.bytes",
                max_message_bytes
                    .clamp(1_000_000, 1_000_000_000)
                    .to_string(),
            );
        apply_client_overrides(&mut config, section);
        let producer: FutureProducer =
            config.create().map_err(|source| KafkaStartError::Client {
                what: "producer",
                source,
            })?;
        Ok(KafkaSink {
            producer,
            topic: section.topic.clone(),
            partitions,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl Sink for KafkaSink {
    async fn deliver(&self, event: PipelineEvent) -> Result<(), SinkError> {
        let payload = event.encode();
        let partition = partition_of(&event.service, self.partitions);
        let record = FutureRecord::to(&self.topic)
            .key(event.service.as_bytes())
            .partition(partition)
            .payload(&payload);
        let started = Instant::now();
        // The queue wait and the delivery report each end by `timeout`; the outer
        // timeout only guards against a report that never comes.
        let sent = tokio::time::timeout(
            self.timeout * 2 + Duration::from_secs(1),
            self.producer.send(record, self.timeout),
        )
        .await
        .map_err(|_| SinkError::Broker(format!("no delivery report within {:?}", self.timeout)))?;
        match sent {
            Ok(delivery) => {
                tracing::debug!(
                    service = %event.service,
                    partition = delivery.partition,
                    offset = delivery.offset,
                    ms = started.elapsed().as_millis() as u64,
                    "event produced"
                );
                Ok(())
            }
            Err((err, _)) => Err(SinkError::Broker(err.to_string())),
        }
    }
}

/// Partitions assigned by the last rebalance, waiting to be taken into account.
#[derive(Default)]
struct RebalanceState {
    pending: Mutex<Option<BTreeSet<i32>>>,
}

struct ProcessContext {
    topic: String,
    state: Arc<RebalanceState>,
}

impl ClientContext for ProcessContext {}

impl ConsumerContext for ProcessContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let assigned = match rebalance {
            Rebalance::Assign(tpl) => tpl
                .elements_for_topic(&self.topic)
                .iter()
                .map(|e| e.partition())
                .collect(),
            Rebalance::Revoke(_) => BTreeSet::new(),
            Rebalance::Error(err) => {
                tracing::warn!(error = %err, "Kafka rebalance failed");
                return;
            }
        };
        tracing::info!(partitions = ?assigned, "Kafka partitions assigned");
        *self.state.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(assigned);
    }
}

/// The `process` role's source: a consumer group member feeding the [`Processor`].
pub struct Consumer {
    consumer: StreamConsumer<ProcessContext>,
    state: Arc<RebalanceState>,
    topic: String,
    partitions: i32,
    processor: Arc<Processor>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Returns once `closing` turns true (or its sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// How long a failed event waits before it is processed again.
const PROCESS_RETRY: Duration = Duration::from_secs(1);
/// Most events a processor takes (and stores concurrently) at once.
pub const MAX_BATCH: usize = 256;
/// Events of a batch stored at once (each profile decoded takes a few MiB).
pub const MAX_CONCURRENT_STORES: usize = 16;
/// How long a processor waits for more events to join a batch.
const BATCH_GATHER: Duration = Duration::from_millis(5);

impl Consumer {
    /// Joins `section`'s consumer group on its topic of `partitions` partitions.
    pub fn new(
        section: &KafkaSection,
        partitions: i32,
        processor: Arc<Processor>,
    ) -> Result<Consumer, KafkaStartError> {
        let mut config = base_config(section);
        config
            .set("group.id", &section.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", section.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                section.heartbeat_interval_ms.to_string(),
            )
            // Notice new partitions and brokers within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("fetch.wait.max.ms", "100");
        apply_client_overrides(&mut config, section);
        let state = Arc::new(RebalanceState::default());
        let context = ProcessContext {
            topic: section.topic.clone(),
            state: Arc::clone(&state),
        };
        let consumer: StreamConsumer<ProcessContext> = config
            .create_with_context(context)
            .map_err(|source| KafkaStartError::Client {
                what: "consumer",
                source,
            })?;
        consumer
            .subscribe(&[&section.topic])
            .map_err(|source| KafkaStartError::Client {
                what: "consumer subscription",
                source,
            })?;
        Ok(Consumer {
            consumer,
            state,
            topic: section.topic.clone(),
            partitions,
            processor,
        })
    }

    /// Consumes until `closing` turns true, then commits what was processed.
    ///
    /// Events are taken in batches of what has arrived (up to [`MAX_BATCH`]): a batch is
    /// stored concurrently (each store write waits for its table's batch, so one event at
    /// a time would cap a processor at a few dozen events per second), then its triggers
    /// are correlated in offset order, and only then are its offsets committed.
    pub async fn run(self, mut closing: watch::Receiver<bool>) {
        // Owns nothing until the group assigns partitions.
        self.rebuild(&BTreeSet::new()).await;
        let mut processed: HashMap<i32, i64> = HashMap::new();
        let mut check = tokio::time::interval(Duration::from_millis(500));
        loop {
            let received = tokio::select! {
                _ = closed(&mut closing) => break,
                _ = check.tick() => {
                    self.apply_rebalance().await;
                    continue;
                }
                received = self.consumer.recv() => received.map(|m| m.detach()),
            };
            self.apply_rebalance().await;
            let first = match received {
                Ok(m) => m,
                Err(err) => {
                    tracing::warn!(error = %err, "Kafka consumer error");
                    tokio::select! {
                        _ = closed(&mut closing) => break,
                        _ = tokio::time::sleep(PROCESS_RETRY) => continue,
                    }
                }
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout(BATCH_GATHER, self.consumer.recv()).await {
                    Ok(Ok(m)) => batch.push(m.detach()),
                    Ok(Err(err)) => {
                        tracing::warn!(error = %err, "Kafka consumer error");
                        break;
                    }
                    Err(_) => break,
                }
            }
            if !self.process_batch(&batch, &mut closing).await {
                break;
            }
            // Only now, with the batch stored: a crash before this re-delivers it.
            let mut last: HashMap<i32, i64> = HashMap::new();
            for m in &batch {
                let o = last.entry(m.partition()).or_insert(m.offset());
                *o = (*o).max(m.offset());
            }
            let mut tpl = TopicPartitionList::new();
            for (partition, offset) in &last {
                if let Err(err) =
                    tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(offset + 1))
                {
                    tracing::warn!(partition, offset, error = %err, "cannot list the offset to commit");
                }
                processed.insert(*partition, *offset);
            }
            if let Err(err) = self.consumer.commit(&tpl, CommitMode::Async) {
                tracing::warn!(error = %err, "cannot commit the offsets; the events may be processed again");
            }
        }
        self.commit_final(&processed).await;
    }

    /// Stores a batch's events concurrently (each retried until stored), then correlates
    /// its triggers in offset order; `false` if the collector is closing first (the
    /// batch's offsets are then not committed).
    async fn process_batch(
        &self,
        batch: &[OwnedMessage],
        closing: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut stores = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_STORES));
        for (index, message) in batch.iter().enumerate() {
            let (partition, offset) = (message.partition(), message.offset());
            let event = match message.payload().map(PipelineEvent::decode) {
                Some(Ok(event)) => event,
                Some(Err(err)) => {
                    tracing::error!(partition, offset, error = %err, "undecodable event skipped");
                    continue;
                }
                None => {
                    tracing::error!(partition, offset, "empty event skipped");
                    continue;
                }
            };
            let processor = Arc::clone(&self.processor);
            let mut closing = closing.clone();
            let permits = Arc::clone(&permits);
            stores.spawn(async move {
                // Decoding a profile takes a few MiB: a bounded number at once.
                let Ok(_permit) = permits.acquire_owned().await else {
                    return None;
                };
                loop {
                    match processor.store(event.clone()).await {
                        Ok(trigger) => return Some((index, trigger)),
                        Err(err) => {
                            tracing::warn!(partition, offset, service = %event.service, error = %err, "cannot store the event; retrying");
                            tokio::select! {
                                _ = closed(&mut closing) => return None,
                                _ = tokio::time::sleep(PROCESS_RETRY) => {}
                            }
                        }
                    }
                }
            });
        }
        let mut triggers = Vec::new();
        while let Some(done) = stores.join_next().await {
            match done {
                Ok(Some((index, trigger))) => triggers.extend(trigger.map(|t| (index, t))),
                Ok(None) => return false,
                Err(err) => {
                    // A panic in a store write: the batch is not committed, so the events
                    // come again (after a restart at worst).
                    tracing::error!(error = %err, "storing an event failed");
                    return false;
                }
            }
        }
        triggers.sort_by_key(|(index, _)| *index);
        for (_, trigger) in &triggers {
            self.processor.observe(trigger).await;
        }
        true
    }

    async fn apply_rebalance(&self) {
        let pending = self
            .state
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(assigned) = pending {
            self.rebuild(&assigned).await;
        }
    }

    /// Rebuilds the correlation state of the services the `assigned` partitions hold.
    async fn rebuild(&self, assigned: &BTreeSet<i32>) {
        let Some(incidents) = self.processor.incidents() else {
            return;
        };
        let partitions = self.partitions;
        let owns = |service: &str| assigned.contains(&partition_of(service, partitions));
        let started = Instant::now();
        loop {
            match incidents.restore_owned(&owns).await {
                Ok(count) => {
                    tracing::info!(partitions = ?assigned, incidents = count, ms = started.elapsed().as_millis() as u64, "correlation state rebuilt for the assigned partitions");
                    return;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "cannot rebuild the correlation state; retrying");
                    tokio::time::sleep(PROCESS_RETRY).await;
                }
            }
        }
    }

    async fn commit_final(self, processed: &HashMap<i32, i64>) {
        if processed.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in processed {
            if let Err(err) =
                tpl.add_partition_offset(&self.topic, *partition, Offset::Offset(offset + 1))
            {
                tracing::warn!(partition, error = %err, "cannot list the final offset");
            }
        }
        // A synchronous commit blocks; librdkafka bounds it with its socket timeouts.
        let consumer = self.consumer;
        let done = tokio::task::spawn_blocking(move || {
            let result = consumer.commit(&tpl, CommitMode::Sync);
            drop(consumer);
            result
        });
        match tokio::time::timeout(START_TIMEOUT, done).await {
            Ok(Ok(Ok(()))) => tracing::info!("Kafka offsets committed"),
            Ok(Ok(Err(err))) => tracing::warn!(error = %err, "cannot commit the final offsets"),
            _ => tracing::warn!("the final offset commit did not finish in time"),
        }
    }
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
