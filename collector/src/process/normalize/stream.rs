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
use holmes_storage::{
    KnownByKey, Location, LocationByKey, LocationRef, Mapping, ProfileContents, StackByKey,
    StackFrame, TableKeys,
};

use super::native::{header_field, label, location, module, sample_fields, stack_entries, Raw};
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

/// A stack in a stream's tables: where its entries are in `StreamTables::entries`.
#[derive(Debug, Clone, Copy)]
struct StreamStack {
    start: u32,
    len: u32,
}

/// Where a stream entry went in the contents being built: valid when `stamp` is the
/// current profile's.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    stamp: u32,
    index: u32,
}

/// Asks whoever stores the contents which stacks of the scope (by their stream keys and
/// their locations' stream keys) it knows, telling it the locations the stream defined
/// since it last asked, so that the stacks it knows can be left out (see
/// `holmes_storage::Store::stacks_known_by_key`).
pub type KnownStacks<'a> =
    &'a (dyn Fn(u64, &[StackByKey<'_>], &[LocationByKey<'_>]) -> KnownByKey + Send + Sync);

/// One stream's tables, as its stream-form profiles built them (see the module docs).
#[derive(Debug)]
pub struct StreamTables {
    scope: u64,
    modules: Vec<Module>,
    locations: Vec<StreamLocation>,
    stacks: Vec<StreamStack>,
    /// Every stack's entries, one after the other.
    entries: Vec<u32>,
    /// Bytes of symbolic frames held, against `Limits::max_materialized_bytes`.
    frame_bytes: u64,
    /// Locations told to whoever knows stacks (see [`KnownStacks`]): the first ones.
    locations_told: usize,
    /// The most frames any location stands for.
    deepest: usize,
    /// The profile being built: where each location and stack went.
    stamp: u32,
    location_slots: Vec<Slot>,
    stack_slots: Vec<Slot>,
}

impl Default for StreamTables {
    fn default() -> Self {
        StreamTables::new()
    }
}

/// What one stream-form profile defines and holds, as read from the wire.
struct Parsed<'a> {
    reset: bool,
    modules: Vec<Module>,
    locations: Vec<Raw>,
    stacks: Vec<&'a [u8]>,
    samples: Vec<&'a [u8]>,
    profile_modules: Vec<u32>,
    module_limits: Vec<u64>,
}

impl StreamTables {
    /// The tables of a new stream: empty.
    pub fn new() -> Self {
        StreamTables {
            scope: TableKeys::new_scope(),
            modules: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::new(),
            entries: Vec::new(),
            frame_bytes: 0,
            locations_told: 0,
            deepest: 1,
            stamp: 0,
            location_slots: Vec::new(),
            stack_slots: Vec::new(),
        }
    }

    /// Stacks the stream has defined.
    pub fn stacks(&self) -> usize {
        self.stacks.len()
    }

    /// About how many bytes of memory the tables hold: their arrays as allocated, and
    /// the strings of their modules and symbolic frames.
    pub fn bytes_held(&self) -> u64 {
        use std::mem::size_of;
        let module_strings: usize = self
            .modules
            .iter()
            .map(|m| m.name.capacity() + m.build_id.capacity())
            .sum();
        let arrays = self.modules.capacity() * size_of::<Module>()
            + self.locations.capacity() * size_of::<StreamLocation>()
            + self.stacks.capacity() * size_of::<StreamStack>()
            + self.entries.capacity() * size_of::<u32>()
            + (self.location_slots.capacity() + self.stack_slots.capacity()) * size_of::<Slot>();
        (arrays + module_strings) as u64 + self.frame_bytes
    }

