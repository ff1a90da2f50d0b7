//! The agent's stream form (`holmes_proto::native::stream`): a `NativeProfile` whose
//! modules, locations and stacks extend the tables of its stream. [`StreamTables`] holds
//! one stream's tables and turns each of its profiles into contents whose stacks and
//! locations carry their stream numbers as [`TableKeys`], so that the store numbers the
//! ones it has seen on this stream without hashing them, and nothing of a known stack
//! is decoded.
//!
//! A profile's definitions join the tables only once all of them check (modules,
//! locations naming a module, stacks naming locations, within the depth limit and the
//! stream caps); a profile whose definitions do not check is refused and leaves the
//! tables as they were. One whose samples do not check (a stack the stream does not
//! have, a wrong number of values) is refused with its definitions kept, as its sender
//! counts them sent. The tables hold at most `MAX_STREAM_*` entries, and symbolic
//! frames count against [`Limits::max_materialized_bytes`] for the whole stream.

use std::collections::HashMap;

use holmes_proto::native::stream::{MAX_STREAM_LOCATIONS, MAX_STREAM_MODULES, MAX_STREAM_STACKS};
use holmes_proto::Module;
use holmes_storage::{Location, Mapping, ProfileContents, StackFrame, TableKeys};

use super::native::{header_field, label, location, module, sample_fields, Raw};
use super::wire::Fields;
use super::{too_many, Builder, Limits, NormalizeError};

/// A location in a stream's tables: a module by its stream index, or frames.
#[derive(Debug)]
enum StreamLocation {
    Native { module: u32, offset: u64 },
    Symbolic(Vec<StackFrame>),
}

impl StreamLocation {
    /// Frames it stands for, inlined ones counted.
    fn depth(&self) -> usize {
        match self {
            StreamLocation::Native { .. } => 1,
            StreamLocation::Symbolic(frames) => frames.len(),
        }
    }
}

/// Where a stream entry went in the contents being built: valid when `stamp` is the
/// current profile's.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    stamp: u32,
    index: u32,
}

/// One stream's tables, as its stream-form profiles built them (see the module docs).
#[derive(Debug)]
pub struct StreamTables {
    scope: u64,
    modules: Vec<Module>,
    locations: Vec<StreamLocation>,
    stacks: Vec<Box<[u32]>>,
    /// Bytes of symbolic frames held, against `Limits::max_materialized_bytes`.
    frame_bytes: u64,
    /// The profile being built: where each module, location and stack went.
    stamp: u32,
    module_slots: Vec<Slot>,
    location_slots: Vec<Slot>,
    stack_slots: Vec<Slot>,
}

impl Default for StreamTables {
    fn default() -> Self {
        StreamTables::new()
    }
}

impl StreamTables {
    /// The tables of a new stream: empty.
    pub fn new() -> Self {
        StreamTables {
            scope: TableKeys::new_scope(),
            modules: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::new(),
            frame_bytes: 0,
            stamp: 0,
            module_slots: Vec::new(),
            location_slots: Vec::new(),
            stack_slots: Vec::new(),
        }
    }

    /// Stacks the stream has defined.
    pub fn stacks(&self) -> usize {
        self.stacks.len()
    }

    /// Reads the stream's next profile: its definitions into the tables, its samples
    /// into contents of the stacks they use.
    pub fn decode(
        &mut self,
        data: &[u8],
        limits: Limits,
    ) -> Result<ProfileContents, NormalizeError> {
        let mut b = Builder::new(limits);
        let mut modules: Vec<Module> = Vec::new();
        let mut locations: Vec<Raw> = Vec::new();
        let mut stacks: Vec<&[u8]> = Vec::new();
        let mut samples: Vec<&[u8]> = Vec::new();
        let mut reset = false;
        for field in Fields::new(data) {
            let (number, x) = field?;
            if header_field(&mut b, number, x)? {
                continue;
            }
            match number {
                7 => modules.push(module(&b, x.bytes("module")?)?),
                8 => locations.push(location(&mut b, x.bytes("location")?)?),
                9 => stacks.push(x.bytes("stack")?),
                10 => {
                    samples.push(x.bytes("sample")?);
                    b.count("samples", samples.len())?;
                }
                11 => reset = x.int("stream reset")? != 0,
                _ => {}
            }
        }
        self.define(reset, modules, locations, stacks, &limits)?;
        self.contents(b, samples)
    }

