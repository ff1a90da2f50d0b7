//! Synthetic fleet data: CPU profiles as a realistic Rust service's agents would send
//! them, for the ingest benchmark (`collector/benches/ingest.rs`), the load generator
//! (`holmes-loadgen`) and tests.
//!
//! A [`ProfileFactory`] holds a pool of distinct stacks, 10–40 frames deep, of
//! Rust-looking functions (tokio, hyper, axum, serde, tokio-postgres and the service's
//! own modules) with real-looking files and lines, down into libc and the vDSO. Each
//! profile draws [`SAMPLES_PER_PROFILE`] distinct stacks from it with Zipf popularity
//! (s = [`ZIPF_S`]), values `[count, nanoseconds]` and a `phase` label.
//!
//! The fleet is one service with several binaries and versions ([`FLEET`]: an API and a
//! worker binary, each deployed in two versions during the day) whose processes restart
//! (every restart moves every mapping: ASLR). A capture ([`ProfileFactory::capture`])
//! comes in the forms the collector takes:
//! - the agent's own (`NativeProfile`): the binary's, libc's and the vDSO's frames as
//!   module + offset, the same in every process of a build;
//! - pprof as agents before it sent it (gzipped `profile.proto`): the binary's frames
//!   symbolized at their absolute addresses, libc's and the vDSO's unsymbolized in their
//!   mappings, at addresses that change with every process.
//!
//! Everything is deterministic: the same seed gives the same bytes. [`amplify`] makes
//! hostile profiles of the amplification shape instead.

use std::collections::HashMap;

use holmes_proto::native::NativeProfile;

pub mod amplify;
mod encode;
mod shapes;

use shapes::{shapes, Shapes};

/// Samples (distinct stacks) per profile.
pub const SAMPLES_PER_PROFILE: usize = 1000;
/// Sampling period of the simulated CPU profiler (100 Hz).
pub const PERIOD_NANOS: i64 = 10_000_000;
/// Zipf exponent of stack popularity.
pub const ZIPF_S: f64 = 1.0;

/// One build of one of the service's binaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Build {
    /// The executable's file name.
    pub binary: &'static str,
    /// Its version.
    pub version: &'static str,
    /// Its GNU build id.
    pub build_id: &'static str,
    /// Where its code starts in the file: the builds differ in where each function is.
    pub text_offset: u64,
}

/// The service's builds: an API and a worker binary, each in the version deployed in the
/// morning and the one that replaced it.
pub const FLEET: [Build; 4] = [
    Build {
        binary: "orders",
        version: "1.4.1",
        build_id: "5f1c0e3a9b27d4c8e6f01a2b3c4d5e6f7a8b9c0d",
        text_offset: 0x0005_2000,
    },
    Build {
        binary: "orders",
        version: "1.4.2",
        build_id: "8e2d4f6a1b3c5d7e9f0a2b4c6d8e0f1a3b5c7d9e",
        text_offset: 0x0005_3400,
    },
    Build {
        binary: "orders-worker",
        version: "1.4.1",
        build_id: "0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b",
        text_offset: 0x0004_1000,
    },
    Build {
        binary: "orders-worker",
        version: "1.4.2",
        build_id: "c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d2",
        text_offset: 0x0004_1800,
    },
];

/// The build an instance of the fleet runs at a time of day: one instance in five runs
/// the worker binary, the others the API; the new version rolls out over the middle of
/// the day, instance by instance.
pub fn build_of(instance: usize, instances: usize, second_of_day: u64) -> usize {
    let worker = usize::from(instance % 5 == 0) * 2;
    let rolled = second_of_day >= 43_200 + (instance as u64 * 7_200) / instances.max(1) as u64;
    worker + usize::from(rolled)
}

/// The process an instance runs at a time of day: instances restart every six hours
/// (and at the deploy), each process with mappings at addresses of its own.
pub fn process_of(instance: usize, second_of_day: u64) -> u64 {
    mix(((instance as u64) << 32) | (second_of_day / 21_600))
}

/// One capture in the forms the collector takes.
#[derive(Debug, Clone)]
pub struct Capture {
    /// The agent's own form.
    pub native: NativeProfile,
    /// The same samples as pprof, gzipped, as agents before the native form sent them.
    pub pprof_gzip: Vec<u8>,
}

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

    /// A capture of [`SAMPLES_PER_PROFILE`] distinct stacks (fewer if the pool is
    /// smaller) drawn with the randomness of `seed`, by a process of `FLEET[build]`
    /// (`process` places its mappings), in both forms.
    pub fn capture(
        &self,
        seed: u64,
        started_unix_nanos: u64,
        build: usize,
        process: u64,
    ) -> Capture {
        let mut rng = Rng(mix(seed));
        let picks = draw_picks(&self.cdf, &mut rng);
        let build = FLEET[build % FLEET.len()];
        encode::capture(
            &self.shapes.catalog,
            &self.pool,
            &picks,
            started_unix_nanos,
            build,
            process,
        )
    }

    /// A gzipped pprof CPU profile (see [`ProfileFactory::capture`]) of the first build.
    pub fn cpu_profile(&self, seed: u64, started_unix_nanos: u64) -> Vec<u8> {
        self.capture(seed, started_unix_nanos, 0, mix(seed))
            .pprof_gzip
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

/// A CPU profile captured at a trigger, its bytes encoded as `format`, as an agent sends
/// it: in chunks of at most [`holmes_proto::MAX_CHUNK_BYTES`], labelled with the
/// trigger's phase.
pub fn trigger_chunks(
    bytes: &[u8],
    format: holmes_proto::ProfileFormat,
    (profile_id, event_id): (&str, &str),
    started_unix_nanos: u64,
    duration: std::time::Duration,
) -> Vec<holmes_proto::ProfileChunk> {
    let pieces: Vec<&[u8]> = bytes.chunks(holmes_proto::MAX_CHUNK_BYTES).collect();
    (0..)
        .zip(&pieces)
        .map(|(index, piece)| holmes_proto::ProfileChunk {
            profile_id: profile_id.to_owned(),
            event_id: event_id.to_owned(),
            kind: holmes_proto::ProfileKind::Cpu,
            chunk_index: index,
            chunk_count: pieces.len() as u32,
            total_bytes: bytes.len() as u64,
            data: piece.to_vec(),
            started_unix_nanos,
            duration,
            error: None,
            labels: [("phase".to_owned(), "trigger".to_owned())].into(),
            format,
        })
        .collect()
}
