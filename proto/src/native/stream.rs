//! The stream form of a [`NativeProfile`] (`PROFILE_FORMAT_NATIVE_STREAM` on the wire):
//! the profile's modules, locations and stacks are appended to tables its stream keeps,
//! and only what the stream has not had yet is sent. A stack is defined once per stream;
//! a profile of known stacks is its header and its samples.
//!
//! An agent sends it only to a collector that announced it: the collector answers
//! `connect` with the [`STREAM_HEADER`] metadata. The tables live as long as the stream:
//! a new stream starts them empty, and the agent resends whatever was not acknowledged
//! with its definitions again. Profiles queue and spool self-contained; the sender turns
//! each into the stream form as it goes out ([`StreamEncoder`]).

use std::collections::HashMap;

use super::{Location, NativeProfile};
use crate::model::Module;
use crate::pb;
use crate::transform::module_to_wire;
use crate::transform::native::{label_to_wire, location_to_wire, value_type_to_wire};

/// The `connect` response metadata by which a collector says it reads the stream form.
pub const STREAM_HEADER: &str = "holmes-native-stream";
/// Most modules a stream's tables hold.
pub const MAX_STREAM_MODULES: usize = 1 << 12;
/// Most locations a stream's tables hold.
pub const MAX_STREAM_LOCATIONS: usize = 1 << 18;
/// Most stacks a stream's tables hold.
pub const MAX_STREAM_STACKS: usize = 1 << 17;
/// Locations a sender's tables of a stream hold before they start over
/// ([`StreamEncoder::sender`]): with [`SENDER_STREAM_STACKS`], what bounds the agent's
/// memory of a stream (a few MiB).
pub const SENDER_STREAM_LOCATIONS: usize = 1 << 16;
/// Stacks a sender's tables of a stream hold before they start over.
pub const SENDER_STREAM_STACKS: usize = 1 << 14;

/// The sender's side of one stream's tables: what it has defined, by content.
#[derive(Debug)]
pub struct StreamEncoder {
    modules: HashMap<Module, u32>,
    locations: HashMap<Location, u32>,
    stacks: HashMap<Vec<u32>, u32>,
    max_locations: usize,
    max_stacks: usize,
}

impl Default for StreamEncoder {
    fn default() -> Self {
        StreamEncoder::bounded(MAX_STREAM_LOCATIONS, MAX_STREAM_STACKS)
    }
}

impl StreamEncoder {
    /// The tables of a new stream: empty, up to the protocol's caps.
    pub fn new() -> Self {
        StreamEncoder::default()
    }

    /// The tables of a new stream, started over before they hold more than
    /// `max_locations` locations or `max_stacks` stacks (at most the protocol's caps):
    /// what bounds the sender's memory.
    pub fn bounded(max_locations: usize, max_stacks: usize) -> Self {
        StreamEncoder {
            modules: HashMap::new(),
            locations: HashMap::new(),
            stacks: HashMap::new(),
            max_locations: max_locations.min(MAX_STREAM_LOCATIONS),
            max_stacks: max_stacks.min(MAX_STREAM_STACKS),
        }
    }

    /// The tables of a new stream as the agent keeps them: bounded by
    /// [`SENDER_STREAM_LOCATIONS`] and [`SENDER_STREAM_STACKS`].
    pub fn sender() -> Self {
        StreamEncoder::bounded(SENDER_STREAM_LOCATIONS, SENDER_STREAM_STACKS)
    }

    /// Stacks defined on the stream so far.
    pub fn stacks(&self) -> usize {
        self.stacks.len()
    }

    /// Whether `profile` alone fits a stream's tables; one that does not goes
    /// self-contained.
    pub fn fits(profile: &NativeProfile) -> bool {
        profile.modules.len() <= MAX_STREAM_MODULES
            && profile.locations.len() <= MAX_STREAM_LOCATIONS
            && profile.stacks.len() <= MAX_STREAM_STACKS
    }

    /// `profile` in the stream form: its samples, and the modules, locations and stacks
    /// they use that the stream has not had. The reader must have read every profile
    /// this encoder encoded before, in order. When the tables would outgrow their
    /// bounds they start over, and the profile says so (`stream_reset`). Check
    /// [`StreamEncoder::fits`] first.
    pub fn encode(&mut self, profile: &NativeProfile) -> Vec<u8> {
        let reset = self.modules.len() + profile.modules.len() > MAX_STREAM_MODULES
            || self.locations.len() + profile.locations.len() > self.max_locations
            || self.stacks.len() + profile.stacks.len() > self.max_stacks;
        if reset {
            *self = StreamEncoder::bounded(self.max_locations, self.max_stacks);
        }
        let mut out = pb::NativeProfile {
            sample_types: profile
                .sample_types
                .iter()
                .map(value_type_to_wire)
                .collect(),
            period_type: Some(value_type_to_wire(&profile.period_type)),
            period: profile.period,
            time_unix_nanos: profile.time_unix_nanos,
            duration_nanos: profile.duration_nanos,
            comments: profile.comments.clone(),
            stream_reset: reset,
            ..pb::NativeProfile::default()
        };
        let modules: Vec<u32> = profile
            .modules
            .iter()
            .map(|m| {
                let next = self.modules.len() as u32;
                let index = *self.modules.entry(m.clone()).or_insert(next);
                if index == next {
                    out.modules.push(module_to_wire(m));
                }
                index
            })
            .collect();
        out.profile_modules.clone_from(&modules);
        out.module_limits = vec![0; modules.len()];
        for l in &profile.locations {
            if let Location::Native { module, offset } = l {
                if let Some(limit) = out.module_limits.get_mut(*module as usize) {
                    *limit = (*limit).max(offset.saturating_add(1));
                }
            }
        }
        let locations: Vec<u32> = profile
            .locations
            .iter()
            .map(|l| {
                // A native location names its module by its stream index.
                let key = match l {
                    Location::Native { module, offset } => Location::Native {
                        module: modules.get(*module as usize).copied().unwrap_or(u32::MAX),
                        offset: *offset,
                    },
                    Location::Symbolic(_) => {
                        if let Some(&index) = self.locations.get(l) {
                            return index;
                        }
                        l.clone()
                    }
                };
                let next = self.locations.len() as u32;
                let wire = (!self.locations.contains_key(&key)).then(|| location_to_wire(&key));
                let index = *self.locations.entry(key).or_insert(next);
                if let Some(wire) = wire {
                    out.locations.push(wire);
                }
                index
            })
            .collect();
        let stacks: Vec<u32> = profile
            .stacks
            .iter()
            .map(|stack| {
                let key: Vec<u32> = stack
                    .iter()
                    .map(|&l| locations.get(l as usize).copied().unwrap_or(u32::MAX))
                    .collect();
                if let Some(&index) = self.stacks.get(&key) {
                    return index;
                }
                let index = self.stacks.len() as u32;
                out.stacks.push(pb::NativeStack {
                    locations: key.clone(),
                });
                self.stacks.insert(key, index);
                index
            })
            .collect();
        out.samples = profile
            .samples
            .iter()
            .map(|s| pb::NativeSample {
                stack: stacks.get(s.stack as usize).copied().unwrap_or(u32::MAX),
                values: s.values.clone(),
                labels: s.labels.iter().map(label_to_wire).collect(),
            })
            .collect();
        prost::Message::encode_to_vec(&out)
    }
}

#[cfg(test)]
mod tests;
