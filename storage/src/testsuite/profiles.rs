//! Conformance cases of profiles: records, their normalized contents, ids scoped by
//! service, parked events (merges, stacks and symbols are in [`super::merge`]).

use std::collections::BTreeMap;
use std::time::Duration;

use holmes_proto::{Module, ProfileFormat, ProfileKind};

use super::merge::merge_query;
use super::{SEC, T0};
use crate::{
    Location, Mapping, ParkedEvent, ProfileContents, ProfileHeader, ProfileLabel, ProfileMeta,
    ProfileQuery, ProfileRecord, ProfileSample, StackFrame, Store, ValueType,
};

/// A 32-hex-digit profile id, as agents make them.
pub fn profile_id(n: u64) -> String {
    format!("{:016x}{n:016x}", 0x5eed_u64)
}

fn module(name: &str, build_id: &str) -> Module {
    Module {
        name: name.to_owned(),
        build_id: build_id.to_owned(),
    }
}

pub(super) fn native(name: &str, build_id: &str, offset: u64) -> Location {
    Location::Native {
        module: module(name, build_id),
        offset,
    }
}

fn symbolic(frames: &[(&str, &str, u32)]) -> Location {
    Location::Symbolic(
        frames
            .iter()
            .map(|(f, file, line)| StackFrame::new(*f, *file, *line))
            .collect(),
    )
}

fn label(key: &str, value: &str) -> ProfileLabel {
    ProfileLabel {
        key: key.to_owned(),
        str: value.to_owned(),
        num: 0,
        unit: String::new(),
    }
}

/// A CPU profile as an agent of `build` would send it: frames of the executable and of
/// libc as module + offset, a symbolic frame with an inlined one, three label sets (one
/// numeric), values `[count, nanoseconds]`, and a pprof-style header with a mapping.
pub fn cpu_contents(build: &str, hot: u64) -> ProfileContents {
    ProfileContents {
        header: ProfileHeader {
            sample_types: vec![
                ValueType::new("samples", "count"),
                ValueType::new("cpu", "nanoseconds"),
            ],
            default_sample_type: String::new(),
            period_type: ValueType::new("cpu", "nanoseconds"),
            period: 10_000_000,
            time_nanos: T0 as i64,
            duration_nanos: 10_000_000_000,
            comments: vec!["holmes trigger cpu profile at 100 Hz".to_owned()],
            drop_frames: String::new(),
            keep_frames: String::new(),
            mappings: vec![Mapping {
                module: module("libc.so.6", "c0ffee"),
                path: "/usr/lib/x86_64-linux-gnu/libc.so.6".to_owned(),
                start: 0x7f12_3400_0000,
                limit: 0x7f12_3419_0000,
                file_offset: 0x28000,
                flags: 0,
            }],
        },
        locations: vec![
            native("checkout", build, 0x1_2345),
            native("checkout", build, 0x1_0040),
            native("libc.so.6", "c0ffee", 0x29d8f),
            symbolic(&[
                ("checkout::render::row", "src/render.rs", 42),
                ("checkout::render::table", "src/render.rs", 10),
            ]),
            native("[vdso]", "", 0xa3c),
        ],
        symbols: BTreeMap::new(),
        stacks: vec![vec![0, 1, 2], vec![3, 1, 2], vec![4, 2]],
        label_sets: vec![
            vec![label("thread", "worker-1"), label("phase", "pre-trigger")],
            vec![label("thread", "main")],
            vec![ProfileLabel {
                key: "bytes".to_owned(),
                str: String::new(),
                num: 4096,
                unit: "bytes".to_owned(),
            }],
        ],
        samples: vec![
            ProfileSample {
                stack: 0,
                values: vec![7, 70_000_000],
                labels: 0,
            },
            ProfileSample {
                stack: 1,
                values: vec![1, 10_000_000],
                labels: 1,
            },
            ProfileSample {
                stack: 0,
                values: vec![3, 30_000_000],
                labels: 1,
            },
            ProfileSample {
                stack: 2,
                values: vec![hot as i64, hot as i64 * 10_000_000],
                labels: 2,
            },
        ],
        table_keys: None,
    }
}

