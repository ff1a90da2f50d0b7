//! The `process` role's source: a consumer group member that stores, correlates and
//! then commits, rebuilding the correlation state of the services it is handed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer as _, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use super::client::{apply_client_overrides, base_config, millis, KafkaStartError, START_TIMEOUT};
use super::partition_of;
use super::KafkaConfig;
use crate::process::{PipelineBody, PipelineEvent, Processor, StoredTrigger};
use holmes_storage::ParkedEvent;

/// Partitions assigned by the last rebalance, waiting to be taken into account.
#[derive(Default)]
struct RebalanceState {
    pending: Mutex<Option<BTreeSet<i32>>>,
}

struct ProcessContext {
    topic: String,
    state: Arc<RebalanceState>,
}

impl ClientContext for ProcessContext {
    /// librdkafka's statistics (every `statistics.interval.ms`): each assigned
    /// partition's lag, for `/metrics`.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, p) in &topic.partitions {
            // -1 is librdkafka's internal partition; a lag of -1 is unknown.
            if *partition >= 0 && p.consumer_lag >= 0 {
                crate::metrics::metrics()
                    .kafka_consumer_lag
                    .get_or_create(&crate::metrics::PartitionLabels {
                        partition: *partition,
                    })
                    .set(p.consumer_lag);
            }
        }
    }
}

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

/// Sets an event aside in the store (`parked_events`), retrying while the store is
/// down; `false` if the collector is closing first.
async fn park(
    processor: &Processor,
    source: String,
    service: String,
    error: String,
    payload: Vec<u8>,
    closing: &mut watch::Receiver<bool>,
) -> bool {
    tracing::error!(%source, %service, %error, "event parked: it will not be processed again unless replayed");
    let parked = ParkedEvent {
        source,
        service,
        parked_unix_nanos: crate::clock::unix_nanos_now(),
        error,
        payload,
    };
    loop {
        match processor.store_handle().park_event(&parked).await {
            Ok(()) => return true,
            Err(err) => {
                tracing::warn!(source = %parked.source, error = %err, "cannot park the event; retrying");
                tokio::select! {
                    _ = closed(closing) => return false,
                    _ = tokio::time::sleep(PROCESS_RETRY) => {}
                }
            }
        }
    }
}

/// Returns once `closing` turns true (or its sender is gone).
async fn closed(closing: &mut watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await;
}

/// How long a failed event waits before it is processed again.
const PROCESS_RETRY: Duration = Duration::from_secs(1);
/// Failed attempts (each retried for `STORE_RETRY_FOR` inside) after which an event the
/// store will not take, while it answers, is parked.
pub const PARK_AFTER_ATTEMPTS: u32 = 3;
/// Most events a processor takes (and stores concurrently) at once.
pub const MAX_BATCH: usize = 256;
/// Profiles of a batch stored at once (each decoded takes a few MiB); its metric windows
/// and triggers are all stored at once.
pub const MAX_CONCURRENT_STORES: usize = 16;
/// How long a processor waits for more events to join a batch.
const BATCH_GATHER: Duration = Duration::from_millis(5);

/// One event of a batch, decoded (or why not).
struct Item {
    /// Its place in the batch.
    index: usize,
    partition: i32,
    offset: i64,
    payload: Vec<u8>,
    event: Result<PipelineEvent, String>,
}

