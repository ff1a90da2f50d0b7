//! The compact binary forms both backends store: a profile's header, its samples
//! (against the writer's stack numbers), a stack's location numbers, a symbolic
//! location's frames. Varints and length-prefixed strings ([`Writer`] / [`Reader`]):
//! compact before the backend's own compression, and no name needs escaping. Every read
//! fails cleanly on short or bad bytes.
//!
//! A profile's samples are stored column by column, for the backend's compression: the
//! distinct stack numbers the profile uses (sorted, delta-coded), its distinct label
//! sets, each value column (as is, divided by its greatest common divisor, or — the CPU
//! profile's nanoseconds — as a multiple of another column, taking no bytes), and each
//! sample's stack and label set as bit-packed indexes into those tables.

use crate::contents::{Mapping, ProfileHeader, ProfileLabel, ProfileSample, ValueType};
use crate::location::StackFrame;
use crate::StoreError;
use holmes_proto::Module;

/// Appends varints and length-prefixed strings.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn varint(&mut self, mut n: u64) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    /// Zig-zag, so small negative values stay small.
    pub(crate) fn signed(&mut self, n: i64) {
        self.varint(((n << 1) ^ (n >> 63)) as u64);
    }

    pub(crate) fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
    }

    fn byte(&mut self, b: u8) {
        self.0.push(b);
    }

    /// `values`, each in `width` bits, least significant first.
    fn packed(&mut self, values: impl Iterator<Item = u64>, width: u32) {
        if width == 0 {
            return;
        }
        let (mut acc, mut bits) = (0u128, 0u32);
        for v in values {
            acc |= u128::from(v) << bits;
            bits += width;
            while bits >= 8 {
                self.0.push(acc as u8);
                acc >>= 8;
                bits -= 8;
            }
        }
        if bits > 0 {
            self.0.push(acc as u8);
        }
    }
}

/// Reads what [`Writer`] wrote.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Reader { rest: bytes, what }
    }

    pub(crate) fn corrupt(&self) -> StoreError {
        StoreError::Corrupt {
            what: self.what,
            value: format!("{} bytes left unreadable", self.rest.len()),
        }
    }

    pub(crate) fn done(&self) -> bool {
        self.rest.is_empty()
    }

    pub(crate) fn varint(&mut self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, tail) = self.rest.split_first().ok_or_else(|| self.corrupt())?;
            self.rest = tail;
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(self.corrupt())
    }

    pub(crate) fn signed(&mut self) -> Result<i64, StoreError> {
        let z = self.varint()?;
        Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// A count of items each taking at least `min_bytes` of what is left: a corrupt
    /// count cannot make the reader allocate more than the bytes could hold.
    fn count(&mut self, min_bytes: usize) -> Result<usize, StoreError> {
        let n = usize::try_from(self.varint()?).map_err(|_| self.corrupt())?;
        if n.saturating_mul(min_bytes) > self.rest.len() {
            return Err(self.corrupt());
        }
        Ok(n)
    }

    pub(crate) fn str(&mut self) -> Result<String, StoreError> {
        let len = usize::try_from(self.varint()?).map_err(|_| self.corrupt())?;
        if len > self.rest.len() {
            return Err(self.corrupt());
        }
        let (s, tail) = self.rest.split_at(len);
        let s = std::str::from_utf8(s)
            .map_err(|_| self.corrupt())?
            .to_owned();
        self.rest = tail;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        let (&b, tail) = self.rest.split_first().ok_or_else(|| self.corrupt())?;
        self.rest = tail;
        Ok(b)
    }

    fn packed(&mut self, n: usize, width: u32) -> Result<Vec<u64>, StoreError> {
        if width == 0 {
            return Ok(vec![0; n]);
        }
        let bytes = (n as u128 * u128::from(width)).div_ceil(8);
        let bytes = usize::try_from(bytes).map_err(|_| self.corrupt())?;
        if bytes > self.rest.len() {
            return Err(self.corrupt());
        }
        let (data, tail) = self.rest.split_at(bytes);
        self.rest = tail;
        let mask = if width == 64 {
            u64::MAX
        } else {
            (1u64 << width) - 1
        };
        let mut out = Vec::with_capacity(n);
        let (mut acc, mut bits) = (0u128, 0u32);
        let mut input = data.iter();
        for _ in 0..n {
            while bits < width {
                acc |= u128::from(*input.next().unwrap_or(&0)) << bits;
                bits += 8;
            }
            out.push((acc as u64) & mask);
            acc >>= width;
            bits -= width;
        }
        Ok(out)
    }
}

