//! Conversions between the generated [`crate::pb`] structs and the domain [`crate::model`].
//!
//! Domain → wire is infallible. Wire → domain checks what protobuf cannot: required
//! messages present, enum values known, chunk positions consistent.

use std::time::Duration;

use crate::model::*;
use crate::pb;
use crate::pb::{agent_message, collector_message};

/// Wire data that does not form a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A required field or `oneof` was not set.
    #[error("{0} is missing")]
    Missing(&'static str),
    /// An enum field holds a value this version does not know.
    #[error("{field} has the unknown value {value}")]
    UnknownEnum {
        /// The field.
        field: &'static str,
        /// The raw value.
        value: i32,
    },
    /// A field's value is out of its range.
    #[error("{field} is invalid: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        why: String,
    },
}

fn metric_from_wire(field: &'static str, value: i32) -> Result<Metric, DecodeError> {
    let unknown = DecodeError::UnknownEnum { field, value };
    Ok(
        match pb::Metric::try_from(value).map_err(|_| unknown.clone())? {
            pb::Metric::Unspecified => return Err(DecodeError::Missing(field)),
            pb::Metric::CpuPercent => Metric::CpuPercent,
            pb::Metric::MemoryPercent => Metric::MemoryPercent,
            pb::Metric::RssBytes => Metric::RssBytes,
            pb::Metric::Threads => Metric::Threads,
            pb::Metric::Tasks => Metric::Tasks,
            pb::Metric::HeapPercent => Metric::HeapPercent,
            pb::Metric::HeapBytes => Metric::HeapBytes,
            pb::Metric::OpenFds => Metric::OpenFds,
            pb::Metric::CpuThrottledPercent => Metric::CpuThrottledPercent,
        },
    )
}

fn metric_to_wire(metric: Metric) -> i32 {
    let m = match metric {
        Metric::CpuPercent => pb::Metric::CpuPercent,
        Metric::MemoryPercent => pb::Metric::MemoryPercent,
        Metric::RssBytes => pb::Metric::RssBytes,
        Metric::Threads => pb::Metric::Threads,
        Metric::Tasks => pb::Metric::Tasks,
        Metric::HeapPercent => pb::Metric::HeapPercent,
        Metric::HeapBytes => pb::Metric::HeapBytes,
        Metric::OpenFds => pb::Metric::OpenFds,
        Metric::CpuThrottledPercent => pb::Metric::CpuThrottledPercent,
    };
    m as i32
}

fn kind_from_wire(field: &'static str, value: i32) -> Result<ProfileKind, DecodeError> {
    let unknown = DecodeError::UnknownEnum { field, value };
    Ok(
        match pb::ProfileKind::try_from(value).map_err(|_| unknown.clone())? {
            pb::ProfileKind::Unspecified => return Err(DecodeError::Missing(field)),
            pb::ProfileKind::Cpu => ProfileKind::Cpu,
            pb::ProfileKind::Heap => ProfileKind::Heap,
            pb::ProfileKind::Threads => ProfileKind::Threads,
            pb::ProfileKind::Tasks => ProfileKind::Tasks,
        },
    )
}

fn kind_to_wire(kind: ProfileKind) -> i32 {
    let k = match kind {
        ProfileKind::Cpu => pb::ProfileKind::Cpu,
        ProfileKind::Heap => pb::ProfileKind::Heap,
        ProfileKind::Threads => pb::ProfileKind::Threads,
        ProfileKind::Tasks => pb::ProfileKind::Tasks,
    };
    k as i32
}

fn samples_from_wire(samples: Vec<pb::Sample>) -> Vec<Sample> {
    samples
        .into_iter()
        .map(|s| Sample {
            unix_nanos: s.unix_nanos,
            value: s.value,
        })
        .collect()
}

fn samples_to_wire(samples: &[Sample]) -> Vec<pb::Sample> {
    samples
        .iter()
        .map(|s| pb::Sample {
            unix_nanos: s.unix_nanos,
            value: s.value,
        })
        .collect()
}

impl TryFrom<pb::RuleConfig> for RuleConfig {
    type Error = DecodeError;

    fn try_from(r: pb::RuleConfig) -> Result<Self, DecodeError> {
        Ok(RuleConfig {
            metric: metric_from_wire("rule.metric", r.metric)?,
            enabled: r.enabled,
            min: r.min,
            diff: r.diff,
            abs: r.abs,
            max: r.max,
            cooldown: Duration::from_millis(r.cooldown_ms),
            window: r.window,
        })
    }
}

