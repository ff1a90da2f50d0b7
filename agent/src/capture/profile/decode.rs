//! Reads a profile back into plain terms, for the tests: gzipped or not, size-capped,
//! every reference checked.

use std::collections::HashMap;
use std::io::Read;

use holmes_proto::pprof::{Function, Location, Profile, ValueType};
use prost::Message;

use holmes_symbolize::Frame;

/// Most bytes a profile may decompress to.
const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;

/// Why a profile could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PprofError {
    #[error("cannot decompress the profile: {0}")]
    Decompress(#[source] std::io::Error),
    #[error("the profile decompresses to more than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("malformed profile: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("malformed profile: it refers to a missing {kind} {id}")]
    Dangling { kind: &'static str, id: u64 },
}

/// A profile read back, in plain terms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DecodedProfile {
    /// (type, unit) per sample value.
    pub(crate) sample_types: Vec<(String, String)>,
    pub(crate) period_type: (String, String),
    pub(crate) period: i64,
    pub(crate) time_nanos: i64,
    pub(crate) duration_nanos: i64,
    pub(crate) comments: Vec<String>,
    pub(crate) samples: Vec<DecodedSample>,
}

/// One sample read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct DecodedSample {
    /// Function names, innermost first (inlined frames expanded).
    pub(crate) stack: Vec<String>,
    /// The same frames with files and lines.
    pub(crate) frames: Vec<Frame>,
    pub(crate) values: Vec<i64>,
    /// String labels, in order.
    pub(crate) labels: Vec<(String, String)>,
    /// Numeric labels: key, value, unit.
    pub(crate) num_labels: Vec<(String, i64, String)>,
}

impl DecodedProfile {
    /// The index of a sample type among the values, by its type name.
    pub(crate) fn value_index(&self, sample_type: &str) -> Option<usize> {
        self.sample_types.iter().position(|(t, _)| t == sample_type)
    }

    /// The sum of one sample type over all samples (0 if there is no such type).
    pub(crate) fn total(&self, sample_type: &str) -> i64 {
        let Some(i) = self.value_index(sample_type) else {
            return 0;
        };
        self.samples
            .iter()
            .filter_map(|s| s.values.get(i))
            .fold(0i64, |acc, v| acc.saturating_add(*v))
    }
}

impl DecodedSample {
    /// The first string label with this key.
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a profile, gzipped or not, into a [`DecodedProfile`].
pub(crate) fn decode(gz_or_raw: &[u8]) -> Result<DecodedProfile, PprofError> {
    decode_with_limit(gz_or_raw, MAX_DECODED_BYTES)
}

pub(crate) fn decode_with_limit(
    gz_or_raw: &[u8],
    limit: usize,
) -> Result<DecodedProfile, PprofError> {
    let inflated;
    let raw = if gz_or_raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
        flate2::read::MultiGzDecoder::new(gz_or_raw)
            .take(cap)
            .read_to_end(&mut out)
            .map_err(PprofError::Decompress)?;
        if out.len() > limit {
            return Err(PprofError::TooLarge { limit });
        }
        inflated = out;
        inflated.as_slice()
    } else if gz_or_raw.len() > limit {
        return Err(PprofError::TooLarge { limit });
    } else {
        gz_or_raw
    };
    let p = Profile::decode(raw)?;
    summarize(&p)
}

fn summarize(p: &Profile) -> Result<DecodedProfile, PprofError> {
    let string = |id: i64| -> Result<String, PprofError> {
        usize::try_from(id)
            .ok()
            .and_then(|i| p.string_table.get(i))
            .cloned()
            .ok_or(PprofError::Dangling {
                kind: "string",
                id: id as u64,
            })
    };
    let value_type = |vt: &ValueType| -> Result<(String, String), PprofError> {
        Ok((string(vt.r#type)?, string(vt.unit)?))
    };
    let functions: HashMap<u64, &Function> = p.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &Location> = p.location.iter().map(|l| (l.id, l)).collect();

    let mut samples = Vec::with_capacity(p.sample.len());
    for s in &p.sample {
        let mut frames = Vec::new();
        for id in &s.location_id {
            let loc = locations.get(id).ok_or(PprofError::Dangling {
                kind: "location",
                id: *id,
            })?;
            if loc.line.is_empty() {
                frames.push(Frame {
                    function: format!("{:#x}", loc.address),
                    file: String::new(),
                    line: 0,
                });
            }
            for line in &loc.line {
                let f = functions
                    .get(&line.function_id)
                    .ok_or(PprofError::Dangling {
                        kind: "function",
                        id: line.function_id,
                    })?;
                frames.push(Frame {
                    function: string(f.name)?,
                    file: string(f.filename)?,
                    line: u32::try_from(line.line).unwrap_or(0),
                });
            }
        }
        let mut labels = Vec::new();
        let mut num_labels = Vec::new();
        for l in &s.label {
            let key = string(l.key)?;
            if l.str != 0 {
                labels.push((key, string(l.str)?));
            } else {
                num_labels.push((key, l.num, string(l.num_unit)?));
            }
        }
        samples.push(DecodedSample {
            stack: frames.iter().map(|f| f.function.clone()).collect(),
            frames,
            values: s.value.clone(),
            labels,
            num_labels,
        });
    }
    Ok(DecodedProfile {
        sample_types: p
            .sample_type
            .iter()
            .map(value_type)
            .collect::<Result<_, _>>()?,
        period_type: match &p.period_type {
            Some(vt) => value_type(vt)?,
            None => (String::new(), String::new()),
        },
        period: p.period,
        time_nanos: p.time_nanos,
        duration_nanos: p.duration_nanos,
        comments: p
            .comment
            .iter()
            .map(|&c| string(c))
            .collect::<Result<_, _>>()?,
        samples,
    })
}
