//! From gathered samples to a `profile.proto` message: stacks symbolized, allocator
//! frames trimmed from their leaf end, identical samples merged, every string, function
//! and location stored once in holmes-proto's [`ProfileTables`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use holmes_proto::pprof::{Label, Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;

use super::{add_values, Labels, OwnedLabelValue, ProfileBuilder, Stack, MAX_STACK_DEPTH};
use crate::capture::symbolize::{lookup_address, Frame, Symbolizer};

impl ProfileBuilder {
    /// The profile: symbolized, trimmed, merged.
    pub(super) fn encode_proto(self, symbolizer: &mut Symbolizer) -> Profile {
        let mut e = Encoder::new();
        let t = &mut e.tables;
        let sample_type = self
            .sample_types
            .iter()
            .map(|(ty, unit)| t.value_type(ty, unit))
            .collect();
        let period_type = Some(t.value_type(&self.period_type.0, &self.period_type.1));

        // Samples that end up with the same locations and labels are merged.
        let mut merged: Vec<Sample> = Vec::new();
        let mut merged_index: HashMap<(Vec<u64>, &Labels), usize> = HashMap::new();
        for (key, values) in &self.samples {
            let mut ids = match &key.stack {
                Stack::Addresses(addrs) => addrs
                    .iter()
                    .enumerate()
                    .map(|(i, &addr)| e.address_location(symbolizer, addr, i == 0))
                    .collect::<Vec<u64>>(),
                Stack::Frames(frames) => frames.iter().map(|f| e.frame_location(f)).collect(),
            };
            if !self.trim_prefixes.is_empty() {
                ids = e.trim(ids, &self.trim_prefixes);
            }
            match merged_index.entry((ids, &key.labels)) {
                Entry::Occupied(entry) => {
                    if let Some(sample) = merged.get_mut(*entry.get()) {
                        add_values(&mut sample.value, values);
                    }
                }
                Entry::Vacant(entry) => {
                    let label = key.labels.iter().map(|(k, v)| e.label(k, v)).collect();
                    let sample = Sample {
                        location_id: entry.key().0.clone(),
                        value: values.clone(),
                        label,
                    };
                    entry.insert(merged.len());
                    merged.push(sample);
                }
            }
        }

        let t = &mut e.tables;
        let mut comment: Vec<i64> = self.comments.iter().map(|c| t.string(c)).collect();
        if self.dropped_samples > 0 {
            let text = format!(
                "holmes: {} samples dropped beyond {} distinct samples",
                self.dropped_samples, self.max_samples
            );
            comment.push(t.string(&text));
        }
        if self.truncated_stacks > 0 {
            let text = format!(
                "holmes: {} stacks truncated to {MAX_STACK_DEPTH} frames",
                self.truncated_stacks
            );
            comment.push(t.string(&text));
        }
        e.tables.into_profile(Profile {
            sample_type,
            sample: merged,
            time_nanos: self.time_nanos,
            duration_nanos: self.duration_nanos,
            period_type,
            period: self.period,
            comment,
            ..Profile::default()
        })
    }
}

/// Whether `pattern` names the frame `name`: a prefix; written `*text`, any name
/// containing `text` (for trait impls such as `<u8 as alloc::vec::SpecFromElem>`);
/// written `=name`, exactly that name (inlined frames from line tables carry no path);
/// written `@text`, any frame whose source file contains `text`.
fn trimmed_by(name: &str, file: &str, pattern: &str) -> bool {
    if let Some(path) = pattern.strip_prefix('@') {
        file.contains(path)
    } else if let Some(inner) = pattern.strip_prefix('*') {
        name.contains(inner)
    } else if let Some(exact) = pattern.strip_prefix('=') {
        name == exact
    } else {
        name.starts_with(pattern)
    }
}

/// The tables of the profile being encoded, with the one mapping every location is in
/// (this executable, marked as symbolized) and the locations of the addresses already
/// symbolized.
struct Encoder {
    tables: ProfileTables,
    mapping: u64,
    /// (looked-up address, leading frames trimmed) → location id.
    address_locations: HashMap<(usize, usize), u64>,
}