impl From<&RuleConfig> for pb::RuleConfig {
    fn from(r: &RuleConfig) -> Self {
        pb::RuleConfig {
            metric: metric_to_wire(r.metric),
            enabled: r.enabled,
            min: r.min,
            diff: r.diff,
            abs: r.abs,
            max: r.max,
            cooldown_ms: u64::try_from(r.cooldown.as_millis()).unwrap_or(u64::MAX),
            window: r.window,
        }
    }
}

fn rules_from_wire(rules: Vec<pb::RuleConfig>) -> Result<Vec<RuleConfig>, DecodeError> {
    rules.into_iter().map(RuleConfig::try_from).collect()
}

impl TryFrom<pb::Hello> for Hello {
    type Error = DecodeError;

    fn try_from(h: pb::Hello) -> Result<Self, DecodeError> {
        Ok(Hello {
            protocol_version: h.protocol_version,
            service: h.service,
            instance_id: h.instance_id,
            host: h.host,
            pid: h.pid,
            labels: h.labels.into_iter().collect(),
            agent_version: h.agent_version,
            rules: rules_from_wire(h.rules)?,
            started_at_unix_nanos: h.started_at_unix_nanos,
            collect_interval: Duration::from_millis(u64::from(h.collect_interval_ms)),
        })
    }
}

impl From<&Hello> for pb::Hello {
    fn from(h: &Hello) -> Self {
        pb::Hello {
            protocol_version: h.protocol_version,
            service: h.service.clone(),
            instance_id: h.instance_id.clone(),
            host: h.host.clone(),
            pid: h.pid,
            labels: h
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            agent_version: h.agent_version.clone(),
            rules: h.rules.iter().map(pb::RuleConfig::from).collect(),
            started_at_unix_nanos: h.started_at_unix_nanos,
            collect_interval_ms: u32::try_from(h.collect_interval.as_millis()).unwrap_or(u32::MAX),
        }
    }
}

impl TryFrom<pb::MetricWindow> for MetricWindow {
    type Error = DecodeError;

    fn try_from(w: pb::MetricWindow) -> Result<Self, DecodeError> {
        let mut series = Vec::with_capacity(w.series.len());
        for s in w.series {
            series.push(MetricSeries {
                metric: metric_from_wire("series.metric", s.metric)?,
                samples: samples_from_wire(s.samples),
            });
        }
        Ok(MetricWindow { series })
    }
}

