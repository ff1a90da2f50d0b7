//! The agent's own `NativeProfile` (holmes.v1, see `holmes_proto::native`) into
//! contents: walked on the wire, field by field, so that nothing is built before it is
//! counted. Its locations, stacks and label sets are already distinct; each stack's
//! locations are checked and the stacks the samples use kept once.

use holmes_proto::Module;
use holmes_storage::{Location, Mapping, ProfileLabel, StackFrame, ValueType};

use super::wire::{Fields, Value};
use super::{Builder, Limits, NormalizeError};

pub(super) fn value_type(b: &Builder, bytes: &[u8]) -> Result<ValueType, NormalizeError> {
    let mut v = ValueType::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, x) => v.name = b.name("sample type", x.str("value type")?)?.to_owned(),
            (2, x) => v.unit = b.name("sample unit", x.str("value unit")?)?.to_owned(),
            _ => {}
        }
    }
    Ok(v)
}

pub(super) fn module(b: &Builder, bytes: &[u8]) -> Result<Module, NormalizeError> {
    let mut m = Module::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, x) => m.name = b.name("module name", x.str("module name")?)?.to_owned(),
            (2, x) => m.build_id = b.name("build id", x.str("build id")?)?.to_ascii_lowercase(),
            _ => {}
        }
    }
    Ok(m)
}

/// A location as the wire has it: a module index and offset, or frames.
pub(super) enum Raw {
    Native { module: u32, offset: u64 },
    Symbolic(Vec<StackFrame>),
}

fn frame(b: &mut Builder, bytes: &[u8]) -> Result<StackFrame, NormalizeError> {
    let mut f = StackFrame::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, x) => f.function = b.name("function name", x.str("function")?)?.to_owned(),
            (2, x) => f.file = b.name("file name", x.str("file")?)?.to_owned(),
            (3, x) => f.line = u32::try_from(x.int("line")?).unwrap_or(u32::MAX),
            _ => {}
        }
    }
    b.charge(f.function.len() + f.file.len() + 40)?;
    Ok(f)
}

pub(super) fn location(b: &mut Builder, bytes: &[u8]) -> Result<Raw, NormalizeError> {
    let mut raw = Raw::Symbolic(Vec::new());
    for field in Fields::new(bytes) {
        match field? {
            (1, x) => {
                let (mut module, mut offset) = (0u64, 0u64);
                for f in Fields::new(x.bytes("native location")?) {
                    match f? {
                        (1, v) => module = v.int("module index")?,
                        (2, v) => offset = v.int("offset")?,
                        _ => {}
                    }
                }
                raw = Raw::Native {
                    module: u32::try_from(module).unwrap_or(u32::MAX),
                    offset,
                };
            }
            (2, x) => {
                let mut frames = Vec::new();
                for f in Fields::new(x.bytes("symbolic location")?) {
                    if let (1, v) = f? {
                        if frames.len() >= b.limits.max_depth {
                            return Err(NormalizeError::TooDeep {
                                what: "location",
                                index: 0,
                                depth: frames.len() + 1,
                                limit: b.limits.max_depth,
                            });
                        }
                        frames.push(frame(b, v.bytes("frame")?)?);
                    }
                }
                raw = Raw::Symbolic(frames);
            }
            _ => {}
        }
    }
    Ok(raw)
}

pub(super) fn label(b: &Builder, bytes: &[u8]) -> Result<ProfileLabel, NormalizeError> {
    let mut l = ProfileLabel::default();
    for field in Fields::new(bytes) {
        match field? {
            (1, x) => l.key = b.name("label key", x.str("label key")?)?.to_owned(),
            (2, x) => l.str = b.name("label value", x.str("label value")?)?.to_owned(),
            (3, x) => l.num = x.int("label number")? as i64,
            (4, x) => l.unit = b.name("label unit", x.str("label unit")?)?.to_owned(),
            _ => {}
        }
    }
    Ok(l)
}