impl Encoder {
    fn new() -> Self {
        let mut tables = ProfileTables::new();
        let executable = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Every location is symbolized before it is written: pprof must not try again
        // against a binary it does not have.
        let mapping = tables.mapping(&executable, "", true);
        Encoder {
            tables,
            mapping,
            address_locations: HashMap::new(),
        }
    }

    /// The line of a frame, its function added by (name, file).
    fn line(&mut self, frame: &Frame) -> Line {
        let name = if frame.function.is_empty() {
            "<unknown>"
        } else {
            &frame.function
        };
        Line {
            // No system name: pprof re-"demangles" a function whose system name equals
            // its name, cutting Rust's `<T as Trait>::f` down to `::f`.
            function_id: self.tables.function(name, "", &frame.file, 0),
            line: i64::from(frame.line),
            column: 0,
        }
    }

    /// The location of a stack address, symbolized once per profile.
    fn address_location(&mut self, symbolizer: &mut Symbolizer, addr: usize, leaf: bool) -> u64 {
        let lookup = lookup_address(addr, leaf);
        if let Some(&id) = self.address_locations.get(&(lookup, 0)) {
            return id;
        }
        let lines = symbolizer
            .frames(addr, leaf)
            .iter()
            .map(|f| self.line(f))
            .collect();
        let id = self.tables.location(self.mapping, lookup as u64, lines);
        self.address_locations.insert((lookup, 0), id);
        id
    }

    /// The location of a symbolic frame (no address).
    fn frame_location(&mut self, frame: &Frame) -> u64 {
        let line = vec![self.line(frame)];
        self.tables.location(self.mapping, 0, line)
    }

    /// The name and file of a line's function.
    fn function_of(&self, line: &Line) -> (&str, &str) {
        let function = self.tables.function_at(line.function_id);
        let string = |index: Option<i64>| {
            index
                .and_then(|i| self.tables.string_at(i))
                .unwrap_or_default()
        };
        (
            string(function.map(|f| f.name)),
            string(function.map(|f| f.filename)),
        )
    }

    /// Drops the innermost frames whose function matches one of `patterns` (see
    /// [`trimmed_by`]); a location left with only some of its inlined frames becomes a
    /// location of its own. A stack made only of such frames is kept whole.
    fn trim(&mut self, ids: Vec<u64>, patterns: &[String]) -> Vec<u64> {
        let mut skip = 0usize;
        let mut kept_one = false;
        'walk: for &id in &ids {
            let lines = self
                .tables
                .location_at(id)
                .map_or(&[][..], |l| l.line.as_slice());
            for line in lines {
                let (name, file) = self.function_of(line);
                if patterns.iter().any(|p| trimmed_by(name, file, p)) {
                    skip += 1;
                } else {
                    kept_one = true;
                    break 'walk;
                }
            }
        }
        if skip == 0 || !kept_one {
            return ids;
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut rest = ids.into_iter();
        for id in rest.by_ref() {
            let Some(loc) = self.tables.location_at(id) else {
                continue;
            };
            let n = loc.line.len();
            if skip >= n {
                skip -= n;
                continue;
            }
            if skip == 0 {
                out.push(id);
            } else {
                let address = loc.address;
                let lines = loc.line.get(skip..).unwrap_or(&[]).to_vec();
                let key = (usize::try_from(address).unwrap_or(usize::MAX), skip);
                let partial = match self.address_locations.get(&key) {
                    Some(&p) => p,
                    None => {
                        let p = self.tables.location(self.mapping, address, lines);
                        self.address_locations.insert(key, p);
                        p
                    }
                };
                out.push(partial);
            }
            break;
        }
        out.extend(rest);
        out
    }

    fn label(&mut self, key: &str, value: &OwnedLabelValue) -> Label {
        match value {
            OwnedLabelValue::Str(s) => self.tables.str_label(key, s),
            OwnedLabelValue::Num(n, unit) => self.tables.num_label(key, *n, unit),
        }
    }
}
