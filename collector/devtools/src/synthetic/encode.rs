//! A capture's two forms: the agent's own `NativeProfile` and pprof as earlier agents
//! sent it (see the parent module).

use std::collections::HashMap;
use std::io::Write as _;

use holmes_proto::native::{
    Location as NativeLocation, NativeProfile, NativeSample, ProfileLabel,
    ValueType as NativeValueType,
};
use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use holmes_proto::Module;
use prost::Message as _;

use super::shapes::{Catalog, VDSO};
use super::{mix, Build, Capture, Frame, PERIOD_NANOS};

/// glibc's file name and build id (the same in every build of the service).
const LIBC: (&str, &str) = ("libc.so.6", "2e01923fea4ad9f7fa50fe24e0f3385a45a6cd1c");
const LIBC_PATH: &str = "/usr/lib/x86_64-linux-gnu/libc.so.6";
/// Where libc's code starts in its file.
const LIBC_TEXT: u64 = 0x28000;

/// Which module a frame's function is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Binary = 0,
    Libc = 1,
    Vdso = 2,
}

fn place(file: &str) -> Place {
    if file == VDSO {
        Place::Vdso
    } else if file.starts_with("./") || file.starts_with("../") {
        Place::Libc
    } else {
        Place::Binary
    }
}

/// A frame's offset in its module (stable across processes; the binary's differ per
/// build).
fn offset(build: &Build, function: usize, line: u32, place: Place) -> u64 {
    let f = function as u64;
    let l = u64::from(line);
    match place {
        Place::Binary => build.text_offset + f * 0x1000 + l * 4,
        Place::Libc => LIBC_TEXT + f * 0x400 + (l % 256) * 2,
        Place::Vdso => 0x900 + (l % 64) * 4,
    }
}

const COMMENTS: [&str; 2] = [
    "holmes trigger cpu profile at 100 Hz",
    "holmes: 0 samples lost to a full signal ring, 0 beyond the distinct-stack cap (since start)",
];

/// Where a process mapped each module (ASLR).
struct Bases {
    binary: u64,
    libc: u64,
    vdso: u64,
}

impl Bases {
    fn of(process: u64) -> Bases {
        Bases {
            binary: 0x5555_0000_0000 + (mix(process) & 0xffff_f000),
            libc: 0x7f00_0000_0000 + (mix(process ^ 1) & 0x0fff_ffff_f000),
            vdso: 0x7ffc_0000_0000 + (mix(process ^ 2) & 0x0fff_f000),
        }
    }
}

/// Both forms of a capture of `picks` (stack index in `pool`, tick count).
pub(super) fn capture(
    catalog: &Catalog,
    pool: &[Vec<Frame>],
    picks: &[(usize, i64)],
    started_unix_nanos: u64,
    build: Build,
    process: u64,
) -> Capture {
    Capture {
        native: native(catalog, pool, picks, started_unix_nanos, &build),
        pprof_gzip: pprof(catalog, pool, picks, started_unix_nanos, &build, process),
    }
}

fn native(
    catalog: &Catalog,
    pool: &[Vec<Frame>],
    picks: &[(usize, i64)],
    started_unix_nanos: u64,
    build: &Build,
) -> NativeProfile {
    let mut locations: Vec<NativeLocation> = Vec::new();
    let mut location_ids: HashMap<Frame, u32> = HashMap::new();
    let mut stacks = Vec::with_capacity(picks.len());
    let mut samples = Vec::with_capacity(picks.len());
    for (i, &(stack, count)) in picks.iter().enumerate() {
        let entries = pool[stack]
            .iter()
            .map(|&(f, line)| {
                *location_ids.entry((f, line)).or_insert_with(|| {
                    let p = place(&catalog.functions[f].1);
                    locations.push(NativeLocation::Native {
                        module: p as u32,
                        offset: offset(build, f, line, p),
                    });
                    locations.len() as u32 - 1
                })
            })
            .collect();
        stacks.push(entries);
        samples.push(NativeSample {
            stack: i as u32,
            values: vec![count, count * PERIOD_NANOS],
            labels: vec![ProfileLabel {
                key: "phase".into(),
                str: "trigger".into(),
                num: 0,
                unit: String::new(),
            }],
        });
    }
    NativeProfile {
        sample_types: vec![
            NativeValueType::new("samples", "count"),
            NativeValueType::new("cpu", "nanoseconds"),
        ],
        period_type: NativeValueType::new("cpu", "nanoseconds"),
        period: PERIOD_NANOS,
        time_unix_nanos: started_unix_nanos,
        duration_nanos: 10_000_000_000,
        comments: COMMENTS.iter().map(|c| (*c).to_owned()).collect(),
        modules: vec![
            Module {
                name: build.binary.to_owned(),
                build_id: build.build_id.to_owned(),
            },
            Module {
                name: LIBC.0.to_owned(),
                build_id: LIBC.1.to_owned(),
            },
            Module {
                name: VDSO.to_owned(),
                build_id: String::new(),
            },
        ],
        locations,
        stacks,
        samples,
    }
}

