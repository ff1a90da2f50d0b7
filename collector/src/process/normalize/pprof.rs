//! pprof (`profile.proto`, gzipped or not) into contents. The message is walked on the
//! wire once, its tables kept as slices of the (inflated) input; then locations become
//! native or symbolic (see the parent module), stacks are made of them once each, and
//! label sets once each. Every string copied into the contents is counted against the
//! materialization budget, every index checked.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Read;

use holmes_proto::Module;
use holmes_storage::{Location, Mapping, ProfileLabel, StackFrame, ValueType};

use super::wire::Fields;
use super::{too_many, Builder, Limits, NormalizeError};

/// The raw `profile.proto` bytes of `data`, inflated first if gzipped, within `limit`.
fn inflate(data: &[u8], limit: u64) -> Result<Cow<'_, [u8]>, NormalizeError> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        if data.len() as u64 > limit {
            return Err(NormalizeError::TooLarge { limit });
        }
        return Ok(Cow::Borrowed(data));
    }
    // Most profiles inflate 4–8 times; start there rather than growing from nothing.
    let mut out = Vec::with_capacity(data.len().saturating_mul(6).min(limit as usize));
    flate2::read::MultiGzDecoder::new(data)
        .take(limit.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| NormalizeError::Decompress(e.to_string()))?;
    if out.len() as u64 > limit {
        return Err(NormalizeError::TooLarge { limit });
    }
    Ok(Cow::Owned(out))
}

#[derive(Default, Clone, Copy)]
struct RawFunction {
    name: i64,
    system_name: i64,
    filename: i64,
    start_line: i64,
}

#[derive(Default, Clone, Copy)]
struct RawMapping {
    id: u64,
    start: u64,
    limit: u64,
    offset: u64,
    filename: i64,
    build_id: i64,
    flags: u8,
}

#[derive(Default, Clone, Copy)]
struct RawLocation {
    id: u64,
    mapping: u64,
    address: u64,
    /// Range in the flat `lines`.
    lines: (u32, u32),
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RawLabel {
    key: i64,
    str: i64,
    num: i64,
    unit: i64,
}

struct RawSample {
    /// Ranges in the flat `location_ids`, `values`, `labels`.
    locations: (u32, u32),
    values: (u32, u32),
    labels: (u32, u32),
}

/// The message's tables, as slices of the input and flat arrays.
#[derive(Default)]
struct Raw<'a> {
    strings: Vec<&'a [u8]>,
    sample_types: Vec<(i64, i64)>,
    period_type: (i64, i64),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    comments: Vec<i64>,
    drop_frames: i64,
    keep_frames: i64,
    default_sample_type: i64,
    functions: Vec<(u64, RawFunction)>,
    mappings: Vec<RawMapping>,
    locations: Vec<RawLocation>,
    lines: Vec<(u64, i64)>,
    samples: Vec<RawSample>,
    location_ids: Vec<u64>,
    values: Vec<i64>,
    labels: Vec<RawLabel>,
}

fn flat_len<T>(v: &[T]) -> u32 {
    u32::try_from(v.len()).unwrap_or(u32::MAX)
}