    /// Reads the stream's next profile: its definitions into the tables, its samples
    /// into contents of the stacks they use. Stacks that `known` says the store knows
    /// are left out of the contents ([`TableKeys::left_out`]); without `known`, none is.
    pub fn decode(
        &mut self,
        data: &[u8],
        limits: Limits,
        known: Option<KnownStacks<'_>>,
    ) -> Result<ProfileContents, NormalizeError> {
        let mut b = Builder::new(limits);
        let mut parsed = Parsed {
            reset: false,
            modules: Vec::new(),
            locations: Vec::new(),
            stacks: Vec::new(),
            samples: Vec::new(),
            profile_modules: Vec::new(),
            module_limits: Vec::new(),
        };
        for field in Fields::new(data) {
            let (number, x) = field?;
            if header_field(&mut b, number, x)? {
                continue;
            }
            match number {
                7 => parsed.modules.push(module(&b, x.bytes("module")?)?),
                8 => parsed
                    .locations
                    .push(location(&mut b, x.bytes("location")?)?),
                9 => parsed.stacks.push(x.bytes("stack")?),
                10 => {
                    parsed.samples.push(x.bytes("sample")?);
                    b.count("samples", parsed.samples.len())?;
                }
                11 => parsed.reset = x.int("stream reset")? != 0,
                12 => x.ints("profile modules", |m| {
                    parsed
                        .profile_modules
                        .push(u32::try_from(m).unwrap_or(u32::MAX));
                    b.count("profile modules", parsed.profile_modules.len())
                })?,
                13 => x.ints("module limits", |l| {
                    parsed.module_limits.push(l);
                    b.count("module limits", parsed.module_limits.len())
                })?,
                _ => {}
            }
        }
        let samples = std::mem::take(&mut parsed.samples);
        let modules = std::mem::take(&mut parsed.profile_modules);
        let module_limits = std::mem::take(&mut parsed.module_limits);
        if module_limits.len() != modules.len() {
            return Err(NormalizeError::Malformed(format!(
                "{} module limits for {} profile modules",
                module_limits.len(),
                modules.len()
            )));
        }
        self.define(parsed, &limits)?;
        self.contents(b, samples, &modules, &module_limits, known)
    }

    /// Checks a profile's definitions and appends them (after emptying the tables when
    /// it resets them), or leaves the tables as they were.
    fn define(&mut self, p: Parsed<'_>, limits: &Limits) -> Result<(), NormalizeError> {
        let (m0, l0, s0, bytes0) = if p.reset {
            (0, 0, 0, 0)
        } else {
            (
                self.modules.len(),
                self.locations.len(),
                self.stacks.len(),
                self.frame_bytes,
            )
        };
        let (m_all, l_all, s_all) = (
            m0 + p.modules.len(),
            l0 + p.locations.len(),
            s0 + p.stacks.len(),
        );
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
        let mut new_locations = Vec::with_capacity(p.locations.len());
        for (i, raw) in p.locations.into_iter().enumerate() {
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
        let deepest = new_locations
            .iter()
            .map(StreamLocation::depth)
            .max()
            .unwrap_or(1)
            .max(if p.reset { 1 } else { self.deepest });
        let depth_of = |l: u32| -> usize {
            let l = l as usize;
            if l < l0 {
                self.locations[l].depth()
            } else {
                new_locations[l - l0].depth()
            }
        };
        let e0 = if p.reset { 0 } else { self.entries.len() };
        // A stack is some 25 frames deep.
        let mut entries = Vec::with_capacity(p.stacks.len() * 25);
        let mut new_stacks = Vec::with_capacity(p.stacks.len());
        for (i, bytes) in p.stacks.into_iter().enumerate() {
            let first = entries.len();
            stack_entries(
                bytes,
                s0 + i,
                l_all,
                limits,
                &mut entries,
                (deepest, depth_of),
            )?;
            new_stacks.push(StreamStack {
                start: (e0 + first) as u32,
                len: (entries.len() - first) as u32,
            });
        }
        if p.reset {
            *self = StreamTables::new();
        }
        self.modules.extend(p.modules);
        self.locations.extend(new_locations);
        self.stacks.extend(new_stacks);
        self.entries.extend(entries);
        self.frame_bytes = frame_bytes;
        self.deepest = deepest;
        Ok(())
    }

    /// The next stamp, every slot of an earlier profile then stale.
    fn next_stamp(&mut self) -> u32 {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Every slot would look current: start them over.
            self.stamp = 1;
            self.location_slots.clear();
            self.stack_slots.clear();
        }
        self.location_slots
            .resize(self.locations.len(), Slot::default());
        self.stack_slots.resize(self.stacks.len(), Slot::default());
        self.stamp
    }

