//! The `ingest` role's sink: each event produced to the topic, the agent acknowledged
//! once the broker has it.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};

use super::client::{apply_client_overrides, base_config, millis, KafkaStartError};
use super::partition_of;
use super::KafkaConfig;
use crate::process::{PipelineEvent, Sink, SinkError};

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
        section: &KafkaConfig,
        partitions: i32,
        max_message_bytes: u64,
    ) -> Result<KafkaSink, KafkaStartError> {
        let timeout = section.produce_timeout;
        let mut config = base_config(section);
        config
            .set("acks", "all")
            // One delivery deadline: the sink waits for the report no longer than this.
            .set("message.timeout.ms", millis(section.produce_timeout))
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
        .map_err(|_| {
            crate::metrics::metrics().kafka_produce_failures.inc();
            SinkError::Broker(format!("no delivery report within {:?}", self.timeout))
        })?;
        let m = crate::metrics::metrics();
        if sent.is_ok() {
            m.kafka_produce_seconds
                .observe(started.elapsed().as_secs_f64());
        } else {
            m.kafka_produce_failures.inc();
        }
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
