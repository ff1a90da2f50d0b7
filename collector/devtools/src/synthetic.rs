//! Synthetic fleet data: CPU profiles as a realistic Rust service's agent would send
//! them, for the ingest benchmark (`collector/benches/ingest.rs`) and the load generator
//! (`holmes-loadgen`).
//!
//! A [`ProfileFactory`] holds a pool of distinct stacks, 10–40 frames deep, of
//! Rust-looking functions (tokio, hyper, axum, serde, tokio-postgres, libc and the
//! service's own modules) with real-looking files and lines. Each profile draws
//! [`SAMPLES_PER_PROFILE`] distinct stacks from it with Zipf popularity (s = [`ZIPF_S`])
//! and is encoded as the agent encodes it: gzipped `profile.proto`, its tables made by
//! `holmes-proto`'s [`ProfileTables`] (as the agent's), one location per frame, values
//! `[count, nanoseconds]`, a `phase` label.
//! Everything is deterministic: the same seed gives the same bytes.

use std::collections::HashMap;
use std::io::Write as _;

use holmes_proto::pprof::{Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use prost::Message as _;

/// Samples (distinct stacks) per profile.
pub const SAMPLES_PER_PROFILE: usize = 1000;
/// Sampling period of the simulated CPU profiler (100 Hz).
pub const PERIOD_NANOS: i64 = 10_000_000;
/// Zipf exponent of stack popularity.
pub const ZIPF_S: f64 = 1.0;

/// A pool of distinct stacks and the CPU profiles drawn from it.
pub struct ProfileFactory {
    shapes: Shapes,
    pool: Vec<Vec<Frame>>,
    cdf: Vec<f64>,
}

impl std::fmt::Debug for ProfileFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileFactory")
            .field("stacks", &self.pool.len())
            .field("functions", &self.shapes.catalog.functions.len())
            .finish()
    }
}

impl ProfileFactory {
    /// A pool of `stacks` distinct stacks (at least one).
    pub fn new(stacks: usize) -> Self {
        let shapes = shapes();
        let pool = stack_pool(&shapes, stacks.max(1));
        let cdf = zipf_cdf(pool.len());
        ProfileFactory { shapes, pool, cdf }
    }

    /// Distinct functions the stacks are made of.
    pub fn functions(&self) -> usize {
        self.shapes.catalog.functions.len()
    }

    /// A gzipped CPU profile of [`SAMPLES_PER_PROFILE`] distinct stacks (fewer if the
    /// pool is smaller) drawn with the randomness of `seed`.
    pub fn cpu_profile(&self, seed: u64, started_unix_nanos: u64) -> Vec<u8> {
        let mut rng = Rng(mix(seed));
        let picks = draw_picks(&self.cdf, &mut rng);
        encode_profile(&self.shapes.catalog, &self.pool, &picks, started_unix_nanos)
    }
}

// ---------------------------------------------------------------------------------------
// Deterministic randomness
// ---------------------------------------------------------------------------------------

/// SplitMix64: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// SplitMix64's finalizer: a well-mixed 64-bit value of `z` (for ids and seeds).
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

mod shapes;

use shapes::{shapes, Catalog, Shapes};

/// One frame: a function of the catalog and the line executing in it.
type Frame = (usize, u32);

/// The line a function is at when it calls `callee` (or, for a leaf, one of a few hot
/// lines): stable, so equal call paths make equal stacks.
fn line_of(function: usize, callee: u64) -> u32 {
    12 + (mix((function as u64) << 32 ^ callee) % 900) as u32
}

/// One random stack, leaf first.
fn random_stack(s: &Shapes, rng: &mut Rng) -> Vec<Frame> {
    let mut funcs: Vec<usize> = Vec::new();
    let roll = rng.below(100);
    if roll < 4 {
        funcs.extend(&s.idle);
    } else {
        if roll < 12 {
            funcs.extend(&s.blocking_root);
        } else if roll < 16 {
            funcs.extend(&s.main_root);
        } else {
            funcs.extend(&s.worker_root);
        }
        if rng.chance(85) {
            funcs.extend(&s.framework);
        } else {
            let k = rng.range(1, s.framework.len());
            funcs.extend(&s.framework[..k]);
        }
        // A walk down the service's layers: a handler, then domain logic and storage.
        let mut layer = 0usize;
        for _ in 0..rng.range(1, 7) {
            let options = &s.layers[layer];
            funcs.push(options[rng.below(options.len())]);
            if layer < 2 && rng.chance(60) {
                layer += 1;
            }
        }
        if rng.chance(65) {
            let lib = &s.libraries[rng.below(s.libraries.len())];
            funcs.extend(&lib[..rng.range(1, lib.len())]);
        }
        if rng.chance(55) {
            let leaf = &s.leaves[rng.below(s.leaves.len())];
            funcs.extend(&leaf[..rng.range(1, leaf.len())]);
        }
    }
    let leaf_line = rng.below(4) as u64;
    let mut frames: Vec<Frame> = funcs
        .iter()
        .enumerate()
        .map(|(i, &f)| {
            let callee = funcs.get(i + 1).map_or(1 << 40 | leaf_line, |&c| c as u64);
            (f, line_of(f, callee))
        })
        .collect();
    frames.reverse();
    frames
}

