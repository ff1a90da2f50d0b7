//! Stored contents back into pprof for download: the same sample types, period, time,
//! duration and comments, the same samples in the same order with the same values and
//! labels, each stack's frames. Native locations get their original address back from
//! the profile's mappings (pprof input), or, for the agent's own format, are placed in
//! a mapping of their module at their offset; symbolized ones carry their frames (and a
//! native location whose module's debug info is known, its symbols), so `go tool pprof`
//! names them without the binary.

use std::collections::HashMap;
use std::io::Write;

use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use holmes_proto::Module;
use holmes_storage::{Location as Loc, Mapping as StoredMapping, ProfileContents, StackFrame};
use prost::Message;

/// The string table being built.
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get("");
        s
    }

    fn get(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Flags of a stored mapping, as pprof's booleans.
fn mapping(id: u64, m: &StoredMapping, strings: &mut Strings) -> Mapping {
    Mapping {
        id,
        memory_start: m.start,
        memory_limit: m.limit,
        file_offset: m.file_offset,
        filename: strings.get(&m.path),
        build_id: strings.get(&m.module.build_id),
        has_functions: m.flags & StoredMapping::HAS_FUNCTIONS != 0,
        has_filenames: m.flags & StoredMapping::HAS_FILENAMES != 0,
        has_line_numbers: m.flags & StoredMapping::HAS_LINE_NUMBERS != 0,
        has_inline_frames: m.flags & StoredMapping::HAS_INLINE_FRAMES != 0,
    }
}

/// `contents` as a pprof message.
pub fn profile(c: &ProfileContents) -> Profile {
    let mut strings = Strings::new();
    let h = &c.header;
    let sample_type = h
        .sample_types
        .iter()
        .map(|t| ValueType {
            r#type: strings.get(&t.name),
            unit: strings.get(&t.unit),
        })
        .collect();
    let period_type = Some(ValueType {
        r#type: strings.get(&h.period_type.name),
        unit: strings.get(&h.period_type.unit),
    });
    // The profile's own mappings first (ids 1..), then one per module the agent's own
    // format named without one.
    let mut mappings: Vec<Mapping> = h
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| mapping(i as u64 + 1, m, &mut strings))
        .collect();
    let mut module_mappings: HashMap<&Module, u64> = HashMap::new();
    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64, i64, i64), u64> = HashMap::new();
    let mut line = |f: &StackFrame, strings: &mut Strings| -> Line {
        let name = strings.get(&f.function);
        // pprof "demangles" a function whose system name equals its name; an empty one
        // is left alone (and was what was sent when the profile had none).
        let system = strings.get(&f.system_name);
        let file = strings.get(&f.file);
        let key = (name, system, file, i64::from(f.start_line));
        let id = *function_ids.entry(key).or_insert_with(|| {
            let id = functions.len() as u64 + 1;
            functions.push(Function {
                id,
                name,
                system_name: system,
                filename: file,
                start_line: i64::from(f.start_line),
            });
            id
        });
        Line {
            function_id: id,
            line: i64::from(f.line),
            column: 0,
        }
    };
    let mut locations = Vec::with_capacity(c.locations.len());
    for (i, l) in c.locations.iter().enumerate() {
        let id = i as u64 + 1;
        let location = match l {
            Loc::Native { module, offset } => {
                let held = h
                    .mappings
                    .iter()
                    .position(|m| m.holds(module, *offset))
                    .or_else(|| h.mappings.iter().position(|m| m.module == *module));
                let (mapping_id, address) = match held {
                    Some(m) => (m as u64 + 1, h.mappings[m].address_of(*offset)),
                    None if module.name.is_empty() && module.build_id.is_empty() => (0, *offset),
                    None => {
                        let m = *module_mappings.entry(module).or_insert_with(|| {
                            let id = mappings.len() as u64 + 1;
                            mappings.push(Mapping {
                                id,
                                filename: strings.get(&module.name),
                                build_id: strings.get(&module.build_id),
                                ..Mapping::default()
                            });
                            id
                        });
                        let limit = &mut mappings[m as usize - 1].memory_limit;
                        *limit = (*limit).max(offset.saturating_add(1));
                        (m, *offset)
                    }
                };
                let lines = c
                    .symbols
                    .get(&(i as u32))
                    .map(|frames| frames.iter().map(|f| line(f, &mut strings)).collect())
                    .unwrap_or_default();
                Location {
                    id,
                    mapping_id,
                    address,
                    line: lines,
                    is_folded: false,
                }
            }
            Loc::Symbolic(frames) => Location {
                id,
                mapping_id: 0,
                address: 0,
                line: frames.iter().map(|f| line(f, &mut strings)).collect(),
                is_folded: false,
            },
        };
        locations.push(location);
    }
    let empty = Vec::new();
    let sample = c
        .samples
        .iter()
        .map(|s| Sample {
            location_id: c
                .stacks
                .get(s.stack as usize)
                .unwrap_or(&empty)
                .iter()
                .map(|&l| u64::from(l) + 1)
                .collect(),
            value: s.values.clone(),
            label: c
                .label_sets
                .get(s.labels as usize)
                .map(|set| {
                    set.iter()
                        .map(|l| {
                            if l.str.is_empty() {
                                Label {
                                    key: strings.get(&l.key),
                                    str: 0,
                                    num: l.num,
                                    num_unit: strings.get(&l.unit),
                                }
                            } else {
                                Label {
                                    key: strings.get(&l.key),
                                    str: strings.get(&l.str),
                                    num: 0,
                                    num_unit: 0,
                                }
                            }
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    let comment = h.comments.iter().map(|t| strings.get(t)).collect();
    let drop_frames = strings.get(&h.drop_frames);
    let keep_frames = strings.get(&h.keep_frames);
    let default_sample_type = strings.get(&h.default_sample_type);
    Profile {
        sample_type,
        sample,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        drop_frames,
        keep_frames,
        time_nanos: h.time_nanos,
        duration_nanos: h.duration_nanos,
        period_type,
        period: h.period,
        comment,
        default_sample_type,
    }
}

/// `contents` as gzip-compressed pprof bytes, as `go tool pprof` reads them.
pub fn gzip(c: &ProfileContents) -> Vec<u8> {
    let raw = profile(c).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::normalize::{normalize_pprof, Limits};

    /// A pprof profile with a mapping, native and symbolic locations, labels: decoded
    /// and encoded again, it decodes to the same contents.
    #[test]
    fn contents_survive_a_round_trip() {
        let mut s = Strings::new();
        let p = Profile {
            sample_type: vec![ValueType {
                r#type: s.get("samples"),
                unit: s.get("count"),
            }],
            mapping: vec![Mapping {
                id: 1,
                memory_start: 0x7f00_0000_0000,
                memory_limit: 0x7f00_0001_0000,
                file_offset: 0x1000,
                filename: s.get("/lib/libc.so.6"),
                build_id: s.get("abcd"),
                has_functions: false,
                ..Mapping::default()
            }],
            location: vec![
                Location {
                    id: 7,
                    mapping_id: 1,
                    address: 0x7f00_0000_0123,
                    line: vec![],
                    is_folded: false,
                },
                Location {
                    id: 9,
                    mapping_id: 0,
                    address: 0,
                    line: vec![Line {
                        function_id: 3,
                        line: 12,
                        column: 0,
                    }],
                    is_folded: false,
                },
            ],
            function: vec![Function {
                id: 3,
                name: s.get("main"),
                system_name: s.get("main"),
                filename: s.get("src/main.rs"),
                start_line: 4,
            }],
            sample: vec![Sample {
                location_id: vec![7, 9],
                value: vec![3],
                label: vec![Label {
                    key: s.get("thread"),
                    str: s.get("w1"),
                    num: 0,
                    num_unit: 0,
                }],
            }],
            period: 1,
            comment: vec![s.get("hello")],
            ..Profile::default()
        };
        let mut p = p;
        p.string_table = s.table;
        let first = normalize_pprof(&p.encode_to_vec(), Limits::default()).unwrap();
        let again = normalize_pprof(&gzip(&first), Limits::default()).unwrap();
        assert_eq!(again, first);
        // The native location has its address back, in its mapping.
        let encoded = profile(&first);
        assert_eq!(encoded.location[0].address, 0x7f00_0000_0123);
        assert_eq!(encoded.location[0].mapping_id, 1);
    }
}
