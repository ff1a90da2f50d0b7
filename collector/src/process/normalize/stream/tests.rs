//! A stream of profiles in the stream form, as the agent's sender encodes them, read
//! back as their self-contained forms read.

use holmes_proto::native::stream::StreamEncoder;
use holmes_proto::native::{
    Location as NativeLocation, NativeProfile, NativeSample, ProfileLabel as NativeLabel,
    SymbolicFrame, ValueType as NativeValueType,
};
use holmes_proto::{pb, Module, ProfileFormat};
use holmes_storage::ProfileLabel;
use prost::Message;

use super::*;
use crate::process::normalize::{native_bytes, normalize};

/// A profile of `stacks` (offsets in the executable, each under a task's symbolic
/// frame), one sample each, values `i + 1`, every other one labelled.
pub(crate) fn profile(stacks: &[&[u64]]) -> NativeProfile {
    let mut p = NativeProfile {
        sample_types: vec![
            NativeValueType::new("samples", "count"),
            NativeValueType::new("cpu", "nanoseconds"),
        ],
        period_type: NativeValueType::new("cpu", "nanoseconds"),
        period: 10_000_000,
        time_unix_nanos: 1_700_000_000_000_000_000,
        duration_nanos: 10_000_000_000,
        comments: vec!["holmes".into()],
        modules: vec![
            Module {
                name: "orders".into(),
                build_id: "ab12".into(),
            },
            Module {
                name: "libc.so.6".into(),
                build_id: "cd34".into(),
            },
        ],
        locations: vec![
            NativeLocation::Symbolic(vec![SymbolicFrame {
                function: "orders::tasks::poll".into(),
                file: "src/tasks.rs".into(),
                line: 9,
            }]),
            NativeLocation::Native {
                module: 1,
                offset: 0x29d8f,
            },
        ],
        ..NativeProfile::default()
    };
    for (i, offsets) in stacks.iter().enumerate() {
        let mut stack = Vec::new();
        for &offset in offsets.iter() {
            let l = NativeLocation::Native { module: 0, offset };
            let index = p.locations.iter().position(|x| *x == l).unwrap_or_else(|| {
                p.locations.push(l);
                p.locations.len() - 1
            });
            stack.push(index as u32);
        }
        stack.extend([0, 1]);
        p.stacks.push(stack);
        p.samples.push(NativeSample {
            stack: i as u32,
            values: vec![i as i64 + 1, (i as i64 + 1) * 10_000_000],
            labels: if i % 2 == 0 {
                vec![NativeLabel {
                    key: "thread".into(),
                    str: format!("worker-{i}"),
                    num: 0,
                    unit: String::new(),
                }]
            } else {
                Vec::new()
            },
        });
    }
    p
}

/// What a user sees of contents: each sample's frames, values and labels, in order.
fn seen(c: &ProfileContents) -> Vec<(Vec<String>, Vec<i64>, Vec<ProfileLabel>)> {
    c.samples
        .iter()
        .map(|s| {
            (
                c.stack_frames(s.stack)
                    .into_iter()
                    .map(|f| f.function)
                    .collect(),
                s.values.clone(),
                c.label_sets[s.labels as usize].clone(),
            )
        })
        .collect()
}

fn self_contained(p: &NativeProfile) -> ProfileContents {
    normalize(ProfileFormat::Native, &p.encode(), Limits::default()).unwrap()
}

