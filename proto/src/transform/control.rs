//! The control plane to and from the domain: what the collector asks of agents (rules,
//! captures, debug info, skips) and what agents answer (applied rules, capture outcomes,
//! debug info chunks).

use std::time::Duration;

use super::{
    kind_from_wire, kind_to_wire, kinds_from_wire, kinds_to_wire, metric_from_wire, metric_to_wire,
    rules_from_wire, DecodeError,
};
use crate::model::*;
use crate::pb;
use crate::pb::collector_message;

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
                        replace: c.replace,
                        pause: (c.captures_paused_until_unix_nanos != 0).then_some(CapturePause {
                            until_unix_nanos: c.captures_paused_until_unix_nanos,
                            reason: c.pause_reason,
                        }),
                    })
                }
                collector_message::Body::CaptureRequest(c) => {
                    CollectorMessage::CaptureRequest(capture_request_from_wire(c)?)
                }
                collector_message::Body::DebuginfoRequest(d) => {
                    if d.build_id.is_empty() {
                        return Err(DecodeError::Missing("debuginfo_request.build_id"));
                    }
                    CollectorMessage::DebugInfoRequest(DebugInfoRequest {
                        build_id: d.build_id,
                        offset: d.offset,
                    })
                }
                collector_message::Body::SkipProfiles(s) => {
                    if s.event_id.is_empty() {
                        return Err(DecodeError::Missing("skip_profiles.event_id"));
                    }
                    CollectorMessage::SkipProfiles(SkipProfiles {
                        event_id: s.event_id,
                        kinds: kinds_from_wire("skip_profiles.kinds", s.kinds)?,
                    })
                }
            },
        )
    }
}

fn capture_request_from_wire(c: pb::CaptureRequest) -> Result<CaptureRequest, DecodeError> {
    let purpose = match pb::CapturePurpose::try_from(c.purpose) {
        Ok(pb::CapturePurpose::Unspecified | pb::CapturePurpose::Operator) => {
            CapturePurpose::Operator
        }
        Ok(pb::CapturePurpose::Control) => CapturePurpose::Control,
        Ok(pb::CapturePurpose::Alert) => CapturePurpose::Alert,
        Err(_) => {
            return Err(DecodeError::UnknownEnum {
                field: "capture.purpose",
                value: c.purpose,
            })
        }
    };
    let window = match (c.window_start_unix_nanos, c.window_end_unix_nanos) {
        (0, 0) => None,
        (start, end) if start < end => Some(TimeWindow {
            start_unix_nanos: start,
            end_unix_nanos: end,
        }),
        (start, end) => {
            return Err(DecodeError::Invalid {
                field: "capture.window",
                why: format!("start {start} is not before end {end}"),
            })
        }
    };
    Ok(CaptureRequest {
        request_id: c.request_id,
        kinds: kinds_from_wire("capture.kinds", c.kinds)?,
        cpu_duration: Some(Duration::from_millis(u64::from(c.cpu_duration_ms)))
            .filter(|d| !d.is_zero()),
        purpose,
        window,
        incident_id: Some(c.incident_id).filter(|i| !i.is_empty()),
    })
}

impl From<&CollectorMessage> for pb::CollectorMessage {
    fn from(m: &CollectorMessage) -> Self {
        let body = match m {
            CollectorMessage::Ack { seq } => collector_message::Body::Ack(pb::Ack { seq: *seq }),
            CollectorMessage::ConfigUpdate(c) => {
                collector_message::Body::ConfigUpdate(pb::ConfigUpdate {
                    version: c.version,
                    rules: c.rules.iter().map(pb::RuleConfig::from).collect(),
                    replace: c.replace,
                    captures_paused_until_unix_nanos: c
                        .pause
                        .as_ref()
                        .map_or(0, |p| p.until_unix_nanos),
                    pause_reason: c
                        .pause
                        .as_ref()
                        .map(|p| p.reason.clone())
                        .unwrap_or_default(),
                })
            }
            CollectorMessage::CaptureRequest(c) => {
                collector_message::Body::CaptureRequest(pb::CaptureRequest {
                    request_id: c.request_id.clone(),
                    kinds: kinds_to_wire(&c.kinds),
                    cpu_duration_ms: c
                        .cpu_duration
                        .map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
                    purpose: match c.purpose {
                        CapturePurpose::Operator => pb::CapturePurpose::Operator,
                        CapturePurpose::Control => pb::CapturePurpose::Control,
                        CapturePurpose::Alert => pb::CapturePurpose::Alert,
                    } as i32,
                    window_start_unix_nanos: c.window.map_or(0, |w| w.start_unix_nanos),
                    window_end_unix_nanos: c.window.map_or(0, |w| w.end_unix_nanos),
                    incident_id: c.incident_id.clone().unwrap_or_default(),
                })
            }
            CollectorMessage::DebugInfoRequest(d) => {
                collector_message::Body::DebuginfoRequest(pb::DebugInfoRequest {
                    build_id: d.build_id.clone(),
                    offset: d.offset,
                })
            }
            CollectorMessage::SkipProfiles(s) => {
                collector_message::Body::SkipProfiles(pb::SkipProfiles {
                    event_id: s.event_id.clone(),
                    kinds: kinds_to_wire(&s.kinds),
                })
            }
        };
        pb::CollectorMessage { body: Some(body) }
    }
}