/// Bits needed for indexes below `n`.
fn width_for(n: usize) -> u32 {
    match n {
        0 | 1 => 0,
        n => usize::BITS - (n - 1).leading_zeros(),
    }
}

fn write_value_type(w: &mut Writer, v: &ValueType) {
    w.str(&v.name);
    w.str(&v.unit);
}

fn read_value_type(r: &mut Reader<'_>) -> Result<ValueType, StoreError> {
    Ok(ValueType {
        name: r.str()?,
        unit: r.str()?,
    })
}

/// A profile's header as bytes.
pub(crate) fn header_bytes(h: &ProfileHeader) -> Vec<u8> {
    let mut w = Writer::default();
    w.byte(1);
    w.varint(h.sample_types.len() as u64);
    for t in &h.sample_types {
        write_value_type(&mut w, t);
    }
    w.str(&h.default_sample_type);
    write_value_type(&mut w, &h.period_type);
    w.signed(h.period);
    w.signed(h.time_nanos);
    w.signed(h.duration_nanos);
    w.varint(h.comments.len() as u64);
    for c in &h.comments {
        w.str(c);
    }
    w.str(&h.drop_frames);
    w.str(&h.keep_frames);
    w.varint(h.mappings.len() as u64);
    for m in &h.mappings {
        w.str(&m.module.name);
        w.str(&m.module.build_id);
        w.str(&m.path);
        w.varint(m.start);
        w.varint(m.limit);
        w.varint(m.file_offset);
        w.byte(m.flags);
    }
    w.0
}

/// What [`header_bytes`] wrote.
pub(crate) fn header_from(bytes: &[u8]) -> Result<ProfileHeader, StoreError> {
    let mut r = Reader::new("profile header", bytes);
    if r.byte()? != 1 {
        return Err(r.corrupt());
    }
    let n = r.count(2)?;
    let sample_types = (0..n)
        .map(|_| read_value_type(&mut r))
        .collect::<Result<_, _>>()?;
    let default_sample_type = r.str()?;
    let period_type = read_value_type(&mut r)?;
    let period = r.signed()?;
    let time_nanos = r.signed()?;
    let duration_nanos = r.signed()?;
    let n = r.count(1)?;
    let comments = (0..n).map(|_| r.str()).collect::<Result<_, _>>()?;
    let drop_frames = r.str()?;
    let keep_frames = r.str()?;
    let n = r.count(7)?;
    let mut mappings = Vec::with_capacity(n);
    for _ in 0..n {
        mappings.push(Mapping {
            module: Module {
                name: r.str()?,
                build_id: r.str()?,
            },
            path: r.str()?,
            start: r.varint()?,
            limit: r.varint()?,
            file_offset: r.varint()?,
            flags: r.byte()?,
        });
    }
    if !r.done() {
        return Err(r.corrupt());
    }
    Ok(ProfileHeader {
        sample_types,
        default_sample_type,
        period_type,
        period,
        time_nanos,
        duration_nanos,
        comments,
        drop_frames,
        keep_frames,
        mappings,
    })
}