impl From<&MetricWindow> for pb::MetricWindow {
    fn from(w: &MetricWindow) -> Self {
        pb::MetricWindow {
            series: w
                .series
                .iter()
                .map(|s| pb::MetricSeries {
                    metric: metric_to_wire(s.metric),
                    samples: samples_to_wire(&s.samples),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::TriggerEvent> for TriggerEvent {
    type Error = DecodeError;

    fn try_from(t: pb::TriggerEvent) -> Result<Self, DecodeError> {
        let reason = match pb::TriggerReason::try_from(t.reason) {
            Ok(pb::TriggerReason::Abs) => TriggerReason::Abs,
            Ok(pb::TriggerReason::Diff) => TriggerReason::Diff,
            Ok(pb::TriggerReason::Requested) => TriggerReason::Requested,
            Ok(pb::TriggerReason::Unspecified) => {
                return Err(DecodeError::Missing("trigger.reason"))
            }
            Err(_) => {
                return Err(DecodeError::UnknownEnum {
                    field: "trigger.reason",
                    value: t.reason,
                })
            }
        };
        if t.event_id.is_empty() {
            return Err(DecodeError::Missing("trigger.event_id"));
        }
        let metric = match reason {
            TriggerReason::Requested if t.metric == 0 => None,
            _ => Some(metric_from_wire("trigger.metric", t.metric)?),
        };
        Ok(TriggerEvent {
            event_id: t.event_id,
            metric,
            reason,
            current: t.current,
            window: samples_from_wire(t.window),
            rule: t.rule.map(RuleConfig::try_from).transpose()?,
            unix_nanos: t.unix_nanos,
            planned: t
                .planned
                .into_iter()
                .map(|k| kind_from_wire("trigger.planned", k))
                .collect::<Result<_, _>>()?,
            request_id: Some(t.request_id).filter(|r| !r.is_empty()),
        })
    }
}

impl From<&TriggerEvent> for pb::TriggerEvent {
    fn from(t: &TriggerEvent) -> Self {
        pb::TriggerEvent {
            event_id: t.event_id.clone(),
            metric: t.metric.map_or(0, metric_to_wire),
            reason: match t.reason {
                TriggerReason::Abs => pb::TriggerReason::Abs,
                TriggerReason::Diff => pb::TriggerReason::Diff,
                TriggerReason::Requested => pb::TriggerReason::Requested,
            } as i32,
            current: t.current,
            window: samples_to_wire(&t.window),
            rule: t.rule.as_ref().map(pb::RuleConfig::from),
            unix_nanos: t.unix_nanos,
            planned: t.planned.iter().copied().map(kind_to_wire).collect(),
            request_id: t.request_id.clone().unwrap_or_default(),
        }
    }
}

impl TryFrom<pb::ProfileChunk> for ProfileChunk {
    type Error = DecodeError;

    fn try_from(p: pb::ProfileChunk) -> Result<Self, DecodeError> {
        if p.profile_id.is_empty() {
            return Err(DecodeError::Missing("profile.profile_id"));
        }
        if p.chunk_count == 0 || p.chunk_index >= p.chunk_count {
            return Err(DecodeError::Invalid {
                field: "profile.chunk_index",
                why: format!("chunk {} of {}", p.chunk_index, p.chunk_count),
            });
        }
        if p.data.len() > crate::MAX_CHUNK_BYTES {
            return Err(DecodeError::Invalid {
                field: "profile.data",
                why: format!(
                    "{} bytes in one chunk, the limit is {}",
                    p.data.len(),
                    crate::MAX_CHUNK_BYTES
                ),
            });
        }
        Ok(ProfileChunk {
            profile_id: p.profile_id,
            event_id: p.event_id,
            kind: kind_from_wire("profile.kind", p.kind)?,
            chunk_index: p.chunk_index,
            chunk_count: p.chunk_count,
            total_bytes: p.total_bytes,
            data: p.data,
            started_unix_nanos: p.started_unix_nanos,
            duration: Duration::from_millis(p.duration_ms),
            error: Some(p.error).filter(|e| !e.is_empty()),
            labels: p.labels.into_iter().collect(),
        })
    }
}

impl From<&ProfileChunk> for pb::ProfileChunk {
    fn from(p: &ProfileChunk) -> Self {
        pb::ProfileChunk {
            profile_id: p.profile_id.clone(),
            event_id: p.event_id.clone(),
            kind: kind_to_wire(p.kind),
            chunk_index: p.chunk_index,
            chunk_count: p.chunk_count,
            total_bytes: p.total_bytes,
            data: p.data.clone(),
            started_unix_nanos: p.started_unix_nanos,
            duration_ms: u64::try_from(p.duration.as_millis()).unwrap_or(u64::MAX),
            error: p.error.clone().unwrap_or_default(),
            labels: p
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

impl TryFrom<pb::AgentMessage> for AgentMessage {
    type Error = DecodeError;

    fn try_from(m: pb::AgentMessage) -> Result<Self, DecodeError> {
        let body = match m.body.ok_or(DecodeError::Missing("agent message body"))? {
            agent_message::Body::Hello(h) => AgentBody::Hello(h.try_into()?),
            agent_message::Body::MetricWindow(w) => AgentBody::MetricWindow(w.try_into()?),
            agent_message::Body::Trigger(t) => AgentBody::Trigger(t.try_into()?),
            agent_message::Body::ProfileChunk(p) => AgentBody::ProfileChunk(p.try_into()?),
            agent_message::Body::Heartbeat(h) => AgentBody::Heartbeat(Heartbeat {
                unix_nanos: h.unix_nanos,
                dropped_messages: h.dropped_messages,
                unacked_messages: h.unacked_messages,
            }),
        };
        Ok(AgentMessage { seq: m.seq, body })
    }
}

impl From<&AgentMessage> for pb::AgentMessage {
    fn from(m: &AgentMessage) -> Self {
        let body = match &m.body {
            AgentBody::Hello(h) => agent_message::Body::Hello(h.into()),
            AgentBody::MetricWindow(w) => agent_message::Body::MetricWindow(w.into()),
            AgentBody::Trigger(t) => agent_message::Body::Trigger(t.into()),
            AgentBody::ProfileChunk(p) => agent_message::Body::ProfileChunk(p.into()),
            AgentBody::Heartbeat(h) => agent_message::Body::Heartbeat(pb::Heartbeat {
                unix_nanos: h.unix_nanos,
                dropped_messages: h.dropped_messages,
                unacked_messages: h.unacked_messages,
            }),
        };
        pb::AgentMessage {
            seq: m.seq,
            body: Some(body),
        }
    }
}

impl TryFrom<pb::CollectorMessage> for CollectorMessage {
    type Error = DecodeError;

    fn try_from(m: pb::CollectorMessage) -> Result<Self, DecodeError> {
        Ok(
            match m
                .body
                .ok_or(DecodeError::Missing("collector message body"))?
            {
                collector_message::Body::Ack(a) => CollectorMessage::Ack { seq: a.seq },
                collector_message::Body::ConfigUpdate(c) => {
                    CollectorMessage::ConfigUpdate(ConfigUpdate {
                        version: c.version,
                        rules: rules_from_wire(c.rules)?,
                    })
                }
                collector_message::Body::CaptureRequest(c) => {
                    CollectorMessage::CaptureRequest(CaptureRequest {
                        request_id: c.request_id,
                        kinds: c
                            .kinds
                            .into_iter()
                            .map(|k| kind_from_wire("capture.kinds", k))
                            .collect::<Result<_, _>>()?,
                        cpu_duration: Some(Duration::from_millis(u64::from(c.cpu_duration_ms)))
                            .filter(|d| !d.is_zero()),
                    })
                }
            },
        )
    }
}

impl From<&CollectorMessage> for pb::CollectorMessage {
    fn from(m: &CollectorMessage) -> Self {
        let body = match m {
            CollectorMessage::Ack { seq } => collector_message::Body::Ack(pb::Ack { seq: *seq }),
            CollectorMessage::ConfigUpdate(c) => {
                collector_message::Body::ConfigUpdate(pb::ConfigUpdate {
                    version: c.version,
                    rules: c.rules.iter().map(pb::RuleConfig::from).collect(),
                })
            }
            CollectorMessage::CaptureRequest(c) => {
                collector_message::Body::CaptureRequest(pb::CaptureRequest {
                    request_id: c.request_id.clone(),
                    kinds: c.kinds.iter().copied().map(kind_to_wire).collect(),
                    cpu_duration_ms: c
                        .cpu_duration
                        .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                })
            }
        };
        pb::CollectorMessage { body: Some(body) }
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn rule() -> RuleConfig {
        RuleConfig {
            metric: Metric::CpuPercent,
            enabled: true,
            min: 10.0,
            diff: 25.0,
            abs: 70.0,
            max: 0.0,
            cooldown: Duration::from_secs(60),
            window: 10,
        }
    }

    fn roundtrip(msg: &AgentMessage) -> AgentMessage {
        let bytes = pb::AgentMessage::from(msg).encode_to_vec();
        AgentMessage::try_from(pb::AgentMessage::decode(bytes.as_slice()).unwrap()).unwrap()
    }

    #[test]
    fn pipeline_events_round_trip_and_bad_ones_are_refused() {
        let profile = PipelineEvent {
            service: "checkout".to_owned(),
            instance_id: "checkout-1".to_owned(),
            body: PipelineBody::Profile(PipelineProfile {
                profile_id: "p1".to_owned(),
                event_id: "e1".to_owned(),
                kind: ProfileKind::Cpu,
                started_unix_nanos: 7,
                duration: Duration::from_nanos(2_000_000_001),
                labels: [("phase".to_owned(), "trigger".to_owned())].into(),
                error: None,
                // More than one chunk's worth: a whole profile travels as one event.
                data: vec![5; crate::MAX_CHUNK_BYTES + 1],
            }),
        };
        assert_eq!(PipelineEvent::decode(&profile.encode()).unwrap(), profile);
        let trigger = PipelineEvent {
            service: "checkout".to_owned(),
            instance_id: "checkout-1".to_owned(),
            body: PipelineBody::Trigger(TriggerEvent {
                event_id: "e1".to_owned(),
                metric: Some(Metric::CpuPercent),
                reason: TriggerReason::Abs,
                current: 97.5,
                window: vec![Sample {
                    unix_nanos: 1,
                    value: 3.0,
                }],
                rule: None,
                unix_nanos: 9,
                planned: vec![ProfileKind::Cpu],
                request_id: None,
            }),
        };
        assert_eq!(PipelineEvent::decode(&trigger.encode()).unwrap(), trigger);
        let mut raw = pb::PipelineEvent::from(&trigger);
        raw.body = None;
        let err = PipelineEvent::decode(&raw.encode_to_vec()).unwrap_err();
        assert_eq!(err, DecodeError::Missing("pipeline.body"));
        assert!(PipelineEvent::decode(b"\xff\xff").is_err());
    }

    #[test]
    fn every_agent_message_survives_the_wire() {
        let hello = AgentMessage {
            seq: 1,
            body: AgentBody::Hello(Hello {
                protocol_version: crate::PROTOCOL_VERSION,
                service: "checkout".into(),
                instance_id: "checkout-1".into(),
                host: "node-a".into(),
                pid: 4242,
                labels: [("region".to_owned(), "eu".to_owned())].into(),
                agent_version: "0.1.0".into(),
                rules: vec![rule()],
                started_at_unix_nanos: 7,
                collect_interval: Duration::from_secs(1),
            }),
        };
        let window = AgentMessage {
            seq: 2,
            body: AgentBody::MetricWindow(MetricWindow {
                series: vec![MetricSeries {
                    metric: Metric::RssBytes,
                    samples: vec![Sample {
                        unix_nanos: 1,
                        value: 2.5,
                    }],
                }],
            }),
        };
        let trigger = AgentMessage {
            seq: 3,
            body: AgentBody::Trigger(TriggerEvent {
                event_id: "ev-1".into(),
                metric: Some(Metric::CpuPercent),
                reason: TriggerReason::Diff,
                current: 91.0,
                window: vec![Sample {
                    unix_nanos: 3,
                    value: 91.0,
                }],
                rule: Some(rule()),
                unix_nanos: 3,
                planned: vec![ProfileKind::Cpu, ProfileKind::Threads],
                request_id: None,
            }),
        };
        let chunk = AgentMessage {
            seq: 4,
            body: AgentBody::ProfileChunk(ProfileChunk {
                profile_id: "p-1".into(),
                event_id: "ev-1".into(),
                kind: ProfileKind::Heap,
                chunk_index: 1,
                chunk_count: 2,
                total_bytes: 10,
                data: vec![1, 2, 3],
                started_unix_nanos: 5,
                duration: Duration::from_millis(300),
                error: None,
                labels: Default::default(),
            }),
        };
        let beat = AgentMessage {
            seq: 5,
            body: AgentBody::Heartbeat(Heartbeat {
                unix_nanos: 9,
                dropped_messages: 1,
                unacked_messages: 2,
            }),
        };
        for msg in [hello, window, trigger, chunk, beat] {
            assert_eq!(roundtrip(&msg), msg);
        }
    }

    #[test]
    fn every_collector_message_survives_the_wire() {
        for msg in [
            CollectorMessage::Ack { seq: 42 },
            CollectorMessage::ConfigUpdate(ConfigUpdate {
                version: 3,
                rules: vec![rule()],
            }),
            CollectorMessage::CaptureRequest(CaptureRequest {
                request_id: "r-1".into(),
                kinds: vec![ProfileKind::Cpu],
                cpu_duration: Some(Duration::from_secs(5)),
            }),
        ] {
            let bytes = pb::CollectorMessage::from(&msg).encode_to_vec();
            let back =
                CollectorMessage::try_from(pb::CollectorMessage::decode(bytes.as_slice()).unwrap())
                    .unwrap();
            assert_eq!(back, msg);
        }
    }

    #[test]
    fn rejects_what_protobuf_lets_through() {
        let empty = pb::AgentMessage { seq: 1, body: None };
        assert_eq!(
            AgentMessage::try_from(empty).unwrap_err().to_string(),
            "agent message body is missing"
        );
        let unknown_metric = pb::AgentMessage {
            seq: 1,
            body: Some(agent_message::Body::MetricWindow(pb::MetricWindow {
                series: vec![pb::MetricSeries {
                    metric: 999,
                    samples: vec![],
                }],
            })),
        };
        assert_eq!(
            AgentMessage::try_from(unknown_metric).unwrap_err(),
            DecodeError::UnknownEnum {
                field: "series.metric",
                value: 999
            }
        );
        let bad_chunk = pb::ProfileChunk {
            profile_id: "p".into(),
            kind: pb::ProfileKind::Cpu as i32,
            chunk_index: 2,
            chunk_count: 2,
            ..Default::default()
        };
        assert!(ProfileChunk::try_from(bad_chunk).is_err());
    }

    #[test]
    fn metric_names_parse_back() {
        for m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>(), Ok(m));
        }
        assert!("cpu%".parse::<Metric>().is_err());
    }
}
