//! A profile's functions summed up and ranked the way `go tool pprof -top` ranks them
//! (flat: the function is the leaf; cum: anywhere on the stack, counted once per sample
//! however often it recurses): `GET /api/v1/profiles/{profile_id}/top`.

use std::collections::{HashMap, HashSet};

use holmes_api::FunctionTotal;
use holmes_storage::ProfileContents;

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
