//! Conversions between the generated [`crate::pb`] structs and the domain [`crate::model`].
//!
//! Domain → wire is infallible. Wire → domain checks what protobuf cannot: required
//! messages present, enum values known, chunk positions consistent.

use std::time::Duration;

use crate::model::*;
use crate::pb;
use crate::pb::agent_message;

mod control;
pub(crate) mod native;
mod pipeline;

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

pub(crate) fn metric_from_wire(field: &'static str, value: i32) -> Result<Metric, DecodeError> {
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

pub(crate) fn metric_to_wire(metric: Metric) -> i32 {
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

pub(crate) fn kind_from_wire(field: &'static str, value: i32) -> Result<ProfileKind, DecodeError> {
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

pub(crate) fn kind_to_wire(kind: ProfileKind) -> i32 {
    let k = match kind {
        ProfileKind::Cpu => pb::ProfileKind::Cpu,
        ProfileKind::Heap => pb::ProfileKind::Heap,
        ProfileKind::Threads => pb::ProfileKind::Threads,
        ProfileKind::Tasks => pb::ProfileKind::Tasks,
    };
    k as i32
}

pub(crate) fn format_from_wire(
    field: &'static str,
    value: i32,
) -> Result<ProfileFormat, DecodeError> {
    match pb::ProfileFormat::try_from(value) {
        Ok(pb::ProfileFormat::PprofGzip) => Ok(ProfileFormat::PprofGzip),
        Ok(pb::ProfileFormat::Native) => Ok(ProfileFormat::Native),
        Ok(pb::ProfileFormat::NativeStream) => Ok(ProfileFormat::NativeStream),
        Err(_) => Err(DecodeError::UnknownEnum { field, value }),
    }
}

pub(crate) fn format_to_wire(format: ProfileFormat) -> i32 {
    match format {
        ProfileFormat::PprofGzip => pb::ProfileFormat::PprofGzip as i32,
        ProfileFormat::Native => pb::ProfileFormat::Native as i32,
        ProfileFormat::NativeStream => pb::ProfileFormat::NativeStream as i32,
    }
}

pub(crate) fn kinds_from_wire(
    field: &'static str,
    kinds: Vec<i32>,
) -> Result<Vec<ProfileKind>, DecodeError> {
    kinds
        .into_iter()
        .map(|k| kind_from_wire(field, k))
        .collect()
}

pub(crate) fn kinds_to_wire(kinds: &[ProfileKind]) -> Vec<i32> {
    kinds.iter().copied().map(kind_to_wire).collect()
}

fn module_from_wire(m: pb::Module) -> Module {
    Module {
        name: m.name,
        build_id: m.build_id,
    }
}

pub(crate) fn module_to_wire(m: &Module) -> pb::Module {
    pb::Module {
        name: m.name.clone(),
        build_id: m.build_id.clone(),
    }
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

pub(crate) fn rules_from_wire(rules: Vec<pb::RuleConfig>) -> Result<Vec<RuleConfig>, DecodeError> {
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
            rules_version: h.rules_version,
            executable: h.executable.map(module_from_wire),
            debuginfo_upload: h.debuginfo_upload,
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
            rules_version: h.rules_version,
            executable: h.executable.as_ref().map(module_to_wire),
            debuginfo_upload: h.debuginfo_upload,
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
            Ok(pb::TriggerReason::Baseline) => TriggerReason::Baseline,
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
            TriggerReason::Requested | TriggerReason::Baseline if t.metric == 0 => None,
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
                TriggerReason::Baseline => pb::TriggerReason::Baseline,
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
            format: format_from_wire("profile.format", p.format)?,
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
            format: format_to_wire(p.format),
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
                rules_version: h.rules_version,
            }),
            agent_message::Body::ConfigApplied(c) => AgentBody::ConfigApplied(c.try_into()?),
            agent_message::Body::CaptureOutcome(c) => AgentBody::CaptureOutcome(c.try_into()?),
            agent_message::Body::DebuginfoChunk(c) => AgentBody::DebugInfoChunk(c.try_into()?),
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
                rules_version: h.rules_version,
            }),
            AgentBody::ConfigApplied(c) => agent_message::Body::ConfigApplied(c.into()),
            AgentBody::CaptureOutcome(c) => agent_message::Body::CaptureOutcome(c.into()),
            AgentBody::DebugInfoChunk(c) => agent_message::Body::DebuginfoChunk(c.into()),
        };
        pb::AgentMessage {
            seq: m.seq,
            body: Some(body),
        }
    }
}

#[cfg(test)]
mod tests;
