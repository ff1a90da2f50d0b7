//! Standard pprof profiles (`profile.proto`, gzipped) that `go tool pprof` opens with
//! function names, files and lines, without needing the binary.
//!
//! Stacks come in two forms: raw addresses from a stack walk (symbolized here, at encode
//! time, from the objects' own debug info by [`crate::debuginfo`], inlined frames
//! expanded) or frames that are already symbolic (task dumps). Every location is
//! symbolized before it is written and the single mapping says so (`has_functions`,
//! `has_filenames`, `has_line_numbers`), so pprof never tries to re-symbolize against a
//! binary it does not have.
//!
//! Work is bounded: stacks keep at most [`MAX_STACK_DEPTH`] frames, a profile at most
//! [`MAX_SAMPLES`] distinct samples; what is cut is counted in the profile's comments.
//! Nothing here panics; symbolization allocates and takes a lock, so it must not run in a
//! signal handler.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::io::{Read, Write};

use prost::Message;

/// Most frames kept per stack; deeper stacks lose their outermost frames.
pub(crate) const MAX_STACK_DEPTH: usize = 256;
/// Most distinct samples (stack and labels) per profile; further ones are dropped.
pub(crate) const MAX_SAMPLES: usize = 100_000;
/// Most bytes a profile may decompress to.
pub(crate) const MAX_DECODED_BYTES: usize = 64 * 1024 * 1024;
/// Most inlined frames kept for one address.
const MAX_INLINE_DEPTH: usize = 32;
/// Most addresses a symbolizer remembers before it starts over.
const MAX_CACHED_ADDRESSES: usize = 1 << 16;
/// Most labels kept per sample.
const MAX_LABELS: usize = 64;
/// Most comments kept per profile (not counting the builder's own).
const MAX_COMMENTS: usize = 64;

use holmes_proto::pprof::{Function, Label, Line, Location, Mapping, Profile, Sample, ValueType};

// ---------------------------------------------------------------------------------------
// Symbolization
// ---------------------------------------------------------------------------------------

/// One symbolic frame: a function, its source file and line (empty and 0 when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Frame {
    pub(crate) function: String,
    pub(crate) file: String,
    pub(crate) line: u32,
}

impl Frame {
    /// A frame for an address nothing is known about: `0x…`, no file, line 0.
    fn unknown(address: usize) -> Frame {
        Frame {
            function: format!("{address:#x}"),
            file: String::new(),
            line: 0,
        }
    }
}

/// The address whose code a stack entry stands for: the interrupted pc itself for the
/// leaf, the call instruction (return address − 1) for the others.
fn lookup_address(addr: usize, leaf: bool) -> usize {
    if leaf {
        addr
    } else {
        addr.saturating_sub(1)
    }
}

/// Turns addresses into frames, remembering what it resolved.
#[derive(Debug, Default)]
pub(crate) struct Symbolizer {
    cache: HashMap<usize, Vec<Frame>>,
}

impl Symbolizer {
    pub(crate) fn new() -> Self {
        Symbolizer::default()
    }

    /// The frames at `addr`, innermost (inlined) first, never empty. `leaf` says `addr`
    /// is an interrupted pc; otherwise it is a return address and the call before it is
    /// looked up. Unknown addresses give one frame named `0x<looked-up address>`.
    pub(crate) fn frames(&mut self, addr: usize, leaf: bool) -> &[Frame] {
        let lookup = lookup_address(addr, leaf);
        if self.cache.len() >= MAX_CACHED_ADDRESSES && !self.cache.contains_key(&lookup) {
            self.cache.clear();
        }
        self.cache.entry(lookup).or_insert_with(|| resolve(lookup))
    }
}

/// Resolves the code at `lookup`, inlined frames innermost first; never empty.
fn resolve(lookup: usize) -> Vec<Frame> {
    let mut frames = Vec::new();
    if lookup != 0 {
        // A DWARF reader fed a malformed file may panic; the host must not see it.
        let resolved = std::panic::catch_unwind(|| crate::debuginfo::resolve(lookup));
        if let Ok(raw) = resolved {
            frames.extend(
                raw.into_iter()
                    .take(MAX_INLINE_DEPTH)
                    .filter_map(|f| frame_of(f, lookup)),
            );
        }
    }
    if frames.is_empty() {
        frames.push(Frame::unknown(lookup));
    }
    frames
}

/// A frame from a resolved one; None when it says nothing.
fn frame_of(raw: crate::debuginfo::RawFrame, lookup: usize) -> Option<Frame> {
    // Demangled names come without their hash; the strip catches the rest.
    let name = raw
        .function
        .map(|n| strip_hash(&n).to_owned())
        .filter(|n| !n.is_empty());
    let file = raw.file.unwrap_or_default();
    if name.is_none() && file.is_empty() {
        return None;
    }
    Some(Frame {
        function: name.unwrap_or_else(|| format!("{lookup:#x}")),
        file,
        line: raw.line,
    })
}