fn parse<'a>(bytes: &'a [u8], limits: &Limits) -> Result<Raw<'a>, NormalizeError> {
    let mut r = Raw::default();
    // Most of a profile is its samples' location ids, one or two bytes each: room for
    // as many as a sixth of its bytes (untouched memory where there are fewer).
    r.location_ids
        .reserve((bytes.len() / 6).min(limits.max_items));
    let max = limits.max_items;
    let check = |what: &'static str, n: usize| {
        if n > max {
            Err(too_many(what, n, max))
        } else {
            Ok(())
        }
    };
    for field in Fields::new(bytes) {
        let (number, x) = field?;
        match number {
            1 => {
                let mut t = (0, 0);
                for f in Fields::new(x.bytes("sample type")?) {
                    match f? {
                        (1, v) => t.0 = v.int("type")? as i64,
                        (2, v) => t.1 = v.int("unit")? as i64,
                        _ => {}
                    }
                }
                r.sample_types.push(t);
                check("sample types", r.sample_types.len())?;
            }
            2 => {
                let s = x.bytes("sample")?;
                let (l0, v0, b0) = (
                    flat_len(&r.location_ids),
                    flat_len(&r.values),
                    flat_len(&r.labels),
                );
                for f in Fields::new(s) {
                    match f? {
                        (1, v) => v.ints("location ids", |id| {
                            r.location_ids.push(id);
                            Ok(())
                        })?,
                        (2, v) => v.ints("values", |n| {
                            r.values.push(n as i64);
                            Ok(())
                        })?,
                        (3, v) => {
                            let mut l = RawLabel {
                                key: 0,
                                str: 0,
                                num: 0,
                                unit: 0,
                            };
                            for g in Fields::new(v.bytes("label")?) {
                                match g? {
                                    (1, w) => l.key = w.int("label key")? as i64,
                                    (2, w) => l.str = w.int("label str")? as i64,
                                    (3, w) => l.num = w.int("label num")? as i64,
                                    (4, w) => l.unit = w.int("label unit")? as i64,
                                    _ => {}
                                }
                            }
                            r.labels.push(l);
                        }
                        _ => {}
                    }
                }
                check("sample location entries", r.location_ids.len())?;
                r.samples.push(RawSample {
                    locations: (l0, flat_len(&r.location_ids)),
                    values: (v0, flat_len(&r.values)),
                    labels: (b0, flat_len(&r.labels)),
                });
                check("samples", r.samples.len())?;
            }
            3 => {
                let mut m = RawMapping::default();
                for f in Fields::new(x.bytes("mapping")?) {
                    match f? {
                        (1, v) => m.id = v.int("mapping id")?,
                        (2, v) => m.start = v.int("memory start")?,
                        (3, v) => m.limit = v.int("memory limit")?,
                        (4, v) => m.offset = v.int("file offset")?,
                        (5, v) => m.filename = v.int("mapping file")? as i64,
                        (6, v) => m.build_id = v.int("build id")? as i64,
                        (n @ 7..=10, v) if v.int("mapping flag")? != 0 => {
                            m.flags |= 1 << (n - 7);
                        }
                        _ => {}
                    }
                }
                r.mappings.push(m);
                check("mappings", r.mappings.len())?;
            }
            4 => {
                let mut l = RawLocation::default();
                let l0 = flat_len(&r.lines);
                for f in Fields::new(x.bytes("location")?) {
                    match f? {
                        (1, v) => l.id = v.int("location id")?,
                        (2, v) => l.mapping = v.int("location mapping")?,
                        (3, v) => l.address = v.int("address")?,
                        (4, v) => {
                            let mut line = (0u64, 0i64);
                            for g in Fields::new(v.bytes("line")?) {
                                match g? {
                                    (1, w) => line.0 = w.int("line function")?,
                                    (2, w) => line.1 = w.int("line number")? as i64,
                                    _ => {}
                                }
                            }
                            r.lines.push(line);
                        }
                        _ => {}
                    }
                }
                l.lines = (l0, flat_len(&r.lines));
                r.locations.push(l);
                check("locations", r.locations.len())?;
                check("location lines", r.lines.len())?;
            }
            5 => {
                let (mut id, mut f) = (0u64, RawFunction::default());
                for g in Fields::new(x.bytes("function")?) {
                    match g? {
                        (1, v) => id = v.int("function id")?,
                        (2, v) => f.name = v.int("function name")? as i64,
                        (3, v) => f.system_name = v.int("system name")? as i64,
                        (4, v) => f.filename = v.int("function file")? as i64,
                        (5, v) => f.start_line = v.int("start line")? as i64,
                        _ => {}
                    }
                }
                r.functions.push((id, f));
                check("functions", r.functions.len())?;
            }
            6 => {
                r.strings.push(x.bytes("string")?);
                check("strings", r.strings.len())?;
            }
            7 => r.drop_frames = x.int("drop frames")? as i64,
            8 => r.keep_frames = x.int("keep frames")? as i64,
            9 => r.time_nanos = x.int("time")? as i64,
            10 => r.duration_nanos = x.int("duration")? as i64,
            11 => {
                for f in Fields::new(x.bytes("period type")?) {
                    match f? {
                        (1, v) => r.period_type.0 = v.int("type")? as i64,
                        (2, v) => r.period_type.1 = v.int("unit")? as i64,
                        _ => {}
                    }
                }
            }
            12 => r.period = x.int("period")? as i64,
            13 => x.ints("comments", |c| {
                r.comments.push(c as i64);
                Ok(())
            })?,
            14 => r.default_sample_type = x.int("default sample type")? as i64,
            _ => {}
        }
    }
    check("comments", r.comments.len())?;
    check("labels", r.labels.len())?;
    Ok(r)
}

/// Strings by index, each checked once for UTF-8 and length.
struct Strings<'a> {
    raw: Vec<&'a [u8]>,
    max_len: usize,
}

