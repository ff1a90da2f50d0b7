//! Profile contents summed up: merged across profiles and ranked by function, the way
//! `go tool pprof -top` ranks them (flat: the function is the leaf; cum: anywhere on
//! the stack, counted once per sample however often it recurses).

use std::collections::{HashMap, HashSet};

use holmes_storage::ProfileContents;
use serde::{Deserialize, Serialize};

/// One function's share of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionTotal {
    /// Function name.
    pub function: String,
    /// Sum of the samples where it is the leaf.
    pub flat: i64,
    /// Sum of the samples it is on the stack of.
    pub cum: i64,
}

/// Which value of the samples to sum: the named sample type, or the last one (pprof's
/// default) when `sample_type` is `None`. `Err` lists the profile's types.
pub fn value_index(contents: &ProfileContents, sample_type: Option<&str>) -> Result<usize, String> {
    let known = || {
        contents
            .sample_types
            .iter()
            .map(|(t, _)| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match sample_type {
        Some(name) => contents
            .sample_types
            .iter()
            .position(|(t, _)| t == name)
            .ok_or_else(|| format!("no sample type {name:?}; this profile has: {}", known())),
        None => contents
            .sample_types
            .len()
            .checked_sub(1)
            .ok_or_else(|| "the profile has no sample types".to_owned()),
    }
}

/// Functions by flat value (then cum, then name), with the total of value `index` over
/// all samples.
pub fn top_functions(contents: &ProfileContents, index: usize) -> (i64, Vec<FunctionTotal>) {
    let stacks: HashMap<u64, &holmes_storage::Stack> =
        contents.stacks.iter().map(|s| (s.stack_id, s)).collect();
    let mut totals: HashMap<&str, (i64, i64)> = HashMap::new();
    let mut total = 0i64;
    let mut seen = HashSet::new();
    for sample in &contents.samples {
        let v = sample.values.get(index).copied().unwrap_or(0);
        total = total.saturating_add(v);
        let Some(stack) = stacks.get(&sample.stack_id) else {
            continue;
        };
        seen.clear();
        for (depth, frame) in stack.frames.iter().enumerate() {
            let entry = totals.entry(frame.function.as_str()).or_default();
            if depth == 0 {
                entry.0 = entry.0.saturating_add(v);
            }
            if seen.insert(frame.function.as_str()) {
                entry.1 = entry.1.saturating_add(v);
            }
        }
    }
    let mut out: Vec<FunctionTotal> = totals
        .into_iter()
        .map(|(f, (flat, cum))| FunctionTotal {
            function: f.to_owned(),
            flat,
            cum,
        })
        .collect();
    out.sort_by(|a, b| {
        b.flat
            .cmp(&a.flat)
            .then(b.cum.cmp(&a.cum))
            .then(a.function.cmp(&b.function))
    });
    (total, out)
}

/// A function suspected of causing an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suspect {
    /// Function name.
    pub function: String,
    /// Share of the incident's profiles attributed to it, 0 to 1.
    pub share: f64,
    /// Its share in the baseline profiles (before the incident); 0 without a baseline.
    pub baseline_share: f64,
    /// `share - baseline_share`: how much it grew.
    pub growth: f64,
}

/// Whether a function is the program's own code rather than the standard library, the
/// async runtime, the agent or the C library: the frames a suspect is chosen from.
pub fn is_program_code(function: &str) -> bool {
    const RUNTIME: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "tokio::",
        "hyper::",
        "futures",
        "parking_lot",
        "<std::",
        "<core::",
        "<alloc::",
        "<tokio::",
        "backtrace::",
        "holmes_agent::",
        "__",
    ];
    // Rust paths have `::`; C functions (syscall, epoll_wait, malloc) do not.
    function.contains("::") && !RUNTIME.iter().any(|p| function.starts_with(p))
}

/// Each sample's value (the profile's last sample type) attributed to the innermost
/// frame of program code on its stack (the whole stack's leaf if none), summed per
/// function, as shares of the profiles' total.
fn attributed_shares(profiles: &[ProfileContents]) -> HashMap<String, f64> {
    let mut sums: HashMap<String, f64> = HashMap::new();
    let mut total = 0f64;
    for p in profiles {
        let Some(index) = p.sample_types.len().checked_sub(1) else {
            continue;
        };
        let stacks: HashMap<u64, &holmes_storage::Stack> =
            p.stacks.iter().map(|s| (s.stack_id, s)).collect();
        for sample in &p.samples {
            let v = sample.values.get(index).copied().unwrap_or(0).max(0) as f64;
            let Some(stack) = stacks.get(&sample.stack_id) else {
                continue;
            };
            let frame = stack
                .frames
                .iter()
                .find(|f| is_program_code(&f.function))
                .or_else(|| stack.frames.first());
            if let Some(f) = frame {
                *sums.entry(f.function.clone()).or_default() += v;
                total += v;
            }
        }
    }
    if total > 0.0 {
        for v in sums.values_mut() {
            *v /= total;
        }
    }
    sums
}