/// `size` distinct stacks 10–40 frames deep, in popularity order (most popular first).
fn stack_pool(s: &Shapes, size: usize) -> Vec<Vec<Frame>> {
    let mut rng = Rng(0x5eed_0001);
    let mut seen = std::collections::HashSet::new();
    let mut pool = Vec::with_capacity(size);
    let mut tries = 0usize;
    while pool.len() < size {
        tries += 1;
        assert!(
            tries < size * 1000,
            "cannot make {size} distinct stacks from the catalog"
        );
        let stack = random_stack(s, &mut rng);
        if (10..=40).contains(&stack.len()) && seen.insert(stack.clone()) {
            pool.push(stack);
        }
    }
    // Shuffle so popularity does not follow generation order.
    for i in (1..pool.len()).rev() {
        let j = rng.below(i + 1);
        pool.swap(i, j);
    }
    pool
}

/// Cumulative Zipf weights over `n` ranks.
fn zipf_cdf(n: usize) -> Vec<f64> {
    let mut acc = 0.0;
    let mut cdf: Vec<f64> = (1..=n)
        .map(|rank| {
            acc += 1.0 / (rank as f64).powf(ZIPF_S);
            acc
        })
        .collect();
    for c in &mut cdf {
        *c /= acc;
    }
    cdf
}

// ---------------------------------------------------------------------------------------
// Profiles as the agent encodes them
// ---------------------------------------------------------------------------------------

/// The location of `frame`, made once per profile (`memo`) in `t`'s tables.
fn location(
    t: &mut ProfileTables,
    memo: &mut HashMap<Frame, u64>,
    catalog: &Catalog,
    mapping: u64,
    frame: Frame,
) -> u64 {
    if let Some(&id) = memo.get(&frame) {
        return id;
    }
    let (f, line) = frame;
    let (name, file) = &catalog.functions[f];
    let function_id = t.function(name, "", file, 0);
    let id = t.location(
        mapping,
        0x5555_5555_0000 + (f as u64) * 0x1000 + u64::from(line) * 4,
        vec![Line {
            function_id,
            line: i64::from(line),
            column: 0,
        }],
    );
    memo.insert(frame, id);
    id
}

/// A gzipped CPU profile of `picks` (stack index in `pool`, tick count).
fn encode_profile(
    catalog: &Catalog,
    pool: &[Vec<Frame>],
    picks: &[(usize, i64)],
    started_unix_nanos: u64,
) -> Vec<u8> {
    let mut t = ProfileTables::new();
    let mut memo = HashMap::new();
    let sample_type = vec![
        t.value_type("samples", "count"),
        t.value_type("cpu", "nanoseconds"),
    ];
    let period_type = Some(t.value_type("cpu", "nanoseconds"));
    let phase = t.str_label("phase", "trigger");
    let binary = t.mapping("/usr/local/bin/orders", "", true);
    let sample = picks
        .iter()
        .map(|&(stack, count)| Sample {
            location_id: pool[stack]
                .iter()
                .map(|&frame| location(&mut t, &mut memo, catalog, binary, frame))
                .collect(),
            value: vec![count, count * PERIOD_NANOS],
            label: vec![phase],
        })
        .collect();
    let comment = vec![
        t.string("holmes trigger cpu profile at 100 Hz"),
        t.string("holmes: 0 samples lost to a full signal ring, 0 beyond the distinct-stack cap (since start)"),
    ];
    let profile = t.into_profile(Profile {
        sample_type,
        sample,
        time_nanos: started_unix_nanos as i64,
        duration_nanos: 10_000_000_000,
        period_type,
        period: PERIOD_NANOS,
        comment,
        ..Profile::default()
    });
    let raw = profile.encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&raw);
    gz.finish().unwrap_or_default()
}

/// Draws ticks by popularity until `SAMPLES_PER_PROFILE` distinct stacks have some.
fn draw_picks(cdf: &[f64], rng: &mut Rng) -> Vec<(usize, i64)> {
    let mut counts: HashMap<usize, i64> = HashMap::new();
    let mut order = Vec::new();
    while order.len() < SAMPLES_PER_PROFILE.min(cdf.len()) {
        let u = rng.unit();
        let stack = cdf.partition_point(|&c| c < u).min(cdf.len() - 1);
        let n = counts.entry(stack).or_insert(0);
        if *n == 0 {
            order.push(stack);
        }
        *n += 1;
    }
    order.into_iter().map(|s| (s, counts[&s])).collect()
}
