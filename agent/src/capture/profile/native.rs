//! From gathered samples to the agent's own `holmes.v1.NativeProfile` for the collector:
//! every code address a module (file name, build id) and the offset in it, no debug
//! info read; each module, location and stack stored once, samples referring to stacks.
//! Whole stacks are sent (allocator frames included): naming and trimming frames is the
//! collector's, once per build.

use std::collections::HashMap;

use holmes_proto::native::{
    Location, NativeProfile, NativeSample, ProfileLabel, SymbolicFrame, ValueType,
};
use holmes_proto::Module;

use super::{Labels, OwnedLabelValue, ProfileBuilder, Stack};
use crate::capture::symbolize::modules::Resolver;

/// The function of a location whose address lies in no loaded module (generated code,
/// or a frame pointer that pointed at garbage).
pub(crate) const UNKNOWN_FUNCTION: &str = "[unknown]";

impl ProfileBuilder {
    /// The profile with module-relative locations, identical stacks and samples merged.
    pub(crate) fn encode_native(&self) -> NativeProfile {
        let mut resolver = Resolver::new();
        let mut t = Tables::default();
        let mut samples: Vec<NativeSample> = Vec::new();
        // (stack, labels) → index into `samples`.
        let mut merged: HashMap<(u32, &Labels), usize> = HashMap::new();
        for (key, values) in &self.samples {
            let stack: Vec<u32> = match &key.stack {
                Stack::Addresses(code) => code
                    .iter()
                    .map(|&addr| t.address(&mut resolver, addr))
                    .collect(),
                Stack::Frames(frames) => frames
                    .iter()
                    .map(|f| {
                        t.location(Location::Symbolic(vec![SymbolicFrame {
                            function: f.function.clone(),
                            file: f.file.clone(),
                            line: f.line,
                        }]))
                    })
                    .collect(),
            };
            let stack = t.stack(stack);
            match merged.get(&(stack, &key.labels)) {
                Some(&i) => {
                    if let Some(sample) = samples.get_mut(i) {
                        super::add_values(&mut sample.values, values);
                    }
                }
                None => {
                    merged.insert((stack, &key.labels), samples.len());
                    samples.push(NativeSample {
                        stack,
                        values: values.clone(),
                        labels: key.labels.iter().map(|(k, v)| label(k, v)).collect(),
                    });
                }
            }
        }
        let value_type = |(name, unit): &(String, String)| ValueType::new(name, unit);
        NativeProfile {
            sample_types: self.sample_types.iter().map(value_type).collect(),
            period_type: value_type(&self.period_type),
            period: self.period,
            time_unix_nanos: u64::try_from(self.time_nanos).unwrap_or(0),
            duration_nanos: u64::try_from(self.duration_nanos).unwrap_or(0),
            comments: self
                .comments
                .iter()
                .cloned()
                .chain(self.limit_notes())
                .collect(),
            modules: t.modules,
            locations: t.locations,
            stacks: t.stacks,
            samples,
        }
    }
}

fn label(key: &str, value: &OwnedLabelValue) -> ProfileLabel {
    match value {
        OwnedLabelValue::Str(s) => ProfileLabel {
            key: key.to_owned(),
            str: s.clone(),
            ..ProfileLabel::default()
        },
        OwnedLabelValue::Num(n, unit) => ProfileLabel {
            key: key.to_owned(),
            num: *n,
            unit: unit.clone(),
            ..ProfileLabel::default()
        },
    }
}

/// The profile's tables, each entry stored once.
#[derive(Default)]
struct Tables {
    modules: Vec<Module>,
    module_index: HashMap<Module, u32>,
    locations: Vec<Location>,
    location_index: HashMap<Location, u32>,
    /// Code address → location, so each address is looked up once.
    addresses: HashMap<usize, u32>,
    stacks: Vec<Vec<u32>>,
    stack_index: HashMap<Vec<u32>, u32>,
}

impl Tables {
    fn address(&mut self, resolver: &mut Resolver, addr: usize) -> u32 {
        if let Some(&i) = self.addresses.get(&addr) {
            return i;
        }
        let found = resolver
            .find(addr)
            .and_then(|(m, offset)| Some((resolver.map().get(m)?.module.clone(), offset)));
        let location = match found {
            Some((module, offset)) => Location::Native {
                module: self.module(module),
                offset,
            },
            None => Location::Symbolic(vec![SymbolicFrame {
                function: UNKNOWN_FUNCTION.to_owned(),
                file: String::new(),
                line: 0,
            }]),
        };
        let i = self.location(location);
        self.addresses.insert(addr, i);
        i
    }

    fn module(&mut self, module: Module) -> u32 {
        if let Some(&i) = self.module_index.get(&module) {
            return i;
        }
        let i = index(self.modules.len());
        self.module_index.insert(module.clone(), i);
        self.modules.push(module);
        i
    }

    fn location(&mut self, location: Location) -> u32 {
        if let Some(&i) = self.location_index.get(&location) {
            return i;
        }
        let i = index(self.locations.len());
        self.location_index.insert(location.clone(), i);
        self.locations.push(location);
        i
    }

    fn stack(&mut self, stack: Vec<u32>) -> u32 {
        if let Some(&i) = self.stack_index.get(&stack) {
            return i;
        }
        let i = index(self.stacks.len());
        self.stack_index.insert(stack.clone(), i);
        self.stacks.push(stack);
        i
    }
}

/// A table index; tables are bounded far below `u32::MAX` (samples, stacks and their
/// depth are capped), so this never saturates in practice.
fn index(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests;
