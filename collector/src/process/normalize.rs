//! What an agent sent, decoded, checked and normalized into [`ProfileContents`]: each
//! location and stack once, samples referring to them, each label set once.
//!
//! Two inputs: the agent's own `NativeProfile` ([`native`]: nothing to inflate, no
//! string table; or its stream form, [`StreamTables`], each stack once per stream), and pprof, gzipped or not ([`pprof`]: older agents and foreign
//! clients). A pprof location that is symbolized becomes a symbolic location (its
//! frames); one that is not, but lies in a mapping, becomes native: the mapping's file
//! name and build id, and the offset `address - memory_start + file_offset` — the
//! address's offset in the file, which is what a pprof mapping alone can tell, does not
//! change with ASLR, and equals the ELF virtual address the agent sends for position-
//! independent executables and shared libraries whose executable segment is mapped at
//! its file offset (the usual layout). The mapping itself is kept in the header, so a
//! download gives such a location its original address back.
//!
//! The bytes come from the network: everything is bounded before it is trusted.
//! Compressed input is inflated up to [`Limits::max_decoded_bytes`] (a gzip bomb stops
//! there); each kind of item (samples, locations, functions, strings, stacks...) is
//! counted against [`Limits::max_items`]; every name is at most [`Limits::max_name_bytes`];
//! a stack is at most [`Limits::max_depth`] frames deep (inlined frames counted); and
//! what the contents hold — every string times the locations and label sets that copy
//! it, plus each stack's entries — is counted against [`Limits::max_materialized_bytes`]
//! as it grows, so that a small profile naming one long function at every depth cannot
//! make the collector allocate gigabytes. A profile that breaks a rule is a
//! [`NormalizeError`] naming the rule; nothing here panics.

use std::collections::HashMap;

use holmes_proto::ProfileFormat;
use holmes_storage::{ProfileContents, ProfileLabel, ProfileSample};

mod native;
mod pprof;
mod stream;
#[cfg(test)]
mod tests;
mod wire;

/// A CPU profile of the given stacks in the agent's own form (tests).
#[cfg(test)]
pub(crate) use stream::tests::profile as test_profile;
pub use stream::{KnownStacks, StreamTables};

/// Default cap on a profile's decompressed size.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap on each of: samples, locations, functions, strings, stacks, mappings.
pub const DEFAULT_MAX_ITEMS: usize = 2_000_000;
/// Default cap on the frames of one stack, inlined frames included.
pub const DEFAULT_MAX_DEPTH: usize = 1024;
/// Default cap on one name (function, file, label, comment, module...).
pub const DEFAULT_MAX_NAME_BYTES: usize = 4096;
/// Default cap on what a profile's contents hold in memory and in the store.
pub const DEFAULT_MAX_MATERIALIZED_BYTES: u64 = 64 * 1024 * 1024;

/// The bounds a profile must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes after decompression.
    pub max_decoded_bytes: u64,
    /// Items of each kind.
    pub max_items: usize,
    /// Frames of one stack.
    pub max_depth: usize,
    /// Bytes of one name.
    pub max_name_bytes: usize,
    /// Bytes the contents hold: strings times their copies, plus stack entries.
    pub max_materialized_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
            max_items: DEFAULT_MAX_ITEMS,
            max_depth: DEFAULT_MAX_DEPTH,
            max_name_bytes: DEFAULT_MAX_NAME_BYTES,
            max_materialized_bytes: DEFAULT_MAX_MATERIALIZED_BYTES,
        }
    }
}

