//! What a profile holds, normalized: its header, its distinct locations and stacks, and
//! its samples referring to them. The process stage builds it from what an agent sent
//! (a `NativeProfile` or pprof); the store keeps each location and stack once and the
//! samples compactly; a read gives it back with the symbols known for its native
//! locations, and a download re-encodes it as pprof.

use std::borrow::Cow;
use std::collections::BTreeMap;

pub use holmes_proto::native::{ProfileLabel, ValueType};
use holmes_proto::Module;

use crate::location::{Location, StackFrame};
pub use crate::numbering::KnownStack;

/// Where a module was mapped in the process a pprof profile came from (pprof's
/// `Mapping`), kept so that a download gives its native locations their original
/// addresses back. Profiles in the agent's own form have none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mapping {
    /// The module (file name and build id) its native locations name.
    pub module: Module,
    /// The file as the profile names it (a full path).
    pub path: String,
    /// First address of the mapping.
    pub start: u64,
    /// Address just past its end.
    pub limit: u64,
    /// File offset of its first byte.
    pub file_offset: u64,
    /// pprof's `has_functions`, `has_filenames`, `has_line_numbers`, `has_inline_frames`.
    pub flags: u8,
}

impl Mapping {
    /// `has_functions` in [`Mapping::flags`].
    pub const HAS_FUNCTIONS: u8 = 1;
    /// `has_filenames`.
    pub const HAS_FILENAMES: u8 = 2;
    /// `has_line_numbers`.
    pub const HAS_LINE_NUMBERS: u8 = 4;
    /// `has_inline_frames`.
    pub const HAS_INLINE_FRAMES: u8 = 8;

    /// Whether a native location of `module` at `offset` lies in this mapping.
    pub fn holds(&self, module: &Module, offset: u64) -> bool {
        self.module == *module
            && offset >= self.file_offset
            && offset - self.file_offset < self.limit.saturating_sub(self.start).max(1)
    }

    /// The address `offset` had in this mapping.
    pub fn address_of(&self, offset: u64) -> u64 {
        self.start
            .wrapping_add(offset.wrapping_sub(self.file_offset))
    }
}

/// Everything of a profile but its locations, stacks and samples.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileHeader {
    /// What each value of a sample measures, e.g. `("cpu", "nanoseconds")`.
    pub sample_types: Vec<ValueType>,
    /// pprof's default sample type ("" for the last one).
    pub default_sample_type: String,
    /// What one period is.
    pub period_type: ValueType,
    /// The sampling period, in `period_type` units.
    pub period: i64,
    /// When the profile starts, nanoseconds since the Unix epoch (as the profile says).
    pub time_nanos: i64,
    /// How long it covers, nanoseconds (as the profile says).
    pub duration_nanos: i64,
    /// Free-form notes.
    pub comments: Vec<String>,
    /// pprof's `drop_frames` regular expression ("" for none).
    pub drop_frames: String,
    /// pprof's `keep_frames` regular expression ("" for none).
    pub keep_frames: String,
    /// Where modules were mapped (pprof profiles only).
    pub mappings: Vec<Mapping>,
}

/// One sample: a stack, one value per sample type, a set of labels.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileSample {
    /// Index into [`ProfileContents::stacks`].
    pub stack: u32,
    /// One value per [`ProfileHeader::sample_types`] entry.
    pub values: Vec<i64>,
    /// Index into [`ProfileContents::label_sets`].
    pub labels: u32,
}

/// A stack a writer asks a store about by key ([`crate::Store::stacks_known_by_key`]):
/// its key, and its locations' keys, leaf first, in the same scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StackByKey<'a> {
    /// The stack's key.
    pub key: u32,
    /// Its locations' keys, leaf first.
    pub locations: &'a [u32],
}

/// What a store answers a writer asking about a scope's stacks by key
/// ([`crate::Store::stacks_known_by_key`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownByKey {
    /// What it knows of each stack asked about, in order (`None`: not known, or not
    /// durable on the profile's day).
    pub stacks: Vec<Option<KnownStack>>,
    /// How many of the scope's locations, from key 0 on, the store has been told and
    /// still holds ([`NO_LOCATIONS_KEPT`] when it keeps none by key). A writer that
    /// told it more (the store forgot the scope since, or never had it) tells them
    /// again from there.
    pub locations_told: u32,
}

/// [`KnownByKey::locations_told`] of a store that keeps no locations by key: nothing
/// to tell it again.
pub const NO_LOCATIONS_KEPT: u32 = u32::MAX;

impl KnownByKey {
    /// Nothing known of `stacks` stacks, and no locations kept.
    pub fn nothing(stacks: usize) -> Self {
        KnownByKey {
            stacks: vec![None; stacks],
            locations_told: NO_LOCATIONS_KEPT,
        }
    }
}

/// A location a writer tells a store about by key
/// ([`crate::Store::stacks_known_by_key`]): its key, and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocationByKey<'a> {
    /// The location's key.
    pub key: u32,
    /// What it is.
    pub location: crate::LocationRef<'a>,
}

