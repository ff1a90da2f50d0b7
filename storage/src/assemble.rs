//! Reads, the part every backend shares: a profile's stored samples (against stack
//! numbers) and the rows of its stacks and locations put back together into
//! [`ProfileContents`], and many profiles merged into one.
//!
//! A backend reads the profile rows, decodes their samples ([`crate::encoding`]), reads
//! the stacks the samples use ([`stack_nums`]), then the locations those use
//! ([`location_nums`]), then the symbols of the native ones ([`native_ids`]), and hands
//! all of it to [`contents`] or [`Merger`].

use std::collections::{BTreeMap, HashMap};

use crate::contents::{ProfileContents, ProfileHeader, ProfileSample, ValueType};
use crate::encoding::StoredSamples;
use crate::location::{Location, LocationId, StackFrame};
use crate::StoreError;

/// The rows a profile's samples refer to, by number.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    /// Stack number → location numbers, leaf first.
    pub(crate) stacks: HashMap<u64, Vec<u64>>,
    /// Location number → location.
    pub(crate) locations: HashMap<u64, Location>,
    /// Symbols of native locations, by id.
    pub(crate) symbols: HashMap<LocationId, Vec<StackFrame>>,
}

/// The distinct stack numbers `samples` use, sorted.
pub(crate) fn stack_nums<'a>(samples: impl IntoIterator<Item = &'a StoredSamples>) -> Vec<u64> {
    let mut out: Vec<u64> = samples
        .into_iter()
        .flat_map(|s| s.stack_nums.iter().copied())
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The distinct location numbers `stacks` use, sorted.
pub(crate) fn location_nums(stacks: &HashMap<u64, Vec<u64>>) -> Vec<u64> {
    let mut out: Vec<u64> = stacks.values().flatten().copied().collect();
    out.sort_unstable();
    out.dedup();
    out
}

/// The ids of the native locations among `locations` (whose symbols to read).
pub(crate) fn native_ids(locations: &HashMap<u64, Location>) -> Vec<LocationId> {
    let mut out: Vec<LocationId> = locations
        .values()
        .filter(|l| matches!(l, Location::Native { .. }))
        .map(Location::id)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn missing(what: &'static str, num: u64) -> StoreError {
    StoreError::Corrupt {
        what,
        value: format!("number {num:#x} has no stored row"),
    }
}

/// Builds contents' locations and stacks from numbers: each distinct location and stack
/// once, in order of first use.
struct Builder<'a> {
    rows: &'a Rows,
    locations: Vec<Location>,
    location_index: HashMap<u64, u32>,
    symbols: BTreeMap<u32, Vec<StackFrame>>,
    stacks: Vec<Vec<u32>>,
    stack_index: HashMap<u64, u32>,
}

impl<'a> Builder<'a> {
    fn new(rows: &'a Rows) -> Self {
        Builder {
            rows,
            locations: Vec::new(),
            location_index: HashMap::new(),
            symbols: BTreeMap::new(),
            stacks: Vec::new(),
            stack_index: HashMap::new(),
        }
    }

    fn location(&mut self, num: u64) -> Result<u32, StoreError> {
        if let Some(&i) = self.location_index.get(&num) {
            return Ok(i);
        }
        let location = self
            .rows
            .locations
            .get(&num)
            .ok_or_else(|| missing("locations", num))?;
        let i = self.locations.len() as u32;
        if matches!(location, Location::Native { .. }) {
            if let Some(symbols) = self.rows.symbols.get(&location.id()) {
                self.symbols.insert(i, symbols.clone());
            }
        }
        self.locations.push(location.clone());
        self.location_index.insert(num, i);
        Ok(i)
    }

    fn stack(&mut self, num: u64) -> Result<u32, StoreError> {
        if let Some(&i) = self.stack_index.get(&num) {
            return Ok(i);
        }
        let rows = self.rows;
        let nums = rows
            .stacks
            .get(&num)
            .ok_or_else(|| missing("stacks", num))?;
        let stack = nums
            .iter()
            .map(|&l| self.location(l))
            .collect::<Result<Vec<u32>, _>>()?;
        let i = self.stacks.len() as u32;
        self.stacks.push(stack);
        self.stack_index.insert(num, i);
        Ok(i)
    }
}

/// A profile's contents from its header, its samples and the rows they refer to.
pub(crate) fn contents(
    header: ProfileHeader,
    stored: StoredSamples,
    rows: &Rows,
) -> Result<ProfileContents, StoreError> {
    let mut b = Builder::new(rows);
    let mut samples = Vec::with_capacity(stored.samples.len());
    for s in stored.samples {
        let num = stored
            .stack_nums
            .get(s.stack as usize)
            .copied()
            .ok_or_else(|| StoreError::Corrupt {
                what: "profile samples",
                value: format!("stack index {} of {}", s.stack, stored.stack_nums.len()),
            })?;
        samples.push(ProfileSample {
            stack: b.stack(num)?,
            values: s.values,
            labels: s.labels,
        });
    }
    Ok(ProfileContents {
        header,
        locations: b.locations,
        symbols: b.symbols,
        stacks: b.stacks,
        label_sets: stored.label_sets,
        samples,
        table_keys: None,
    })
}

/// Profiles merged into one: values summed per stack number and sample type.
#[derive(Debug, Default)]
pub(crate) struct Merger {
    types: Vec<ValueType>,
    period_type: ValueType,
    period: i64,
    sums: HashMap<u64, Vec<i64>>,
    order: Vec<u64>,
    profiles: u64,
}

impl Merger {
    /// Adds one profile.
    pub(crate) fn add(&mut self, header: &ProfileHeader, stored: &StoredSamples) {
        self.profiles += 1;
        if self.types.is_empty() {
            self.period_type = header.period_type.clone();
            self.period = header.period;
        }
        let columns: Vec<usize> = header
            .sample_types
            .iter()
            .map(|t| match self.types.iter().position(|k| k == t) {
                Some(i) => i,
                None => {
                    self.types.push(t.clone());
                    self.types.len() - 1
                }
            })
            .collect();
        for s in &stored.samples {
            let Some(&num) = stored.stack_nums.get(s.stack as usize) else {
                continue;
            };
            let sums = self.sums.entry(num).or_insert_with(|| {
                self.order.push(num);
                Vec::new()
            });
            for (&column, &v) in columns.iter().zip(&s.values) {
                if sums.len() <= column {
                    sums.resize(column + 1, 0);
                }
                sums[column] = sums[column].saturating_add(v);
            }
        }
    }

    /// The stack numbers to read.
    pub(crate) fn stack_nums(&self) -> Vec<u64> {
        let mut out = self.order.clone();
        out.sort_unstable();
        out
    }

    /// How many profiles were added.
    pub(crate) fn profiles(&self) -> u64 {
        self.profiles
    }

    /// The merged contents, one sample per distinct stack number.
    pub(crate) fn finish(self, rows: &Rows) -> Result<ProfileContents, StoreError> {
        let mut b = Builder::new(rows);
        let width = self.types.len();
        let mut samples = Vec::with_capacity(self.order.len());
        for num in &self.order {
            let mut values = self.sums.get(num).cloned().unwrap_or_default();
            values.resize(width, 0);
            samples.push(ProfileSample {
                stack: b.stack(*num)?,
                values,
                labels: 0,
            });
        }
        Ok(ProfileContents {
            header: ProfileHeader {
                sample_types: self.types,
                period_type: self.period_type,
                period: self.period,
                ..ProfileHeader::default()
            },
            locations: b.locations,
            symbols: b.symbols,
            stacks: b.stacks,
            label_sets: vec![Vec::new()],
            samples,
            table_keys: None,
        })
    }
}
