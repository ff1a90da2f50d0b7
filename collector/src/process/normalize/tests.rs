//! The decoders against real-shaped profiles and broken ones.

use std::io::Write;

use holmes_proto::native::{
    Location as NativeLocation, NativeProfile, NativeSample, ProfileLabel as NativeLabel,
    SymbolicFrame, ValueType as NativeValueType,
};
use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};
use holmes_proto::{Module, ProfileFormat};
use holmes_storage::{Location as Loc, LocationId, ProfileContents, StackFrame};
use prost::Message;

use super::*;

/// A CPU profile: `main -> handle -> (inlined) render` twice with different thread
/// labels, `main -> handle` once, plus an unsymbolized address in libc's mapping.
fn profile() -> Profile {
    let strings = [
        "",
        "samples",
        "count",
        "cpu",
        "nanoseconds",
        "main",
        "src/main.rs",
        "handle",
        "render",
        "src/render.rs",
        "thread",
        "worker-1",
        "worker-2",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "bytes",
        "ABCDEF01",
        "a comment",
    ];
    let loc = |id: u64, mapping_id: u64, address: u64, lines: Vec<(u64, i64)>| Location {
        id,
        mapping_id,
        address,
        line: lines
            .into_iter()
            .map(|(function_id, line)| Line {
                function_id,
                line,
                column: 0,
            })
            .collect(),
        is_folded: false,
    };
    let func = |id: u64, name: i64, file: i64| Function {
        id,
        name,
        system_name: name,
        filename: file,
        start_line: 0,
    };
    let sample = |locs: Vec<u64>, n: i64, thread: i64| Sample {
        location_id: locs,
        value: vec![n, n * 10],
        label: vec![
            Label {
                key: 10,
                str: thread,
                num: 0,
                num_unit: 0,
            },
            Label {
                key: 14,
                str: 0,
                num: 64,
                num_unit: 14,
            },
        ],
    };
    Profile {
        sample_type: vec![
            ValueType { r#type: 1, unit: 2 },
            ValueType { r#type: 3, unit: 4 },
        ],
        sample: vec![
            sample(vec![2, 1], 5, 11),
            sample(vec![1], 1, 11),
            sample(vec![2, 1], 2, 12),
            sample(vec![3, 1], 1, 12),
        ],
        mapping: vec![Mapping {
            id: 1,
            memory_start: 0x7f00_0000_1000,
            memory_limit: 0x7f00_0010_0000,
            file_offset: 0x1000,
            filename: 13,
            build_id: 15,
            ..Mapping::default()
        }],
        // Location 2 is `render` inlined into `handle`: innermost first.
        location: vec![
            loc(1, 0, 0, vec![(1, 10)]),
            loc(2, 0, 0, vec![(3, 42), (2, 20)]),
            loc(3, 1, 0x7f00_0002_9d8f, vec![]),
        ],
        function: vec![func(1, 5, 6), func(2, 7, 6), func(3, 8, 9)],
        string_table: strings.iter().map(|s| (*s).to_owned()).collect(),
        period: 10_000_000,
        period_type: Some(ValueType { r#type: 3, unit: 4 }),
        time_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 10_000_000_000,
        comment: vec![16],
        ..Profile::default()
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn run(p: &Profile) -> Result<ProfileContents, NormalizeError> {
    normalize(
        ProfileFormat::PprofGzip,
        &gzip(&p.encode_to_vec()),
        Limits::default(),
    )
}

fn frames(c: &ProfileContents, sample: usize) -> Vec<StackFrame> {
    c.stack_frames(c.samples[sample].stack)
}

fn libc(offset: u64) -> Loc {
    Loc::Native {
        module: Module {
            name: "libc.so.6".into(),
            build_id: "abcdef01".into(),
        },
        offset,
    }
}

#[test]
fn pprof_stacks_are_normalized_and_stored_once() {
    let c = run(&profile()).unwrap();
    let h = &c.header;
    assert_eq!(
        h.sample_types,
        vec![
            holmes_storage::ValueType::new("samples", "count"),
            holmes_storage::ValueType::new("cpu", "nanoseconds")
        ]
    );
    assert_eq!((h.period, h.duration_nanos), (10_000_000, 10_000_000_000));
    assert_eq!(h.comments, vec!["a comment".to_owned()]);
    assert_eq!(h.mappings.len(), 1);
    assert_eq!(h.mappings[0].path, "/usr/lib/x86_64-linux-gnu/libc.so.6");
    // Three distinct stacks for four samples.
    assert_eq!(c.stacks.len(), 3);
    // pprof's system names are kept (here equal to the names), so a download reads back
    // the same.
    let named = |function: &str, file: &str, line| StackFrame {
        system_name: function.to_owned(),
        ..StackFrame::new(function, file, line)
    };
    assert_eq!(
        frames(&c, 0),
        vec![
            named("render", "src/render.rs", 42),
            named("handle", "src/main.rs", 20),
            named("main", "src/main.rs", 10),
        ]
    );
    assert_eq!(c.samples[0].stack, c.samples[2].stack);
    // The unsymbolized address is libc at its file offset: address - start + offset.
    let leaf = c.stacks[c.samples[3].stack as usize][0];
    assert_eq!(c.locations[leaf as usize], libc(0x2_9d8f));
    assert_eq!(frames(&c, 3)[0].function, "libc.so.6+0x29d8f");
    assert_eq!(c.samples[0].values, vec![5, 50]);
    let labels = &c.label_sets[c.samples[2].labels as usize];
    assert_eq!(labels[0].str, "worker-2");
    assert_eq!((labels[1].num, labels[1].unit.as_str()), (64, "bytes"));
    assert_eq!(c.label_sets.len(), 2);
    // Uncompressed input reads the same.
    let raw = normalize(
        ProfileFormat::PprofGzip,
        &profile().encode_to_vec(),
        Limits::default(),
    );
    assert_eq!(raw.unwrap(), c);
}

#[test]
fn two_processes_of_one_build_give_the_same_locations() {
    // The same code at other absolute addresses (ASLR): only the mapping moved.
    let a = profile();
    let mut b = profile();
    let shift = 0x1234_5000;
    b.mapping[0].memory_start += shift;
    b.mapping[0].memory_limit += shift;
    b.location[2].address += shift;
    let (a, b) = (run(&a).unwrap(), run(&b).unwrap());
    let ids =
        |c: &ProfileContents| -> Vec<LocationId> { c.locations.iter().map(Loc::id).collect() };
    assert_eq!(ids(&a), ids(&b));
    assert_eq!(a.stacks, b.stacks);
    assert_ne!(a.header.mappings, b.header.mappings);
}

#[test]
fn a_gzip_bomb_stops_at_the_cap() {
    // 64 MiB of zeros gzip to about 64 KiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let limits = Limits {
        max_decoded_bytes: 8 << 20,
        ..Limits::default()
    };
    assert_eq!(
        normalize(ProfileFormat::PprofGzip, &bomb, limits).unwrap_err(),
        NormalizeError::TooLarge { limit: 8 << 20 }
    );
}

#[test]
fn garbage_and_broken_gzip_are_refused() {
    let err = normalize(
        ProfileFormat::PprofGzip,
        b"\x0a\xff\xff\xff\xff\x0f",
        Limits::default(),
    );
    assert!(matches!(err, Err(NormalizeError::Malformed(_))), "{err:?}");
    let mut cut = gzip(&profile().encode_to_vec());
    cut.truncate(cut.len() / 2);
    let err = normalize(ProfileFormat::PprofGzip, &cut, Limits::default());
    assert!(matches!(err, Err(NormalizeError::Decompress(_))), "{err:?}");
    let err = normalize(ProfileFormat::Native, b"\x42\x05ab", Limits::default());
    assert!(matches!(err, Err(NormalizeError::Malformed(_))), "{err:?}");
}

#[test]
fn every_dangling_reference_is_named() {
    type Breakage = Box<dyn Fn(&mut Profile)>;
    let cases: Vec<(Breakage, &str)> = vec![
        (
            Box::new(|p| p.sample[0].location_id[0] = 99),
            "sample refers to location 99",
        ),
        (
            Box::new(|p| p.location[0].line[0].function_id = 98),
            "location line refers to function 98",
        ),
        (
            Box::new(|p| p.location[2].mapping_id = 97),
            "location refers to mapping 97",
        ),
        (
            Box::new(|p| p.function[0].name = 96),
            "function name refers to string 96",
        ),
        (
            Box::new(|p| p.function[0].filename = -1),
            "function file name refers to string -1",
        ),
        (
            Box::new(|p| p.sample[1].label[0].str = 95),
            "label value refers to string 95",
        ),
        (
            Box::new(|p| p.sample_type[0].unit = 94),
            "sample type refers to string 94",
        ),
        (
            Box::new(|p| p.comment = vec![93]),
            "comment refers to string 93",
        ),
        (
            Box::new(|p| p.mapping[0].filename = 92),
            "mapping file name refers to string 92",
        ),
    ];
    for (break_it, expected) in cases {
        let mut p = profile();
        break_it(&mut p);
        let err = run(&p).unwrap_err().to_string();
        assert!(err.contains(expected), "{err} should say {expected}");
    }
}

#[test]
fn counts_depth_duplicates_and_names_are_checked() {
    let mut p = profile();
    p.sample[3].value.push(1);
    assert_eq!(
        run(&p).unwrap_err(),
        NormalizeError::ValueCount {
            index: 3,
            values: 3,
            types: 2
        }
    );
    let mut p = profile();
    p.sample[1].location_id = vec![1; 2000];
    assert!(matches!(
        run(&p),
        Err(NormalizeError::TooDeep {
            what: "sample",
            index: 1,
            ..
        })
    ));
    let mut p = profile();
    p.function.push(p.function[0]);
    assert_eq!(
        run(&p).unwrap_err(),
        NormalizeError::DuplicateId {
            what: "functions",
            id: 1
        }
    );
    let limits = Limits {
        max_items: 3,
        ..Limits::default()
    };
    let err = normalize(ProfileFormat::PprofGzip, &profile().encode_to_vec(), limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the profile has 5 sample location entries, more than the 3 allowed"
    );
    // Eight samples, four of them of no location: 7 location entries, 8 samples.
    let limits = Limits {
        max_items: 7,
        ..Limits::default()
    };
    let mut p = profile();
    for _ in 0..4 {
        let mut empty = p.sample[1].clone();
        empty.location_id.clear();
        p.sample.push(empty);
    }
    let err = normalize(ProfileFormat::PprofGzip, &p.encode_to_vec(), limits).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the profile has 8 samples, more than the 7 allowed"
    );
    let mut p = profile();
    p.string_table[8] = "r".repeat(5000);
    assert_eq!(
        run(&p).unwrap_err().to_string(),
        "a function name of 5000 bytes is longer than the 4096 allowed"
    );
}

/// The shape issue 12 found killing the collector: a profile of about a kilobyte of
/// gzip naming one long function from many locations, used at every depth of many
/// distinct deep stacks. Copying the name into every frame of every stack came to
/// gigabytes. Now the name is refused when it is longer than a name may be; and within
/// the name limit, what the contents hold stays within the materialization budget, or
/// the profile is refused with that reason.
#[test]
fn the_amplifying_shape_is_refused_or_bounded() {
    fn amplifier(name_len: usize, locations: u64, samples: u64, depth: usize) -> Vec<u8> {
        let strings = vec![
            String::new(),
            "samples".to_owned(),
            "count".to_owned(),
            "f".repeat(name_len),
        ];
        let p = Profile {
            sample_type: vec![ValueType { r#type: 1, unit: 2 }],
            function: vec![Function {
                id: 1,
                name: 3,
                system_name: 3,
                filename: 3,
                start_line: 0,
            }],
            location: (1..=locations)
                .map(|id| Location {
                    id,
                    line: vec![Line {
                        function_id: 1,
                        line: id as i64,
                        column: 0,
                    }],
                    ..Location::default()
                })
                .collect(),
            sample: (0..samples)
                .map(|s| Sample {
                    location_id: (0..depth as u64)
                        .map(|d| 1 + (d * 7 + s) % locations)
                        .collect(),
                    value: vec![1],
                    label: vec![],
                })
                .collect(),
            string_table: strings,
            ..Profile::default()
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&p.encode_to_vec()).unwrap();
        gz.finish().unwrap()
    }
    // A 64 KiB name, 64 locations, 86 distinct samples 1024 deep: 1,157 bytes of gzip
    // (copied into every frame of every stack: 5.4 GiB).
    let bomb = amplifier(64 << 10, 64, 86, 1024);
    assert!(bomb.len() < 1200, "{} bytes", bomb.len());
    assert_eq!(
        normalize(ProfileFormat::PprofGzip, &bomb, Limits::default()).unwrap_err(),
        NormalizeError::NameTooLong {
            what: "function name",
            len: 64 << 10,
            limit: DEFAULT_MAX_NAME_BYTES
        }
    );
    // A name within the limit: each location copies it twice (name and file), once;
    // stacks hold location indexes, not names.
    let within = amplifier(4000, 64, 64, 1024);
    let c = normalize(ProfileFormat::PprofGzip, &within, Limits::default()).unwrap();
    let held: usize = c
        .locations
        .iter()
        .map(|l| match l {
            Loc::Symbolic(f) => f.iter().map(|f| f.function.len() + f.file.len()).sum(),
            _ => 0,
        })
        .sum::<usize>()
        + c.stacks.iter().map(|s| s.len() * 4).sum::<usize>();
    assert!(held < 1 << 20, "{held} bytes held");
    // And with many more locations using the name, the budget refuses it.
    let wide = amplifier(4000, 20_000, 8, 16);
    assert_eq!(
        normalize(ProfileFormat::PprofGzip, &wide, Limits::default()).unwrap_err(),
        NormalizeError::Amplifies {
            limit: DEFAULT_MAX_MATERIALIZED_BYTES
        }
    );
}

/// A profile in the agent's own form: native frames of the executable and libc, a task
/// dump's symbolic frames, labels.
fn native() -> NativeProfile {
    let module = |name: &str, build: &str| Module {
        name: name.into(),
        build_id: build.into(),
    };
    NativeProfile {
        sample_types: vec![
            NativeValueType::new("samples", "count"),
            NativeValueType::new("cpu", "nanoseconds"),
        ],
        period_type: NativeValueType::new("cpu", "nanoseconds"),
        period: 10_000_000,
        time_unix_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 10_000_000_000,
        comments: vec!["holmes".into()],
        modules: vec![module("checkout", "AB12"), module("libc.so.6", "cd34")],
        locations: vec![
            NativeLocation::Native {
                module: 0,
                offset: 0x1234,
            },
            NativeLocation::Native {
                module: 1,
                offset: 0x29d8f,
            },
            NativeLocation::Symbolic(vec![SymbolicFrame {
                function: "checkout::tasks::poll".into(),
                file: "src/tasks.rs".into(),
                line: 9,
            }]),
        ],
        stacks: vec![vec![0, 1], vec![2, 0, 1]],
        samples: vec![
            NativeSample {
                stack: 1,
                values: vec![2, 20_000_000],
                labels: vec![NativeLabel {
                    key: "thread".into(),
                    str: "worker-1".into(),
                    num: 0,
                    unit: String::new(),
                }],
            },
            NativeSample {
                stack: 0,
                values: vec![1, 10_000_000],
                labels: vec![],
            },
        ],
    }
}

#[test]
fn native_profiles_are_read_as_sent() {
    let c = normalize(ProfileFormat::Native, &native().encode(), Limits::default()).unwrap();
    assert_eq!(c.header.period, 10_000_000);
    assert_eq!(c.header.comments, vec!["holmes".to_owned()]);
    assert_eq!(
        frames(&c, 0)
            .into_iter()
            .map(|f| f.function)
            .collect::<Vec<_>>(),
        [
            "checkout::tasks::poll",
            "checkout+0x1234",
            "libc.so.6+0x29d8f"
        ]
    );
    // Build ids are lowercase hex, whatever the agent sent.
    assert!(c.locations.contains(&Loc::Native {
        module: Module {
            name: "checkout".into(),
            build_id: "ab12".into()
        },
        offset: 0x1234
    }));
    assert_eq!(c.samples[1].values, vec![1, 10_000_000]);
    assert_eq!(
        c.label_sets[c.samples[0].labels as usize][0].str,
        "worker-1"
    );
    assert!(c.label_sets[c.samples[1].labels as usize].is_empty());
}

/// A change that breaks a profile.
type Breaker = Box<dyn Fn(&mut NativeProfile)>;

#[test]
fn broken_native_profiles_are_refused_with_the_reason() {
    let cases: Vec<(Breaker, &str)> = vec![
        (
            Box::new(|p| p.stacks[0][1] = 9),
            "stack refers to location 9",
        ),
        (
            Box::new(|p| p.samples[0].stack = 5),
            "sample refers to stack 5",
        ),
        (
            Box::new(|p| {
                p.locations[0] = NativeLocation::Native {
                    module: 7,
                    offset: 1,
                }
            }),
            "location refers to module 7",
        ),
        (
            Box::new(|p| p.samples[1].values.pop().map_or((), drop)),
            "sample 1 has 1 values for 2 sample types",
        ),
        (
            Box::new(|p| p.locations[2] = NativeLocation::Symbolic(vec![])),
            "location 2 is neither native nor has a frame",
        ),
        (
            Box::new(|p| p.stacks[1] = vec![0; 2000]),
            "stack 1 is", // ... frames deep
        ),
    ];
    for (break_it, expected) in cases {
        let mut p = native();
        break_it(&mut p);
        let err = normalize(ProfileFormat::Native, &p.encode(), Limits::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err} should say {expected}");
    }
}

/// `p` with every mapping, function and location id `f` of what it was, references
/// included.
fn renumbered(mut p: Profile, f: impl Fn(u64) -> u64) -> Profile {
    for m in &mut p.mapping {
        m.id = f(m.id);
    }
    for func in &mut p.function {
        func.id = f(func.id);
    }
    for l in &mut p.location {
        l.id = f(l.id);
        if l.mapping_id != 0 {
            l.mapping_id = f(l.mapping_id);
        }
        for line in &mut l.line {
            line.function_id = f(line.function_id);
        }
    }
    for s in &mut p.sample {
        for id in &mut s.location_id {
            *id = f(*id);
        }
    }
    p
}

#[test]
fn pprof_ids_far_apart_or_out_of_order_read_as_small_ones() {
    let expected = run(&profile()).unwrap();
    // Large ids (looked up in a map) and shuffled small ones (in a vector).
    for f in [
        (|id| id * 1_000_003 + u64::MAX / 2) as fn(u64) -> u64,
        |id| 20 - id,
    ] {
        let contents = run(&renumbered(profile(), f)).unwrap();
        assert_eq!(contents.stacks, expected.stacks);
        assert_eq!(contents.locations, expected.locations);
        assert_eq!(contents.samples, expected.samples);
        assert_eq!(contents.header, expected.header);
    }
    // A duplicate or a dangling id is refused either way.
    for f in [(|id| id * 1_000_003) as fn(u64) -> u64, |id| id] {
        let mut p = renumbered(profile(), f);
        p.location.push(p.location[0].clone());
        assert_eq!(
            run(&p).unwrap_err(),
            NormalizeError::DuplicateId {
                what: "locations",
                id: f(1)
            }
        );
        let mut p = renumbered(profile(), f);
        p.sample[0].location_id.push(f(999));
        assert!(matches!(
            run(&p).unwrap_err(),
            NormalizeError::Dangling {
                what: "sample",
                target: "location",
                ..
            }
        ));
    }
}
