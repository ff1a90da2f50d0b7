//! Pyroscope's older `POST /ingest` form: the series in the query string
//! (`name=app.cpu{k=v}`, `from`, `until`, `format`, `sampleRate`, `spyName`), the
//! profile in the body — pprof (raw, or the `profile` part of a `multipart/form-data`
//! body, as Go clients send it), or collapsed stacks (`format=folded`, one
//! `root;…;leaf count` per line; `format=lines`, one stack per line) turned into pprof.

use std::collections::BTreeMap;

use holmes_proto::pprof::{Line, Profile, Sample};
use holmes_proto::profile_tables::ProfileTables;
use holmes_proto::ProfileKind;
use prost::Message;

use crate::ingest::foreign::ForeignError;

/// The series named by `name=app.cpu{k=v,...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesName {
    /// The application (the service).
    pub app: String,
    /// The profile type suffix, if it has a known one (`cpu`, `inuse_space`, ...).
    pub profile_type: Option<String>,
    /// The tags in braces.
    pub tags: BTreeMap<String, String>,
}

/// Profile types the suffix of a name may have.
const PROFILE_TYPES: [&str; 14] = [
    "cpu",
    "itimer",
    "wall",
    "alloc_objects",
    "alloc_space",
    "inuse_objects",
    "inuse_space",
    "goroutines",
    "mutex_count",
    "mutex_duration",
    "block_count",
    "block_duration",
    "lock_count",
    "lock_duration",
];

/// Parses `app.cpu{k=v,k2=v2}` (suffix and tags optional; values may be quoted).
pub fn parse_name(name: &str) -> Result<SeriesName, ForeignError> {
    let (head, tags) = match name.split_once('{') {
        Some((head, rest)) => {
            let inner = rest.strip_suffix('}').ok_or_else(|| {
                ForeignError::BadRequest(format!("name {name:?}: tags must end with '}}'"))
            })?;
            let mut tags = BTreeMap::new();
            for pair in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').ok_or_else(|| {
                    ForeignError::BadRequest(format!("name {name:?}: tag {pair:?} has no '='"))
                })?;
                let v = v.trim().trim_matches('"');
                tags.insert(k.trim().to_owned(), v.to_owned());
            }
            (head, tags)
        }
        None => (name, BTreeMap::new()),
    };
    let (app, profile_type) = match head.rsplit_once('.') {
        Some((app, suffix)) if PROFILE_TYPES.contains(&suffix) => {
            (app.to_owned(), Some(suffix.to_owned()))
        }
        _ => (head.to_owned(), None),
    };
    if app.is_empty() {
        return Err(ForeignError::BadRequest(format!(
            "name {name:?} names no application"
        )));
    }
    Ok(SeriesName {
        app,
        profile_type,
        tags,
    })
}

/// The kind of profile of a Pyroscope type (a name suffix or a `__name__`); `None` for
/// the types Holmes does not store (mutex, block, wall clock).
pub fn kind_of(profile_type: &str) -> Option<ProfileKind> {
    match profile_type {
        "cpu" | "itimer" | "process_cpu" => Some(ProfileKind::Cpu),
        "memory" | "alloc_objects" | "alloc_space" | "inuse_objects" | "inuse_space" => {
            Some(ProfileKind::Heap)
        }
        "goroutine" | "goroutines" => Some(ProfileKind::Tasks),
        _ => None,
    }
}

/// A time of the query string in nanoseconds since the Unix epoch: seconds, or
/// milliseconds, microseconds or nanoseconds by magnitude.
pub fn parse_time(value: &str) -> Result<u64, ForeignError> {
    let n: u64 = value
        .trim()
        .parse()
        .map_err(|_| ForeignError::BadRequest(format!("time {value:?} is not a number")))?;
    Ok(match n {
        0..=99_999_999_999 => n.saturating_mul(1_000_000_000),
        100_000_000_000..=99_999_999_999_999 => n.saturating_mul(1_000_000),
        100_000_000_000_000..=99_999_999_999_999_999 => n.saturating_mul(1_000),
        _ => n,
    })
}

/// The `profile` part of a `multipart/form-data` body with `boundary`.
pub fn multipart_profile(body: &[u8], boundary: &str) -> Result<Vec<u8>, ForeignError> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = split(body, delimiter).into_iter().skip(1);
    parts
        .find_map(|part| {
            let part = part.strip_prefix(b"\r\n").unwrap_or(part);
            let end = find(part, b"\r\n\r\n")?;
            let headers = String::from_utf8_lossy(&part[..end]).to_ascii_lowercase();
            let named_profile = headers
                .lines()
                .any(|l| l.starts_with("content-disposition:") && l.contains("name=\"profile\""));
            if !named_profile {
                return None;
            }
            let content = &part[end + 4..];
            Some(content.strip_suffix(b"\r\n").unwrap_or(content).to_vec())
        })
        .ok_or_else(|| {
            ForeignError::BadRequest("the multipart body has no \"profile\" part".to_owned())
        })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut hay: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(at) = find(hay, delimiter) {
        out.push(&hay[..at]);
        hay = &hay[at + delimiter.len()..];
    }
    out.push(hay);
    out
}