impl<'a> Strings<'a> {
    fn get(&self, what: &'static str, index: i64) -> Result<&'a str, NormalizeError> {
        let bytes = usize::try_from(index)
            .ok()
            .and_then(|i| self.raw.get(i))
            .ok_or_else(|| NormalizeError::Dangling {
                what,
                target: "string",
                id: i128::from(index),
            })?;
        if bytes.len() > self.max_len {
            return Err(NormalizeError::NameTooLong {
                what,
                len: bytes.len(),
                limit: self.max_len,
            });
        }
        std::str::from_utf8(bytes).map_err(|_| {
            NormalizeError::Malformed(format!("the {what} at string {index} is not UTF-8"))
        })
    }
}

/// Item ids (1-based in practice) to indexes: a vector when they are small, else a map.
enum Ids {
    /// Index plus one by id (0: no such id).
    Dense(Vec<u32>),
    Sparse(HashMap<u64, u32, foldhash::fast::RandomState>),
}

impl Ids {
    fn of(
        what: &'static str,
        ids: impl Iterator<Item = u64> + Clone,
    ) -> Result<Ids, NormalizeError> {
        let (count, max) = ids
            .clone()
            .fold((0usize, 0u64), |(n, m), id| (n + 1, m.max(id)));
        // Encoders number items 1, 2, 3…: a vector as long as the largest id is then
        // no larger than the items themselves.
        if max <= (count as u64).saturating_mul(2).saturating_add(16) {
            let mut dense = vec![0u32; max as usize + 1];
            for (i, id) in ids.enumerate() {
                let slot = &mut dense[id as usize];
                if *slot != 0 {
                    return Err(NormalizeError::DuplicateId { what, id });
                }
                *slot = i as u32 + 1;
            }
            return Ok(Ids::Dense(dense));
        }
        let mut map = HashMap::with_capacity_and_hasher(count, Default::default());
        for (i, id) in ids.enumerate() {
            if map.insert(id, i as u32).is_some() {
                return Err(NormalizeError::DuplicateId { what, id });
            }
        }
        Ok(Ids::Sparse(map))
    }

    fn get(&self, id: u64) -> Option<u32> {
        match self {
            Ids::Dense(v) => v.get(usize::try_from(id).ok()?)?.checked_sub(1),
            Ids::Sparse(m) => m.get(&id).copied(),
        }
    }

    /// The index of item `id`, which `what` refers to as its `target`.
    fn index(
        &self,
        id: u64,
        what: &'static str,
        target: &'static str,
    ) -> Result<u32, NormalizeError> {
        self.get(id).ok_or_else(|| NormalizeError::Dangling {
            what,
            target,
            id: i128::from(id),
        })
    }
}

/// The module a mapping's file and build id name.
fn module_of(strings: &Strings<'_>, m: &RawMapping) -> Result<(Module, String), NormalizeError> {
    let path = strings.get("mapping file name", m.filename)?;
    let build_id = strings.get("mapping build id", m.build_id)?;
    let name = path.rsplit('/').next().unwrap_or(path);
    Ok((
        Module {
            name: name.to_owned(),
            build_id: build_id.to_ascii_lowercase(),
        },
        path.to_owned(),
    ))
}

/// pprof bytes into contents.
pub(super) fn normalize(
    data: &[u8],
    limits: Limits,
) -> Result<holmes_storage::ProfileContents, NormalizeError> {
    let bytes = inflate(data, limits.max_decoded_bytes)?;
    let raw = parse(&bytes, &limits)?;
    let strings = Strings {
        raw: raw.strings,
        max_len: limits.max_name_bytes,
    };
    let mut b = Builder::new(limits);
    let value_type =
        |what: &'static str, (t, u): (i64, i64)| -> Result<ValueType, NormalizeError> {
            Ok(ValueType::new(strings.get(what, t)?, strings.get(what, u)?))
        };
    {
        let h = &mut b.contents.header;
        h.sample_types = raw
            .sample_types
            .iter()
            .map(|&t| value_type("sample type", t))
            .collect::<Result<_, _>>()?;
        h.period_type = value_type("period type", raw.period_type)?;
        h.period = raw.period;
        h.time_nanos = raw.time_nanos;
        h.duration_nanos = raw.duration_nanos;
        h.default_sample_type = strings
            .get("default sample type", raw.default_sample_type)?
            .to_owned();
        h.drop_frames = strings.get("drop frames", raw.drop_frames)?.to_owned();
        h.keep_frames = strings.get("keep frames", raw.keep_frames)?.to_owned();
    }
    let mut comments = Vec::with_capacity(raw.comments.len());
    for &c in &raw.comments {
        let text = strings.get("comment", c)?;
        b.charge(text.len())?;
        comments.push(text.to_owned());
    }
    b.contents.header.comments = comments;