/// Why a profile was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    /// The gzip stream is broken.
    #[error("cannot decompress the profile: {0}")]
    Decompress(String),
    /// More bytes than allowed after decompression.
    #[error("the profile decompresses to more than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// Not a message of the format it claims.
    #[error("not a valid profile: {0}")]
    Malformed(String),
    /// Too many of something.
    #[error("the profile has {count} {what}, more than the {limit} allowed")]
    TooMany {
        /// Samples, locations, functions, strings...
        what: &'static str,
        /// How many it has (at least).
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// An index or id that points at nothing.
    #[error("the profile's {what} refers to {target} {id}, which does not exist")]
    Dangling {
        /// Where the reference is.
        what: &'static str,
        /// What it should point at.
        target: &'static str,
        /// The missing index or id.
        id: i128,
    },
    /// Two of a kind with one id.
    #[error("the profile has two {what} with id {id}")]
    DuplicateId {
        /// Locations, functions or mappings.
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// A sample whose value count differs from the sample types'.
    #[error("sample {index} has {values} values for {types} sample types")]
    ValueCount {
        /// Which sample.
        index: usize,
        /// Its values.
        values: usize,
        /// The sample types.
        types: usize,
    },
    /// A stack deeper than allowed.
    #[error("{what} {index} is {depth} frames deep, more than the {limit} allowed")]
    TooDeep {
        /// Sample (pprof), stack (the agent's own format) or location (its inlined
        /// frames).
        what: &'static str,
        /// Which one.
        index: usize,
        /// Its frames.
        depth: usize,
        /// The cap.
        limit: usize,
    },
    /// A name longer than allowed.
    #[error("a {what} of {len} bytes is longer than the {limit} allowed")]
    NameTooLong {
        /// Function name, file name, label...
        what: &'static str,
        /// Its length.
        len: usize,
        /// The cap.
        limit: usize,
    },
    /// The contents would hold more than allowed: names copied at every depth, or too
    /// many stack entries.
    #[error("the profile would materialize more than {limit} bytes (names times the locations and labels that use them, plus stack entries)")]
    Amplifies {
        /// The cap.
        limit: u64,
    },
}

/// Decodes, checks and normalizes `data`, encoded as `format` says.
pub fn normalize(
    format: ProfileFormat,
    data: &[u8],
    limits: Limits,
) -> Result<ProfileContents, NormalizeError> {
    match format {
        ProfileFormat::Native => native::normalize(data, limits),
        ProfileFormat::PprofGzip => pprof::normalize(data, limits),
        ProfileFormat::NativeStream => Err(NormalizeError::Malformed(
            "a profile in the stream form is read with its stream's tables".to_owned(),
        )),
    }
}

/// Decodes pprof bytes (gzipped or not): the path profiles from foreign clients take
/// (Pyroscope, OTLP, older agents).
pub fn normalize_pprof(data: &[u8], limits: Limits) -> Result<ProfileContents, NormalizeError> {
    pprof::normalize(data, limits)
}

/// `contents` in the agent's own self-contained form (`NativeProfile` bytes), as a
/// stream-form profile travels on once decoded: through Kafka, or kept as the original.
/// Normalizing the bytes gives the same contents back (mappings aside: a native
/// profile's modules span from 0 to past their last offset).
pub fn native_bytes(contents: &ProfileContents) -> Vec<u8> {
    use holmes_proto::native::{
        Location as NativeLocation, NativeProfile, NativeSample, SymbolicFrame,
    };
    let h = &contents.header;
    let mut modules: HashMap<&holmes_proto::Module, u32> = HashMap::new();
    let mut p = NativeProfile {
        sample_types: h.sample_types.clone(),
        period_type: h.period_type.clone(),
        period: h.period,
        time_unix_nanos: u64::try_from(h.time_nanos).unwrap_or(0),
        duration_nanos: u64::try_from(h.duration_nanos).unwrap_or(0),
        comments: h.comments.clone(),
        stacks: contents.stacks.clone(),
        ..NativeProfile::default()
    };
    for l in &contents.locations {
        p.locations.push(match l {
            holmes_storage::Location::Native { module, offset } => {
                let next = modules.len() as u32;
                let index = *modules.entry(module).or_insert_with(|| {
                    p.modules.push(module.clone());
                    next
                });
                NativeLocation::Native {
                    module: index,
                    offset: *offset,
                }
            }
            holmes_storage::Location::Symbolic(frames) => NativeLocation::Symbolic(
                frames
                    .iter()
                    .map(|f| SymbolicFrame {
                        function: f.function.clone(),
                        file: f.file.clone(),
                        line: f.line,
                    })
                    .collect(),
            ),
        });
    }
    p.samples = contents
        .samples
        .iter()
        .map(|s| NativeSample {
            stack: s.stack,
            values: s.values.clone(),
            labels: contents
                .label_sets
                .get(s.labels as usize)
                .cloned()
                .unwrap_or_default(),
        })
        .collect();
    p.encode()
}

fn too_many(what: &'static str, count: usize, limit: usize) -> NormalizeError {
    NormalizeError::TooMany { what, count, limit }
}

/// The contents being built, with what they have cost so far.
struct Builder {
    limits: Limits,
    materialized: u64,
    contents: ProfileContents,
    /// Each stack's index in `contents.stacks`, found by hashing its locations: the
    /// stack is kept once, there.
    stacks: hashbrown::HashTable<u32>,
    stack_hasher: foldhash::quality::RandomState,
    label_sets: HashMap<Vec<ProfileLabel>, u32, foldhash::quality::RandomState>,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            materialized: 0,
            contents: ProfileContents::default(),
            stacks: hashbrown::HashTable::new(),
            stack_hasher: foldhash::quality::RandomState::default(),
            label_sets: HashMap::default(),
        }
    }

    /// Counts `bytes` more against [`Limits::max_materialized_bytes`].
    fn charge(&mut self, bytes: usize) -> Result<(), NormalizeError> {
        self.materialized = self.materialized.saturating_add(bytes as u64);
        if self.materialized > self.limits.max_materialized_bytes {
            return Err(NormalizeError::Amplifies {
                limit: self.limits.max_materialized_bytes,
            });
        }
        Ok(())
    }

    /// Checks one name against [`Limits::max_name_bytes`].
    fn name<'s>(&self, what: &'static str, s: &'s str) -> Result<&'s str, NormalizeError> {
        if s.len() > self.limits.max_name_bytes {
            return Err(NormalizeError::NameTooLong {
                what,
                len: s.len(),
                limit: self.limits.max_name_bytes,
            });
        }
        Ok(s)
    }

    fn count(&self, what: &'static str, n: usize) -> Result<(), NormalizeError> {
        if n > self.limits.max_items {
            return Err(too_many(what, n, self.limits.max_items));
        }
        Ok(())
    }

    /// Room for about `stacks` stacks and `samples` samples, so that the tables do not
    /// grow by steps as they are built.
    fn reserve(&mut self, stacks: usize, samples: usize) {
        let (stacks, samples) = (
            stacks.min(self.limits.max_items),
            samples.min(self.limits.max_items),
        );
        self.contents.stacks.reserve(stacks);
        self.stacks
            .reserve(stacks, rehash(&self.contents.stacks, &self.stack_hasher));
        self.contents.samples.reserve(samples);
    }

    /// The index of the stack made of `locations` (indexes into the contents'
    /// locations), added if new.
    fn stack(&mut self, locations: &[u32]) -> Result<u32, NormalizeError> {
        use std::hash::BuildHasher;
        let hash = self.stack_hasher.hash_one(locations);
        let stacks = &self.contents.stacks;
        if let Some(&i) = self.stacks.find(hash, |&i| stacks[i as usize] == locations) {
            return Ok(i);
        }
        self.count("stacks", stacks.len() + 1)?;
        self.charge(locations.len() * 4 + 32)?;
        let i = self.contents.stacks.len() as u32;
        self.contents.stacks.push(locations.to_vec());
        self.stacks
            .insert_unique(hash, i, rehash(&self.contents.stacks, &self.stack_hasher));
        Ok(i)
    }

    /// The index of `labels` among the label sets, added if new.
    fn label_set(&mut self, labels: Vec<ProfileLabel>) -> Result<u32, NormalizeError> {
        if let Some(&i) = self.label_sets.get(&labels) {
            return Ok(i);
        }
        self.count("label sets", self.contents.label_sets.len() + 1)?;
        let bytes: usize = labels
            .iter()
            .map(|l| l.key.len() + l.str.len() + l.unit.len() + 16)
            .sum();
        self.charge(bytes)?;
        let i = self.contents.label_sets.len() as u32;
        self.contents.label_sets.push(labels.clone());
        self.label_sets.insert(labels, i);
        Ok(i)
    }

    fn sample(&mut self, stack: u32, values: Vec<i64>, labels: u32) -> Result<(), NormalizeError> {
        self.count("samples", self.contents.samples.len() + 1)?;
        self.contents.samples.push(ProfileSample {
            stack,
            values,
            labels,
        });
        Ok(())
    }
}

/// What the builder's table of stacks rehashes an entry (an index into `stacks`) by when
/// it grows: the hash of the stack it points at.
fn rehash<'a>(
    stacks: &'a [Vec<u32>],
    hasher: &'a foldhash::quality::RandomState,
) -> impl Fn(&u32) -> u64 + 'a {
    use std::hash::BuildHasher;
    move |&j| hasher.hash_one(&stacks[j as usize][..])
}
