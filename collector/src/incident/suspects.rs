//! An incident's suspects: the functions of the program's own code (not the standard
//! library, the async runtime, the agent or libc) whose share grew most between the sick
//! instances' profiles and the comparison (healthy controls of the same moment, else
//! the service's baselines, else nothing), each counted with everything it calls, and
//! named at the deepest program frame that carries the growth ([`suspects`]).

use std::collections::HashMap;

use holmes_storage::{ProfileContents, SuspectRecord};

/// Whether a function is the program's own code rather than the standard library, the
/// async runtime, the agent or the C library: the frames a suspect is chosen from. A
/// method of an impl (`<Type as Trait>::method`, `<Type>::method`) is the program's when
/// its type is: `<checkout::Cart as core::fmt::Display>::fmt` is, while
/// `<i32 as core::iter::range::Step>::forward_unchecked` (what a `for` loop over a range
/// calls in a debug build) and `<u64>::wrapping_mul` are the standard library's.
pub fn is_program_code(function: &str) -> bool {
    const RUNTIME: &[&str] = &[
        "std::",
        "core::",
        "alloc::",
        "tokio::",
        "hyper::",
        "futures",
        "parking_lot",
        "backtrace::",
        "holmes_agent::",
        "__",
    ];
    let path = match function.strip_prefix('<') {
        Some(qualified) => impl_type(qualified),
        None => function,
    };
    // Rust paths have `::`; C functions (syscall, epoll_wait, malloc) and primitive
    // types (`i32`, `&str`, `[u8]`) do not.
    path.contains("::") && !RUNTIME.iter().any(|p| path.starts_with(p))
}

/// The type of `Type as Trait>::method` or `Type>::method`: up to ` as ` or the `>`
/// that closes the leading `<`, generic arguments skipped over.
fn impl_type(qualified: &str) -> &str {
    let mut depth = 0usize;
    for (i, c) in qualified.char_indices() {
        match c {
            '<' => depth += 1,
            '>' if depth == 0 => return &qualified[..i],
            '>' => depth -= 1,
            ' ' if depth == 0 && qualified[i..].starts_with(" as ") => return &qualified[..i],
            _ => {}
        }
    }
    qualified
}

/// Whether a frame is the program's own code: its function by [`is_program_code`], and
/// its source file, when known, outside the standard library (`/rustc/<hash>/library/`)
/// and the crates the program depends on (`/.cargo/registry/`, `/.cargo/git/`, vendored
/// `/vendor/`). The file decides what a name cannot: `addr2line::…::parse` is a
/// dependency's, however program-like its path.
pub fn is_program_frame(function: &str, file: &str) -> bool {
    const NOT_PROGRAM: &[&str] = &[
        "/rustc/",
        "/.cargo/registry/",
        "/.cargo/git/",
        "/.rustup/toolchains/",
        "/vendor/",
    ];
    let file = file.replace('\\', "/");
    is_program_code(function) && !NOT_PROGRAM.iter().any(|p| file.contains(p))
}

/// Functions with their inclusive shares of a set of profiles, and (for the sick side)
/// which of them call which.
struct Inclusive {
    /// Function names, each once.
    names: Vec<String>,
    /// Index of each name in `names`.
    index: HashMap<String, usize>,
    /// Per function, its share of the profiles' total: the samples whose stack holds it
    /// anywhere (the function with everything it calls), 0 to 1.
    shares: Vec<f64>,
    /// Per distinct stack, its program functions, innermost first, each once (a
    /// recursive function at its innermost call).
    chains: Vec<Vec<usize>>,
}

