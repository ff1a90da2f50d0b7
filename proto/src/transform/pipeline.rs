//! The collector's Kafka events (`pipeline.proto`) to and from the domain.

use std::time::Duration;

use super::{format_from_wire, format_to_wire, kind_from_wire, kind_to_wire, DecodeError};
use crate::model::*;
use crate::pb;

impl TryFrom<pb::PipelineEvent> for PipelineEvent {
    type Error = DecodeError;

    fn try_from(e: pb::PipelineEvent) -> Result<Self, DecodeError> {
        use pb::pipeline_event::Body;
        if e.service.is_empty() {
            return Err(DecodeError::Missing("pipeline.service"));
        }
        if e.instance_id.is_empty() {
            return Err(DecodeError::Missing("pipeline.instance_id"));
        }
        let body = match e.body.ok_or(DecodeError::Missing("pipeline.body"))? {
            Body::Metrics(w) => PipelineBody::Metrics(MetricWindow::try_from(w)?),
            Body::Trigger(t) => PipelineBody::Trigger(TriggerEvent::try_from(t)?),
            Body::Profile(p) => {
                if p.profile_id.is_empty() {
                    return Err(DecodeError::Missing("pipeline.profile.profile_id"));
                }
                PipelineBody::Profile(PipelineProfile {
                    profile_id: p.profile_id,
                    event_id: p.event_id,
                    kind: kind_from_wire("pipeline.profile.kind", p.kind)?,
                    started_unix_nanos: p.started_unix_nanos,
                    duration: Duration::from_nanos(p.duration_nanos),
                    labels: p.labels.into_iter().collect(),
                    error: Some(p.error).filter(|e| !e.is_empty()),
                    data: p.data,
                    format: format_from_wire("pipeline.profile.format", p.format)?,
                })
            }
        };
        Ok(PipelineEvent {
            service: e.service,
            instance_id: e.instance_id,
            body,
        })
    }
}

impl From<&PipelineEvent> for pb::PipelineEvent {
    fn from(e: &PipelineEvent) -> Self {
        use pb::pipeline_event::Body;
        let body = match &e.body {
            PipelineBody::Metrics(w) => Body::Metrics(w.into()),
            PipelineBody::Trigger(t) => Body::Trigger(t.into()),
            PipelineBody::Profile(p) => Body::Profile(pb::PipelineProfile {
                profile_id: p.profile_id.clone(),
                event_id: p.event_id.clone(),
                kind: kind_to_wire(p.kind),
                started_unix_nanos: p.started_unix_nanos,
                duration_nanos: u64::try_from(p.duration.as_nanos()).unwrap_or(u64::MAX),
                labels: p
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                error: p.error.clone().unwrap_or_default(),
                data: p.data.clone(),
                format: format_to_wire(p.format),
            }),
        };
        pb::PipelineEvent {
            service: e.service.clone(),
            instance_id: e.instance_id.clone(),
            body: Some(body),
        }
    }
}

impl PipelineEvent {
    /// The event as protobuf bytes (`holmes.v1.PipelineEvent`).
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&pb::PipelineEvent::from(self))
    }

    /// Decodes protobuf bytes written by [`PipelineEvent::encode`].
    pub fn decode(bytes: &[u8]) -> Result<PipelineEvent, DecodeError> {
        let raw: pb::PipelineEvent =
            prost::Message::decode(bytes).map_err(|e| DecodeError::Invalid {
                field: "pipeline event",
                why: e.to_string(),
            })?;
        PipelineEvent::try_from(raw)
    }
}
