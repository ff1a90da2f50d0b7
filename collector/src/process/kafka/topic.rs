//! The events topic: created at start if missing, its partition count read back.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;

use super::client::{apply_client_overrides, base_config, KafkaStartError, START_TIMEOUT};
use super::KafkaConfig;

/// Creates the topic if it does not exist (with `partitions` and `replication_factor`)
/// and returns its partition count.
pub async fn ensure_topic(section: &KafkaConfig) -> Result<i32, KafkaStartError> {
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
