//! A stored profile's pprof bytes, decoded, checked and normalized into
//! [`ProfileContents`]: frames of (function, file, line), each distinct stack once.
//!
//! The bytes come from agents and so from the network: everything is bounded before it
//! is trusted. Compressed input is inflated up to [`Limits::max_decoded_bytes`] (a gzip
//! bomb stops there); the decoded message may hold at most [`Limits::max_items`] samples,
//! locations, functions and strings; every index and id must point at something; a stack
//! may be at most [`Limits::max_depth`] frames deep (inlined frames counted). A profile
//! that breaks a rule is a [`NormalizeError`] naming the rule; nothing here panics.

use std::collections::HashMap;
use std::io::Read;

use holmes_proto::pprof::{Function, Location, Profile};
use holmes_storage::{ProfileContents, Stack, StackFrame, StackSample};
use prost::Message;

/// Default cap on a profile's decompressed size.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 256 * 1024 * 1024;
/// Default cap on each of: samples, locations, functions, strings.
pub const DEFAULT_MAX_ITEMS: usize = 2_000_000;
/// Default cap on the frames of one stack, inlined frames included.
pub const DEFAULT_MAX_DEPTH: usize = 1024;

/// The bounds a profile must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes after decompression.
    pub max_decoded_bytes: u64,
    /// Samples, locations, functions and strings, each.
    pub max_items: usize,
    /// Frames of one stack.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
            max_items: DEFAULT_MAX_ITEMS,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }
}

/// Why a profile was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormalizeError {
    /// The gzip stream is broken.
    #[error("cannot decompress the profile: {0}")]
    Decompress(String),
    /// More bytes than allowed after decompression.
    #[error("the profile decompresses to more than {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// Not a `profile.proto` message.
    #[error("not a pprof profile: {0}")]
    Malformed(String),
    /// Too many of something.
    #[error("the profile has {count} {what}, more than the {limit} allowed")]
    TooMany {
        /// Samples, locations, functions or strings.
        what: &'static str,
        /// How many it has.
        count: usize,
        /// The cap.
        limit: usize,
    },
    /// An index or id that points at nothing.
    #[error("the profile's {what} refers to {target} {id}, which does not exist")]
    Dangling {
        /// Where the reference is.
        what: &'static str,
        /// What it should point at.
        target: &'static str,
        /// The missing index or id.
        id: i128,
    },
    /// Two of a kind with one id.
    #[error("the profile has two {what} with id {id}")]
    DuplicateId {
        /// Locations or functions.
        what: &'static str,
        /// The id.
        id: u64,
    },
    /// A sample whose value count differs from the sample types'.
    #[error("sample {index} has {values} values for {types} sample types")]
    ValueCount {
        /// Which sample.
        index: usize,
        /// Its values.
        values: usize,
        /// The sample types.
        types: usize,
    },
    /// A stack deeper than allowed.
    #[error("sample {index} is {depth} frames deep, more than the {limit} allowed")]
    TooDeep {
        /// Which sample.
        index: usize,
        /// Its frames.
        depth: usize,
        /// The cap.
        limit: usize,
    },
}

/// The raw `profile.proto` bytes of `data`, inflated first if gzipped, within `limit`.
fn inflate(data: &[u8], limit: u64) -> Result<std::borrow::Cow<'_, [u8]>, NormalizeError> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        if data.len() as u64 > limit {
            return Err(NormalizeError::TooLarge { limit });
        }
        return Ok(std::borrow::Cow::Borrowed(data));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| NormalizeError::Decompress(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(NormalizeError::TooLarge { limit });
    }
    Ok(std::borrow::Cow::Owned(out))
}

fn count(what: &'static str, n: usize, limit: usize) -> Result<(), NormalizeError> {
    if n > limit {
        return Err(NormalizeError::TooMany {
            what,
            count: n,
            limit,
        });
    }
    Ok(())
}

/// Decodes, checks and normalizes `data` (a pprof profile, gzipped or not) as the
/// contents of profile `profile_id` of `service`, every stack it uses included.
pub fn normalize(
    data: &[u8],
    limits: Limits,
    profile_id: &str,
    service: &str,
    started_unix_nanos: u64,
) -> Result<ProfileContents, NormalizeError> {
    normalize_new_stacks(
        data,
        limits,
        profile_id,
        service,
        started_unix_nanos,
        &|_| false,
    )
}

