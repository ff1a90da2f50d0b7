//! The tables of a pprof [`Profile`] being built: strings, functions, locations and
//! mappings, each entry stored once and referred to by its index or id, as
//! `profile.proto` wants (string 0 is `""`, ids start at 1).
//!
//! ```
//! use holmes_proto::pprof::{Line, Profile, Sample};
//! use holmes_proto::profile_tables::ProfileTables;
//!
//! let mut t = ProfileTables::new();
//! let sample_type = vec![t.value_type("samples", "count")];
//! let binary = t.mapping("/usr/bin/checkout", "", true);
//! let query = t.function("checkout::db::query", "", "src/db.rs", 0);
//! let serve = t.function("checkout::handler::serve", "", "src/handler.rs", 0);
//! let leaf = t.location(binary, 0x1000, vec![Line { function_id: query, line: 42, column: 0 }]);
//! let caller = t.location(binary, 0x2000, vec![Line { function_id: serve, line: 10, column: 0 }]);
//! // The same location again is the same id.
//! assert_eq!(t.location(binary, 0x1000, vec![Line { function_id: query, line: 42, column: 0 }]), leaf);
//! let label = vec![t.str_label("thread", "worker-1")];
//! let sample = vec![Sample { location_id: vec![leaf, caller], value: vec![3], label }];
//! let profile = t.into_profile(Profile { sample_type, sample, ..Profile::default() });
//! assert_eq!(profile.string_table[0], "");
//! assert_eq!((profile.function.len(), profile.location.len()), (2, 2));
//! assert_eq!(profile.mapping[0].memory_limit, 0x2001);
//! ```

use std::collections::HashMap;

use crate::pprof::{Function, Label, Line, Location, Mapping, Profile, ValueType};

/// What makes two locations the same: mapping, address and lines.
type LocationKey = (u64, u64, Vec<Line>);

/// Interned strings, functions, locations and mappings; [`ProfileTables::into_profile`]
/// puts them into a profile.
#[derive(Debug, Clone)]
pub struct ProfileTables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    /// (name, system name, file, start line) → id.
    function_ids: HashMap<(i64, i64, i64, i64), u64>,
    locations: Vec<Location>,
    location_ids: HashMap<LocationKey, u64>,
    mappings: Vec<Mapping>,
    /// (file name, build id) → id.
    mapping_ids: HashMap<(i64, i64), u64>,
}

impl Default for ProfileTables {
    fn default() -> Self {
        ProfileTables::new()
    }
}

/// The id of the `index`-th entry of a table: its position plus one.
fn id_of(index: usize) -> u64 {
    u64::try_from(index).map_or(u64::MAX, |i| i.saturating_add(1))
}

/// The entry with id `id` (its position plus one) of a table.
fn by_id<T>(table: &[T], id: u64) -> Option<&T> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    table.get(index)
}

impl ProfileTables {
    /// Empty tables: only string 0, `""`.
    pub fn new() -> Self {
        ProfileTables {
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            location_ids: HashMap::new(),
            mappings: Vec::new(),
            mapping_ids: HashMap::new(),
        }
    }