#[test]
fn a_stream_reads_each_profile_as_its_self_contained_form_reads() {
    let mut encoder = StreamEncoder::new();
    let mut tables = StreamTables::new();
    let first = profile(&[&[0x10, 0x20], &[0x30], &[0x10, 0x40]]);
    let second = profile(&[&[0x30], &[0x50, 0x20], &[0x10, 0x20]]);
    let sent_first = encoder.encode(&first);
    let sent_second = encoder.encode(&second);
    let a = tables.decode(&sent_first, Limits::default(), None).unwrap();
    let b = tables
        .decode(&sent_second, Limits::default(), None)
        .unwrap();
    for (read, p) in [(&a, &first), (&b, &second)] {
        let expected = self_contained(p);
        assert_eq!(seen(read), seen(&expected));
        assert_eq!(read.header.sample_types, expected.header.sample_types);
        assert_eq!(read.header.period, expected.header.period);
        assert_eq!(read.header.time_nanos, expected.header.time_nanos);
        assert_eq!(read.header.comments, expected.header.comments);
        // Each module once, spanning past its last offset.
        let mut modules: Vec<_> = read
            .header
            .mappings
            .iter()
            .map(|m| (m.module.name.clone(), m.limit))
            .collect();
        modules.sort();
        let mut expected: Vec<_> = expected
            .header
            .mappings
            .iter()
            .map(|m| (m.module.name.clone(), m.limit))
            .collect();
        expected.sort();
        assert_eq!(modules, expected);
    }
    // The second profile defined only its one new stack and location.
    let wire = pb::NativeProfile::decode(sent_second.as_slice()).unwrap();
    assert_eq!((wire.locations.len(), wire.stacks.len()), (1, 1));
    assert!(sent_second.len() < second.encode().len());
    // One stack, one key, in both profiles; another stack, another key.
    let (ka, kb) = (a.table_keys.unwrap(), b.table_keys.unwrap());
    assert_eq!(ka.scope, kb.scope);
    assert_eq!(
        kb.stacks[b.samples[2].stack as usize],
        ka.stacks[a.samples[0].stack as usize]
    );
    assert_eq!(
        kb.stacks[b.samples[0].stack as usize],
        ka.stacks[a.samples[1].stack as usize]
    );
    assert_eq!(kb.stacks[b.samples[1].stack as usize], 3);
    assert_eq!(tables.stacks(), 4);
}

#[test]
fn a_decoded_profile_travels_on_as_the_agents_self_contained_form() {
    let mut encoder = StreamEncoder::new();
    let mut tables = StreamTables::new();
    tables
        .decode(
            &encoder.encode(&profile(&[&[0x10]])),
            Limits::default(),
            None,
        )
        .unwrap();
    let p = profile(&[&[0x10], &[0x20, 0x30]]);
    let read = tables
        .decode(&encoder.encode(&p), Limits::default(), None)
        .unwrap();
    let again = normalize(
        ProfileFormat::Native,
        &native_bytes(&read),
        Limits::default(),
    )
    .unwrap();
    assert_eq!(seen(&again), seen(&self_contained(&p)));
    assert_eq!(again.table_keys, None);
}

#[test]
fn a_reset_starts_the_tables_over_in_a_new_scope() {
    let mut tables = StreamTables::new();
    let mut encoder = StreamEncoder::new();
    let a = tables
        .decode(
            &encoder.encode(&profile(&[&[0x10], &[0x20]])),
            Limits::default(),
            None,
        )
        .unwrap();
    // A sender that started over: its indexes count from 0 again.
    let p = profile(&[&[0x30]]);
    let mut wire = pb::NativeProfile::decode(StreamEncoder::new().encode(&p).as_slice()).unwrap();
    wire.stream_reset = true;
    let b = tables
        .decode(&wire.encode_to_vec(), Limits::default(), None)
        .unwrap();
    assert_eq!(seen(&b), seen(&self_contained(&p)));
    assert_eq!(tables.stacks(), 1);
    assert_ne!(a.table_keys.unwrap().scope, b.table_keys.unwrap().scope);
}

/// A change that breaks a profile on the wire.
type Breaker = Box<dyn Fn(&mut pb::NativeProfile)>;