impl Consumer {
    /// Joins `section`'s consumer group on its topic of `partitions` partitions.
    pub fn new(
        section: &KafkaConfig,
        partitions: i32,
        processor: Arc<Processor>,
    ) -> Result<Consumer, KafkaStartError> {
        let mut config = base_config(section);
        config
            .set("group.id", &section.group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", millis(section.session_timeout))
            .set("heartbeat.interval.ms", millis(section.heartbeat_interval))
            // Notice new partitions and brokers within seconds, not minutes.
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("fetch.wait.max.ms", "100")
            // Partition lags for /metrics (ProcessContext::stats).
            .set("statistics.interval.ms", "5000");
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

    /// Stores a batch: its trigger events first, concurrently (each retried until
    /// stored), then correlates them in offset order, then stores the rest
    /// concurrently; `false` if the collector is closing first (the batch's offsets are
    /// then not committed). Triggers go first because their incidents' capture budget
    /// decides which profiles of the batch are stored.
    async fn process_batch(
        &self,
        batch: &[OwnedMessage],
        closing: &mut watch::Receiver<bool>,
    ) -> bool {
        let (mut triggers, mut rest) = (Vec::new(), Vec::new());
        for (index, message) in batch.iter().enumerate() {
            let payload = message.payload().unwrap_or_default().to_vec();
            let event = PipelineEvent::decode(&payload).map_err(|e| e.to_string());
            let item = Item {
                index,
                partition: message.partition(),
                offset: message.offset(),
                payload,
                event,
            };
            match &item.event {
                Ok(PipelineEvent {
                    body: PipelineBody::Trigger(_),
                    ..
                }) => triggers.push(item),
                _ => rest.push(item),
            }
        }
        let Some(mut stored) = self.store_all(triggers, closing).await else {
            return false;
        };
        stored.sort_by_key(|(index, _)| *index);
        let triggers: Vec<&StoredTrigger> = stored.iter().map(|(_, t)| t).collect();
        self.processor.observe_all(&triggers).await;
        self.store_all(rest, closing).await.is_some()
    }

    /// Stores `items` concurrently, each retried until stored or parked; the stored
    /// triggers with their index in the batch, or `None` if the collector is closing
    /// first.
    async fn store_all(
        &self,
        items: Vec<Item>,
        closing: &mut watch::Receiver<bool>,
    ) -> Option<Vec<(usize, StoredTrigger)>> {
        let mut stores = tokio::task::JoinSet::new();
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_STORES));
        for item in items {
            let Item {
                index,
                partition,
                offset,
                payload,
                event,
            } = item;
            let source = format!("kafka:{}/{partition}@{offset}", self.topic);
            let processor = Arc::clone(&self.processor);
            let mut closing = closing.clone();
            let permits = Arc::clone(&permits);
            stores.spawn(async move {
                let event = match event {
                    Ok(event) => event,
                    Err(err) => {
                        let error = format!("undecodable event: {err}");
                        return park(&processor, source, String::new(), error, payload, &mut closing)
                            .await
                            .then_some((index, None));
                    }
                };
                // Decoding a profile takes a few MiB: a bounded number at once. Metric
                // windows and triggers are small, and each waits for its table's batch
                // (tens of milliseconds): bounding them too capped a processor at a few
                // hundred events a second, below one metric window a second from 200
                // agents.
                let _permit = match event.body {
                    PipelineBody::Profile(_) => match permits.acquire_owned().await {
                        Ok(permit) => Some(permit),
                        Err(_) => return None,
                    },
                    _ => None,
                };
                let mut attempts = 0u32;
                loop {
                    match processor.store(event.clone()).await {
                        Ok(trigger) => return Some((index, trigger)),
                        Err(err) => {
                            attempts += 1;
                            tracing::warn!(partition, offset, service = %event.service, attempts, error = %err, "cannot store the event; retrying");
                            // The store answers, yet this event keeps failing: it is the
                            // event, not the store. Set it aside rather than block the
                            // partition behind it forever.
                            if attempts >= PARK_AFTER_ATTEMPTS
                                && processor.store_handle().parked_events(1).await.is_ok()
                            {
                                let error = format!("not stored after {attempts} attempts: {err}");
                                return park(&processor, source, event.service.clone(), error, payload, &mut closing)
                                    .await
                                    .then_some((index, None));
                            }
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
                Ok(None) => return None,
                Err(err) => {
                    // A panic in a store write: the batch is not committed, so the events
                    // come again (after a restart at worst).
                    tracing::error!(error = %err, "storing an event failed");
                    return None;
                }
            }
        }
        Some(triggers)
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
            crate::metrics::metrics()
                .kafka_assigned_partitions
                .set(i64::try_from(assigned.len()).unwrap_or(i64::MAX));
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