    /// Checks a profile's definitions and appends them (after emptying the tables when
    /// `reset`), or leaves the tables as they were.
    fn define(
        &mut self,
        reset: bool,
        modules: Vec<Module>,
        locations: Vec<Raw>,
        stacks: Vec<&[u8]>,
        limits: &Limits,
    ) -> Result<(), NormalizeError> {
        let (m0, l0, s0, bytes0) = if reset {
            (0, 0, 0, 0)
        } else {
            (
                self.modules.len(),
                self.locations.len(),
                self.stacks.len(),
                self.frame_bytes,
            )
        };
        let (m_all, l_all, s_all) = (m0 + modules.len(), l0 + locations.len(), s0 + stacks.len());
        for (what, count, limit) in [
            ("modules in the stream's tables", m_all, MAX_STREAM_MODULES),
            (
                "locations in the stream's tables",
                l_all,
                MAX_STREAM_LOCATIONS,
            ),
            ("stacks in the stream's tables", s_all, MAX_STREAM_STACKS),
        ] {
            if count > limit {
                return Err(too_many(what, count, limit));
            }
        }
        let mut frame_bytes = bytes0;
        let mut new_locations = Vec::with_capacity(locations.len());
        for (i, raw) in locations.into_iter().enumerate() {
            new_locations.push(match raw {
                Raw::Native { module, offset } => {
                    if module as usize >= m_all {
                        return Err(NormalizeError::Dangling {
                            what: "location",
                            target: "module",
                            id: i128::from(module),
                        });
                    }
                    StreamLocation::Native { module, offset }
                }
                Raw::Symbolic(frames) if frames.is_empty() => {
                    return Err(NormalizeError::Malformed(format!(
                        "location {} is neither native nor has a frame",
                        l0 + i
                    )))
                }
                Raw::Symbolic(frames) => {
                    frame_bytes += frames
                        .iter()
                        .map(|f| (f.function.len() + f.file.len() + 40) as u64)
                        .sum::<u64>();
                    StreamLocation::Symbolic(frames)
                }
            });
        }
        if frame_bytes > limits.max_materialized_bytes {
            return Err(NormalizeError::Amplifies {
                limit: limits.max_materialized_bytes,
            });
        }
        let depth_of = |l: u32| -> usize {
            let l = l as usize;
            if l < l0 {
                self.locations[l].depth()
            } else {
                new_locations[l - l0].depth()
            }
        };
        let mut new_stacks = Vec::with_capacity(stacks.len());
        let mut entries: Vec<u32> = Vec::new();
        for (i, bytes) in stacks.into_iter().enumerate() {
            entries.clear();
            let mut depth = 0usize;
            for field in Fields::new(bytes) {
                if let (1, x) = field? {
                    x.ints("stack locations", |l| {
                        let l = u32::try_from(l).unwrap_or(u32::MAX);
                        if l as usize >= l_all {
                            return Err(NormalizeError::Dangling {
                                what: "stack",
                                target: "location",
                                id: i128::from(l),
                            });
                        }
                        depth += depth_of(l);
                        entries.push(l);
                        Ok(())
                    })?;
                }
            }
            if depth > limits.max_depth {
                return Err(NormalizeError::TooDeep {
                    what: "stack",
                    index: s0 + i,
                    depth,
                    limit: limits.max_depth,
                });
            }
            new_stacks.push(entries.as_slice().into());
        }
        if reset {
            *self = StreamTables::new();
        }
        self.modules.extend(modules);
        self.locations.extend(new_locations);
        self.stacks.extend(new_stacks);
        self.frame_bytes = frame_bytes;
        Ok(())
    }

