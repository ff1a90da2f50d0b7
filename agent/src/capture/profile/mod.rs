//! A profile being captured ([`ProfileBuilder`]) and its two encodings:
//!
//! - [`pprof`]: standard pprof (`profile.proto`, gzipped) for the local dump folder, every
//!   address symbolized here by the in-process symbolizer, so `go tool pprof` opens it
//!   with function names, files and lines without needing the binary (the single
//!   mapping says `has_functions`, `has_filenames`, `has_line_numbers`);
//! - [`native`]: the agent's own `holmes.v1.NativeProfile` for the collector, every
//!   address a module and the offset in it, not symbolized (no debug info loaded).
//!
//! Stacks come in two forms: code addresses from a stack walk, stored as the address
//! of the instruction each entry stands for (the interrupted pc for the leaf, the call
//! instruction — return address − 1 — for the others), or frames that are already
//! symbolic.
//!
//! Work is bounded: stacks keep at most [`MAX_STACK_DEPTH`] frames, a profile at most
//! [`MAX_SAMPLES`] distinct samples; what is cut is counted in the profile's comments.
//! Nothing here panics; encoding allocates and takes locks, so it must not run in a
//! signal handler.

#[cfg(test)]
pub(crate) mod decode;
pub(crate) mod native;
mod pprof;
#[cfg(test)]
mod tests;

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;

use holmes_symbolize::Frame;

use super::symbolize::lookup_address;

/// Most frames kept per stack; deeper stacks lose their outermost frames.
pub(crate) const MAX_STACK_DEPTH: usize = 256;
/// Most distinct samples (stack and labels) per profile; further ones are dropped.
const MAX_SAMPLES: usize = 100_000;
/// Most labels kept per sample.
const MAX_LABELS: usize = 64;
/// Most comments kept per profile (not counting the builder's own).
const MAX_COMMENTS: usize = 64;

/// A label value: a string, or a number with its unit (`""`, `"bytes"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LabelValue<'a> {
    Str(&'a str),
    /// Numeric labels carry task dumps' leaf counts (the `taskdump` build).
    #[cfg_attr(not(all(feature = "taskdump", tokio_unstable)), allow(dead_code))]
    Num(i64, &'a str),
}

/// A label value the builder keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum OwnedLabelValue {
    Str(String),
    Num(i64, String),
}

/// A sample's stack, as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Stack {
    /// Code addresses, innermost first: each the instruction the entry stands for.
    Addresses(Vec<usize>),
    /// Symbolic frames, innermost first.
    Frames(Vec<Frame>),
}

/// A sample's labels, in the order given.
type Labels = Vec<(String, OwnedLabelValue)>;

/// What makes two samples the same: their stack and labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SampleKey {
    stack: Stack,
    labels: Labels,
}

/// Whether a frame (function, file) is the allocator's, trimmed from the leaf end of
/// heap profiles' stacks.
pub(crate) type AllocatorFrame = fn(&str, &str) -> bool;

/// One profile being assembled: add samples, then encode it
/// ([`ProfileBuilder::encode_gzip`], [`ProfileBuilder::encode_native`]).
#[derive(Debug)]
pub(crate) struct ProfileBuilder {
    sample_types: Vec<(String, String)>,
    period_type: (String, String),
    period: i64,
    time_nanos: i64,
    duration_nanos: i64,
    comments: Vec<String>,
    trim: Option<AllocatorFrame>,
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
            trim: None,
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
        let code = kept
            .iter()
            .enumerate()
            .map(|(i, &a)| lookup_address(a, i == 0))
            .collect();
        self.record(Stack::Addresses(code), values, labels);
    }

    /// Adds a sample whose stack holds return addresses only, innermost first (a
    /// backtrace taken by someone else: jemalloc's, tokio's task traces).
    #[cfg_attr(
        not(any(feature = "jemalloc", all(feature = "taskdump", tokio_unstable))),
        allow(dead_code)
    )]
    pub(crate) fn add_return_addresses(
        &mut self,
        stack: &[usize],
        values: &[i64],
        labels: &[(&str, LabelValue<'_>)],
    ) {
        let kept = stack.get(..MAX_STACK_DEPTH).unwrap_or(stack);
        if kept.len() < stack.len() {
            self.truncated_stacks += 1;
        }
        let code = kept.iter().map(|&a| lookup_address(a, false)).collect();
        self.record(Stack::Addresses(code), values, labels);
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

    /// When encoding pprof, drops the innermost frames `is_allocator` says are the
    /// allocator's, so the allocating function becomes the leaf. A stack made only of
    /// such frames is kept whole. (Native profiles carry whole stacks: naming frames is
    /// the collector's.)
    pub(crate) fn trim_leaf_frames(&mut self, is_allocator: AllocatorFrame) {
        self.trim = Some(is_allocator);
    }

    /// Comments about what was cut to keep the profile bounded.
    fn limit_notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.dropped_samples > 0 {
            notes.push(format!(
                "holmes: {} samples dropped beyond {} distinct samples",
                self.dropped_samples, self.max_samples
            ));
        }
        if self.truncated_stacks > 0 {
            notes.push(format!(
                "holmes: {} stacks truncated to {MAX_STACK_DEPTH} frames",
                self.truncated_stacks
            ));
        }
        notes
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
}

/// Adds `values` into `sums` element-wise, saturating; extra values are ignored.
fn add_values(sums: &mut [i64], values: &[i64]) {
    for (sum, v) in sums.iter_mut().zip(values) {
        *sum = sum.saturating_add(*v);
    }
}
