//! Fuzzing the profile decoder: valid profiles mutated at random — bytes flipped,
//! truncated, spliced; ids, indexes and counts set to hostile values; stacks made deep;
//! gzip layers added and broken — must each be decoded or refused with an error, never
//! panic, and never take the collector past its limits.
//!
//! An eighth of the cases are shaped like the amplification attack
//! (`holmes_devtools::synthetic::amplify`): one long function name at every depth of
//! many distinct stacks, in few or many locations — profiles of kilobytes that would be
//! hundreds of megabytes if every frame held its own copy of the name. Those that stay
//! unmutated must be stored when they are within every limit and refused, naming the
//! limit, only when they break one. For every case, the heap the decoder holds at its
//! peak (this binary's allocator counts it per thread, [`crate::alloc_meter`]) must stay
//! under [`memory_bound`]: a few times the profile's inflated size plus twice the
//! materialization cap — never the name times its references.
//!
//! `HOLMES_FUZZ_CASES` sets the number of cases (default 1,500, a few seconds);
//! `deploy/dev/fuzz.sh` runs 200,000 (or its argument) in release mode. `HOLMES_FUZZ_SEED` replays a run.
//! A case that panics is written to `target/fuzz-crash-<seed>-<case>.bin`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use holmes_collector::process::normalize::{normalize, Limits, NormalizeError};
use holmes_devtools::synthetic::amplify::Amplification;
use holmes_proto::pprof::{Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use holmes_proto::ProfileFormat;
use prost::Message;

/// xorshift64*: small, deterministic, good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// A value a hostile writer would pick for an index or id.
    fn hostile(&mut self) -> i64 {
        match self.below(6) {
            0 => 0,
            1 => -1,
            2 => i64::MAX,
            3 => i64::MIN,
            4 => self.below(64) as i64,
            _ => self.next() as i64,
        }
    }
}

/// A realistic seed profile: `stacks` distinct stacks of depth up to `depth`, with
/// inlined frames, labels and a mapping.
fn seed_profile(rng: &mut Rng, stacks: usize, depth: usize) -> Profile {
    let mut t = ProfileTables::new();
    let sample_type = vec![
        t.value_type("samples", "count"),
        t.value_type("cpu", "nanoseconds"),
    ];
    let period_type = Some(t.value_type("cpu", "nanoseconds"));
    let binary = t.mapping("/srv/shop", "", true);
    let functions: Vec<u64> = (1..=40u64)
        .map(|id| {
            t.function(
                &format!("shop::module{}::function_{id}", id % 7),
                "",
                &format!("src/module{}.rs", id % 7),
                1,
            )
        })
        .collect();
    let locations: Vec<u64> = (1..=60u64)
        .map(|id| {
            let lines = (0..1 + rng.below(3))
                .map(|_| Line {
                    function_id: functions[rng.below(functions.len())],
                    line: rng.below(500) as i64,
                    column: 0,
                })
                .collect();
            t.location(binary, 0x40_0000 + id * 16, lines)
        })
        .collect();
    let worker = t.str_label("thread", "worker-1");
    let samples = (0..stacks)
        .map(|_| Sample {
            location_id: (0..1 + rng.below(depth))
                .map(|_| locations[rng.below(locations.len())])
                .collect(),
            value: vec![1 + rng.below(9) as i64, 10_000_000],
            label: vec![worker],
        })
        .collect();
    t.into_profile(Profile {
        sample_type,
        sample: samples,
        period_type,
        period: 10_000_000,
        ..Profile::default()
    })
}