/// How one value column is stored.
enum Column {
    /// Each value, zig-zag.
    Raw,
    /// Each value divided by this common divisor.
    Divided(u64),
    /// Each value is this column's times a factor: nothing per sample.
    Multiple { of: usize, factor: i64 },
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn choose_column(samples: &[ProfileSample], t: usize) -> Column {
    let value = |s: &ProfileSample| s.values.get(t).copied().unwrap_or(0);
    for of in 0..t {
        let base = |s: &ProfileSample| s.values.get(of).copied().unwrap_or(0);
        let factor = samples
            .iter()
            .find(|s| base(s) != 0)
            .and_then(|s| value(s).checked_div(base(s)))
            .unwrap_or(0);
        if samples
            .iter()
            .all(|s| base(s).checked_mul(factor) == Some(value(s)))
        {
            return Column::Multiple { of, factor };
        }
    }
    let g = samples
        .iter()
        .fold(0u64, |g, s| gcd(g, value(s).unsigned_abs()));
    if g >= 2 && i64::try_from(g).is_ok() {
        Column::Divided(g)
    } else {
        Column::Raw
    }
}

/// A profile's samples and label sets as bytes, each sample's stack given as the
/// writer's number for it (`stack_nums[sample.stack]`).
pub(crate) fn samples_bytes(
    samples: &[ProfileSample],
    value_types: usize,
    label_sets: &[Vec<ProfileLabel>],
    stack_nums: &[u64],
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(samples.len() * 4 + 64));
    w.byte(1);
    // The distinct numbers the samples use, sorted; samples refer to their position.
    let mut used: Vec<u64> = samples
        .iter()
        .filter_map(|s| stack_nums.get(s.stack as usize).copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    w.varint(used.len() as u64);
    let mut previous = 0u64;
    for (i, &n) in used.iter().enumerate() {
        w.varint(if i == 0 { n } else { n - previous });
        previous = n;
    }
    w.varint(label_sets.len() as u64);
    for set in label_sets {
        w.varint(set.len() as u64);
        for l in set {
            w.str(&l.key);
            w.str(&l.str);
            w.signed(l.num);
            w.str(&l.unit);
        }
    }
    w.varint(samples.len() as u64);
    w.varint(value_types as u64);
    for t in 0..value_types {
        match choose_column(samples, t) {
            Column::Raw => {
                w.byte(0);
                for s in samples {
                    w.signed(s.values.get(t).copied().unwrap_or(0));
                }
            }
            Column::Divided(g) => {
                w.byte(1);
                w.varint(g);
                for s in samples {
                    let v = s.values.get(t).copied().unwrap_or(0);
                    // Exact: g divides every value; i64::MIN / g cannot overflow for g >= 2.
                    w.signed(v / g as i64);
                }
            }
            Column::Multiple { of, factor } => {
                w.byte(2);
                w.varint(of as u64);
                w.signed(factor);
            }
        }
    }
    let position = |s: &ProfileSample| -> u64 {
        let n = stack_nums.get(s.stack as usize).copied().unwrap_or(0);
        used.binary_search(&n).unwrap_or(0) as u64
    };
    w.packed(samples.iter().map(position), width_for(used.len()));
    w.packed(
        samples.iter().map(|s| u64::from(s.labels)),
        width_for(label_sets.len()),
    );
    w.0
}

/// What [`samples_bytes`] wrote: the stack numbers used (sorted), the label sets, and
/// the samples, whose `stack` indexes the numbers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct StoredSamples {
    pub(crate) stack_nums: Vec<u64>,
    pub(crate) label_sets: Vec<Vec<ProfileLabel>>,
    pub(crate) samples: Vec<ProfileSample>,
}