/// A profile record of `service` with `contents`.
pub fn record(
    service: &str,
    instance: &str,
    id: &str,
    event_id: &str,
    started: u64,
    contents: Option<ProfileContents>,
) -> ProfileRecord {
    ProfileRecord {
        profile_id: id.to_owned(),
        event_id: event_id.to_owned(),
        service: service.to_owned(),
        instance_id: instance.to_owned(),
        kind: ProfileKind::Cpu,
        started_unix_nanos: started,
        duration: Duration::from_secs(10),
        labels: BTreeMap::new(),
        error: None,
        size_bytes: 4321,
        format: ProfileFormat::Native,
        contents,
        original: None,
    }
}

pub(super) fn profile_query(service: &str, since: u64, until: u64) -> ProfileQuery {
    ProfileQuery {
        service: service.to_owned(),
        event_id: None,
        kind: None,
        since_unix_nanos: since,
        until_unix_nanos: until,
        limit: 10_000,
    }
}

/// What a profile's contents mean, whatever order its tables are in: the header, and
/// each sample (in order) as its stack's locations, values and labels; plus the symbols
/// by location.
type Meaning = (
    ProfileHeader,
    Vec<(Vec<Location>, Vec<i64>, Vec<ProfileLabel>)>,
    Vec<(Location, Vec<StackFrame>)>,
);

pub(super) fn meaning(c: &ProfileContents) -> Meaning {
    let samples = c
        .samples
        .iter()
        .map(|s| {
            let stack = c.stacks[s.stack as usize]
                .iter()
                .map(|&l| c.locations[l as usize].clone())
                .collect();
            let labels = c
                .label_sets
                .get(s.labels as usize)
                .cloned()
                .unwrap_or_default();
            (stack, s.values.clone(), labels)
        })
        .collect();
    let mut symbols: Vec<(Location, Vec<StackFrame>)> = c
        .symbols
        .iter()
        .map(|(&l, f)| (c.locations[l as usize].clone(), f.clone()))
        .collect();
    symbols.sort_by_key(|(l, _)| l.id());
    (c.header.clone(), samples, symbols)
}

/// `got` is `want` but for the order of the contents' tables.
fn assert_same(got: &ProfileRecord, want: &ProfileRecord) {
    assert_eq!(got.meta(), want.meta());
    assert!(
        got.original == want.original,
        "the original bytes come back exactly"
    );
    assert_eq!(
        got.contents.as_ref().map(meaning),
        want.contents.as_ref().map(meaning)
    );
}