#[test]
fn definitions_that_do_not_check_leave_the_tables_as_they_were() {
    let mut encoder = StreamEncoder::new();
    let mut tables = StreamTables::new();
    let known = profile(&[&[0x10], &[0x20]]);
    tables
        .decode(&encoder.encode(&known), Limits::default(), None)
        .unwrap();
    let cases: Vec<(Breaker, &str)> = vec![
        (
            Box::new(|p| {
                p.stacks.push(pb::NativeStack {
                    locations: vec![999],
                })
            }),
            "stack refers to location 999",
        ),
        (
            Box::new(|p| {
                p.locations.push(pb::NativeLocation {
                    kind: Some(pb::native_location::Kind::Native(pb::ModuleOffset {
                        module: 9,
                        offset: 1,
                    })),
                })
            }),
            "location refers to module 9",
        ),
        (
            Box::new(|p| {
                p.stacks.push(pb::NativeStack {
                    locations: vec![0; 2000],
                })
            }),
            "frames deep",
        ),
        (
            Box::new(|p| p.samples[0].stack = 77),
            "sample refers to stack 77",
        ),
    ];
    for (break_it, expected) in cases {
        // A copy of the encoder: what it sends is what the broken profile would define.
        let mut wire =
            pb::NativeProfile::decode(StreamEncoder::new().encode(&known).as_slice()).unwrap();
        wire.modules.clear();
        wire.locations.clear();
        wire.stacks.clear();
        break_it(&mut wire);
        let err = tables
            .decode(&wire.encode_to_vec(), Limits::default(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{err} should say {expected}");
        assert_eq!(tables.stacks(), 2, "{expected}: nothing was added");
    }
    // The stream goes on with what it had.
    let again = tables
        .decode(&encoder.encode(&known), Limits::default(), None)
        .unwrap();
    assert_eq!(seen(&again), seen(&self_contained(&known)));
}

#[test]
fn stacks_the_store_knows_are_left_out_and_the_mappings_stay_whole() {
    let mut encoder = StreamEncoder::new();
    let mut tables = StreamTables::new();
    let first = profile(&[&[0x10, 0x20], &[0x30]]);
    tables
        .decode(&encoder.encode(&first), Limits::default(), None)
        .unwrap();
    // The store knows stream stack 1 (`0x30`) only.
    let asked = std::sync::Mutex::new(Vec::new());
    let number = holmes_storage::KnownStack { num: 77, day: 3 };
    let told = std::sync::Mutex::new(Vec::new());
    // How many of the stream's locations, from key 0 on, the store holds as told.
    let held = std::sync::Mutex::new(0u32);
    let known = |_scope: u64,
                 stacks: &[holmes_storage::StackByKey<'_>],
                 locations: &[holmes_storage::LocationByKey<'_>]|
     -> holmes_storage::KnownByKey {
        let keys: Vec<(u32, Vec<u32>)> = stacks
            .iter()
            .map(|s| (s.key, s.locations.to_vec()))
            .collect();
        asked.lock().unwrap().push(keys);
        told.lock().unwrap().push(
            locations
                .iter()
                .map(|l| match l.location {
                    LocationRef::Native { offset, .. } => (l.key, offset),
                    LocationRef::Symbolic(_) => (l.key, 0),
                })
                .collect::<Vec<_>>(),
        );
        let mut held = held.lock().unwrap();
        if let Some(first) = locations.first() {
            if first.key <= *held {
                *held = (*held).max(first.key + locations.len() as u32);
            }
        }
        holmes_storage::KnownByKey {
            stacks: stacks
                .iter()
                .map(|s| (s.key == 1).then_some(number))
                .collect(),
            locations_told: *held,
        }
    };
    let second = profile(&[&[0x30], &[0x10, 0x40]]);
    let c = tables
        .decode(&encoder.encode(&second), Limits::default(), Some(&known))
        .unwrap();
    // Asked once, about the stacks the samples use, in order of first use, each with
    // its locations' stream keys: the task's frame and libc's are keys 0 and 1 under
    // every stack, `0x10`, `0x20` and `0x30` the first profile's 2, 3 and 4, `0x40` new.
    assert_eq!(
        *asked.lock().unwrap(),
        vec![vec![(1, vec![4, 0, 1]), (2, vec![2, 5, 0, 1])]]
    );
    // Told every location the stream defined, as none was told before (the first
    // profile was read without asking), by key and content (offsets here; the task's
    // frame is symbolic).
    assert_eq!(
        told.lock().unwrap()[0],
        [
            (0, 0),
            (1, 0x29d8f),
            (2, 0x10),
            (3, 0x20),
            (4, 0x30),
            (5, 0x40)
        ]
    );
    let keys = c.table_keys.clone().unwrap();
    assert_eq!(keys.stacks, vec![1, 2]);
    assert_eq!(keys.left_out, vec![Some(number), None]);
    assert!(c.stacks[0].is_empty());
    assert_eq!(c.samples[0].stack, 0);
    // Only the other stack's locations are in the contents.
    assert_eq!(keys.locations.len(), c.locations.len());
    assert_eq!(c.stack_frames(1).len(), 4);
    assert!(!c
        .locations
        .iter()
        .any(|l| matches!(l, Location::Native { offset: 0x30, .. })));
    // Every module of the profile is a mapping, in its own order, spanning past its last
    // offset, the left-out stack's included.
    let expected = self_contained(&second);
    let spans = |c: &ProfileContents| -> Vec<(String, u64)> {
        c.header
            .mappings
            .iter()
            .map(|m| (m.module.name.clone(), m.limit))
            .collect()
    };
    assert_eq!(spans(&c), spans(&expected));
    // The next profile tells only the location defined since.
    let third = profile(&[&[0x10, 0x50]]);
    tables
        .decode(&encoder.encode(&third), Limits::default(), Some(&known))
        .unwrap();
    assert_eq!(told.lock().unwrap()[1], [(6, 0x50)]);
    // The store forgets the stream (its memory is bounded): the next profile learns it
    // from the answer, and the one after tells every location again.
    *held.lock().unwrap() = 0;
    for _ in 0..2 {
        tables
            .decode(
                &encoder.encode(&profile(&[&[0x10]])),
                Limits::default(),
                Some(&known),
            )
            .unwrap();
    }
    let told = told.lock().unwrap();
    assert_eq!(told[2], []);
    assert_eq!(
        told[3].iter().map(|&(key, _)| key).collect::<Vec<_>>(),
        (0..7).collect::<Vec<u32>>()
    );
    assert_eq!(*held.lock().unwrap(), 7);
}

/// `p` with one more stack, of locations `locations`, and a sample of it.
fn with_stack(mut p: NativeProfile, locations: Vec<u32>) -> NativeProfile {
    p.stacks.push(locations);
    p.samples.push(NativeSample {
        stack: (p.stacks.len() - 1) as u32,
        values: vec![1, 10_000_000],
        labels: Vec::new(),
    });
    p
}

#[test]
fn a_stack_of_deep_locations_defined_before_is_too_deep() {
    let mut encoder = StreamEncoder::new();
    let mut tables = StreamTables::new();
    // A location of 300 inlined frames, in a stack of its own: 300 frames deep.
    let mut first = profile(&[&[0x10]]);
    first.locations.push(NativeLocation::Symbolic(vec![
        SymbolicFrame {
            function: "orders::inlined".into(),
            file: "src/lib.rs".into(),
            line: 1,
        };
        300
    ]));
    let deep = (first.locations.len() - 1) as u32;
    let first = with_stack(first, vec![deep]);
    tables
        .decode(&encoder.encode(&first), Limits::default(), None)
        .unwrap();
    // A later profile's stack of it four times over (the location defined before, not
    // in this profile): 1200 frames, over the 1024 allowed.
    let second = with_stack(first.clone(), vec![deep; 4]);
    let err = tables
        .decode(&encoder.encode(&second), Limits::default(), None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            NormalizeError::TooDeep {
                depth: 1200,
                limit: 1024,
                ..
            }
        ),
        "{err}"
    );
    // Three times over is within the limit.
    let third = with_stack(first, vec![deep; 3]);
    tables
        .decode(
            &StreamEncoder::new().encode(&third),
            Limits::default(),
            None,
        )
        .unwrap();
}