/// Reads [`samples_bytes`].
pub(crate) fn samples_from(bytes: &[u8]) -> Result<StoredSamples, StoreError> {
    let mut r = Reader::new("profile samples", bytes);
    if r.byte()? != 1 {
        return Err(r.corrupt());
    }
    let n = r.count(1)?;
    let mut stack_nums = Vec::with_capacity(n);
    let mut previous = 0u64;
    for i in 0..n {
        let d = r.varint()?;
        previous = if i == 0 {
            d
        } else {
            previous.checked_add(d).ok_or_else(|| r.corrupt())?
        };
        stack_nums.push(previous);
    }
    let n = r.count(1)?;
    let mut label_sets = Vec::with_capacity(n);
    for _ in 0..n {
        let m = r.count(4)?;
        let mut set = Vec::with_capacity(m);
        for _ in 0..m {
            set.push(ProfileLabel {
                key: r.str()?,
                str: r.str()?,
                num: r.signed()?,
                unit: r.str()?,
            });
        }
        label_sets.push(set);
    }
    let n_samples = usize::try_from(r.varint()?).map_err(|_| r.corrupt())?;
    let types = r.count(1)?;
    // Every sample costs at least a bit per column or index, so a count beyond the
    // bytes' worth is corrupt, not a reason to allocate.
    if n_samples > bytes.len().saturating_mul(8) {
        return Err(r.corrupt());
    }
    let mut columns: Vec<Vec<i64>> = Vec::with_capacity(types);
    for _ in 0..types {
        let column = match r.byte()? {
            0 => (0..n_samples)
                .map(|_| r.signed())
                .collect::<Result<Vec<_>, _>>()?,
            1 => {
                let g = i64::try_from(r.varint()?).map_err(|_| r.corrupt())?;
                (0..n_samples)
                    .map(|_| r.signed().map(|v| v.wrapping_mul(g)))
                    .collect::<Result<Vec<_>, _>>()?
            }
            2 => {
                let of = usize::try_from(r.varint()?).map_err(|_| r.corrupt())?;
                let factor = r.signed()?;
                let base = columns.get(of).ok_or_else(|| r.corrupt())?;
                base.iter().map(|v| v.wrapping_mul(factor)).collect()
            }
            _ => return Err(r.corrupt()),
        };
        columns.push(column);
    }
    let stacks = r.packed(n_samples, width_for(stack_nums.len()))?;
    let labels = r.packed(n_samples, width_for(label_sets.len()))?;
    if !r.done() {
        return Err(r.corrupt());
    }
    let mut samples = Vec::with_capacity(n_samples);
    for i in 0..n_samples {
        let stack = stacks[i];
        let label = labels[i];
        if (!stack_nums.is_empty() && stack as usize >= stack_nums.len())
            || (!label_sets.is_empty() && label as usize >= label_sets.len())
        {
            return Err(r.corrupt());
        }
        samples.push(ProfileSample {
            stack: stack as u32,
            values: columns.iter().map(|c| c[i]).collect(),
            labels: label as u32,
        });
    }
    Ok(StoredSamples {
        stack_nums,
        label_sets,
        samples,
    })
}

/// A stack's location numbers (leaf first) as bytes: the first, then zig-zag differences
/// (locations first seen together got consecutive numbers).
pub(crate) fn stack_bytes(location_nums: &[u64]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(location_nums.len() * 2 + 2));
    let mut previous = 0u64;
    for &n in location_nums {
        w.signed(n.wrapping_sub(previous) as i64);
        previous = n;
    }
    w.0
}

/// Reads [`stack_bytes`].
pub(crate) fn stack_from(bytes: &[u8]) -> Result<Vec<u64>, StoreError> {
    let mut r = Reader::new("stack locations", bytes);
    let mut out = Vec::with_capacity(bytes.len());
    let mut previous = 0u64;
    while !r.done() {
        previous = previous.wrapping_add(r.signed()? as u64);
        out.push(previous);
    }
    Ok(out)
}

/// Frames as bytes.
pub(crate) fn frames_bytes(frames: &[StackFrame]) -> Vec<u8> {
    let mut w = Writer::default();
    for f in frames {
        w.str(&f.function);
        w.str(&f.file);
        w.varint(u64::from(f.line));
        w.str(&f.system_name);
        w.varint(u64::from(f.start_line));
    }
    w.0
}

/// Reads [`frames_bytes`].
pub(crate) fn frames_from(what: &'static str, bytes: &[u8]) -> Result<Vec<StackFrame>, StoreError> {
    let mut r = Reader::new(what, bytes);
    let mut out = Vec::new();
    while !r.done() {
        let function = r.str()?;
        let file = r.str()?;
        let line = u32::try_from(r.varint()?).map_err(|_| r.corrupt())?;
        let system_name = r.str()?;
        let start_line = u32::try_from(r.varint()?).map_err(|_| r.corrupt())?;
        out.push(StackFrame {
            function,
            file,
            line,
            system_name,
            start_line,
        });
    }
    Ok(out)
}

/// A list of strings as bytes (incident instances, event ids).
pub(crate) fn strings_bytes(list: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    for s in list {
        w.str(s);
    }
    w.0
}