/// One structural mutation: a field of the decoded profile set to something hostile.
fn mutate_structure(rng: &mut Rng, p: &mut Profile) {
    let s = p.sample.len();
    let l = p.location.len();
    let f = p.function.len();
    match rng.below(14) {
        0 if s > 0 => {
            let i = rng.below(s);
            let j = rng.below(p.sample[i].location_id.len().max(1));
            if let Some(id) = p.sample[i].location_id.get_mut(j) {
                *id = rng.hostile() as u64;
            }
        }
        1 if l > 0 => {
            let i = rng.below(l);
            if let Some(line) = p.location[i].line.first_mut() {
                line.function_id = rng.hostile() as u64;
            }
        }
        2 if f > 0 => p.function[rng.below(f)].name = rng.hostile(),
        3 if f > 0 => p.function[rng.below(f)].filename = rng.hostile(),
        4 if s > 0 => {
            let i = rng.below(s);
            p.sample[i].value.push(rng.hostile());
        }
        5 if s > 0 => {
            let i = rng.below(s);
            if let Some(label) = p.sample[i].label.first_mut() {
                label.key = rng.hostile();
                label.str = rng.hostile();
                label.num_unit = rng.hostile();
            }
        }
        6 if s > 0 => {
            // Deep: the same location thousands of times.
            let i = rng.below(s);
            let n = 500 + rng.below(5000);
            p.sample[i].location_id = vec![1; n];
        }
        7 if l > 0 => p.location[rng.below(l)].mapping_id = rng.hostile() as u64,
        8 if f > 0 => {
            let dup = p.function[rng.below(f)];
            p.function.push(dup);
        }
        9 => p.sample_type.clear(),
        10 => p.comment.push(rng.hostile()),
        11 => p.string_table.truncate(rng.below(p.string_table.len() + 1)),
        12 if l > 0 => {
            // Many inlined frames at one location.
            let i = rng.below(l);
            let line = p.location[i].line.first().cloned().unwrap_or_default();
            p.location[i].line = vec![line; 1 + rng.below(3000)];
        }
        _ => p.drop_frames = rng.hostile(),
    }
}