impl Inclusive {
    /// Reads `profiles`: each sample's value (the profile's default sample type, else
    /// its last) counts for every function of program code on its stack (the stack's
    /// leaf if none), once per stack. Frames are read in place, each location's once,
    /// and each name is copied once: a profile naming one long function at every depth
    /// of many stacks costs what its locations cost.
    fn of(profiles: &[ProfileContents]) -> Inclusive {
        let mut out = Inclusive {
            names: Vec::new(),
            index: HashMap::new(),
            shares: Vec::new(),
            chains: Vec::new(),
        };
        let mut sums: Vec<f64> = Vec::new();
        let mut total = 0f64;
        let mut chain_of: HashMap<Vec<usize>, ()> = HashMap::new();
        for p in profiles {
            let Some(value) = p.value_index(None) else {
                continue;
            };
            let frames = p.frames_by_location();
            // Per location, once: its functions of program code, innermost first.
            let program: Vec<Vec<usize>> = frames
                .iter()
                .map(|f| {
                    f.iter()
                        .filter(|f| is_program_frame(&f.function, &f.file))
                        .map(|f| out.intern(&f.function))
                        .collect()
                })
                .collect();
            // Per stack, once however many samples use it.
            let chains: Vec<Vec<usize>> = p
                .stacks
                .iter()
                .map(|locations| {
                    let mut chain: Vec<usize> = Vec::new();
                    for &l in locations {
                        for &f in program.get(l as usize).map_or(&[][..], Vec::as_slice) {
                            if !chain.contains(&f) {
                                chain.push(f);
                            }
                        }
                    }
                    if chain.is_empty() {
                        let leaf = locations
                            .first()
                            .and_then(|&l| frames.get(l as usize))
                            .and_then(|f| f.first());
                        if let Some(leaf) = leaf {
                            chain.push(out.intern(&leaf.function));
                        }
                    }
                    chain
                })
                .collect();
            sums.resize(out.names.len(), 0.0);
            for sample in &p.samples {
                let v = sample.values.get(value).copied().unwrap_or(0).max(0) as f64;
                let Some(chain) = chains.get(sample.stack as usize) else {
                    continue;
                };
                if chain.is_empty() {
                    continue;
                }
                for &f in chain {
                    sums[f] += v;
                }
                total += v;
            }
            for chain in chains {
                if !chain.is_empty() {
                    chain_of.entry(chain).or_insert(());
                }
            }
        }
        out.chains = chain_of.into_keys().collect();
        out.shares = sums
            .into_iter()
            .map(|s| if total > 0.0 { s / total } else { 0.0 })
            .collect();
        out
    }

    fn intern(&mut self, name: &str) -> usize {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        self.names.push(name.to_owned());
        self.index.insert(name.to_owned(), self.names.len() - 1);
        self.names.len() - 1
    }

    /// The share of the function named `name`; 0 if it is not in these profiles.
    fn share_of(&self, name: &str) -> f64 {
        self.index
            .get(name)
            .and_then(|&i| self.shares.get(i))
            .copied()
            .unwrap_or(0.0)
    }
}

/// A caller is named instead of a function it calls only if that callee carries less
/// than this part of the caller's growth.
pub const CARRIED: f64 = 0.8;