/// Profiles come back as written: every field of the record, the contents (header,
/// mappings, each sample's stack, values and labels, native and symbolic locations), a
/// failed capture without contents, an empty profile, and an original kept byte for byte
/// (3 MiB holding every byte value in every position); listed without contents.
pub async fn profiles_roundtrip(store: impl Store) {
    let mut cpu = record(
        "checkout",
        "checkout-a",
        &profile_id(1),
        "ev-1",
        T0 + SEC + 7,
        Some(cpu_contents("b1", 3)),
    );
    cpu.duration = Duration::new(30, 123_456_789);
    cpu.labels = [
        ("phase".to_owned(), "pre-trigger".to_owned()),
        (
            "note".to_owned(),
            "'); DROP TABLE profiles; -- ? ?fields \\ \" \n\t\0".to_owned(),
        ),
    ]
    .into();
    let mut kept = record(
        "checkout",
        "checkout-a",
        &profile_id(4),
        "ev-2",
        T0 + 4 * SEC,
        Some(cpu_contents("b1", 5)),
    );
    kept.format = ProfileFormat::PprofGzip;
    kept.original = Some(
        (0..3 * 1024 * 1024usize)
            .map(|i| (i + i / 256) as u8)
            .collect(),
    );
    kept.size_bytes = 3 * 1024 * 1024;
    let mut failed = record(
        "checkout",
        "checkout-b",
        &profile_id(2),
        "ev-1",
        T0 + 2 * SEC,
        None,
    );
    failed.kind = ProfileKind::Threads;
    failed.duration = Duration::ZERO;
    failed.error = Some("cannot walk the stack of thread 7: permission denied".to_owned());
    failed.size_bytes = 0;
    let mut empty = record(
        "checkout",
        "checkout-a",
        &profile_id(3),
        "ev-2",
        T0 + 3 * SEC,
        Some(ProfileContents {
            header: ProfileHeader {
                sample_types: vec![ValueType::new("threads", "count")],
                ..ProfileHeader::default()
            },
            ..ProfileContents::default()
        }),
    );
    empty.kind = ProfileKind::Tasks;
    empty.error = Some(String::new());
    for p in [&empty, &failed, &cpu, &kept] {
        store.insert_profile(p).await.unwrap();
    }
    empty.error = None;
    for p in [&cpu, &failed, &empty, &kept] {
        let got = store.get_profile("checkout", &p.profile_id).await.unwrap();
        let got = got.unwrap_or_else(|| panic!("profile {} is stored", p.profile_id));
        assert_same(&got, p);
    }
    let listed = store
        .query_profiles(&profile_query("checkout", T0, T0 + 60 * SEC))
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![cpu.meta(), failed.meta(), empty.meta(), kept.meta()]
    );
    assert_eq!(listed[3].size_bytes, 3 * 1024 * 1024);
    // Native locations read as `name+0x<offset>` until their symbols are known.
    let got = store
        .get_profile("checkout", &cpu.profile_id)
        .await
        .unwrap()
        .unwrap();
    let c = got.contents.unwrap();
    let s = c.samples[0].stack;
    let names: Vec<String> = c.stack_frames(s).into_iter().map(|f| f.function).collect();
    assert_eq!(
        names,
        ["checkout+0x12345", "checkout+0x10040", "libc.so.6+0x29d8f"]
    );
}

/// A profile written again (an agent resending after a lost ack) is stored once.
pub async fn resent_profiles_are_stored_once(store: impl Store) {
    let a = record(
        "checkout",
        "checkout-a",
        &profile_id(1),
        "ev-1",
        T0 + SEC,
        Some(cpu_contents("b1", 2)),
    );
    let b = record(
        "checkout",
        "checkout-a",
        &profile_id(2),
        "ev-1",
        T0 + SEC,
        Some(cpu_contents("b1", 3)),
    );
    for p in [&a, &b, &a, &a, &b] {
        store.insert_profile(p).await.unwrap();
    }
    let listed = store
        .query_profiles(&profile_query("checkout", T0, T0 + 10 * SEC))
        .await
        .unwrap();
    assert_eq!(listed, vec![a.meta(), b.meta()]);
    let got = store
        .get_profile("checkout", &a.profile_id)
        .await
        .unwrap()
        .unwrap();
    assert_same(&got, &a);
}

/// Profile ids are scoped to their service: another service storing a profile under
/// the same id leaves the first one's record, contents and download untouched, and
/// each reads back its own.
pub async fn profile_ids_are_scoped_to_their_service(store: impl Store) {
    let mut victim = record(
        "checkout",
        "checkout-a",
        &profile_id(7),
        "ev-1",
        T0 + SEC,
        Some(cpu_contents("b1", 2)),
    );
    victim.original = Some(b"victim bytes".to_vec());
    store.insert_profile(&victim).await.unwrap();
    let mut intruder = record(
        "intruder",
        "x-0",
        &profile_id(7),
        "ev-evil",
        T0 + SEC,
        Some(cpu_contents("evil", 9)),
    );
    intruder.original = Some(b"other bytes".to_vec());
    intruder.kind = ProfileKind::Heap;
    store.insert_profile(&intruder).await.unwrap();
    let got = store
        .get_profile("checkout", &profile_id(7))
        .await
        .unwrap()
        .unwrap();
    assert_same(&got, &victim);
    let theirs = store
        .get_profile("intruder", &profile_id(7))
        .await
        .unwrap()
        .unwrap();
    assert_same(&theirs, &intruder);
    assert_eq!(
        store.get_profile("cart", &profile_id(7)).await.unwrap(),
        None
    );
    let merged = store
        .merge_profiles(&merge_query("checkout", T0, T0 + 10 * SEC))
        .await
        .unwrap();
    assert_eq!(merged.profiles, 1);
}

