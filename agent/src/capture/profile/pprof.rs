//! From gathered samples to gzipped pprof (`profile.proto`) for the dump folder: stacks
//! symbolized in this process, allocator frames trimmed from their leaf end, identical
//! samples merged, every string, function and location stored once in holmes-proto's
//! [`ProfileTables`].

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::Write;

use holmes_proto::pprof::{Label, Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use holmes_symbolize::Frame;
use prost::Message;

use super::{add_values, AllocatorFrame, Labels, OwnedLabelValue, ProfileBuilder, Stack};
use crate::capture::symbolize::local::LocalSymbols;
use crate::capture::symbolize::modules::Resolver;

impl ProfileBuilder {
    /// Symbolizes, deduplicates and encodes the profile as gzipped `profile.proto`.
    pub(crate) fn encode_gzip(&self, symbols: &mut LocalSymbols) -> Vec<u8> {
        let raw = self.encode_proto(symbols).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4 + 64),
            flate2::Compression::default(),
        );
        match gz.write_all(&raw).and_then(|()| gz.finish()) {
            Ok(bytes) => bytes,
            // Writing into a Vec does not fail; should it, pprof reads plain protobuf too.
            Err(_) => raw,
        }
    }

    /// The profile: symbolized, trimmed, merged.
    pub(super) fn encode_proto(&self, symbols: &mut LocalSymbols) -> Profile {
        let mut resolver = Resolver::new();
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
                Stack::Addresses(code) => code
                    .iter()
                    .map(|&addr| e.address_location(symbols, &mut resolver, addr))
                    .collect::<Vec<u64>>(),
                Stack::Frames(frames) => frames.iter().map(|f| e.frame_location(f)).collect(),
            };
            if let Some(is_allocator) = self.trim {
                ids = e.trim(ids, is_allocator);
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
        let comment: Vec<i64> = self
            .comments
            .iter()
            .chain(&self.limit_notes())
            .map(|c| t.string(c))
            .collect();
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

    /// The location of a code address, symbolized once per profile.
    fn address_location(
        &mut self,
        symbols: &mut LocalSymbols,
        resolver: &mut Resolver,
        lookup: usize,
    ) -> u64 {
        if let Some(&id) = self.address_locations.get(&(lookup, 0)) {
            return id;
        }
        let lines = symbols
            .frames(resolver, lookup)
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

    /// Drops the innermost frames `is_allocator` names; a location left with only some
    /// of its inlined frames becomes a location of its own. A stack made only of such
    /// frames is kept whole.
    fn trim(&mut self, ids: Vec<u64>, is_allocator: AllocatorFrame) -> Vec<u64> {
        let mut skip = 0usize;
        let mut kept_one = false;
        'walk: for &id in &ids {
            let lines = self
                .tables
                .location_at(id)
                .map_or(&[][..], |l| l.line.as_slice());
            for line in lines {
                let (name, file) = self.function_of(line);
                if is_allocator(name, file) {
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