    /// The contents of `samples`: the stacks they use, the locations and modules those
    /// use, each once.
    fn contents(
        &mut self,
        mut b: Builder,
        samples: Vec<&[u8]>,
    ) -> Result<ProfileContents, NormalizeError> {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Every slot would look current: start them over.
            self.stamp = 1;
            self.module_slots.clear();
            self.location_slots.clear();
            self.stack_slots.clear();
        }
        let stamp = self.stamp;
        self.module_slots
            .resize(self.modules.len(), Slot::default());
        self.location_slots
            .resize(self.locations.len(), Slot::default());
        self.stack_slots.resize(self.stacks.len(), Slot::default());
        let types = b.contents.header.sample_types.len();
        let (mut keys, mut location_keys): (Vec<u32>, Vec<u32>) = (Vec::new(), Vec::new());
        let mut limits_of: Vec<u64> = Vec::new();
        // Label sets by their bytes on the wire: a sample's labels are parsed only when
        // the profile has not had them.
        let mut label_sets: HashMap<Vec<u8>, u32, foldhash::quality::RandomState> =
            HashMap::default();
        let (mut raw_labels, mut label_key) = (Vec::new(), Vec::new());
        for (index, bytes) in samples.into_iter().enumerate() {
            raw_labels.clear();
            let (stack, values) = sample_fields(index, bytes, types, &mut raw_labels)?;
            let stream_stack = usize::try_from(stack)
                .ok()
                .filter(|&s| s < self.stacks.len())
                .ok_or(NormalizeError::Dangling {
                    what: "sample",
                    target: "stack",
                    id: i128::from(stack),
                })?;
            let slot = self.stack_slots[stream_stack];
            let stack = if slot.stamp == stamp {
                slot.index
            } else {
                let entries = &self.stacks[stream_stack];
                let mut local = Vec::with_capacity(entries.len());
                for &l in entries.iter() {
                    let slot = &mut self.location_slots[l as usize];
                    if slot.stamp != stamp {
                        let location = match &self.locations[l as usize] {
                            StreamLocation::Native { module, offset } => {
                                let m = &self.modules[*module as usize];
                                let mslot = &mut self.module_slots[*module as usize];
                                if mslot.stamp != stamp {
                                    *mslot = Slot {
                                        stamp,
                                        index: b.contents.header.mappings.len() as u32,
                                    };
                                    b.contents.header.mappings.push(Mapping {
                                        module: m.clone(),
                                        path: m.name.clone(),
                                        ..Mapping::default()
                                    });
                                    limits_of.push(0);
                                }
                                let limit = &mut limits_of[mslot.index as usize];
                                *limit = (*limit).max(offset.saturating_add(1));
                                b.charge(m.name.len() + m.build_id.len() + 64)?;
                                Location::Native {
                                    module: m.clone(),
                                    offset: *offset,
                                }
                            }
                            StreamLocation::Symbolic(frames) => {
                                b.charge(
                                    frames
                                        .iter()
                                        .map(|f| f.function.len() + f.file.len() + 40)
                                        .sum(),
                                )?;
                                Location::Symbolic(frames.clone())
                            }
                        };
                        *slot = Slot {
                            stamp,
                            index: b.contents.locations.len() as u32,
                        };
                        b.contents.locations.push(location);
                        location_keys.push(l);
                    }
                    local.push(slot.index);
                }
                b.count("stacks", b.contents.stacks.len() + 1)?;
                b.charge(local.len() * 4 + 32)?;
                let index = b.contents.stacks.len() as u32;
                b.contents.stacks.push(local);
                keys.push(stream_stack as u32);
                self.stack_slots[stream_stack] = Slot { stamp, index };
                index
            };
            b.count("labels of one sample", raw_labels.len())?;
            label_key.clear();
            for l in &raw_labels {
                label_key.extend_from_slice(&(l.len() as u32).to_le_bytes());
                label_key.extend_from_slice(l);
            }
            let labels = match label_sets.get(label_key.as_slice()) {
                Some(&set) => set,
                None => {
                    let labels = raw_labels
                        .iter()
                        .map(|l| label(&b, l))
                        .collect::<Result<Vec<_>, _>>()?;
                    let set = b.label_set(labels)?;
                    label_sets.insert(label_key.clone(), set);
                    set
                }
            };
            b.sample(stack, values, labels)?;
        }
        for (mapping, limit) in b.contents.header.mappings.iter_mut().zip(limits_of) {
            mapping.limit = limit;
        }
        b.contents.table_keys = Some(TableKeys {
            scope: self.scope,
            stacks: keys,
            locations: location_keys,
        });
        Ok(b.contents)
    }
}

#[cfg(test)]
mod tests;
