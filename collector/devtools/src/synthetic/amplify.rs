//! Profiles shaped like the amplification attack of issue 12: a small pprof profile
//! whose one long function name is referenced at every depth of many distinct stacks,
//! so that a decoder copying each stack's frames would materialize
//! `stacks × depth × name` bytes — gigabytes out of a few hundred kilobytes. The soak
//! test's hostile agents send them (`holmes-soak`), and the decoder's fuzz test
//! (`collector/tests/it/fuzz_normalize.rs`) measures what decoding them costs.

use std::io::Write as _;

use holmes_proto::pprof::{Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use prost::Message as _;

use super::{mix, Rng};

/// The shape of one amplifying profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Amplification {
    /// Bytes of the one function name every frame names.
    pub name_bytes: usize,
    /// Distinct locations naming it (each at its own address and line).
    pub locations: usize,
    /// Distinct stacks, one sample each.
    pub stacks: usize,
    /// Frames of every stack.
    pub depth: usize,
}

impl Amplification {
    /// Many distinct stacks, every frame naming one name just under the collector's
    /// default 4 KiB cap: 4 GB if each stack copied its frames, 4 MB stored as
    /// locations and stacks referring to them.
    pub const SHARED_LONG_NAME: Amplification = Amplification {
        name_bytes: 4000,
        locations: 64,
        stacks: 1000,
        depth: 1024,
    };
    /// The long name in so many distinct locations that even one copy per location is
    /// more than the collector's default 64 MiB materialization cap (80 MB).
    pub const MANY_LOCATIONS: Amplification = Amplification {
        name_bytes: 4000,
        locations: 20_000,
        stacks: 20,
        depth: 1000,
    };
    /// A name over the collector's default 4 KiB cap.
    pub const NAME_TOO_LONG: Amplification = Amplification {
        name_bytes: 64 * 1024,
        locations: 4,
        stacks: 100,
        depth: 512,
    };
    /// Stacks deeper than the collector's default 1024 frames.
    pub const TOO_DEEP: Amplification = Amplification {
        name_bytes: 4000,
        locations: 64,
        stacks: 100,
        depth: 4096,
    };

    /// What a decoder copying every stack's frames would hold: every frame of every
    /// stack with its own copy of the name.
    pub fn naive_bytes(&self) -> u64 {
        (self.stacks as u64) * (self.depth as u64) * (self.name_bytes as u64)
    }

    /// The profile, with the randomness of `seed` choosing each frame's location.
    pub fn profile(&self, seed: u64) -> Profile {
        let mut rng = Rng(mix(seed));
        let mut t = ProfileTables::new();
        let sample_type = vec![
            t.value_type("samples", "count"),
            t.value_type("cpu", "nanoseconds"),
        ];
        let period_type = Some(t.value_type("cpu", "nanoseconds"));
        let binary = t.mapping("/srv/amplifier", "", true);
        // A name of printable ASCII, different per seed so that no store can share it.
        let mut name = format!("amplify::{seed:016x}::");
        while name.len() < self.name_bytes {
            name.push((b'a' + (name.len() % 26) as u8) as char);
        }
        name.truncate(self.name_bytes);
        let function = t.function(&name, "", "src/amplify.rs", 1);
        let locations: Vec<u64> = (0..self.locations.max(1) as u64)
            .map(|i| {
                t.location(
                    binary,
                    0x40_0000 + i * 16,
                    vec![Line {
                        function_id: function,
                        line: i as i64 + 1,
                        column: 0,
                    }],
                )
            })
            .collect();
        let sample = (0..self.stacks)
            .map(|i| {
                // The first frame makes every stack distinct, the rest are random.
                let mut stack = Vec::with_capacity(self.depth);
                stack.push(locations[i % locations.len()]);
                stack.extend((1..self.depth).map(|_| locations[rng.below(locations.len())]));
                if self.stacks > locations.len() {
                    // Beyond as many stacks as locations, the second frame tells them apart.
                    if let Some(second) = stack.get_mut(1) {
                        *second = locations[(i / locations.len()) % locations.len()];
                    }
                }
                Sample {
                    location_id: stack,
                    value: vec![1, 10_000_000],
                    label: Vec::new(),
                }
            })
            .collect();
        t.into_profile(Profile {
            sample_type,
            sample,
            period_type,
            period: 10_000_000,
            ..Profile::default()
        })
    }

    /// The profile as agents send pprof: encoded and gzipped.
    pub fn pprof_gzip(&self, seed: u64) -> Vec<u8> {
        let raw = self.profile(seed).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing to a Vec cannot fail.
        let _ = gz.write_all(&raw);
        gz.finish().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shapes_are_small_on_the_wire_and_huge_when_copied_per_frame() {
        let shape = Amplification::SHARED_LONG_NAME;
        let p = shape.profile(7);
        assert_eq!(p.sample.len(), shape.stacks);
        assert!(p.sample.iter().all(|s| s.location_id.len() == shape.depth));
        let distinct: std::collections::HashSet<&Vec<u64>> =
            p.sample.iter().map(|s| &s.location_id).collect();
        assert_eq!(distinct.len(), shape.stacks, "every stack is distinct");
        assert!(p.string_table.iter().any(|s| s.len() == shape.name_bytes));
        let wire = shape.pprof_gzip(7).len() as u64;
        assert!(wire < 2 << 20, "{wire} bytes on the wire");
        assert!(shape.naive_bytes() > 2000 * wire, "{}", shape.naive_bytes());
    }
}