/// The functions that grew most in `sick` against `comparison`, at most `limit`, most
/// suspect first, with their shares on both sides.
///
/// A function counts with everything it calls (its inclusive share), and ranks by how
/// much that share grew (without a comparison: by its share). A function whose growth
/// is carried by a deeper function of program code it calls (one that grew by at least
/// [`CARRIED`] of its growth) ranks after the functions that grew and are not, and
/// before those that did not grow: so the deepest
/// program frame that carries the growth is named — `main` and the service's loop are
/// not, since what they call grew as much, and neither is a helper shared with healthy
/// code, whose share grew nowhere.
pub fn suspects(
    sick: &[ProfileContents],
    comparison: &[ProfileContents],
    limit: usize,
) -> Vec<SuspectRecord> {
    let now = Inclusive::of(sick);
    let before = Inclusive::of(comparison);
    let growth: Vec<f64> = now
        .names
        .iter()
        .zip(&now.shares)
        .map(|(name, share)| share - before.share_of(name))
        .collect();
    let mut order: Vec<usize> = (0..now.names.len()).collect();
    order.sort_by(|&a, &b| {
        growth[b]
            .total_cmp(&growth[a])
            .then(now.shares[b].total_cmp(&now.shares[a]))
            .then(now.names[a].cmp(&now.names[b]))
    });
    // Which of the leading candidates call which: a bounded look over the sick stacks.
    let candidates: Vec<usize> = order
        .iter()
        .copied()
        .take(limit.saturating_mul(4).max(16))
        .collect();
    let slot: HashMap<usize, usize> = candidates
        .iter()
        .enumerate()
        .map(|(slot, &f)| (f, slot))
        .collect();
    let n = candidates.len();
    // calls[a * n + b]: candidate a is above candidate b on some sick stack.
    let mut calls = vec![false; n * n];
    for chain in &now.chains {
        let on: Vec<usize> = chain.iter().filter_map(|f| slot.get(f).copied()).collect();
        for (i, &inner) in on.iter().enumerate() {
            for &outer in &on[i + 1..] {
                calls[outer * n + inner] = true;
            }
        }
    }
    let carried = |a: usize| {
        let g = growth[candidates[a]];
        g > 0.0
            && (0..n).any(|b| b != a && calls[a * n + b] && growth[candidates[b]] >= CARRIED * g)
    };
    // Grew and named first, then the callers whose growth a callee carries, then what
    // did not grow; by growth within each (the sort is stable).
    let mut ranked: Vec<usize> = (0..n).collect();
    ranked.sort_by_key(|&a| match (growth[candidates[a]] > 0.0, carried(a)) {
        (true, false) => 0u8,
        (true, true) => 1,
        (false, _) => 2,
    });
    ranked
        .into_iter()
        .take(limit)
        .map(|a| {
            let f = candidates[a];
            SuspectRecord {
                function: now.names[f].clone(),
                sick_share: now.shares[f],
                comparison_share: before.share_of(&now.names[f]),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use holmes_storage::{Location, ProfileHeader, ProfileSample, StackFrame, ValueType};

    use super::*;

    type Stack = Vec<&'static str>;

    fn stack(names: &[&'static str]) -> Stack {
        names.to_vec()
    }

    /// A threads profile of `samples`: each stack's functions as symbolic locations.
    fn profile(samples: &[(&Stack, i64)]) -> ProfileContents {
        let mut c = ProfileContents {
            header: ProfileHeader {
                sample_types: vec![ValueType::new("threads", "count")],
                ..ProfileHeader::default()
            },
            label_sets: vec![vec![]],
            ..ProfileContents::default()
        };
        for (names, v) in samples {
            let mut entries = Vec::new();
            for n in names.iter() {
                let l = Location::Symbolic(vec![StackFrame::new(*n, "", 0)]);
                let i = match c.locations.iter().position(|k| *k == l) {
                    Some(i) => i,
                    None => {
                        c.locations.push(l);
                        c.locations.len() - 1
                    }
                };
                entries.push(i as u32);
            }
            let stack = match c.stacks.iter().position(|s| *s == entries) {
                Some(i) => i,
                None => {
                    c.stacks.push(entries);
                    c.stacks.len() - 1
                }
            };
            c.samples.push(ProfileSample {
                stack: stack as u32,
                values: vec![*v],
                labels: 0,
            });
        }
        c
    }

    #[test]
    fn dependencies_are_told_apart_by_their_files() {
        let registry = "/home/ci/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/addr2line-0.25.1/src/function.rs";
        assert!(!is_program_frame(
            "addr2line::function::Functions<R>::parse",
            registry
        ));
        assert!(!is_program_frame(
            "gimli::read::unit::parse",
            "/root/.cargo/git/checkouts/gimli-1/src/read/unit.rs"
        ));
        assert!(!is_program_frame(
            "core::iter::range::Step::forward",
            "/rustc/17067e9ac6d7e98f18d4e6a0ee3d6d6aa6ec7a4b/library/core/src/iter/range.rs"
        ));
        assert!(is_program_frame(
            "demo::hot_loop",
            "collector/devtools/src/demo.rs"
        ));
        assert!(is_program_frame(
            "checkout::render",
            "/src/checkout/src/main.rs"
        ));
        // Without a file (not symbolized yet, or a foreign profile without lines), the
        // name decides.
        assert!(is_program_frame("checkout::render", ""));
        assert!(!is_program_frame("std::thread::park", ""));
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
        assert!((top[0].sick_share - 80.0 / 83.0).abs() < 1e-9, "{top:?}");
        assert_eq!(top[0].comparison_share, 0.0);
        // Its caller grew as much, carried by it: named after it.
        assert_eq!(top[1].function, "bank::main::{{closure}}");
        // `bank::serve` shrank from all of the baseline to 3/83.
        let serve = top.iter().find(|s| s.function == "bank::serve").unwrap();
        assert!(serve.sick_share < serve.comparison_share);
        // Without a baseline the largest share leads.
        assert_eq!(suspects(&[incident], &[], 1)[0].function, "bank::transfer");
        assert!(!is_program_code("std::thread::park"));
        assert!(!is_program_code("__libc_start_main"));
        assert!(is_program_code("checkout::render_price_table"));
    }

    #[test]
    fn methods_belong_to_the_code_of_their_type() {
        for library in [
            "<i32 as core::iter::range::Step>::forward_unchecked",
            "<u64>::wrapping_mul",
            "<alloc::vec::Vec<u8> as core::ops::drop::Drop>::drop",
            "<&mut F as core::ops::function::FnOnce<A>>::call_once",
            "<core::iter::adapters::map::Map<I, F> as core::iter::traits::iterator::Iterator>::next",
            "<tokio::runtime::task::Task<S>>::poll",
        ] {
            assert!(!is_program_code(library), "{library}");
        }
        for program in [
            "<checkout::Cart as core::fmt::Display>::fmt",
            "<checkout::Cache<K, V>>::get",
            "<&checkout::Cart as serde::ser::Serialize>::serialize",
        ] {
            assert!(is_program_code(program), "{program}");
        }
        // A debug build's hot loop: the range's step is library code, the loop is the
        // culprit.
        let spin = stack(&[
            "<i32 as core::iter::range::Step>::forward_unchecked",
            "core::iter::range::<impl core::iter::traits::iterator::Iterator for core::ops::range::Range<A>>::next",
            "demo::hot_loop",
            "demo::run_service",
            "main",
        ]);
        let top = suspects(&[profile(&[(&spin, 10)])], &[], 1);
        assert_eq!(top[0].function, "demo::hot_loop");
    }

    #[test]
    fn a_culprit_spending_its_time_in_a_shared_helper_is_named() {
        // Every instance runs `background`, which spends its time in `checksum`; the
        // sick ones also run `culprit`, which spends its time in the same helper.
        let shared = stack(&[
            "fleet::checksum",
            "fleet::background",
            "fleet::main",
            "main",
        ]);
        let culprit = stack(&[
            "fleet::checksum",
            "fleet::culprit",
            "fleet::serve",
            "fleet::main",
            "main",
        ]);
        let idle = stack(&["epoll_wait", "fleet::serve", "fleet::main", "main"]);
        let sick = profile(&[(&shared, 20), (&culprit, 60), (&idle, 5)]);
        let healthy = profile(&[(&shared, 20), (&idle, 5)]);
        let top = suspects(&[sick.clone(), sick.clone()], &[healthy], 10);
        let names: Vec<&str> = top.iter().map(|s| s.function.as_str()).collect();
        assert_eq!(names[0], "fleet::culprit", "{top:?}");
        assert!((top[0].sick_share - 60.0 / 85.0).abs() < 1e-9, "{top:?}");
        assert_eq!(top[0].comparison_share, 0.0);
        // Its callers grew as much as it did: named after it. The shared function
        // shrank, `fleet::main` is everywhere.
        let at = |f: &str| names.iter().position(|n| *n == f).unwrap();
        assert!(at("fleet::serve") > 0);
        assert!(at("fleet::background") >= 3, "{names:?}");
        assert!(at("fleet::main") >= 3, "{names:?}");
        let background = &top[at("fleet::background")];
        assert!(
            (background.comparison_share - 0.8).abs() < 1e-9,
            "{background:?}"
        );
        // Without a comparison, the function carrying most of the samples leads.
        assert_eq!(suspects(&[sick], &[], 1)[0].function, "fleet::checksum");
    }
}