/// Collapsed stacks as a pprof profile. `folded`: each line `root;…;leaf count`;
/// otherwise (`lines`) each line one stack counted once. CPU profiles get the agent's
/// two sample types (`samples/count`, `cpu/nanoseconds`, the period from `sample_rate`
/// Hz); others one, named by `profile_type`.
pub fn collapsed_to_pprof(
    text: &str,
    folded: bool,
    kind: ProfileKind,
    profile_type: &str,
    sample_rate: u64,
    started_unix_nanos: u64,
    duration_nanos: u64,
) -> Result<Vec<u8>, ForeignError> {
    let mut t = ProfileTables::new();
    let period = 1_000_000_000 / sample_rate.max(1);
    let cpu = kind == ProfileKind::Cpu;
    let sample_type = if cpu {
        vec![
            t.value_type("samples", "count"),
            t.value_type("cpu", "nanoseconds"),
        ]
    } else {
        let unit = if profile_type.ends_with("_space") {
            "bytes"
        } else {
            "count"
        };
        vec![t.value_type(profile_type, unit)]
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut by_stack: std::collections::HashMap<Vec<u64>, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (stack, count) = if folded {
            let (stack, count) = line.rsplit_once(' ').ok_or_else(|| {
                ForeignError::BadRequest(format!("line {}: no count after the stack", n + 1))
            })?;
            let count: i64 = count.parse().map_err(|_| {
                ForeignError::BadRequest(format!("line {}: count {count:?} is not a number", n + 1))
            })?;
            (stack, count)
        } else {
            (line, 1)
        };
        let locations: Vec<u64> = stack
            .split(';')
            .rev()
            .filter(|f| !f.is_empty())
            .map(|frame| {
                let function = t.function(frame, "", "", 0);
                t.location(
                    0,
                    0,
                    vec![Line {
                        function_id: function,
                        line: 0,
                        column: 0,
                    }],
                )
            })
            .collect();
        let value = if cpu {
            vec![count, count.saturating_mul(period as i64)]
        } else {
            vec![count]
        };
        match by_stack.get(&locations) {
            Some(&i) => {
                for (a, b) in samples[i].value.iter_mut().zip(value) {
                    *a = a.saturating_add(b);
                }
            }
            None => {
                by_stack.insert(locations.clone(), samples.len());
                samples.push(Sample {
                    location_id: locations,
                    value,
                    label: Vec::new(),
                });
            }
        }
    }
    let period_type = sample_type.last().copied();
    let profile = t.into_profile(Profile {
        sample_type,
        sample: samples,
        time_nanos: i64::try_from(started_unix_nanos).unwrap_or(i64::MAX),
        duration_nanos: i64::try_from(duration_nanos).unwrap_or(i64::MAX),
        period_type,
        period: if cpu { period as i64 } else { 1 },
        ..Profile::default()
    });
    Ok(profile.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_app_type_and_tags() {
        let n = parse_name("checkout.cpu{region=eu,pod=\"web-1\"}").unwrap();
        assert_eq!(n.app, "checkout");
        assert_eq!(n.profile_type.as_deref(), Some("cpu"));
        assert_eq!(n.tags["region"], "eu");
        assert_eq!(n.tags["pod"], "web-1");
        // A dotted app name without a known suffix stays whole.
        let n = parse_name("shop.api").unwrap();
        assert_eq!((n.app.as_str(), n.profile_type), ("shop.api", None));
        assert!(parse_name("app.cpu{region=eu").is_err());
        assert!(parse_name(".cpu").is_err());
    }

    #[test]
    fn times_by_magnitude() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000_000_000);
        assert_eq!(
            parse_time("1700000000000").unwrap(),
            1_700_000_000_000_000_000
        );
        assert!(parse_time("soon").is_err());
    }

    #[test]
    fn folded_stacks_become_pprof_with_the_leaf_first() {
        let raw = collapsed_to_pprof(
            "main;serve;hot 30\nmain;serve;cold 10\nmain;serve;hot 2\n",
            true,
            ProfileKind::Cpu,
            "cpu",
            100,
            1,
            10,
        )
        .unwrap();
        let p = Profile::decode(raw.as_slice()).unwrap();
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![32, 320_000_000]);
        let leaf = p.location[(p.sample[0].location_id[0] - 1) as usize].line[0].function_id;
        let name = p.function[(leaf - 1) as usize].name;
        assert_eq!(p.string_table[name as usize], "hot");
        assert!(
            collapsed_to_pprof("main;hot x", true, ProfileKind::Cpu, "cpu", 100, 0, 0).is_err()
        );
    }

    #[test]
    fn the_profile_part_of_a_multipart_body() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"profile\"; filename=\"profile.pprof\"\r\nContent-Type: application/octet-stream\r\n\r\n\x1f\x8bPROFILE\r\n--XyZ\r\nContent-Disposition: form-data; name=\"prev_profile\"\r\n\r\nOLD\r\n--XyZ--\r\n";
        assert_eq!(multipart_profile(body, "XyZ").unwrap(), b"\x1f\x8bPROFILE");
        assert!(multipart_profile(b"--XyZ--\r\n", "XyZ").is_err());
    }
}