/// Reads [`strings_bytes`].
pub(crate) fn strings_from(what: &'static str, bytes: &[u8]) -> Result<Vec<String>, StoreError> {
    let mut r = Reader::new(what, bytes);
    let mut out = Vec::new();
    while !r.done() {
        out.push(r.str()?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label(key: &str, value: &str) -> ProfileLabel {
        ProfileLabel {
            key: key.into(),
            str: value.into(),
            num: 0,
            unit: String::new(),
        }
    }

    #[test]
    fn samples_read_back_with_every_column_form() {
        let samples: Vec<ProfileSample> = (0..300u32)
            .map(|i| ProfileSample {
                stack: i % 7,
                values: vec![
                    i64::from(i % 5 + 1),
                    i64::from(i % 5 + 1) * 10_000_000,
                    i64::from(i) * 6 - 900,
                    if i == 3 { i64::MIN } else { i64::from(i) },
                ],
                labels: i % 3,
            })
            .collect();
        let label_sets = vec![
            vec![],
            vec![label("thread", "worker-1"), label("phase", "pre-trigger")],
            vec![ProfileLabel {
                key: "bytes".into(),
                str: String::new(),
                num: -64,
                unit: "bytes".into(),
            }],
        ];
        let nums = [5u64 << 32 | 9, 1, 7, 1u64 << 32, 3, 4, u64::MAX];
        let bytes = samples_bytes(&samples, 4, &label_sets, &nums);
        let back = samples_from(&bytes).unwrap();
        let mut sorted = nums.to_vec();
        sorted.sort_unstable();
        assert_eq!(back.stack_nums, sorted);
        assert_eq!(back.label_sets, label_sets);
        for (a, b) in samples.iter().zip(&back.samples) {
            assert_eq!(a.values, b.values);
            assert_eq!(a.labels, b.labels);
            assert_eq!(nums[a.stack as usize], back.stack_nums[b.stack as usize]);
        }
        // The nanoseconds column costs nothing and the counts a byte each.
        let cheap = samples_bytes(&samples[..], 2, &label_sets, &nums);
        assert!(cheap.len() < 300 + 300 * 5 / 8 + 100, "{}", cheap.len());
        for cut in 0..bytes.len() {
            assert!(samples_from(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn empty_profiles_and_single_tables_read_back() {
        let back = samples_from(&samples_bytes(&[], 2, &[], &[])).unwrap();
        assert_eq!(back, StoredSamples::default());
        let one = vec![ProfileSample {
            stack: 0,
            values: vec![0, 0],
            labels: 0,
        }];
        let back = samples_from(&samples_bytes(&one, 2, &[vec![]], &[42])).unwrap();
        assert_eq!(back.samples, one);
        assert_eq!(back.stack_nums, vec![42]);
    }

    #[test]
    fn headers_stacks_and_frames_read_back() {
        let h = ProfileHeader {
            sample_types: vec![ValueType::new("samples", "count")],
            default_sample_type: "samples".into(),
            period_type: ValueType::new("cpu", "nanoseconds"),
            period: 10_000_000,
            time_nanos: -5,
            duration_nanos: 1 << 40,
            comments: vec!["a".into(), String::new()],
            drop_frames: "x.*".into(),
            keep_frames: String::new(),
            mappings: vec![Mapping {
                module: Module {
                    name: "libc.so.6".into(),
                    build_id: "ab12".into(),
                },
                path: "/lib/x86_64-linux-gnu/libc.so.6".into(),
                start: 0x7f00_0000_0000,
                limit: u64::MAX,
                file_offset: 0x1000,
                flags: Mapping::HAS_FUNCTIONS | Mapping::HAS_INLINE_FRAMES,
            }],
        };
        assert_eq!(header_from(&header_bytes(&h)).unwrap(), h);
        let nums = vec![1u64 << 32 | 5, 1u64 << 32 | 6, 3, u64::MAX, 0];
        assert_eq!(stack_from(&stack_bytes(&nums)).unwrap(), nums);
        let frames = vec![
            StackFrame::new("a::b", "src/ä.rs", 70_000),
            StackFrame {
                function: "main".into(),
                file: String::new(),
                line: 0,
                system_name: "_main".into(),
                start_line: 3,
            },
        ];
        assert_eq!(frames_from("f", &frames_bytes(&frames)).unwrap(), frames);
        // A cut inside a frame is an error; at a frame's end, the frames before it.
        let bytes = frames_bytes(&frames);
        let first = frames_bytes(&frames[..1]).len();
        for cut in 1..bytes.len() {
            match frames_from("f", &bytes[..cut]) {
                Ok(read) => assert!(cut == first && read == frames[..1], "cut at {cut}"),
                Err(_) => assert_ne!(cut, first),
            }
        }
        let list = vec!["x".to_owned(), String::new()];
        assert_eq!(strings_from("s", &strings_bytes(&list)).unwrap(), list);
    }
}