/// Several profiles of one service read together: each with its contents, in the order
/// asked, unknown ids and ids of other services left out.
pub async fn profiles_read_together(store: impl Store) {
    let ids: Vec<String> = (1..=4).map(profile_id).collect();
    let mut written = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let p = record(
            "checkout",
            &format!("checkout-{i}"),
            id,
            "ev-1",
            T0 + i as u64 * SEC,
            Some(cpu_contents(
                if i % 2 == 0 { "b1" } else { "b2" },
                i as u64 + 1,
            )),
        );
        store.insert_profile(&p).await.unwrap();
        written.push(p);
    }
    store
        .insert_profile(&record(
            "cart",
            "cart-0",
            &profile_id(9),
            "ev-1",
            T0,
            Some(cpu_contents("b1", 1)),
        ))
        .await
        .unwrap();
    let asked = vec![
        ids[2].clone(),
        profile_id(99),
        ids[0].clone(),
        profile_id(9),
        ids[2].clone(),
        ids[3].clone(),
    ];
    let got = store.get_profiles("checkout", &asked).await.unwrap();
    let got_ids: Vec<&str> = got.iter().map(|p| p.profile_id.as_str()).collect();
    assert_eq!(got_ids, [ids[2].as_str(), ids[0].as_str(), ids[3].as_str()]);
    for p in &got {
        let want = written
            .iter()
            .find(|w| w.profile_id == p.profile_id)
            .unwrap();
        assert_same(p, want);
    }
    assert!(store
        .get_profiles("checkout", &[])
        .await
        .unwrap()
        .is_empty());
}

/// Names are data, whatever their characters: frames, labels and comments with quotes,
/// control characters and non-ASCII, and extreme values.
pub async fn hostile_profile_contents_are_data(store: impl Store) {
    let odd = "<T as Tr>::f'\\\"\n\t\u{0}ä ?fields";
    let mut c = cpu_contents(odd, 1);
    c.locations.push(Location::Symbolic(vec![StackFrame {
        function: odd.to_owned(),
        file: "c:\\src\\ä.rs".to_owned(),
        line: u32::MAX,
        system_name: "_ZN1f".to_owned(),
        start_line: 3,
    }]));
    c.stacks.push(vec![5, 5, 5]);
    c.samples.push(ProfileSample {
        stack: c.stacks.len() as u32 - 1,
        values: vec![i64::MIN, i64::MAX],
        labels: 0,
    });
    c.label_sets[0].push(label("thread", odd));
    c.header.comments.push(odd.to_owned());
    let p = record("checkout", "a", &profile_id(1), odd, T0, Some(c));
    store.insert_profile(&p).await.unwrap();
    let got = store
        .get_profile("checkout", &profile_id(1))
        .await
        .unwrap()
        .unwrap();
    assert_same(&got, &p);
    assert_eq!(store.get_profile("checkout", odd).await.unwrap(), None);
    assert_eq!(store.get_profile(odd, &profile_id(1)).await.unwrap(), None);
}