/// `foo::bar::h0123456789abcdef` → `foo::bar`.
fn strip_hash(name: &str) -> &str {
    if let Some(pos) = name.rfind("::h") {
        let hash = name.get(pos + 3..).unwrap_or("");
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return name.get(..pos).unwrap_or(name);
        }
    }
    name
}

// ---------------------------------------------------------------------------------------
// Building
// ---------------------------------------------------------------------------------------

/// A label value: a string, or a number with its unit (`""`, `"bytes"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelValue<'a> {
    Str(&'a str),
    Num(i64, &'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OwnedLabelValue {
    Str(String),
    Num(i64, String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stack {
    /// Raw addresses: `[0]` the interrupted pc, then return addresses.
    Addresses(Vec<usize>),
    /// Symbolic frames, innermost first.
    Frames(Vec<Frame>),
}

/// A sample's labels, in the order given.
type Labels = Vec<(String, OwnedLabelValue)>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SampleKey {
    stack: Stack,
    labels: Labels,
}

/// Whether `pattern` names the frame `name`: a prefix; written `*text`, any name
/// containing `text` (for trait impls such as `<u8 as alloc::vec::SpecFromElem>`);
/// written `=name`, exactly that name (inlined frames from line tables carry no path);
/// written `@text`, any frame whose source file contains `text`.
fn trimmed_by(name: &str, file: &str, pattern: &str) -> bool {
    if let Some(path) = pattern.strip_prefix('@') {
        file.contains(path)
    } else if let Some(inner) = pattern.strip_prefix('*') {
        name.contains(inner)
    } else if let Some(exact) = pattern.strip_prefix('=') {
        name == exact
    } else {
        name.starts_with(pattern)
    }
}

/// One profile being assembled: add samples, then [`ProfileBuilder::encode_gzip`].
#[derive(Debug)]
pub(crate) struct ProfileBuilder {
    sample_types: Vec<(String, String)>,
    period_type: (String, String),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    comments: Vec<String>,
    drop_frames: String,
    trim_prefixes: Vec<String>,
    samples: Vec<(SampleKey, Vec<i64>)>,
    /// Hash of a sample key → indexes into `samples` with that hash.
    index: HashMap<u64, Vec<usize>>,
    hasher: RandomState,
    max_samples: usize,
    dropped_samples: u64,
    truncated_stacks: u64,
}

impl ProfileBuilder {
    /// A profile whose samples carry one value per `(type, unit)` of `sample_types`, e.g.
    /// `[("samples", "count"), ("cpu", "nanoseconds")]`, taken every `period` of
    /// `period_type`.
    pub(crate) fn new(
        sample_types: &[(&str, &str)],
        period_type: (&str, &str),
        period: i64,
    ) -> Self {
        ProfileBuilder {
            sample_types: sample_types
                .iter()
                .map(|(t, u)| ((*t).to_owned(), (*u).to_owned()))
                .collect(),
            period_type: (period_type.0.to_owned(), period_type.1.to_owned()),
            period,
            time_nanos: 0,
            duration_nanos: 0,
            comments: Vec::new(),
            drop_frames: String::new(),
            trim_prefixes: Vec::new(),
            samples: Vec::new(),
            index: HashMap::new(),
            hasher: RandomState::new(),
            max_samples: MAX_SAMPLES,
            dropped_samples: 0,
            truncated_stacks: 0,
        }
    }

    /// Adds a sample from a stack walk: `stack[0]` is the interrupted pc (the leaf), the
    /// rest are return addresses, innermost first. `values` line up with the sample
    /// types (missing ones count 0, extra ones are ignored). An identical stack with
    /// identical labels adds its values to the earlier sample.
    pub(crate) fn add_sample(
        &mut self,
        stack: &[usize],
        values: &[i64],
        labels: &[(&str, LabelValue<'_>)],
    ) {
        let kept = stack.get(..MAX_STACK_DEPTH).unwrap_or(stack);
        if kept.len() < stack.len() {
            self.truncated_stacks += 1;
        }
        self.record(Stack::Addresses(kept.to_vec()), values, labels);
    }

    /// Adds a sample whose stack is already symbolic, innermost frame first.
    pub(crate) fn add_symbolic_sample(
        &mut self,
        frames: &[Frame],
        values: &[i64],
        labels: &[(&str, LabelValue<'_>)],
    ) {
        let kept = frames.get(..MAX_STACK_DEPTH).unwrap_or(frames);
        if kept.len() < frames.len() {
            self.truncated_stacks += 1;
        }
        self.record(Stack::Frames(kept.to_vec()), values, labels);
    }

    /// When the profile was taken: start (Unix nanoseconds) and length.
    pub(crate) fn set_time(&mut self, start_unix_nanos: u64, duration_nanos: u64) {
        self.time_nanos = i64::try_from(start_unix_nanos).unwrap_or(i64::MAX);
        self.duration_nanos = i64::try_from(duration_nanos).unwrap_or(i64::MAX);
    }

    /// A free-form comment (`pprof -comments` shows them).
    pub(crate) fn add_comment(&mut self, comment: &str) {
        if self.comments.len() < MAX_COMMENTS {
            self.comments.push(comment.to_owned());
        }
    }

    /// pprof's `drop_frames`: frames whose function fully matches this regex are hidden
    /// by pprof, along with the frames they called.
    pub(crate) fn set_drop_frames(&mut self, regex: &str) {
        self.drop_frames = regex.to_owned();
    }

    /// When encoding, drops the innermost frames whose function name starts with one of
    /// `prefixes` (allocator internals, so the allocating function becomes the leaf). A
    /// stack made only of such frames is kept whole.
    pub(crate) fn trim_leaf_frames(&mut self, prefixes: &[&str]) {
        self.trim_prefixes = prefixes
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| (*p).to_owned())
            .collect();
    }

    fn record(&mut self, stack: Stack, values: &[i64], labels: &[(&str, LabelValue<'_>)]) {
        let labels = labels
            .iter()
            .take(MAX_LABELS)
            .map(|(k, v)| {
                let v = match v {
                    LabelValue::Str(s) => OwnedLabelValue::Str((*s).to_owned()),
                    LabelValue::Num(n, unit) => OwnedLabelValue::Num(*n, (*unit).to_owned()),
                };
                ((*k).to_owned(), v)
            })
            .collect();
        let key = SampleKey { stack, labels };
        let hash = self.hasher.hash_one(&key);
        let samples = &mut self.samples;
        let found = self.index.get(&hash).and_then(|candidates| {
            candidates
                .iter()
                .copied()
                .find(|&i| samples.get(i).is_some_and(|(k, _)| *k == key))
        });
        if let Some((_, sums)) = found.and_then(|i| samples.get_mut(i)) {
            add_values(sums, values);
            return;
        }
        if samples.len() >= self.max_samples {
            self.dropped_samples += 1;
            return;
        }
        let mut sums = vec![0; self.sample_types.len()];
        add_values(&mut sums, values);
        self.index.entry(hash).or_default().push(samples.len());
        samples.push((key, sums));
    }

    /// Symbolizes, deduplicates and encodes the profile as gzipped `profile.proto`.
    pub(crate) fn encode_gzip(self, symbolizer: &mut Symbolizer) -> Vec<u8> {
        let raw = self.encode_proto(symbolizer).encode_to_vec();
        let mut gz = flate2::write::GzEncoder::new(
            Vec::with_capacity(raw.len() / 4 + 64),
            flate2::Compression::default(),
        );
        match gz.write_all(&raw).and_then(|()| gz.finish()) {
            Ok(bytes) => bytes,
            // Writing into a Vec does not fail; should it, pprof reads plain protobuf too.
            Err(_) => raw,
        }
    }

    fn encode_proto(self, symbolizer: &mut Symbolizer) -> Profile {
        let mut t = Tables::new();
        let sample_type = self
            .sample_types
            .iter()
            .map(|(ty, unit)| ValueType {
                r#type: t.string(ty),
                unit: t.string(unit),
            })
            .collect();
        let period_type = Some(ValueType {
            r#type: t.string(&self.period_type.0),
            unit: t.string(&self.period_type.1),
        });

        // Samples that end up with the same locations and labels are merged.
        let mut merged: Vec<Sample> = Vec::new();
        let mut merged_index: HashMap<(Vec<u64>, &Labels), usize> = HashMap::new();
        for (key, values) in &self.samples {
            let mut ids = match &key.stack {
                Stack::Addresses(addrs) => addrs
                    .iter()
                    .enumerate()
                    .map(|(i, &addr)| t.address_location(symbolizer, addr, i == 0))
                    .collect::<Vec<u64>>(),
                Stack::Frames(frames) => frames.iter().map(|f| t.frame_location(f)).collect(),
            };
            if !self.trim_prefixes.is_empty() {
                ids = t.trim(ids, &self.trim_prefixes);
            }
            match merged_index.entry((ids, &key.labels)) {
                std::collections::hash_map::Entry::Occupied(e) => {
                    if let Some(sample) = merged.get_mut(*e.get()) {
                        add_values(&mut sample.value, values);
                    }
                }
                std::collections::hash_map::Entry::Vacant(e) => {
                    let label = key.labels.iter().map(|(k, v)| t.label(k, v)).collect();
                    let sample = Sample {
                        location_id: e.key().0.clone(),
                        value: values.clone(),
                        label,
                    };
                    e.insert(merged.len());
                    merged.push(sample);
                }
            }
        }

        let mut comment: Vec<i64> = self.comments.iter().map(|c| t.string(c)).collect();
        if self.dropped_samples > 0 {
            let text = format!(
                "holmes: {} samples dropped beyond {} distinct samples",
                self.dropped_samples, self.max_samples
            );
            comment.push(t.string(&text));
        }
        if self.truncated_stacks > 0 {
            let text = format!(
                "holmes: {} stacks truncated to {MAX_STACK_DEPTH} frames",
                self.truncated_stacks
            );
            comment.push(t.string(&text));
        }
        let drop_frames = t.string(&self.drop_frames);
        let executable = std::env::current_exe()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mapping = Mapping {
            id: 1,
            memory_start: 0,
            memory_limit: t.max_address.saturating_add(1),
            file_offset: 0,
            filename: t.string(&executable),
            build_id: 0,
            has_functions: true,
            has_filenames: true,
            has_line_numbers: true,
            has_inline_frames: true,
        };
        Profile {
            sample_type,
            sample: merged,
            mapping: vec![mapping],
            location: t.locations,
            function: t.functions,
            string_table: t.strings,
            drop_frames,
            keep_frames: 0,
            time_nanos: self.time_nanos,
            duration_nanos: self.duration_nanos,
            period_type,
            period: self.period,
            comment,
            default_sample_type: 0,
        }
    }
}

/// Adds `values` into `sums` element-wise, saturating; extra values are ignored.
fn add_values(sums: &mut [i64], values: &[i64]) {
    for (sum, v) in sums.iter_mut().zip(values) {
        *sum = sum.saturating_add(*v);
    }
}

/// The deduplicated tables of a profile being encoded.
struct Tables {
    strings: Vec<String>,
    string_ids: HashMap<String, i64>,
    functions: Vec<Function>,
    function_ids: HashMap<(i64, i64), u64>,
    locations: Vec<Location>,
    /// (looked-up address, leading frames trimmed) → location id.
    address_locations: HashMap<(usize, usize), u64>,
    frame_locations: HashMap<Frame, u64>,
    max_address: u64,
}

impl Tables {
    fn new() -> Self {
        Tables {
            strings: vec![String::new()],
            string_ids: HashMap::from([(String::new(), 0)]),
            functions: Vec::new(),
            function_ids: HashMap::new(),
            locations: Vec::new(),
            address_locations: HashMap::new(),
            frame_locations: HashMap::new(),
            max_address: 0,
        }
    }

    fn string(&mut self, s: &str) -> i64 {
        if let Some(&id) = self.string_ids.get(s) {
            return id;
        }
        let id = i64::try_from(self.strings.len()).unwrap_or(i64::MAX);
        self.strings.push(s.to_owned());
        self.string_ids.insert(s.to_owned(), id);
        id
    }

    fn str_at(&self, id: i64) -> &str {
        usize::try_from(id)
            .ok()
            .and_then(|i| self.strings.get(i))
            .map_or("", String::as_str)
    }

    /// The id of a function, by (name, file).
    fn function(&mut self, frame: &Frame) -> u64 {
        let name = if frame.function.is_empty() {
            "<unknown>"
        } else {
            &frame.function
        };
        let name = self.string(name);
        let filename = self.string(&frame.file);
        if let Some(&id) = self.function_ids.get(&(name, filename)) {
            return id;
        }
        let id = self.functions.len() as u64 + 1;
        self.functions.push(Function {
            id,
            name,
            // Left empty on purpose: pprof re-"demangles" a function whose system name
            // equals its name, cutting Rust's `<T as Trait>::f` down to `::f`.
            system_name: 0,
            filename,
            start_line: 0,
        });
        self.function_ids.insert((name, filename), id);
        id
    }

    fn line(&mut self, frame: &Frame) -> Line {
        Line {
            function_id: self.function(frame),
            line: i64::from(frame.line),
            column: 0,
        }
    }

    fn push_location(&mut self, address: u64, line: Vec<Line>) -> u64 {
        let id = self.locations.len() as u64 + 1;
        self.max_address = self.max_address.max(address);
        self.locations.push(Location {
            id,
            mapping_id: 1,
            address,
            line,
            is_folded: false,
        });
        id
    }

    fn address_location(&mut self, symbolizer: &mut Symbolizer, addr: usize, leaf: bool) -> u64 {
        let lookup = lookup_address(addr, leaf);
        if let Some(&id) = self.address_locations.get(&(lookup, 0)) {
            return id;
        }
        let lines = symbolizer
            .frames(addr, leaf)
            .iter()
            .map(|f| self.line(f))
            .collect();
        let id = self.push_location(lookup as u64, lines);
        self.address_locations.insert((lookup, 0), id);
        id
    }

    fn frame_location(&mut self, frame: &Frame) -> u64 {
        if let Some(&id) = self.frame_locations.get(frame) {
            return id;
        }
        let line = vec![self.line(frame)];
        let id = self.push_location(0, line);
        self.frame_locations.insert(frame.clone(), id);
        id
    }

    fn location_at(&self, id: u64) -> Option<&Location> {
        let i = usize::try_from(id.checked_sub(1)?).ok()?;
        self.locations.get(i)
    }

    fn function_file(&self, function_id: u64) -> &str {
        let f = function_id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.functions.get(i));
        f.map_or("", |f| self.str_at(f.filename))
    }

    fn function_name(&self, function_id: u64) -> &str {
        let f = function_id
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.functions.get(i));
        f.map_or("", |f| self.str_at(f.name))
    }

    /// Drops the innermost frames whose function starts with one of `prefixes`; a
    /// location left with only some of its inlined frames becomes a location of its own.
    fn trim(&mut self, ids: Vec<u64>, prefixes: &[String]) -> Vec<u64> {
        let mut skip = 0usize;
        let mut kept_one = false;
        'walk: for &id in &ids {
            for line in self.location_at(id).map_or(&[][..], |l| l.line.as_slice()) {
                let name = self.function_name(line.function_id);
                let file = self.function_file(line.function_id);
                if prefixes.iter().any(|p| trimmed_by(name, file, p)) {
                    skip += 1;
                } else {
                    kept_one = true;
                    break 'walk;
                }
            }
        }
        if skip == 0 || !kept_one {
            return ids;
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut rest = ids.into_iter();
        for id in rest.by_ref() {
            let Some(loc) = self.location_at(id) else {
                continue;
            };
            let n = loc.line.len();
            if skip >= n {
                skip -= n;
                continue;
            }
            if skip == 0 {
                out.push(id);
            } else {
                let address = loc.address;
                let lines = loc.line.get(skip..).unwrap_or(&[]).to_vec();
                let key = (usize::try_from(address).unwrap_or(usize::MAX), skip);
                let partial = match self.address_locations.get(&key) {
                    Some(&p) => p,
                    None => {
                        let p = self.push_location(address, lines);
                        self.address_locations.insert(key, p);
                        p
                    }
                };
                out.push(partial);
            }
            break;
        }
        out.extend(rest);
        out
    }

    fn label(&mut self, key: &str, value: &OwnedLabelValue) -> Label {
        let key = self.string(key);
        match value {
            OwnedLabelValue::Str(s) => Label {
                key,
                str: self.string(s),
                num: 0,
                num_unit: 0,
            },
            OwnedLabelValue::Num(n, unit) => Label {
                key,
                str: 0,
                num: *n,
                num_unit: self.string(unit),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------

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
    pub(crate) drop_frames: String,
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

fn decode_with_limit(gz_or_raw: &[u8], limit: usize) -> Result<DecodedProfile, PprofError> {
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
                frames.push(Frame::unknown(
                    usize::try_from(loc.address).unwrap_or(usize::MAX),
                ));
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
        drop_frames: string(p.drop_frames)?,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn frame(function: &str, file: &str, line: u32) -> Frame {
        Frame {
            function: function.into(),
            file: file.into(),
            line,
        }
    }

    #[inline(never)]
    fn holmes_pprof_leaf_target(x: u64) -> u64 {
        let mut acc = std::hint::black_box(x);
        for i in 0..std::hint::black_box(5u64) {
            acc = acc.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(acc)
    }

    #[inline(never)]
    fn holmes_pprof_caller_target(x: u64) -> u64 {
        let mut acc = std::hint::black_box(x);
        for i in 0..std::hint::black_box(7u64) {
            acc = acc.wrapping_add(holmes_pprof_leaf_target(i));
        }
        std::hint::black_box(acc)
    }

    /// An address a few bytes into a function, past its prologue.
    fn pc_in(f: fn(u64) -> u64) -> usize {
        f as usize + 4
    }

    fn sample_profile() -> ProfileBuilder {
        let mut b = ProfileBuilder::new(
            &[("samples", "count"), ("cpu", "nanoseconds")],
            ("cpu", "nanoseconds"),
            10_000_000,
        );
        b.set_time(1_700_000_000_000_000_000, 5_000_000_000);
        b.add_comment("trigger cpu abs 91.5");
        b.set_drop_frames("std::panicking::.*");
        b
    }

    #[test]
    fn round_trip_merges_values_and_keeps_labels() {
        let mut b = sample_profile();
        let stack = [
            frame("checkout::db::query", "src/db.rs", 42),
            frame("checkout::handler::serve", "src/handler.rs", 10),
        ];
        let labels = [
            ("thread", LabelValue::Str("worker-1")),
            ("bytes", LabelValue::Num(4096, "bytes")),
        ];
        b.add_symbolic_sample(&stack, &[1, 10_000_000], &labels);
        b.add_symbolic_sample(&stack, &[2, 20_000_000], &labels);
        // Another thread: same stack, separate sample.
        b.add_symbolic_sample(
            &stack,
            &[1, 10_000_000],
            &[("thread", LabelValue::Str("worker-2"))],
        );
        // Too few values count 0, too many are ignored.
        b.add_symbolic_sample(&stack[1..], &[3], &[]);
        b.add_symbolic_sample(&stack[1..], &[1, 5, 99], &[]);

        let gz = b.encode_gzip(&mut Symbolizer::new());
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let p = decode(&gz).unwrap();
        assert_eq!(
            p.sample_types,
            vec![
                ("samples".to_string(), "count".to_string()),
                ("cpu".to_string(), "nanoseconds".to_string())
            ]
        );
        assert_eq!(p.period_type, ("cpu".into(), "nanoseconds".into()));
        assert_eq!(p.period, 10_000_000);
        assert_eq!(p.time_nanos, 1_700_000_000_000_000_000);
        assert_eq!(p.duration_nanos, 5_000_000_000);
        assert_eq!(p.comments, vec!["trigger cpu abs 91.5".to_string()]);
        assert_eq!(p.drop_frames, "std::panicking::.*");
        assert_eq!(p.samples.len(), 3, "{p:#?}");

        let s = &p.samples[0];
        assert_eq!(
            s.stack,
            vec!["checkout::db::query", "checkout::handler::serve"]
        );
        assert_eq!(s.frames[0], stack[0]);
        assert_eq!(s.frames[1], stack[1]);
        assert_eq!(s.values, vec![3, 30_000_000]);
        assert_eq!(s.label("thread"), Some("worker-1"));
        assert_eq!(s.num_labels, vec![("bytes".into(), 4096, "bytes".into())]);

        let s = &p.samples[1];
        assert_eq!(s.values, vec![1, 10_000_000]);
        assert_eq!(s.label("thread"), Some("worker-2"));

        let s = &p.samples[2];
        assert_eq!(s.stack, vec!["checkout::handler::serve"]);
        assert_eq!(s.values, vec![4, 5]);
        assert!(s.labels.is_empty() && s.num_labels.is_empty());

        assert_eq!(p.total("samples"), 8);
        assert_eq!(p.total("cpu"), 40_000_005);
        assert_eq!(p.total("nope"), 0);
        // Plain (not gzipped) protobuf decodes too.
        let raw = sample_profile()
            .encode_proto(&mut Symbolizer::new())
            .encode_to_vec();
        assert_eq!(decode(&raw).unwrap().period, 10_000_000);
    }

    #[test]
    fn trimmed_leaf_frames_make_the_allocating_function_the_leaf() {
        let mut b = ProfileBuilder::new(&[("alloc_space", "bytes")], ("space", "bytes"), 1);
        b.trim_leaf_frames(&[
            "prof_backtrace_impl",
            "_rjem_je_prof_",
            "je_prof_",
            "malloc",
        ]);
        let alloc_stack = |leaf: &str| {
            vec![
                frame("prof_backtrace_impl", "", 0),
                frame("_rjem_je_prof_tctx_create", "", 0),
                frame("malloc", "", 0),
                frame(leaf, "src/cache.rs", 7),
                frame("checkout::main", "src/main.rs", 3),
            ]
        };
        b.add_symbolic_sample(&alloc_stack("checkout::cache::grow"), &[100], &[]);
        // After trimming these two stacks are the same and merge.
        let mut shorter = alloc_stack("checkout::cache::grow");
        shorter.remove(1);
        b.add_symbolic_sample(&shorter, &[50], &[]);
        // A stack of allocator frames only is kept whole.
        b.add_symbolic_sample(&alloc_stack("checkout::x")[..3], &[1], &[]);
        // Only leaf frames are trimmed: a matching frame further out stays.
        b.add_symbolic_sample(
            &[
                frame("checkout::leaf", "src/a.rs", 1),
                frame("malloc_wrapper_user", "src/b.rs", 2),
            ],
            &[2],
            &[],
        );

        let p = decode(&b.encode_gzip(&mut Symbolizer::new())).unwrap();
        assert_eq!(p.samples.len(), 3, "{p:#?}");
        assert_eq!(
            p.samples[0].stack,
            vec!["checkout::cache::grow", "checkout::main"]
        );
        assert_eq!(p.samples[0].values, vec![150]);
        assert_eq!(
            p.samples[1].stack,
            vec!["prof_backtrace_impl", "_rjem_je_prof_tctx_create", "malloc"]
        );
        assert_eq!(
            p.samples[2].stack,
            vec!["checkout::leaf", "malloc_wrapper_user"]
        );
    }

    #[test]
    fn trimming_splits_a_location_with_inlined_frames() {
        // Fake addresses with known frames: 0x1000 holds two allocator frames inlined into
        // the allocating function, 0x2000 is a return address into its caller.
        let mut sym = Symbolizer::new();
        sym.cache.insert(
            0x1000,
            vec![
                frame("je_prof_backtrace", "jemalloc/prof.c", 1),
                frame("_rjem_je_prof_tctx_create", "jemalloc/prof.c", 2),
                frame("checkout::cache::grow", "src/cache.rs", 7),
            ],
        );
        sym.cache
            .insert(0x1fff, vec![frame("checkout::main", "src/main.rs", 3)]);
        let mut b = ProfileBuilder::new(&[("alloc_space", "bytes")], ("space", "bytes"), 1);
        b.trim_leaf_frames(&["je_prof_", "_rjem_je_prof_"]);
        b.add_sample(&[0x1000, 0x2000], &[64], &[]);
        b.add_sample(&[0x1000, 0x2000], &[64], &[("k", LabelValue::Str("v"))]);
        let profile = b.encode_proto(&mut sym);
        // Two base locations plus the split one; functions deduplicated by (name, file).
        assert_eq!(profile.location.len(), 3, "{profile:#?}");
        assert_eq!(profile.function.len(), 4, "{profile:#?}");
        let split = &profile.location[2];
        assert_eq!(split.address, 0x1000);
        assert_eq!(split.line.len(), 1);
        assert_eq!(profile.location[1].address, 0x1fff);

        let p = decode(&profile.encode_to_vec()).unwrap();
        assert_eq!(p.samples.len(), 2);
        for s in &p.samples {
            assert_eq!(s.stack, vec!["checkout::cache::grow", "checkout::main"]);
            assert_eq!(
                s.frames[0],
                frame("checkout::cache::grow", "src/cache.rs", 7)
            );
            assert_eq!(s.values, vec![64]);
        }
    }

    #[test]
    fn a_real_address_symbolizes_to_its_function_and_file() {
        let mut sym = Symbolizer::new();
        let pc = pc_in(holmes_pprof_leaf_target);
        let frames = sym.frames(pc, true).to_vec();
        // The function itself is the outermost frame at its address; inlined callees
        // (black_box, the loop's iterator) may come before it.
        let own = frames.last().unwrap();
        assert!(
            own.function
                .ends_with("pprof::tests::holmes_pprof_leaf_target"),
            "{frames:#?}"
        );
        assert!(own.file.ends_with("src/pprof.rs"), "{frames:#?}");
        assert!(own.line > 0, "{frames:#?}");
        // The same address as a return address resolves to the instruction before it,
        // still in the function.
        let as_return = sym.frames(pc + 1, false).to_vec();
        assert_eq!(as_return.last().unwrap().function, own.function);

        // And through a whole profile.
        let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 1);
        let stack = [pc, pc_in(holmes_pprof_caller_target) + 8];
        b.add_sample(&stack, &[1], &[]);
        b.add_sample(&stack, &[2], &[("thread", LabelValue::Str("main"))]);
        b.add_sample(&stack, &[3], &[]);
        let p = decode(&b.encode_gzip(&mut sym)).unwrap();
        assert_eq!(p.samples.len(), 2);
        assert_eq!(p.samples[0].values, vec![4]);
        let s = &p.samples[0];
        assert!(
            s.stack
                .iter()
                .any(|f| f.ends_with("holmes_pprof_leaf_target")),
            "{s:#?}"
        );
        assert!(
            s.stack
                .last()
                .unwrap()
                .ends_with("holmes_pprof_caller_target"),
            "{s:#?}"
        );
    }

    #[test]
    fn unknown_addresses_become_hex_names() {
        let mut sym = Symbolizer::new();
        assert_eq!(sym.frames(0, true), &[frame("0x0", "", 0)]);
        assert_eq!(sym.frames(0, false), &[frame("0x0", "", 0)]);
        assert_eq!(sym.frames(1, false), &[frame("0x0", "", 0)]);
        assert_eq!(sym.frames(0x10, true), &[frame("0x10", "", 0)]);
        let top = sym.frames(usize::MAX, true).to_vec();
        assert_eq!(top, vec![frame(&format!("{:#x}", usize::MAX), "", 0)]);
        assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_hash("a::b::hello"), "a::b::hello");
        assert_eq!(strip_hash("::h"), "::h");
    }

    #[test]
    fn caps_stack_depth_and_distinct_samples() {
        let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 1);
        b.max_samples = 3;
        let deep: Vec<Frame> = (0..300).map(|i| frame(&format!("f{i}"), "", 0)).collect();
        b.add_symbolic_sample(&deep, &[1], &[]);
        for i in 0..5 {
            b.add_symbolic_sample(&[frame(&format!("g{i}"), "", 0)], &[1], &[]);
        }
        // Merging into an existing sample still works when full.
        b.add_symbolic_sample(&[frame("g0", "", 0)], &[1], &[]);
        let p = decode(&b.encode_gzip(&mut Symbolizer::new())).unwrap();
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[0].stack.len(), MAX_STACK_DEPTH);
        assert_eq!(p.samples[1].values, vec![2]);
        assert_eq!(
            p.comments,
            vec![
                "holmes: 3 samples dropped beyond 3 distinct samples".to_string(),
                "holmes: 1 stacks truncated to 256 frames".to_string(),
            ]
        );
    }

    #[test]
    fn decode_rejects_garbage_and_oversized_profiles() {
        assert!(matches!(
            decode(&[0x1f, 0x8b, 1, 2, 3]),
            Err(PprofError::Decompress(_))
        ));
        assert!(matches!(
            decode(&[0xff, 0xff, 0xff]),
            Err(PprofError::Malformed(_))
        ));
        let gz = sample_profile().encode_gzip(&mut Symbolizer::new());
        let err = decode_with_limit(&gz, 16).unwrap_err();
        assert!(matches!(err, PprofError::TooLarge { limit: 16 }));
        assert_eq!(
            err.to_string(),
            "the profile decompresses to more than 16 bytes"
        );
        // A sample pointing at a location that does not exist.
        let bad = Profile {
            sample: vec![Sample {
                location_id: vec![7],
                value: vec![1],
                label: vec![],
            }],
            string_table: vec![String::new()],
            ..Profile::default()
        };
        let err = decode(&bad.encode_to_vec()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "malformed profile: it refers to a missing location 7"
        );
    }

    fn go_required() -> bool {
        let set =
            |k: &str| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
        set("CI") || set("HOLMES_TEST_REQUIRE_GO")
    }

    fn go_pprof(args: &[&str], file: &std::path::Path, tmp: &std::path::Path) -> String {
        let mut cmd = Command::new("go");
        cmd.arg("tool")
            .arg("pprof")
            .args(args)
            .arg(file)
            .env("PPROF_TMPDIR", tmp)
            .env("PPROF_BINARY_PATH", tmp);
        if std::env::var_os("HOME").is_none() {
            cmd.env("HOME", tmp);
        }
        let out = cmd.output().expect("run go tool pprof");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "go tool pprof {args:?} failed: {}\n{stdout}\n{stderr}",
            out.status
        );
        eprintln!("$ go tool pprof {args:?}\n{stdout}{stderr}");
        stdout
    }

    #[test]
    fn go_tool_pprof_opens_the_profile() {
        let go = Command::new("go").arg("version").output();
        if !go.as_ref().is_ok_and(|o| o.status.success()) {
            assert!(
                !go_required(),
                "`go` is required (CI or HOLMES_TEST_REQUIRE_GO set) but not usable: {go:?}"
            );
            eprintln!("skipping go_tool_pprof_opens_the_profile: `go` is not installed");
            return;
        }

        let mut b = sample_profile();
        let stack = [
            pc_in(holmes_pprof_leaf_target),
            pc_in(holmes_pprof_caller_target) + 8,
        ];
        b.add_sample(
            &stack,
            &[7, 70_000_000],
            &[("thread", LabelValue::Str("main"))],
        );
        b.add_symbolic_sample(
            &[
                frame("checkout::db::query", "src/db.rs", 42),
                frame(
                    "<checkout::handler::Serve as tower::Service>::call",
                    "src/handler.rs",
                    10,
                ),
            ],
            &[3, 30_000_000],
            &[("bytes", LabelValue::Num(4096, "bytes"))],
        );
        let gz = b.encode_gzip(&mut Symbolizer::new());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cpu.pb.gz");
        std::fs::write(&file, &gz).unwrap();

        let top = go_pprof(&["-top", "-nodecount=20"], &file, dir.path());
        for name in [
            "holmes_agent::pprof::tests::holmes_pprof_leaf_target",
            "holmes_agent::pprof::tests::holmes_pprof_caller_target",
            "checkout::db::query",
            // Not cut down to `::call` by pprof's C++ name simplification.
            "<checkout::handler::Serve as tower::Service>::call",
        ] {
            assert!(top.contains(name), "{name} missing from -top:\n{top}");
        }
        assert!(top.contains("Type: cpu"), "{top}");
        assert!(!top.contains("Local symbolization failed"), "{top}");

        let traces = go_pprof(&["-traces"], &file, dir.path());
        for needle in [
            "holmes_agent::pprof::tests::holmes_pprof_leaf_target",
            "holmes_agent::pprof::tests::holmes_pprof_caller_target",
            "checkout::db::query",
            "thread:  main",
        ] {
            assert!(
                traces.contains(needle),
                "{needle} missing from -traces:\n{traces}"
            );
        }

        // With line granularity pprof shows the files and lines.
        let traces = go_pprof(&["-traces", "-lines"], &file, dir.path());
        for needle in [
            "src/pprof.rs:",
            "checkout::db::query src/db.rs:42",
            "src/handler.rs:10",
        ] {
            assert!(
                traces.contains(needle),
                "{needle} missing from -traces:\n{traces}"
            );
        }

        let lines = go_pprof(&["-top", "-lines", "-nodecount=20"], &file, dir.path());
        assert!(lines.contains("src/pprof.rs:"), "{lines}");
        assert!(lines.contains("src/db.rs:42"), "{lines}");
    }
}
