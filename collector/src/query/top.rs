//! A profile's functions summed up and ranked the way `go tool pprof -top` ranks them
//! (flat: the function is the leaf; cum: anywhere on the stack, counted once per sample
//! however often it recurses): `GET /api/v1/services/{service}/profiles/{profile_id}/top`.

use std::collections::HashMap;

use holmes_api::FunctionTotal;
use holmes_storage::ProfileContents;

/// Which value of the samples to sum: the named sample type, or the default one
/// (pprof's `default_sample_type`, else the last) when `sample_type` is `None`. `Err`
/// lists the profile's types.
pub fn value_index(contents: &ProfileContents, sample_type: Option<&str>) -> Result<usize, String> {
    contents
        .value_index(sample_type)
        .ok_or_else(|| match sample_type {
            Some(name) => format!(
                "no sample type {name:?}; this profile has: {}",
                contents
                    .header
                    .sample_types
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "the profile has no sample types".to_owned(),
        })
}

/// Functions by flat value (then cum, then name), with the total of value `index` over
/// all samples.
pub fn top_functions(contents: &ProfileContents, index: usize) -> (i64, Vec<FunctionTotal>) {
    // Each location's functions numbered once, read in place; stacks are walked by
    // number. A stack is never copied out with its names, nor a name hashed per frame:
    // one long name at every depth of many stacks costs what its locations cost.
    let by_location = contents.frames_by_location();
    let mut names: Vec<&str> = Vec::new();
    let mut numbers: HashMap<&str, u32> = HashMap::new();
    let functions: Vec<Vec<u32>> = by_location
        .iter()
        .map(|frames| {
            frames
                .iter()
                .map(|f| {
                    *numbers.entry(f.function.as_str()).or_insert_with(|| {
                        names.push(f.function.as_str());
                        (names.len() - 1) as u32
                    })
                })
                .collect()
        })
        .collect();
    // (flat, cum) per function, and the last sample that counted it in cum.
    let mut sums: Vec<(i64, i64)> = vec![(0, 0); names.len()];
    let mut counted: Vec<usize> = vec![usize::MAX; names.len()];
    let mut total = 0i64;
    for (n, sample) in contents.samples.iter().enumerate() {
        let v = sample.values.get(index).copied().unwrap_or(0);
        total = total.saturating_add(v);
        let Some(locations) = contents.stacks.get(sample.stack as usize) else {
            continue;
        };
        let stack = locations
            .iter()
            .flat_map(|&l| functions.get(l as usize).map_or(&[][..], |f| &f[..]));
        for (depth, &f) in stack.enumerate() {
            let f = f as usize;
            if depth == 0 {
                sums[f].0 = sums[f].0.saturating_add(v);
            }
            if counted[f] != n {
                counted[f] = n;
                sums[f].1 = sums[f].1.saturating_add(v);
            }
        }
    }
    // The functions some sample's stack holds.
    let mut out: Vec<FunctionTotal> = names
        .iter()
        .zip(sums)
        .zip(counted)
        .filter(|(_, last)| *last != usize::MAX)
        .map(|((f, (flat, cum)), _)| FunctionTotal {
            function: (*f).to_owned(),
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
    use holmes_storage::{Location, ProfileHeader, ProfileSample, StackFrame, ValueType};

    use super::*;

    /// A stack of symbolic frames, in the locations `c` holds.
    fn stack(c: &mut ProfileContents, names: &[&str]) -> u32 {
        let entries = names
            .iter()
            .map(|n| {
                c.locations
                    .push(Location::Symbolic(vec![StackFrame::new(*n, "", 0)]));
                c.locations.len() as u32 - 1
            })
            .collect();
        c.stacks.push(entries);
        c.stacks.len() as u32 - 1
    }

    #[test]
    fn flat_is_the_leaf_and_cum_counts_recursion_once() {
        let mut c = ProfileContents {
            header: ProfileHeader {
                sample_types: vec![
                    ValueType::new("samples", "count"),
                    ValueType::new("cpu", "ns"),
                ],
                ..ProfileHeader::default()
            },
            label_sets: vec![vec![]],
            ..ProfileContents::default()
        };
        let burn = stack(&mut c, &["burn", "handle", "main"]);
        let recursive = stack(&mut c, &["walk", "walk", "walk", "main"]);
        let idle = stack(&mut c, &["main"]);
        let sample = |stack: u32, cpu: i64| ProfileSample {
            stack,
            values: vec![1, cpu],
            labels: 0,
        };
        c.samples = vec![
            sample(burn, 70),
            sample(recursive, 20),
            sample(burn, 5),
            sample(idle, 5),
        ];
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