    /// The index of `s` in the string table, added if new.
    pub fn string(&mut self, s: &str) -> i64 {
        if let Some(&index) = self.string_ids.get(s) {
            return index;
        }
        let index = i64::try_from(self.strings.len()).unwrap_or(i64::MAX);
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), index);
        index
    }

    /// The string at `index`; `None` past the end of the table.
    pub fn string_at(&self, index: i64) -> Option<&str> {
        let index = usize::try_from(index).ok()?;
        self.strings.get(index).map(String::as_str)
    }

    /// A sample or period type such as `("cpu", "nanoseconds")`.
    pub fn value_type(&mut self, r#type: &str, unit: &str) -> ValueType {
        ValueType {
            r#type: self.string(r#type),
            unit: self.string(unit),
        }
    }

    /// A string label (`thread = "worker-1"`).
    pub fn str_label(&mut self, key: &str, value: &str) -> Label {
        Label {
            key: self.string(key),
            str: self.string(value),
            num: 0,
            num_unit: 0,
        }
    }

    /// A numeric label with its unit (`bytes = 4096 "bytes"`; `""` for none).
    pub fn num_label(&mut self, key: &str, value: i64, unit: &str) -> Label {
        Label {
            key: self.string(key),
            str: 0,
            num: value,
            num_unit: self.string(unit),
        }
    }

    /// The id of a function, added if no function has the same name, system name, file
    /// and start line. Leave `system_name` empty unless it differs from `name`: pprof
    /// "demangles" a function whose system name equals its name, and cuts Rust's
    /// `<T as Trait>::f` down to `::f`.
    pub fn function(
        &mut self,
        name: &str,
        system_name: &str,
        filename: &str,
        start_line: i64,
    ) -> u64 {
        let key = (
            self.string(name),
            self.string(system_name),
            self.string(filename),
            start_line,
        );
        if let Some(&id) = self.function_ids.get(&key) {
            return id;
        }
        let id = id_of(self.functions.len());
        self.functions.push(Function {
            id,
            name: key.0,
            system_name: key.1,
            filename: key.2,
            start_line,
        });
        self.function_ids.insert(key, id);
        id
    }

    /// The function with id `id`.
    pub fn function_at(&self, id: u64) -> Option<&Function> {
        by_id(&self.functions, id)
    }

    /// The id of the mapping of the object `filename` (with its GNU build id, or `""`),
    /// added if new. Its address range grows to cover every location added in it.
    /// `symbolized` says its locations carry their functions, files, lines and inlined
    /// frames, so that pprof does not try to symbolize them again from a binary it may
    /// not have.
    pub fn mapping(&mut self, filename: &str, build_id: &str, symbolized: bool) -> u64 {
        let key = (self.string(filename), self.string(build_id));
        if let Some(&id) = self.mapping_ids.get(&key) {
            return id;
        }
        let id = id_of(self.mappings.len());
        self.mappings.push(Mapping {
            id,
            memory_start: 0,
            memory_limit: 0,
            file_offset: 0,
            filename: key.0,
            build_id: key.1,
            has_functions: symbolized,
            has_filenames: symbolized,
            has_line_numbers: symbolized,
            has_inline_frames: symbolized,
        });
        self.mapping_ids.insert(key, id);
        id
    }

    /// The id of a location: `address` in the mapping `mapping_id` (0: none) with its
    /// `lines`, innermost (inlined) function first. Added if no location has the same
    /// mapping, address and lines.
    pub fn location(&mut self, mapping_id: u64, address: u64, lines: Vec<Line>) -> u64 {
        let key: LocationKey = (mapping_id, address, lines);
        if let Some(&id) = self.location_ids.get(&key) {
            return id;
        }
        let lines = key.2.clone();
        let id = id_of(self.locations.len());
        if let Some(mapping) = self
            .mappings
            .iter_mut()
            .find(|m| m.id == mapping_id && m.id != 0)
        {
            mapping.memory_limit = mapping.memory_limit.max(address.saturating_add(1));
        }
        self.locations.push(Location {
            id,
            mapping_id,
            address,
            line: lines,
            is_folded: false,
        });
        self.location_ids.insert(key, id);
        id
    }

    /// The location with id `id`.
    pub fn location_at(&self, id: u64) -> Option<&Location> {
        by_id(&self.locations, id)
    }

    /// `profile` with these tables as its string table, functions, locations and
    /// mappings (replacing whatever it had there).
    pub fn into_profile(self, profile: Profile) -> Profile {
        Profile {
            string_table: self.strings,
            function: self.functions,
            location: self.locations,
            mapping: self.mappings,
            ..profile
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pprof::Sample;
    use prost::Message;

    fn line(function_id: u64, line: i64) -> Line {
        Line {
            function_id,
            line,
            column: 0,
        }
    }

    #[test]
    fn every_entry_is_stored_once_and_ids_start_at_one() {
        let mut t = ProfileTables::new();
        assert_eq!(t.string(""), 0);
        let a = t.string("a");
        assert_eq!((a, t.string("b"), t.string("a")), (1, 2, 1));
        assert_eq!(t.string_at(a), Some("a"));
        assert_eq!(t.string_at(99), None);
        assert_eq!(t.string_at(-1), None);

        let f = t.function("main", "", "src/main.rs", 0);
        assert_eq!(f, 1);
        assert_eq!(t.function("main", "", "src/main.rs", 0), f);
        assert_ne!(t.function("main", "", "src/other.rs", 0), f);
        assert_ne!(t.function("main", "_main", "src/main.rs", 0), f);
        assert_eq!(
            t.function_at(f).map(|f| f.filename),
            Some(t.string("src/main.rs"))
        );
        assert!(t.function_at(0).is_none());

        let m = t.mapping("/bin/x", "", true);
        assert_eq!((m, t.mapping("/bin/x", "", false)), (1, 1));
        assert_eq!(t.mapping("/lib/y.so", "abc", false), 2);

        let l = t.location(m, 0x10, vec![line(f, 3)]);
        assert_eq!(l, 1);
        assert_eq!(t.location(m, 0x10, vec![line(f, 3)]), l);
        assert_ne!(t.location(m, 0x10, vec![line(f, 4)]), l, "another line");
        assert_ne!(t.location(m, 0x11, vec![line(f, 3)]), l, "another address");
        assert_ne!(t.location(0, 0x10, vec![line(f, 3)]), l, "another mapping");
        assert_eq!(t.location_at(l).map(|l| l.address), Some(0x10));
        assert!(t.location_at(99).is_none());
    }

    #[test]
    fn the_profile_gets_the_tables_and_round_trips() {
        let mut t = ProfileTables::new();
        let sample_type = vec![t.value_type("alloc_space", "bytes")];
        let period_type = Some(t.value_type("space", "bytes"));
        let exe = t.mapping("/usr/bin/checkout", "", true);
        let lib = t.mapping("/lib/libc.so.6", "", false);
        let f = t.function(
            "<checkout::Serve as tower::Service>::call",
            "",
            "src/serve.rs",
            0,
        );
        let g = t.function("malloc", "", "", 0);
        let inner = t.location(exe, 0x4000, vec![line(f, 7)]);
        let outer = t.location(exe, 0x9000, vec![line(f, 9)]);
        let libc = t.location(lib, 0x100, vec![line(g, 0)]);
        let label = vec![t.num_label("bytes", 4096, "bytes"), t.str_label("k", "v")];
        let comment = vec![t.string("a comment")];
        let profile = t.into_profile(Profile {
            sample_type,
            sample: vec![Sample {
                location_id: vec![libc, inner, outer],
                value: vec![4096],
                label,
            }],
            period_type,
            period: 512 * 1024,
            comment,
            ..Profile::default()
        });
        assert_eq!(profile.mapping.len(), 2);
        assert_eq!(
            profile.mapping[0].memory_limit, 0x9001,
            "covers its locations"
        );
        assert!(profile.mapping[0].has_functions && profile.mapping[0].has_inline_frames);
        assert!(!profile.mapping[1].has_functions);
        assert_eq!(profile.mapping[1].memory_limit, 0x101);
        let s = |i: i64| profile.string_table[usize::try_from(i).unwrap()].as_str();
        assert_eq!(
            s(profile.function[0].name),
            "<checkout::Serve as tower::Service>::call"
        );
        assert_eq!(s(profile.function[0].system_name), "");
        assert_eq!(s(profile.sample[0].label[0].num_unit), "bytes");
        assert_eq!(s(profile.sample[0].label[1].str), "v");
        assert_eq!(s(profile.comment[0]), "a comment");

        let decoded = Profile::decode(profile.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, profile);
    }
}