/// [`normalize`], leaving out of [`ProfileContents::stacks`] the stacks for which
/// `stored(stack_id)` is true (see [`holmes_storage::Store::has_stack`]): their frames
/// are neither copied nor written again. Samples still refer to them.
pub fn normalize_new_stacks(
    data: &[u8],
    limits: Limits,
    profile_id: &str,
    service: &str,
    started_unix_nanos: u64,
    stored: &dyn Fn(u64) -> bool,
) -> Result<ProfileContents, NormalizeError> {
    let raw = inflate(data, limits.max_decoded_bytes)?;
    let p = Profile::decode(raw.as_ref()).map_err(|e| NormalizeError::Malformed(e.to_string()))?;
    count("samples", p.sample.len(), limits.max_items)?;
    count("locations", p.location.len(), limits.max_items)?;
    count("functions", p.function.len(), limits.max_items)?;
    count("strings", p.string_table.len(), limits.max_items)?;

    let strings = &p.string_table;
    let string = |what: &'static str, i: i64| -> Result<&str, NormalizeError> {
        usize::try_from(i)
            .ok()
            .and_then(|i| strings.get(i))
            .map(String::as_str)
            .ok_or(NormalizeError::Dangling {
                what,
                target: "string",
                id: i128::from(i),
            })
    };
    let sample_types = p
        .sample_type
        .iter()
        .map(|vt| {
            Ok((
                string("sample type", vt.r#type)?.to_owned(),
                string("sample type unit", vt.unit)?.to_owned(),
            ))
        })
        .collect::<Result<Vec<_>, NormalizeError>>()?;
    // Fields that name strings but are not kept are still checked.
    for c in &p.comment {
        string("comment", *c)?;
    }
    string("drop_frames", p.drop_frames)?;
    string("keep_frames", p.keep_frames)?;
    if let Some(pt) = &p.period_type {
        string("period type", pt.r#type)?;
        string("period type unit", pt.unit)?;
    }

    let mut mappings = HashMap::with_capacity(p.mapping.len());
    for m in &p.mapping {
        mappings.insert(m.id, string("mapping file name", m.filename)?);
        string("mapping build id", m.build_id)?;
    }
    let mut functions: HashMap<u64, &Function> = HashMap::with_capacity(p.function.len());
    for f in &p.function {
        if functions.insert(f.id, f).is_some() {
            return Err(NormalizeError::DuplicateId {
                what: "functions",
                id: f.id,
            });
        }
    }
    // Each location's frames, innermost first, with their hashes, computed once.
    let mut locations: HashMap<u64, Vec<(StackFrame, u64)>> =
        HashMap::with_capacity(p.location.len());
    for l in &p.location {
        let frames: Vec<(StackFrame, u64)> = location_frames(l, &functions, &mappings, &string)?
            .into_iter()
            .map(|f| {
                let h = holmes_storage::frame_hash(&f);
                (f, h)
            })
            .collect();
        if frames.len() > limits.max_depth {
            return Err(NormalizeError::TooDeep {
                index: 0,
                depth: frames.len(),
                limit: limits.max_depth,
            });
        }
        if locations.insert(l.id, frames).is_some() {
            return Err(NormalizeError::DuplicateId {
                what: "locations",
                id: l.id,
            });
        }
    }

    let mut stacks: Vec<Stack> = Vec::new();
    let mut seen_stacks: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut samples = Vec::with_capacity(p.sample.len());
    for (index, s) in p.sample.iter().enumerate() {
        if s.value.len() != sample_types.len() {
            return Err(NormalizeError::ValueCount {
                index,
                values: s.value.len(),
                types: sample_types.len(),
            });
        }
        let mut parts = Vec::with_capacity(s.location_id.len());
        let mut depth = 0usize;
        for id in &s.location_id {
            let lf = locations.get(id).ok_or(NormalizeError::Dangling {
                what: "sample",
                target: "location",
                id: i128::from(*id),
            })?;
            depth = depth.saturating_add(lf.len());
            parts.push(lf);
        }
        if depth > limits.max_depth {
            return Err(NormalizeError::TooDeep {
                index,
                depth,
                limit: limits.max_depth,
            });
        }
        // Hashed from the frames' hashes; the frames themselves are copied only for a
        // stack not seen before in this profile.
        let stack_id = holmes_storage::stack_id_of_hashes(
            parts.iter().flat_map(|lf| lf.iter().map(|(_, h)| *h)),
        );
        if seen_stacks.insert(stack_id) && !stored(stack_id) {
            let frames: Vec<StackFrame> = parts
                .iter()
                .flat_map(|lf| lf.iter().map(|(f, _)| f.clone()))
                .collect();
            stacks.push(Stack { stack_id, frames });
        }
        let mut labels = Vec::with_capacity(s.label.len());
        for l in &s.label {
            let key = string("label key", l.key)?.to_owned();
            let value = if l.str != 0 {
                string("label value", l.str)?.to_owned()
            } else {
                let unit = string("label unit", l.num_unit)?;
                if unit.is_empty() {
                    l.num.to_string()
                } else {
                    format!("{} {unit}", l.num)
                }
            };
            labels.push((key, value));
        }
        samples.push(StackSample {
            stack_id,
            values: s.value.clone(),
            labels,
        });
    }
    Ok(ProfileContents {
        profile_id: profile_id.to_owned(),
        service: service.to_owned(),
        started_unix_nanos,
        sample_types,
        stacks,
        samples,
    })
}

/// A location's frames, innermost (inlined) first; an unsymbolized location is one
/// frame named by its address, with the mapped file as its file.
fn location_frames<'a>(
    l: &Location,
    functions: &HashMap<u64, &Function>,
    mappings: &HashMap<u64, &'a str>,
    string: &impl Fn(&'static str, i64) -> Result<&'a str, NormalizeError>,
) -> Result<Vec<StackFrame>, NormalizeError> {
    let file = if l.mapping_id == 0 {
        ""
    } else {
        mappings
            .get(&l.mapping_id)
            .copied()
            .ok_or(NormalizeError::Dangling {
                what: "location",
                target: "mapping",
                id: i128::from(l.mapping_id),
            })?
    };
    if l.line.is_empty() {
        return Ok(vec![StackFrame {
            function: format!("{:#x}", l.address),
            file: file.to_owned(),
            line: 0,
        }]);
    }
    l.line
        .iter()
        .map(|line| {
            let f = functions
                .get(&line.function_id)
                .ok_or(NormalizeError::Dangling {
                    what: "location line",
                    target: "function",
                    id: i128::from(line.function_id),
                })?;
            string("function system name", f.system_name)?;
            Ok(StackFrame {
                function: string("function name", f.name)?.to_owned(),
                file: string("function file name", f.filename)?.to_owned(),
                line: u32::try_from(line.line).unwrap_or(0),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use holmes_proto::pprof::{Label, Line, Sample};
    use holmes_proto::profile_tables::ProfileTables;

    use super::*;

    /// A CPU profile: `main -> handle -> (inlined) render` twice with different thread
    /// labels, `main -> handle` once, plus an unsymbolized address. Functions are
    /// `main` (1), `handle` (2) and `render` (3); locations 1 (`main`), 2 (`render`
    /// inlined into `handle`, innermost first) and 3 (address 0x3000, no lines).
    fn profile() -> Profile {
        let mut t = ProfileTables::new();
        let sample_type = vec![
            t.value_type("samples", "count"),
            t.value_type("cpu", "nanoseconds"),
        ];
        let main = t.function("main", "", "src/main.rs", 0);
        let handle = t.function("handle", "", "src/main.rs", 0);
        let render = t.function("render", "", "src/render.rs", 0);
        let shop = t.mapping("/bin/shop", "", false);
        let line = |function_id: u64, line: i64| Line {
            function_id,
            line,
            column: 0,
        };
        let in_main = t.location(shop, 0x1000, vec![line(main, 10)]);
        let in_render = t.location(shop, 0x2000, vec![line(render, 42), line(handle, 20)]);
        let unsymbolized = t.location(shop, 0x3000, vec![]);
        let worker_1 = t.str_label("thread", "worker-1");
        let worker_2 = t.str_label("thread", "worker-2");
        let bytes = t.num_label("bytes", 64, "bytes");
        let sample = |locs: Vec<u64>, n: i64, thread: Label| Sample {
            location_id: locs,
            value: vec![n, n * 10],
            label: vec![thread, bytes],
        };
        t.into_profile(Profile {
            sample_type,
            sample: vec![
                sample(vec![in_render, in_main], 5, worker_1),
                sample(vec![in_main], 1, worker_1),
                sample(vec![in_render, in_main], 2, worker_2),
                sample(vec![unsymbolized, in_main], 1, worker_2),
            ],
            ..Profile::default()
        })
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn run(p: &Profile) -> Result<ProfileContents, NormalizeError> {
        normalize(
            &gzip(&p.encode_to_vec()),
            Limits::default(),
            "p1",
            "shop",
            7,
        )
    }

    fn frame(function: &str, file: &str, line: u32) -> StackFrame {
        StackFrame {
            function: function.to_owned(),
            file: file.to_owned(),
            line,
        }
    }

    #[test]
    fn stacks_already_stored_are_left_out_but_still_referenced() {
        let all = run(&profile()).unwrap();
        let stored = all.stacks[0].stack_id;
        let c = normalize_new_stacks(
            &gzip(&profile().encode_to_vec()),
            Limits::default(),
            "p1",
            "shop",
            7,
            &|id| id == stored,
        )
        .unwrap();
        assert_eq!(c.stacks, all.stacks[1..].to_vec());
        assert_eq!(c.samples, all.samples);
        assert!(c.samples.iter().any(|s| s.stack_id == stored));
    }

    #[test]
    fn stacks_are_normalized_and_stored_once() {
        let c = run(&profile()).unwrap();
        assert_eq!(
            c.sample_types,
            vec![
                ("samples".to_owned(), "count".to_owned()),
                ("cpu".to_owned(), "nanoseconds".to_owned())
            ]
        );
        assert_eq!((c.profile_id.as_str(), c.service.as_str()), ("p1", "shop"));
        // Three distinct stacks for four samples.
        assert_eq!(c.stacks.len(), 3);
        assert_eq!(
            c.stacks[0].frames,
            vec![
                frame("render", "src/render.rs", 42),
                frame("handle", "src/main.rs", 20),
                frame("main", "src/main.rs", 10),
            ]
        );
        assert_eq!(c.stacks[1].frames, vec![frame("main", "src/main.rs", 10)]);
        assert_eq!(
            c.stacks[2].frames,
            vec![
                frame("0x3000", "/bin/shop", 0),
                frame("main", "src/main.rs", 10)
            ]
        );
        for s in &c.stacks {
            assert_eq!(s.stack_id, holmes_storage::stack_id(&s.frames));
        }
        let ids: Vec<u64> = c.samples.iter().map(|s| s.stack_id).collect();
        assert_eq!(
            ids,
            vec![
                c.stacks[0].stack_id,
                c.stacks[1].stack_id,
                c.stacks[0].stack_id,
                c.stacks[2].stack_id
            ]
        );
        assert_eq!(c.samples[0].values, vec![5, 50]);
        assert_eq!(
            c.samples[2].labels,
            vec![
                ("thread".to_owned(), "worker-2".to_owned()),
                ("bytes".to_owned(), "64 bytes".to_owned())
            ]
        );
        // Uncompressed input reads the same.
        let raw = normalize(
            &profile().encode_to_vec(),
            Limits::default(),
            "p1",
            "shop",
            7,
        );
        assert_eq!(raw.unwrap(), c);
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
            normalize(&bomb, limits, "p", "s", 0).unwrap_err(),
            NormalizeError::TooLarge { limit: 8 << 20 }
        );
    }

    #[test]
    fn garbage_and_broken_gzip_are_refused() {
        let err = normalize(b"\x0a\xff\xff\xff\xff\x0f", Limits::default(), "p", "s", 0);
        assert!(matches!(err, Err(NormalizeError::Malformed(_))), "{err:?}");
        let mut cut = gzip(&profile().encode_to_vec());
        cut.truncate(cut.len() / 2);
        let err = normalize(&cut, Limits::default(), "p", "s", 0);
        assert!(matches!(err, Err(NormalizeError::Decompress(_))), "{err:?}");
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
                Box::new(|p| p.location[0].mapping_id = 97),
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
                "sample type unit refers to string 94",
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
    fn counts_depth_and_duplicates_are_checked() {
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
            Err(NormalizeError::TooDeep { index: 1, .. })
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
        let err = normalize(&profile().encode_to_vec(), limits, "p", "s", 0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the profile has 4 samples, more than the 3 allowed"
        );
    }
}