/// Parked events read back, newest first.
pub async fn parked_events_read_back(store: impl Store) {
    let event = |n: u64| ParkedEvent {
        source: format!("kafka:holmes-events/3@{n}"),
        service: "checkout".to_owned(),
        parked_unix_nanos: T0 + n * SEC,
        error: format!("insert refused {n}"),
        payload: vec![0, 0xff, n as u8],
    };
    store.park_event(&event(1)).await.unwrap();
    store.park_event(&event(2)).await.unwrap();
    assert_eq!(
        store.parked_events(10).await.unwrap(),
        vec![event(2), event(1)]
    );
    assert_eq!(store.parked_events(1).await.unwrap(), vec![event(2)]);
}

/// Profile queries return one service's profiles started in `[since, until)`, of one
/// event and kind if asked, by start time then profile id, at most `limit`.
pub async fn profiles_filter_by_service_event_kind_and_range(store: impl Store) {
    let mut all: Vec<ProfileRecord> = Vec::new();
    for s in 0..6u64 {
        // Two profiles per second; ids chosen so that id order differs from insert order.
        let cpu = record(
            "checkout",
            "checkout-a",
            &profile_id(100 + s),
            &format!("ev-{}", s / 2),
            T0 + s * SEC,
            None,
        );
        let mut heap = record(
            "checkout",
            "checkout-b",
            &profile_id(50 + s),
            &format!("ev-{}", s / 2),
            T0 + s * SEC,
            None,
        );
        heap.kind = ProfileKind::Heap;
        all.push(cpu);
        all.push(heap);
        all.push(record(
            "cart",
            "cart-0",
            &profile_id(200 + s),
            &format!("ev-{}", s / 2),
            T0 + s * SEC,
            None,
        ));
    }
    for p in all.iter().rev() {
        store.insert_profile(p).await.unwrap();
    }
    let ids = |found: &[ProfileMeta]| -> Vec<String> {
        found.iter().map(|p| p.profile_id.clone()).collect()
    };
    let range = store
        .query_profiles(&profile_query("checkout", T0 + 2 * SEC, T0 + 4 * SEC))
        .await
        .unwrap();
    assert_eq!(
        ids(&range),
        [
            profile_id(52),
            profile_id(102),
            profile_id(53),
            profile_id(103)
        ]
    );
    let mut by_event = profile_query("checkout", T0, T0 + 100 * SEC);
    by_event.event_id = Some("ev-1".to_owned());
    by_event.kind = Some(ProfileKind::Heap);
    let found = store.query_profiles(&by_event).await.unwrap();
    assert_eq!(ids(&found), [profile_id(52), profile_id(53)]);
    let mut limited = profile_query("checkout", T0, T0 + 100 * SEC);
    limited.limit = 3;
    let found = store.query_profiles(&limited).await.unwrap();
    assert_eq!(
        ids(&found),
        [profile_id(50), profile_id(100), profile_id(51)]
    );
    let mut unknown_event = profile_query("checkout", T0, T0 + 100 * SEC);
    unknown_event.event_id = Some("x' OR '1'='1".to_owned());
    assert!(store
        .query_profiles(&unknown_event)
        .await
        .unwrap()
        .is_empty());
    let cart = store
        .query_profiles(&profile_query("cart", T0, T0 + 100 * SEC))
        .await
        .unwrap();
    assert_eq!(cart.len(), 6);
    let empty_range = store
        .query_profiles(&profile_query("checkout", T0 + 3 * SEC, T0 + 3 * SEC))
        .await
        .unwrap();
    assert!(empty_range.is_empty());
    let cart_profile = store.get_profile("cart", &profile_id(203)).await.unwrap();
    assert_eq!(
        cart_profile.map(|p| p.meta()),
        all.iter()
            .find(|p| p.profile_id == profile_id(203))
            .map(ProfileRecord::meta)
    );
    assert_eq!(
        store
            .get_profile("checkout", &profile_id(203))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.get_profile("cart", &profile_id(999)).await.unwrap(),
        None
    );
    assert_eq!(store.get_profile("cart", "").await.unwrap(), None);
    assert_eq!(
        store.get_profile("cart", "x' OR '1'='1").await.unwrap(),
        None
    );
}