/// Keys a writer gives a profile's stacks and locations, so that a store recognizes the
/// ones it numbered before without hashing them: the agent's stream form defines each
/// stack and location once per stream, and its numbers for them are such keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableKeys {
    /// Where the keys hold: within a scope, for as long as the process lives, one stack
    /// key names one stack (the same locations) and one location key one location. Take
    /// a new one with [`TableKeys::new_scope`].
    pub scope: u64,
    /// One key per stack of the contents, in [`ProfileContents::stacks`] order.
    pub stacks: Vec<u32>,
    /// One key per location of the contents, in [`ProfileContents::locations`] order.
    pub locations: Vec<u32>,
    /// Per stack, whether it was left out of the contents (its entry in `stacks` empty,
    /// its locations not among `locations`), with what the store said it knows of it,
    /// durable on the profile's day ([`crate::Store::stacks_known_by_key`]). Empty when
    /// none is. Such contents are for that store's `insert_profile` alone.
    pub left_out: Vec<Option<KnownStack>>,
}

impl TableKeys {
    /// Whether stack `i` was left out.
    pub fn is_left_out(&self, i: usize) -> bool {
        self.left_out.get(i).is_some_and(Option::is_some)
    }

    /// A scope no other caller in this process has.
    pub fn new_scope() -> u64 {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }
}

/// A profile's contents, normalized: each location and stack once, samples referring to
/// them, and each distinct set of labels once.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileContents {
    /// Sample types, period, time, comments, mappings.
    pub header: ProfileHeader,
    /// The distinct locations the stacks use.
    pub locations: Vec<Location>,
    /// Names of native locations, by index into `locations`, as known when read (empty
    /// when writing: symbols are a fact of their own, see
    /// [`crate::Store::insert_symbols`]).
    pub symbols: BTreeMap<u32, Vec<StackFrame>>,
    /// The distinct stacks the samples use: indexes into `locations`, leaf first.
    pub stacks: Vec<Vec<u32>>,
    /// The distinct label sets the samples use, each in the profile's order (an empty
    /// set for samples without labels).
    pub label_sets: Vec<Vec<ProfileLabel>>,
    /// The samples, in the profile's order; two samples of one stack stay two.
    pub samples: Vec<ProfileSample>,
    /// Writing only: the keys of `stacks` and `locations` in their writer's scope, if it
    /// has them (see [`TableKeys`]); reads give `None`.
    pub table_keys: Option<TableKeys>,
}

impl ProfileContents {
    /// The frames location `index` stands for, innermost first: a symbolic location's
    /// own, a native one's symbols when known, else its `name+0x<offset>`.
    pub fn location_frames(&self, index: u32) -> Cow<'_, [StackFrame]> {
        if let Some(symbols) = self.symbols.get(&index) {
            return Cow::Borrowed(symbols);
        }
        match self.locations.get(index as usize) {
            Some(Location::Symbolic(frames)) => Cow::Borrowed(frames),
            Some(native) => Cow::Owned(native.frames_without_symbols()),
            None => Cow::Owned(Vec::new()),
        }
    }

    /// The frames of every location, in `locations` order (see
    /// [`ProfileContents::location_frames`]).
    pub fn frames_by_location(&self) -> Vec<Cow<'_, [StackFrame]>> {
        (0..self.locations.len() as u32)
            .map(|i| self.location_frames(i))
            .collect()
    }

    /// The frames of stack `stack`, leaf first, inlined frames expanded.
    pub fn stack_frames(&self, stack: u32) -> Vec<StackFrame> {
        let Some(locations) = self.stacks.get(stack as usize) else {
            return Vec::new();
        };
        locations
            .iter()
            .flat_map(|&l| self.location_frames(l).into_owned())
            .collect()
    }

    /// Index of the sample type named `name`, or of the default one (pprof's
    /// `default_sample_type`, else the last) when `name` is `None`.
    pub fn value_index(&self, name: Option<&str>) -> Option<usize> {
        let types = &self.header.sample_types;
        match name {
            Some(n) => types.iter().position(|t| t.name == n),
            None => types
                .iter()
                .position(|t| {
                    !self.header.default_sample_type.is_empty()
                        && t.name == self.header.default_sample_type
                })
                .or_else(|| types.len().checked_sub(1)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_locations_show_their_symbols_once_known() {
        let module = Module {
            name: "checkout".into(),
            build_id: "ab".into(),
        };
        let mut c = ProfileContents {
            locations: vec![
                Location::Native {
                    module: module.clone(),
                    offset: 0x10,
                },
                Location::Symbolic(vec![StackFrame::new("main", "src/main.rs", 3)]),
            ],
            stacks: vec![vec![0, 1]],
            ..ProfileContents::default()
        };
        assert_eq!(
            c.stack_frames(0),
            vec![
                StackFrame::new("checkout+0x10", "", 0),
                StackFrame::new("main", "src/main.rs", 3)
            ]
        );
        c.symbols.insert(
            0,
            vec![
                StackFrame::new("checkout::inner", "src/a.rs", 1),
                StackFrame::new("checkout::outer", "src/a.rs", 9),
            ],
        );
        assert_eq!(c.stack_frames(0).len(), 3);
        assert_eq!(c.stack_frames(0)[1].function, "checkout::outer");
        assert!(c.stack_frames(7).is_empty());
    }

    #[test]
    fn mappings_give_offsets_their_addresses_back() {
        let m = Mapping {
            module: Module {
                name: "libc.so.6".into(),
                build_id: String::new(),
            },
            path: "/lib/libc.so.6".into(),
            start: 0x7f00_0000_1000,
            limit: 0x7f00_0000_9000,
            file_offset: 0x1000,
            flags: 0,
        };
        assert!(m.holds(&m.module, 0x1000));
        assert!(m.holds(&m.module, 0x8fff));
        assert!(!m.holds(&m.module, 0x9000));
        assert!(!m.holds(&m.module, 0xfff));
        assert_eq!(m.address_of(0x1234), 0x7f00_0000_1234);
    }
}