/// The functions that grew most in `incident` against `baseline`, at most `limit`:
/// every sample is attributed to its innermost frame of program code (so a thread
/// blocked in a lock counts for the function that took the lock, an allocation for the
/// function that allocated), and functions rank by how much their share grew.
pub fn suspects(
    incident: &[ProfileContents],
    baseline: &[ProfileContents],
    limit: usize,
) -> Vec<Suspect> {
    let now = attributed_shares(incident);
    let before = attributed_shares(baseline);
    let mut out: Vec<Suspect> = now
        .into_iter()
        .map(|(function, share)| {
            let baseline_share = before.get(&function).copied().unwrap_or(0.0);
            Suspect {
                function,
                share,
                baseline_share,
                growth: share - baseline_share,
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.growth
            .total_cmp(&a.growth)
            .then(b.share.total_cmp(&a.share))
            .then(a.function.cmp(&b.function))
    });
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use holmes_storage::{Stack, StackFrame, StackSample};

    use super::*;

    fn stack(names: &[&str]) -> Stack {
        Stack::new(
            names
                .iter()
                .map(|n| StackFrame {
                    function: (*n).to_owned(),
                    file: String::new(),
                    line: 0,
                })
                .collect(),
        )
    }

    fn profile(samples: &[(&Stack, i64)]) -> ProfileContents {
        let mut stacks: Vec<Stack> = Vec::new();
        for (s, _) in samples {
            if !stacks.iter().any(|k| k.stack_id == s.stack_id) {
                stacks.push((*s).clone());
            }
        }
        ProfileContents {
            profile_id: "p".into(),
            service: "s".into(),
            started_unix_nanos: 0,
            sample_types: vec![("threads".into(), "count".into())],
            stacks,
            samples: samples
                .iter()
                .map(|(s, v)| StackSample {
                    stack_id: s.stack_id,
                    values: vec![*v],
                    labels: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn suspects_are_the_program_frames_that_grew() {
        // 80 threads blocked in a lock taken by `bank::transfer`, 3 idle workers.
        let blocked = stack(&[
            "syscall",
            "std::sys::sync::mutex::futex::Mutex::lock_contended",
            "std::sync::poison::mutex::Mutex<T>::lock",
            "bank::transfer",
            "bank::main::{{closure}}",
            "std::sys::backtrace::__rust_begin_short_backtrace",
            "start_thread",
        ]);
        let idle = stack(&["epoll_wait", "bank::serve", "bank::main", "main"]);
        let incident = profile(&[(&blocked, 80), (&idle, 3)]);
        let baseline = profile(&[(&idle, 3)]);
        let top = suspects(std::slice::from_ref(&incident), &[baseline], 5);
        assert_eq!(top[0].function, "bank::transfer");
        assert!((top[0].share - 80.0 / 83.0).abs() < 1e-9, "{top:?}");
        assert_eq!(top[0].baseline_share, 0.0);
        // `bank::serve` shrank from all of the baseline to 3/83.
        let serve = top.iter().find(|s| s.function == "bank::serve").unwrap();
        assert!(serve.growth < 0.0);
        // Without a baseline the largest share leads.
        assert_eq!(suspects(&[incident], &[], 1)[0].function, "bank::transfer");
        assert!(!is_program_code("std::thread::park"));
        assert!(!is_program_code("__libc_start_main"));
        assert!(is_program_code("checkout::render_price_table"));
    }

    #[test]
    fn flat_is_the_leaf_and_cum_counts_recursion_once() {
        let burn = stack(&["burn", "handle", "main"]);
        let recursive = stack(&["walk", "walk", "walk", "main"]);
        let idle = stack(&["main"]);
        let sample = |s: &Stack, cpu: i64| StackSample {
            stack_id: s.stack_id,
            values: vec![1, cpu],
            labels: vec![],
        };
        let c = ProfileContents {
            profile_id: "p".into(),
            service: "s".into(),
            started_unix_nanos: 0,
            sample_types: vec![
                ("samples".into(), "count".into()),
                ("cpu".into(), "ns".into()),
            ],
            stacks: vec![burn.clone(), recursive.clone(), idle.clone()],
            samples: vec![
                sample(&burn, 70),
                sample(&recursive, 20),
                sample(&burn, 5),
                sample(&idle, 5),
            ],
        };
        assert_eq!(value_index(&c, None), Ok(1));
        assert_eq!(value_index(&c, Some("samples")), Ok(0));
        assert_eq!(
            value_index(&c, Some("alloc_space")).unwrap_err(),
            "no sample type \"alloc_space\"; this profile has: samples, cpu"
        );
        let (total, top) = top_functions(&c, 1);
        assert_eq!(total, 100);
        let row = |f: &str, flat, cum| FunctionTotal {
            function: f.to_owned(),
            flat,
            cum,
        };
        assert_eq!(
            top,
            vec![
                row("burn", 75, 75),
                row("walk", 20, 20),
                row("main", 5, 100),
                row("handle", 0, 75),
            ]
        );
    }
}