/// Reads header field `number` of a `NativeProfile` (sample types, period, time,
/// duration, comments) into `b`; false for any other field.
pub(super) fn header_field(
    b: &mut Builder,
    number: u32,
    x: Value<'_>,
) -> Result<bool, NormalizeError> {
    match number {
        1 => {
            let t = value_type(b, x.bytes("sample type")?)?;
            b.contents.header.sample_types.push(t);
            b.count("sample types", b.contents.header.sample_types.len())?;
        }
        2 => {
            let t = value_type(b, x.bytes("period type")?)?;
            b.contents.header.period_type = t;
        }
        3 => b.contents.header.period = x.int("period")? as i64,
        4 => b.contents.header.time_nanos = x.int("time")? as i64,
        5 => b.contents.header.duration_nanos = x.int("duration")? as i64,
        6 => {
            let c = b.name("comment", x.str("comment")?)?.to_owned();
            b.charge(c.len())?;
            b.contents.header.comments.push(c);
            b.count("comments", b.contents.header.comments.len())?;
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// A sample's fields: its stack index, its values (checked against `types`), and its
/// label fields as they lie on the wire.
pub(super) fn sample_fields<'a>(
    index: usize,
    bytes: &'a [u8],
    types: usize,
    labels: &mut Vec<&'a [u8]>,
) -> Result<(u64, Vec<i64>), NormalizeError> {
    let (mut stack, mut values) = (0u64, Vec::with_capacity(types));
    for field in Fields::new(bytes) {
        match field? {
            (1, x) => stack = x.int("sample stack")?,
            (2, x) => x.ints("sample values", |v| {
                if values.len() >= types {
                    return Err(NormalizeError::ValueCount {
                        index,
                        values: values.len() + 1,
                        types,
                    });
                }
                values.push(v as i64);
                Ok(())
            })?,
            (3, x) => labels.push(x.bytes("label")?),
            _ => {}
        }
    }
    if values.len() != types {
        return Err(NormalizeError::ValueCount {
            index,
            values: values.len(),
            types,
        });
    }
    Ok((stack, values))
}

/// Appends the location indexes of stack `index` (a `NativeStack`'s bytes) to
/// `entries`, each checked to be below `locations`, the stack's frames (`depth_of` each
/// location, at most `deepest`) within [`Limits::max_depth`]. The frames are counted
/// only when the stack could be too deep at `deepest` frames a location: counting them
/// reads every location, a cache miss each.
pub(super) fn stack_entries(
    bytes: &[u8],
    index: usize,
    locations: usize,
    limits: &Limits,
    entries: &mut Vec<u32>,
    (deepest, depth_of): (usize, impl Fn(u32) -> usize),
) -> Result<(), NormalizeError> {
    let first = entries.len();
    for field in Fields::new(bytes) {
        if let (1, x) = field? {
            x.ints("stack locations", |l| {
                let l = u32::try_from(l).unwrap_or(u32::MAX);
                if l as usize >= locations {
                    return Err(NormalizeError::Dangling {
                        what: "stack",
                        target: "location",
                        id: i128::from(l),
                    });
                }
                entries.push(l);
                Ok(())
            })?;
        }
    }
    let stack = &entries[first..];
    if stack.len().saturating_mul(deepest) <= limits.max_depth {
        return Ok(());
    }
    let depth: usize = stack.iter().map(|&l| depth_of(l)).sum();
    if depth > limits.max_depth {
        return Err(NormalizeError::TooDeep {
            what: "stack",
            index,
            depth,
            limit: limits.max_depth,
        });
    }
    Ok(())
}

/// A `NativeProfile`'s bytes into contents.
pub(super) fn normalize(
    data: &[u8],
    limits: Limits,
) -> Result<holmes_storage::ProfileContents, NormalizeError> {
    let mut b = Builder::new(limits);
    let mut modules: Vec<Module> = Vec::new();
    let mut locations: Vec<Raw> = Vec::new();
    // Stacks and samples as their bytes, read once the tables are complete.
    let mut stacks: Vec<&[u8]> = Vec::new();
    let mut samples: Vec<&[u8]> = Vec::new();
    for field in Fields::new(data) {
        let (number, x) = field?;
        if header_field(&mut b, number, x)? {
            continue;
        }
        match number {
            7 => {
                let m = module(&b, x.bytes("module")?)?;
                modules.push(m);
                b.count("modules", modules.len())?;
            }
            8 => {
                let l = location(&mut b, x.bytes("location")?)?;
                locations.push(l);
                b.count("locations", locations.len())?;
            }
            9 => {
                stacks.push(x.bytes("stack")?);
                b.count("stacks", stacks.len())?;
            }
            10 => {
                samples.push(x.bytes("sample")?);
                b.count("samples", samples.len())?;
            }
            _ => {}
        }
    }
    // Locations: a native one names its module, a symbolic one has a frame.
    let mut limits_of: Vec<u64> = vec![0; modules.len()];
    for (i, raw) in locations.into_iter().enumerate() {
        let location = match raw {
            Raw::Native { module, offset } => {
                let m = modules
                    .get(module as usize)
                    .ok_or_else(|| NormalizeError::Dangling {
                        what: "location",
                        target: "module",
                        id: i128::from(module),
                    })?;
                b.charge(m.name.len() + m.build_id.len() + 64)?;
                let limit = &mut limits_of[module as usize];
                *limit = (*limit).max(offset.saturating_add(1));
                Location::Native {
                    module: m.clone(),
                    offset,
                }
            }
            Raw::Symbolic(frames) if frames.is_empty() => {
                return Err(NormalizeError::Malformed(format!(
                    "location {i} is neither native nor has a frame"
                )))
            }
            Raw::Symbolic(frames) => Location::Symbolic(frames),
        };
        b.contents.locations.push(location);
    }
    // The modules as the profile's mappings, each from 0 to past its last offset: a
    // download places native locations at their offset in them, in the agent's order.
    b.contents.header.mappings = modules
        .iter()
        .zip(limits_of)
        .map(|(m, limit)| Mapping {
            module: m.clone(),
            path: m.name.clone(),
            start: 0,
            limit,
            file_offset: 0,
            flags: 0,
        })
        .collect();
    let depth_of = |l: u32, c: &holmes_storage::ProfileContents| -> usize {
        match c.locations.get(l as usize) {
            Some(Location::Symbolic(frames)) => frames.len(),
            _ => 1,
        }
    };
    // Stacks: every location index checked, depth counted with inlined frames.
    let mut stack_index: Vec<u32> = Vec::with_capacity(stacks.len());
    let mut entries: Vec<u32> = Vec::new();
    let deepest = (0..b.contents.locations.len() as u32)
        .map(|l| depth_of(l, &b.contents))
        .max()
        .unwrap_or(1);
    for (i, bytes) in stacks.into_iter().enumerate() {
        entries.clear();
        let locations = b.contents.locations.len();
        stack_entries(
            bytes,
            i,
            locations,
            &limits,
            &mut entries,
            (deepest, |l| depth_of(l, &b.contents)),
        )?;
        stack_index.push(b.stack(&entries)?);
    }
    // Samples: their stack, one value per sample type, their labels.
    let types = b.contents.header.sample_types.len();
    let mut raw_labels = Vec::new();
    for (index, bytes) in samples.into_iter().enumerate() {
        raw_labels.clear();
        let (stack, values) = sample_fields(index, bytes, types, &mut raw_labels)?;
        b.count("labels of one sample", raw_labels.len())?;
        let labels = raw_labels
            .iter()
            .map(|l| label(&b, l))
            .collect::<Result<Vec<_>, _>>()?;
        let stack = *stack_index
            .get(usize::try_from(stack).unwrap_or(usize::MAX))
            .ok_or_else(|| NormalizeError::Dangling {
                what: "sample",
                target: "stack",
                id: i128::from(stack),
            })?;
        let labels = b.label_set(labels)?;
        b.sample(stack, values, labels)?;
    }
    Ok(b.contents)
}