    /// The contents of `samples`: the stacks they use (but those `known` says the store
    /// knows), the locations those use, and the profile's modules as its mappings.
    fn contents(
        &mut self,
        mut b: Builder,
        samples: Vec<&[u8]>,
        profile_modules: &[u32],
        module_limits: &[u64],
        known: Option<KnownStacks<'_>>,
    ) -> Result<ProfileContents, NormalizeError> {
        let stamp = self.next_stamp();
        // Each sample, read once: its stack (as its index among the stacks the samples
        // use, in order of first use), its values, and where its labels are in
        // `sample_labels`.
        let types = b.contents.header.sample_types.len();
        let mut read: Vec<(u32, Vec<i64>, std::ops::Range<usize>)> =
            Vec::with_capacity(samples.len());
        let mut sample_labels: Vec<&[u8]> = Vec::new();
        let mut used: Vec<u32> = Vec::with_capacity(samples.len());
        for (index, bytes) in samples.into_iter().enumerate() {
            let first_label = sample_labels.len();
            let (stack, values) = sample_fields(index, bytes, types, &mut sample_labels)?;
            b.count("labels of one sample", sample_labels.len() - first_label)?;
            let s = usize::try_from(stack)
                .ok()
                .filter(|&s| s < self.stacks.len())
                .ok_or_else(|| NormalizeError::Dangling {
                    what: "sample",
                    target: "stack",
                    id: i128::from(stack),
                })?;
            if self.stack_slots[s].stamp != stamp {
                self.stack_slots[s] = Slot {
                    stamp,
                    index: used.len() as u32,
                };
                used.push(s as u32);
            }
            read.push((
                self.stack_slots[s].index,
                values,
                first_label..sample_labels.len(),
            ));
        }
        b.count("stacks", used.len())?;
        let left_out = match known {
            Some(known) => {
                let stacks: Vec<StackByKey<'_>> = used
                    .iter()
                    .map(|&s| {
                        let StreamStack { start, len } = self.stacks[s as usize];
                        StackByKey {
                            key: s,
                            locations: &self.entries[start as usize..(start + len) as usize],
                        }
                    })
                    .collect();
                let told = self.locations_told.min(self.locations.len());
                let locations: Vec<LocationByKey<'_>> = (told..)
                    .zip(&self.locations[told..])
                    .map(|(key, l)| LocationByKey {
                        key: key as u32,
                        location: match l {
                            StreamLocation::Native { module, offset } => LocationRef::Native {
                                // Checked when defined.
                                module: &self.modules[*module as usize],
                                offset: *offset,
                            },
                            StreamLocation::Symbolic(frames) => LocationRef::Symbolic(frames),
                        },
                    })
                    .collect();
                let answer = known(self.scope, &stacks, &locations);
                // A store that forgot the scope (or some of what it was told) is told
                // again, from where it says it holds them.
                self.locations_told = self.locations.len().min(answer.locations_told as usize);
                answer.stacks
            }
            None => Vec::new(),
        };
        // The profile's modules as its mappings, in its own order, each from 0 to past
        // its last offset (as its self-contained form reads).
        for (&m, &limit) in profile_modules.iter().zip(module_limits) {
            let Some(module) = self.modules.get(m as usize) else {
                return Err(NormalizeError::Dangling {
                    what: "profile",
                    target: "module",
                    id: i128::from(m),
                });
            };
            b.contents.header.mappings.push(Mapping {
                module: module.clone(),
                path: module.name.clone(),
                limit,
                ..Mapping::default()
            });
        }
        // Sized for a stack's worth of new locations per stack left in.
        let kept = used.len() - left_out.iter().filter(|k| k.is_some()).count();
        let mut location_keys: Vec<u32> = Vec::with_capacity(kept * 4);
        b.contents.locations.reserve(kept * 4);
        b.contents.stacks.reserve(used.len());
        for (j, &s) in used.iter().enumerate() {
            if matches!(left_out.get(j), Some(Some(_))) {
                b.contents.stacks.push(Vec::new());
                continue;
            }
            let StreamStack { start, len } = self.stacks[s as usize];
            let entries = &self.entries[start as usize..(start + len) as usize];
            let mut local = Vec::with_capacity(entries.len());
            for &l in entries {
                let slot = &mut self.location_slots[l as usize];
                if slot.stamp != stamp {
                    let location = match &self.locations[l as usize] {
                        StreamLocation::Native { module, offset } => {
                            let m = &self.modules[*module as usize];
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
            b.charge(local.len() * 4 + 32)?;
            b.contents.stacks.push(local);
        }
        // The samples: their stack, values and labels. Label sets are found by their
        // bytes on the wire, and parsed only when the profile has not had them.
        b.contents.samples.reserve(read.len());
        let mut label_sets: HashMap<Vec<u8>, u32, foldhash::quality::RandomState> =
            HashMap::default();
        let mut label_key = Vec::new();
        for (stack, values, labels) in read {
            let raw_labels = sample_labels.get(labels).unwrap_or_default();
            label_key.clear();
            for l in raw_labels {
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
        b.contents.table_keys = Some(TableKeys {
            scope: self.scope,
            stacks: used,
            locations: location_keys,
            left_out,
        });
        Ok(b.contents)
    }
}

#[cfg(test)]
pub(crate) mod tests;