#[derive(Default)]
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    function_ids: HashMap<usize, u64>,
    locations: Vec<Location>,
    location_ids: HashMap<Frame, u64>,
}

impl Tables {
    fn string(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.string_ids.get(s) {
            return i;
        }
        let i = self.strings.len() as i64;
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), i);
        i
    }

    fn location(&mut self, catalog: &Catalog, build: &Build, bases: &Bases, frame: Frame) -> u64 {
        if let Some(&id) = self.location_ids.get(&frame) {
            return id;
        }
        let (f, line) = frame;
        let p = place(&catalog.functions[f].1);
        let off = offset(build, f, line, p);
        let id = self.locations.len() as u64 + 1;
        let location = match p {
            // The binary's frames symbolized, at their absolute address.
            Place::Binary => {
                let function_id = match self.function_ids.get(&f) {
                    Some(&id) => id,
                    None => {
                        let (name, file) = &catalog.functions[f];
                        let id = self.functions.len() as u64 + 1;
                        let function = Function {
                            id,
                            name: self.string(name),
                            system_name: 0,
                            filename: self.string(file),
                            start_line: 0,
                        };
                        self.functions.push(function);
                        self.function_ids.insert(f, id);
                        id
                    }
                };
                Location {
                    id,
                    mapping_id: 1,
                    address: bases.binary + off,
                    line: vec![Line {
                        function_id,
                        line: i64::from(line),
                        column: 0,
                    }],
                    is_folded: false,
                }
            }
            // libc's and the vDSO's as their mapping and address only.
            Place::Libc => Location {
                id,
                mapping_id: 2,
                address: bases.libc + LIBC_TEXT + (off - LIBC_TEXT),
                line: vec![],
                is_folded: false,
            },
            Place::Vdso => Location {
                id,
                mapping_id: 3,
                address: bases.vdso + off,
                line: vec![],
                is_folded: false,
            },
        };
        self.locations.push(location);
        self.location_ids.insert(frame, id);
        id
    }
}

fn pprof(
    catalog: &Catalog,
    pool: &[Vec<Frame>],
    picks: &[(usize, i64)],
    started_unix_nanos: u64,
    build: &Build,
    process: u64,
) -> Vec<u8> {
    let bases = Bases::of(process);
    let mut t = Tables::default();
    t.string("");
    let sample_type = vec![
        ValueType {
            r#type: t.string("samples"),
            unit: t.string("count"),
        },
        ValueType {
            r#type: t.string("cpu"),
            unit: t.string("nanoseconds"),
        },
    ];
    let period_type = Some(ValueType {
        r#type: t.string("cpu"),
        unit: t.string("nanoseconds"),
    });
    let phase_key = t.string("phase");
    let phase = t.string("trigger");
    let sample = picks
        .iter()
        .map(|&(stack, count)| Sample {
            location_id: pool[stack]
                .iter()
                .map(|&frame| t.location(catalog, build, &bases, frame))
                .collect(),
            value: vec![count, count * PERIOD_NANOS],
            label: vec![Label {
                key: phase_key,
                str: phase,
                num: 0,
                num_unit: 0,
            }],
        })
        .collect();
    let comment = COMMENTS.iter().map(|c| t.string(c)).collect();
    let binary_path = t.string(&format!("/usr/local/bin/{}", build.binary));
    let binary_id = t.string(build.build_id);
    let libc_path = t.string(LIBC_PATH);
    let libc_id = t.string(LIBC.1);
    let vdso = t.string(VDSO);
    let mapping = vec![
        Mapping {
            id: 1,
            memory_start: bases.binary,
            memory_limit: bases.binary + 0x0100_0000,
            file_offset: 0,
            filename: binary_path,
            build_id: binary_id,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        },
        Mapping {
            id: 2,
            memory_start: bases.libc + LIBC_TEXT,
            memory_limit: bases.libc + LIBC_TEXT + 0x0019_0000,
            file_offset: LIBC_TEXT,
            filename: libc_path,
            build_id: libc_id,
            ..Mapping::default()
        },
        Mapping {
            id: 3,
            memory_start: bases.vdso,
            memory_limit: bases.vdso + 0x2000,
            file_offset: 0,
            filename: vdso,
            build_id: 0,
            ..Mapping::default()
        },
    ];
    let profile = Profile {
        sample_type,
        sample,
        mapping,
        location: t.locations,
        function: t.functions,
        string_table: t.strings,
        drop_frames: 0,
        keep_frames: 0,
        time_nanos: started_unix_nanos as i64,
        duration_nanos: 10_000_000_000,
        period_type,
        period: PERIOD_NANOS,
        comment,
        default_sample_type: 0,
    };
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}
