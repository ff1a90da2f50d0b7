//! The durable messages the agent sends, by kind, in the order they are dropped when a
//! cap is reached, with the size they are counted at.

use holmes_proto::AgentBody;

/// What a message is, in the order messages are dropped when a cap is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Window,
    Trigger,
    Profile,
}

impl Kind {
    /// The kind of a durable message; `None` for hello and heartbeat.
    pub(crate) fn of(body: &AgentBody) -> Option<Kind> {
        match body {
            AgentBody::MetricWindow(_) => Some(Kind::Window),
            AgentBody::Trigger(_) => Some(Kind::Trigger),
            AgentBody::ProfileChunk(_) => Some(Kind::Profile),
            AgentBody::Hello(_)
            | AgentBody::Heartbeat(_)
            | AgentBody::ConfigApplied(_)
            | AgentBody::CaptureOutcome(_)
            | AgentBody::DebugInfoChunk(_) => None,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Window => "metric_window",
            Kind::Trigger => "trigger",
            Kind::Profile => "profile_chunk",
        }
    }
}

/// Rough wire size of a message held in memory, for the memory cap.
pub(crate) fn approx_bytes(body: &AgentBody) -> u64 {
    const OVERHEAD: usize = 64;
    (OVERHEAD
        + match body {
            AgentBody::MetricWindow(w) => w.series.iter().map(|s| 8 + s.samples.len() * 20).sum(),
            AgentBody::ProfileChunk(p) => p.data.len() + 128,
            AgentBody::Trigger(t) => 256 + t.window.len() * 20,
            AgentBody::DebugInfoChunk(c) => c.data.len(),
            AgentBody::Hello(_)
            | AgentBody::Heartbeat(_)
            | AgentBody::ConfigApplied(_)
            | AgentBody::CaptureOutcome(_) => 0,
        }) as u64
}