/// One byte-level mutation of an encoded profile.
fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(rng.next() as u8);
        return;
    }
    let n = bytes.len();
    match rng.below(6) {
        0 => {
            let i = rng.below(n);
            bytes[i] ^= 1 << rng.below(8);
        }
        1 => {
            let i = rng.below(n);
            bytes[i] = rng.next() as u8;
        }
        2 => bytes.truncate(rng.below(n)),
        3 => {
            let i = rng.below(n);
            let insert: Vec<u8> = (0..1 + rng.below(16)).map(|_| rng.next() as u8).collect();
            bytes.splice(i..i, insert);
        }
        4 => {
            // Splice a slice of itself elsewhere (repeated fields, odd lengths).
            let a = rng.below(n);
            let b = (a + rng.below(64)).min(n);
            let piece = bytes[a..b].to_vec();
            let at = rng.below(n);
            bytes.splice(at..at, piece);
        }
        _ => {
            // A length prefix turned huge.
            let i = rng.below(n);
            bytes[i] = 0xff;
            if i + 1 < n {
                bytes[i + 1] = 0xff;
            }
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// An amplification shape drawn around `limits`: names on both sides of the name cap,
/// stacks on both sides of the depth cap, and few or many locations, so that some are
/// stored and some break the materialization or item caps.
fn amplification(rng: &mut Rng, limits: &Limits) -> Amplification {
    let depth = 1 + rng.below(limits.max_depth + limits.max_depth / 4);
    Amplification {
        name_bytes: 1000 + rng.below(limits.max_name_bytes + 2000),
        locations: 1 + if rng.below(2) == 0 {
            rng.below(64)
        } else {
            rng.below(4000)
        },
        stacks: 1 + rng.below((limits.max_items + limits.max_items / 4) / depth),
        depth,
    }
}

/// What `shape` costs against `limits`: whether it breaks a cap for sure, and whether it
/// is well within every cap (then it must be stored).
fn judge(shape: &Amplification, limits: &Limits) -> (bool, bool) {
    let entries = shape.stacks * shape.depth;
    // Each location holds one copy of the name; each stack its entries.
    let held = (shape.locations * shape.name_bytes + entries * 4) as u64;
    let breaks = shape.name_bytes > limits.max_name_bytes
        || shape.depth > limits.max_depth
        || entries > limits.max_items
        || held > limits.max_materialized_bytes;
    let within = shape.name_bytes <= limits.max_name_bytes
        && shape.depth <= limits.max_depth
        && entries <= limits.max_items / 2
        && held <= limits.max_materialized_bytes / 2;
    (breaks, within)
}

/// Whether `err` is a refusal `shape` deserves: the cap it names is one the shape breaks.
fn deserved(err: &NormalizeError, shape: &Amplification, limits: &Limits) -> bool {
    match err {
        NormalizeError::NameTooLong { len, limit, .. } => {
            *len == shape.name_bytes && *limit == limits.max_name_bytes && *len > *limit
        }
        NormalizeError::TooDeep { depth, limit, .. } => {
            *depth == shape.depth && *limit == limits.max_depth && *depth > *limit
        }
        NormalizeError::TooMany { count, limit, .. } => {
            *limit == limits.max_items && *count > *limit && shape.stacks * shape.depth > *limit
        }
        NormalizeError::Amplifies { limit } => {
            let held = (shape.locations * shape.name_bytes + shape.stacks * shape.depth * 4) as u64;
            *limit == limits.max_materialized_bytes && held > limits.max_materialized_bytes / 2
        }
        _ => false,
    }
}

/// The most heap one decode of `input` may hold: the inflated profile (its buffer may
/// reach twice its size while it grows, and starts at six times the gzip size), its
/// tables (at most one 8-byte entry per byte of it, doubled while growing: 16 times),
/// and the contents (what [`Limits::max_materialized_bytes`] counts, plus the index of
/// stacks beside them: twice the cap), plus 1 MiB for the rest.
fn memory_bound(input: &[u8], limits: &Limits) -> u64 {
    let inflated = if input.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let _ = std::io::Read::read_to_end(
            &mut std::io::Read::take(
                flate2::read::MultiGzDecoder::new(input),
                limits.max_decoded_bytes + 1,
            ),
            &mut out,
        );
        (out.len() as u64).max((input.len() as u64 * 6).min(limits.max_decoded_bytes))
    } else {
        input.len() as u64
    };
    2 * inflated + 16 * inflated + 2 * limits.max_materialized_bytes + (1 << 20)
}

/// One fuzz case: a seed profile, mutated, maybe gzipped (and the gzip maybe broken).
fn case(rng: &mut Rng) -> Vec<u8> {
    let stacks = 1 + rng.below(200);
    let mut p = seed_profile(rng, stacks, 40);
    for _ in 0..rng.below(4) {
        mutate_structure(rng, &mut p);
    }
    let mut bytes = p.encode_to_vec();
    for _ in 0..rng.below(4) {
        mutate_bytes(rng, &mut bytes);
    }
    match rng.below(4) {
        0 => bytes,
        1 => {
            let mut gz = gzip(&bytes);
            mutate_bytes(rng, &mut gz);
            gz
        }
        2 => gzip(&gzip(&bytes)),
        _ => gzip(&bytes),
    }
}

#[test]
fn mutated_profiles_are_decoded_or_refused_never_panicked_on() {
    let cases: u64 = std::env::var("HOLMES_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1_500);
    let seed: u64 = std::env::var("HOLMES_FUZZ_SEED")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    // Tight limits, so that the caps are exercised as often as the checks.
    let limits = Limits {
        max_decoded_bytes: 1 << 20,
        max_items: 50_000,
        max_depth: 1024,
        max_name_bytes: 4096,
        max_materialized_bytes: 8 << 20,
    };
    let started = Instant::now();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    let (mut peak_max, mut naive_max, mut amplified) = (0u64, 0u64, 0u64);
    for n in 0..cases {
        let mut rng = Rng(seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // Every eighth case has the amplification shape (a quarter of those mutated too).
        let (input, shape) = if n % 8 == 7 {
            let shape = amplification(&mut rng, &limits);
            let mut bytes = shape.pprof_gzip(rng.next());
            let mutated = rng.below(4) == 0;
            if mutated {
                mutate_bytes(&mut rng, &mut bytes);
            }
            amplified += 1;
            naive_max = naive_max.max(shape.naive_bytes());
            (bytes, (!mutated).then_some(shape))
        } else {
            (case(&mut rng), None)
        };
        // Every other case read as the agent's own format: the same bytes are garbage
        // there, or (for the unmutated ones) a message of unknown fields.
        let format = if n % 2 == 0 || n % 8 == 7 {
            ProfileFormat::PprofGzip
        } else {
            ProfileFormat::Native
        };
        let (result, peak) = crate::alloc_meter::peak_of(|| {
            std::panic::catch_unwind(|| normalize(format, &input, limits))
        });
        let bound = memory_bound(&input, &limits);
        assert!(
            peak <= bound,
            "case {n} (seed {seed}, {shape:?}): the decoder held {peak} bytes at once, over its bound of {bound}"
        );
        peak_max = peak_max.max(peak);
        let tag = if n % 8 == 7 { "amplify:" } else { "" };
        match result {
            Ok(Ok(c)) => {
                if let Some(shape) = &shape {
                    assert!(
                        !judge(shape, &limits).0,
                        "case {n}: {shape:?} breaks a limit but was decoded"
                    );
                }
                assert!(c.samples.len() <= limits.max_items);
                for s in 0..c.stacks.len() as u32 {
                    assert!(c.stack_frames(s).len() <= limits.max_depth);
                }
                // What the contents hold stays within the materialization budget.
                let held: usize = c
                    .locations
                    .iter()
                    .map(|l| match l {
                        holmes_storage::Location::Symbolic(frames) => frames
                            .iter()
                            .map(|f| f.function.len() + f.file.len() + f.system_name.len())
                            .sum(),
                        holmes_storage::Location::Native { module, .. } => {
                            module.name.len() + module.build_id.len()
                        }
                    })
                    .sum::<usize>()
                    + c.stacks.iter().map(|s| s.len() * 4).sum::<usize>();
                assert!(
                    held as u64 <= limits.max_materialized_bytes,
                    "case {n}: {held} bytes held"
                );
                *outcomes.entry(format!("{tag}ok")).or_default() += 1;
            }
            Ok(Err(e)) => {
                if let Some(shape) = &shape {
                    assert!(
                        !judge(shape, &limits).1,
                        "case {n}: {shape:?} is within every limit but was refused: {e}"
                    );
                    assert!(
                        deserved(&e, shape, &limits),
                        "case {n}: {shape:?} refused for a limit it does not break: {e}"
                    );
                }
                let kind = format!("{e:?}");
                let kind = kind.split([' ', '(', '{']).next().unwrap_or("").to_owned();
                *outcomes.entry(format!("{tag}{kind}")).or_default() += 1;
            }
            Err(_) => {
                let path = format!(
                    "{}/../target/fuzz-crash-{seed}-{n}.bin",
                    env!("CARGO_MANIFEST_DIR")
                );
                let _ = std::fs::write(&path, &input);
                panic!("case {n} (seed {seed}) panicked the decoder; input written to {path}");
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz: {cases} cases in {secs:.1} s ({:.0}/s), seed {seed}: {outcomes:?}",
        cases as f64 / secs
    );
    eprintln!(
        "fuzz: {amplified} amplification cases (up to {:.0} MB if every frame copied its name); the decoder held at most {:.1} MiB at once (bound: 18 x inflated + 2 x {} MiB + 1 MiB)",
        naive_max as f64 / 1e6,
        peak_max as f64 / 1048576.0,
        limits.max_materialized_bytes >> 20
    );
    // The amplification shapes reach both sides too.
    for side in [
        "amplify:ok",
        "amplify:Amplifies",
        "amplify:NameTooLong",
        "amplify:TooDeep",
    ] {
        assert!(outcomes.contains_key(side), "no {side} case: {outcomes:?}");
    }
    // The mutations reach both sides: some profiles survive, most are refused.
    assert!(outcomes.get("ok").copied().unwrap_or(0) > 0, "{outcomes:?}");
    assert!(
        outcomes.len() >= 5,
        "too few kinds of refusal: {outcomes:?}"
    );
}

#[test]
fn amplifying_profiles_are_refused_with_their_reason_within_a_memory_bound() {
    // The collector's own limits; profiles of at most a megabyte on the wire.
    let limits = Limits::default();
    for (shape, expect) in [
        (Amplification::SHARED_LONG_NAME, "stored"),
        (Amplification::MANY_LOCATIONS, "Amplifies"),
        (Amplification::NAME_TOO_LONG, "NameTooLong"),
        (Amplification::TOO_DEEP, "TooDeep"),
    ] {
        let input = shape.pprof_gzip(42);
        assert!(input.len() < 1 << 20, "{shape:?}: {} bytes", input.len());
        let (result, peak) =
            crate::alloc_meter::peak_of(|| normalize(ProfileFormat::PprofGzip, &input, limits));
        let bound = memory_bound(&input, &limits);
        eprintln!(
            "{shape:?}: {} KiB sent, {:.1} GB if every frame copied its name, decoder peak {:.1} MiB (bound {:.0} MiB): {}",
            input.len() >> 10,
            shape.naive_bytes() as f64 / 1e9,
            peak as f64 / 1048576.0,
            bound as f64 / 1048576.0,
            result.as_ref().map_or_else(|e| e.to_string(), |_| "stored".to_owned())
        );
        assert!(peak <= bound, "{shape:?}: {peak} bytes held, bound {bound}");
        match (&result, expect) {
            (Ok(c), "stored") => {
                assert_eq!(c.stacks.len(), shape.stacks);
                assert_eq!(c.locations.len(), shape.locations);
            }
            (Err(e), _) => {
                assert!(format!("{e:?}").starts_with(expect), "{shape:?}: {e:?}");
                assert!(deserved(e, &shape, &limits), "{shape:?}: {e}");
                // The reason the collector counts and logs.
                assert_ne!(holmes_collector::metrics::normalize_reason(e), "malformed");
            }
            (Ok(_), _) => panic!("{shape:?} was stored; expected {expect}"),
        }
    }
}

/// A stored amplifying profile is read back by the incident's suspects (on every alert),
/// the top functions and the flame graphs (on-call's page): each must cost what the
/// decoding cost, not every frame with its own copy of the name.
#[test]
fn views_of_a_stored_amplifying_profile_stay_within_the_decoders_bound() {
    use holmes_collector::incident::suspects::suspects;
    use holmes_collector::query::{flamegraph, top};

    let limits = Limits::default();
    let shape = Amplification::SHARED_LONG_NAME;
    let input = shape.pprof_gzip(7);
    let contents = normalize(ProfileFormat::PprofGzip, &input, limits).unwrap();
    let bound = memory_bound(&input, &limits);
    let both = [contents.clone(), contents.clone()];
    let index = contents.value_index(None).unwrap();
    let views: [(&str, &dyn Fn() -> usize); 4] = [
        ("suspects", &|| suspects(&both, &[], 5).len()),
        ("top functions", &|| {
            top::top_functions(&contents, index).1.len()
        }),
        ("flame graph", &|| {
            flamegraph::render("amplified", &both, None).len()
        }),
        ("diff flame graph", &|| {
            flamegraph::render("amplified", &both[..1], Some(&both[1..])).len()
        }),
    ];
    for (what, view) in views {
        let (n, peak) = crate::alloc_meter::peak_of(view);
        eprintln!(
            "{what}: {n}, peak {:.1} MiB (bound {:.0} MiB; {:.1} GB if every frame copied its name)",
            peak as f64 / 1048576.0,
            bound as f64 / 1048576.0,
            2.0 * shape.naive_bytes() as f64 / 1e9
        );
        assert!(n > 0, "{what} is empty");
        assert!(
            peak <= bound,
            "{what} held {peak} bytes at once, over {bound}"
        );
    }
}