impl TryFrom<pb::ConfigApplied> for ConfigApplied {
    type Error = DecodeError;

    fn try_from(c: pb::ConfigApplied) -> Result<Self, DecodeError> {
        Ok(ConfigApplied {
            version: c.version,
            refused: c
                .refused
                .into_iter()
                .map(|r| {
                    Ok(RuleRefusal {
                        metric: metric_from_wire("config_applied.refused.metric", r.metric)?,
                        reason: r.reason,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
        })
    }
}

impl From<&ConfigApplied> for pb::ConfigApplied {
    fn from(c: &ConfigApplied) -> Self {
        pb::ConfigApplied {
            version: c.version,
            refused: c
                .refused
                .iter()
                .map(|r| pb::RuleRefusal {
                    metric: metric_to_wire(r.metric),
                    reason: r.reason.clone(),
                })
                .collect(),
        }
    }
}

fn reason_from_wire(value: i32) -> RefusalReason {
    match pb::RefusalReason::try_from(value) {
        Ok(pb::RefusalReason::Busy) => RefusalReason::Busy,
        Ok(pb::RefusalReason::CpuMax) => RefusalReason::CpuMax,
        Ok(pb::RefusalReason::RateLimited) => RefusalReason::RateLimited,
        Ok(pb::RefusalReason::Paused) => RefusalReason::Paused,
        Ok(pb::RefusalReason::Unsupported) => RefusalReason::Unsupported,
        Ok(pb::RefusalReason::Failed) => RefusalReason::Failed,
        Ok(pb::RefusalReason::Unspecified) | Err(_) => RefusalReason::Other,
    }
}

fn reason_to_wire(reason: RefusalReason) -> i32 {
    (match reason {
        RefusalReason::Busy => pb::RefusalReason::Busy,
        RefusalReason::CpuMax => pb::RefusalReason::CpuMax,
        RefusalReason::RateLimited => pb::RefusalReason::RateLimited,
        RefusalReason::Paused => pb::RefusalReason::Paused,
        RefusalReason::Unsupported => pb::RefusalReason::Unsupported,
        RefusalReason::Failed => pb::RefusalReason::Failed,
        RefusalReason::Other => pb::RefusalReason::Unspecified,
    }) as i32
}

impl TryFrom<pb::CaptureOutcome> for CaptureOutcome {
    type Error = DecodeError;

    fn try_from(c: pb::CaptureOutcome) -> Result<Self, DecodeError> {
        if c.request_id.is_empty() {
            return Err(DecodeError::Missing("capture_outcome.request_id"));
        }
        Ok(CaptureOutcome {
            request_id: c.request_id,
            event_id: Some(c.event_id).filter(|e| !e.is_empty()),
            captured: kinds_from_wire("capture_outcome.captured", c.captured)?,
            refused: c
                .refused
                .into_iter()
                .map(|r| {
                    Ok(CaptureRefusal {
                        kind: kind_from_wire("capture_outcome.refused.kind", r.kind)?,
                        reason: reason_from_wire(r.reason),
                        detail: r.detail,
                    })
                })
                .collect::<Result<_, DecodeError>>()?,
        })
    }
}

impl From<&CaptureOutcome> for pb::CaptureOutcome {
    fn from(c: &CaptureOutcome) -> Self {
        pb::CaptureOutcome {
            request_id: c.request_id.clone(),
            event_id: c.event_id.clone().unwrap_or_default(),
            captured: kinds_to_wire(&c.captured),
            refused: c
                .refused
                .iter()
                .map(|r| pb::CaptureRefusal {
                    kind: kind_to_wire(r.kind),
                    reason: reason_to_wire(r.reason),
                    detail: r.detail.clone(),
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::DebugInfoChunk> for DebugInfoChunk {
    type Error = DecodeError;

    fn try_from(c: pb::DebugInfoChunk) -> Result<Self, DecodeError> {
        if c.build_id.is_empty() {
            return Err(DecodeError::Missing("debuginfo_chunk.build_id"));
        }
        if c.data.len() > crate::MAX_CHUNK_BYTES {
            return Err(DecodeError::Invalid {
                field: "debuginfo_chunk.data",
                why: format!(
                    "{} bytes in one chunk, the limit is {}",
                    c.data.len(),
                    crate::MAX_CHUNK_BYTES
                ),
            });
        }
        let end = c.offset.checked_add(c.data.len() as u64);
        if end.is_none_or(|end| end > c.total_bytes) {
            return Err(DecodeError::Invalid {
                field: "debuginfo_chunk.offset",
                why: format!(
                    "{} bytes at offset {} do not fit in {} bytes",
                    c.data.len(),
                    c.offset,
                    c.total_bytes
                ),
            });
        }
        Ok(DebugInfoChunk {
            build_id: c.build_id,
            offset: c.offset,
            total_bytes: c.total_bytes,
            data: c.data,
        })
    }
}

impl From<&DebugInfoChunk> for pb::DebugInfoChunk {
    fn from(c: &DebugInfoChunk) -> Self {
        pb::DebugInfoChunk {
            build_id: c.build_id.clone(),
            offset: c.offset,
            total_bytes: c.total_bytes,
            data: c.data.clone(),
        }
    }
}
