//! The agent's own profile format ([`NativeProfile`], `holmes.v1.NativeProfile` on the
//! wire): what a Holmes agent sends a collector instead of gzipped pprof.
//!
//! Stacks are lists of locations, each stack once per profile, and samples refer to
//! them by index, so the collector has nothing to inflate and no string table to decode.
//! A location is either native — a module (file name and GNU build id) and the offset
//! in it, the same in every process of one build whatever ASLR did — or already
//! symbolic (task dumps, frames the agent named itself). The collector names native
//! locations from the module's debug info.

pub mod stream;

use crate::model::Module;
use crate::transform::DecodeError;

/// A profile in the agent's own form. [`NativeProfile::decode`] checks every index.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NativeProfile {
    /// What each value of a sample measures.
    pub sample_types: Vec<ValueType>,
    /// What one period is.
    pub period_type: ValueType,
    /// The sampling period, in `period_type` units.
    pub period: i64,
    /// Start, nanoseconds since the Unix epoch.
    pub time_unix_nanos: u64,
    /// Length, nanoseconds.
    pub duration_nanos: u64,
    /// Free-form notes.
    pub comments: Vec<String>,
    /// Modules native locations point into.
    pub modules: Vec<Module>,
    /// Locations the stacks use.
    pub locations: Vec<Location>,
    /// Stacks: location indexes, leaf first.
    pub stacks: Vec<Vec<u32>>,
    /// Samples.
    pub samples: Vec<NativeSample>,
}

/// The type and unit of a value, e.g. `cpu`/`nanoseconds`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ValueType {
    /// What is measured.
    pub name: String,
    /// In which unit.
    pub unit: String,
}

impl ValueType {
    /// A value type from its two names.
    pub fn new(name: impl Into<String>, unit: impl Into<String>) -> Self {
        ValueType {
            name: name.into(),
            unit: unit.into(),
        }
    }
}

/// One stack entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// Code in a module, to be named by the collector.
    Native {
        /// Index into [`NativeProfile::modules`].
        module: u32,
        /// The address as the module sees it (runtime address minus load bias); for a
        /// return address, the call instruction.
        offset: u64,
    },
    /// Frames already named, innermost (inlined) first; never empty.
    Symbolic(Vec<SymbolicFrame>),
}

/// A named frame.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SymbolicFrame {
    /// Full path, e.g. `checkout::cart::total`.
    pub function: String,
    /// Source file ("" when unknown).
    pub file: String,
    /// Line (0 when unknown).
    pub line: u32,
}

/// One sample.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NativeSample {
    /// Index into [`NativeProfile::stacks`].
    pub stack: u32,
    /// One value per sample type.
    pub values: Vec<i64>,
    /// Labels, as pprof has them.
    pub labels: Vec<ProfileLabel>,
}

/// A sample label as pprof has it: a string, or a number with its unit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct ProfileLabel {
    /// The key.
    pub key: String,
    /// A string value ("" for a number).
    pub str: String,
    /// A number.
    pub num: i64,
    /// The number's unit ("" for a string).
    pub unit: String,
}

impl NativeProfile {
    /// The profile as protobuf bytes (`holmes.v1.NativeProfile`).
    pub fn encode(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&crate::pb::NativeProfile::from(self))
    }

    /// Decodes and checks bytes from [`NativeProfile::encode`]: every index points at
    /// something, every sample has one value per sample type, every symbolic location
    /// has a frame.
    pub fn decode(bytes: &[u8]) -> Result<NativeProfile, DecodeError> {
        let raw: crate::pb::NativeProfile =
            prost::Message::decode(bytes).map_err(|e| DecodeError::Invalid {
                field: "native profile",
                why: e.to_string(),
            })?;
        let profile = NativeProfile::from(raw);
        profile.check()?;
        Ok(profile)
    }

    /// Checks the references between tables.
    pub fn check(&self) -> Result<(), DecodeError> {
        let modules = self.modules.len();
        for (i, location) in self.locations.iter().enumerate() {
            match location {
                Location::Native { module, .. } if *module as usize >= modules => {
                    return Err(DecodeError::Invalid {
                        field: "native profile location.module",
                        why: format!("location {i} names module {module} of {modules}"),
                    })
                }
                Location::Symbolic(frames) if frames.is_empty() => {
                    return Err(DecodeError::Invalid {
                        field: "native profile location.symbolic",
                        why: format!("location {i} has no frame"),
                    })
                }
                _ => {}
            }
        }
        let locations = self.locations.len();
        for (i, stack) in self.stacks.iter().enumerate() {
            if let Some(bad) = stack.iter().find(|l| **l as usize >= locations) {
                return Err(DecodeError::Invalid {
                    field: "native profile stack.locations",
                    why: format!("stack {i} names location {bad} of {locations}"),
                });
            }
        }
        let stacks = self.stacks.len();
        let types = self.sample_types.len();
        for (i, sample) in self.samples.iter().enumerate() {
            if sample.stack as usize >= stacks {
                return Err(DecodeError::Invalid {
                    field: "native profile sample.stack",
                    why: format!("sample {i} names stack {} of {stacks}", sample.stack),
                });
            }
            if sample.values.len() != types {
                return Err(DecodeError::Invalid {
                    field: "native profile sample.values",
                    why: format!(
                        "sample {i} has {} values for {types} sample types",
                        sample.values.len()
                    ),
                });
            }
        }
        Ok(())
    }
}