    let mapping_ids = Ids::of("mappings", raw.mappings.iter().map(|m| m.id))?;
    let mut modules = Vec::with_capacity(raw.mappings.len());
    for m in &raw.mappings {
        let (module, path) = module_of(&strings, m)?;
        b.charge(path.len() + module.build_id.len() + 64)?;
        b.contents.header.mappings.push(Mapping {
            module: module.clone(),
            path,
            start: m.start,
            limit: m.limit,
            file_offset: m.offset,
            flags: m.flags,
        });
        modules.push(module);
    }
    let function_ids = Ids::of("functions", raw.functions.iter().map(|(id, _)| *id))?;
    // Each function's frame fields, checked once, copied per location that uses it.
    let mut functions: Vec<Option<(&str, &str, &str, u32)>> = vec![None; raw.functions.len()];
    let mut function = |i: u32| -> Result<(&str, &str, &str, u32), NormalizeError> {
        if let Some(f) = functions[i as usize] {
            return Ok(f);
        }
        let f = raw.functions[i as usize].1;
        let name = strings.get("function name", f.name)?;
        let system = strings.get("function system name", f.system_name)?;
        let file = strings.get("function file name", f.filename)?;
        let start = u32::try_from(f.start_line).unwrap_or(0);
        functions[i as usize] = Some((name, system, file, start));
        Ok((name, system, file, start))
    };
    // Locations, and how many frames each stands for.
    let location_ids = Ids::of("locations", raw.locations.iter().map(|l| l.id))?;
    let mut depths: Vec<usize> = Vec::with_capacity(raw.locations.len());
    for l in &raw.locations {
        let lines = &raw.lines[l.lines.0 as usize..l.lines.1 as usize];
        if lines.len() > limits.max_depth {
            return Err(NormalizeError::TooDeep {
                what: "location",
                index: 0,
                depth: lines.len(),
                limit: limits.max_depth,
            });
        }
        let mapping = if l.mapping == 0 {
            None
        } else {
            Some(mapping_ids.index(l.mapping, "location", "mapping")?)
        };
        let location = if lines.is_empty() {
            match mapping {
                Some(m) => {
                    let raw_mapping = &raw.mappings[m as usize];
                    let module = modules[m as usize].clone();
                    b.charge(module.name.len() + module.build_id.len() + 64)?;
                    Location::Native {
                        module,
                        offset: l
                            .address
                            .wrapping_sub(raw_mapping.start)
                            .wrapping_add(raw_mapping.offset),
                    }
                }
                None => {
                    b.charge(64)?;
                    Location::Native {
                        module: Module::default(),
                        offset: l.address,
                    }
                }
            }
        } else {
            let mut frames = Vec::with_capacity(lines.len());
            for &(function_id, line) in lines {
                let i = function_ids.index(function_id, "location line", "function")?;
                let (name, system, file, start) = function(i)?;
                b.charge(name.len() + system.len() + file.len() + 48)?;
                frames.push(StackFrame {
                    function: name.to_owned(),
                    file: file.to_owned(),
                    line: u32::try_from(line).unwrap_or(0),
                    system_name: system.to_owned(),
                    start_line: start,
                });
            }
            Location::Symbolic(frames)
        };
        depths.push(lines.len().max(1));
        b.contents.locations.push(location);
    }
    // Samples: their stack (made of the locations above, once), values and labels.
    let types = b.contents.header.sample_types.len();
    let mut stack = Vec::with_capacity(64);
    b.reserve(raw.samples.len(), raw.samples.len());
    let mut label_sets: HashMap<&[RawLabel], u32, foldhash::fast::RandomState> = HashMap::default();
    for (index, s) in raw.samples.iter().enumerate() {
        let values = &raw.values[s.values.0 as usize..s.values.1 as usize];
        if values.len() != types {
            return Err(NormalizeError::ValueCount {
                index,
                values: values.len(),
                types,
            });
        }
        stack.clear();
        let mut depth = 0usize;
        for &id in &raw.location_ids[s.locations.0 as usize..s.locations.1 as usize] {
            let l = location_ids.index(id, "sample", "location")?;
            depth += depths[l as usize];
            stack.push(l);
        }
        if depth > limits.max_depth {
            return Err(NormalizeError::TooDeep {
                what: "sample",
                index,
                depth,
                limit: limits.max_depth,
            });
        }
        let stack = b.stack(&stack)?;
        let raw_labels = &raw.labels[s.labels.0 as usize..s.labels.1 as usize];
        let labels = match label_sets.get(raw_labels) {
            Some(&set) => set,
            None => {
                let mut set = Vec::with_capacity(raw_labels.len());
                for l in raw_labels {
                    // A string label has a value; a numeric one (str = 0) a number and unit.
                    let key = strings.get("label key", l.key)?.to_owned();
                    set.push(if l.str != 0 {
                        ProfileLabel {
                            key,
                            str: strings.get("label value", l.str)?.to_owned(),
                            num: 0,
                            unit: String::new(),
                        }
                    } else {
                        ProfileLabel {
                            key,
                            str: String::new(),
                            num: l.num,
                            unit: strings.get("label unit", l.unit)?.to_owned(),
                        }
                    });
                }
                let i = b.label_set(set)?;
                label_sets.insert(raw_labels, i);
                i
            }
        };
        b.sample(stack, values.to_vec(), labels)?;
    }
    Ok(b.contents)
}
