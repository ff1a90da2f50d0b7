//! An incident's suspects: the functions that grew most in its profiles against the
//! baseline. Every sample is attributed to the innermost frame of the program's own code
//! on its stack (not the standard library, the async runtime, the agent or libc), summed
//! per function across the merged profiles, and functions rank by how much their share
//! grew.

use std::collections::HashMap;

use holmes_api::Suspect;
use holmes_storage::ProfileContents;

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

/// Each sample's value (the profile's last sample type) attributed to the innermost
/// frame of program code on its stack (the whole stack's leaf if none), summed per
/// function, as shares of the profiles' total. Frames are read in place, each
/// location's once: a stack is never copied out with its names, so a profile naming one
/// long function at every depth of many stacks costs what its locations cost.
fn attributed_shares(profiles: &[ProfileContents]) -> HashMap<String, f64> {
    let mut sums: HashMap<String, f64> = HashMap::new();
    let mut total = 0f64;
    for p in profiles {
        let Some(index) = p.value_index(None) else {
            continue;
        };
        let frames = p.frames_by_location();
        // Per location, once: its innermost frame of program code, and its leaf.
        let program: Vec<Option<&str>> = frames
            .iter()
            .map(|f| {
                f.iter()
                    .find(|f| is_program_frame(&f.function, &f.file))
                    .map(|f| f.function.as_str())
            })
            .collect();
        let leaf = |l: u32| {
            frames
                .get(l as usize)
                .and_then(|f| f.first())
                .map(|f| f.function.as_str())
        };
        // Each stack's function, once however many samples use it.
        let attributed: Vec<Option<&str>> = p
            .stacks
            .iter()
            .map(|locations| {
                locations
                    .iter()
                    .find_map(|&l| program.get(l as usize).copied().flatten())
                    .or_else(|| locations.iter().find_map(|&l| leaf(l)))
            })
            .collect();
        for sample in &p.samples {
            let v = sample.values.get(index).copied().unwrap_or(0).max(0) as f64;
            if let Some(Some(function)) = attributed.get(sample.stack as usize) {
                match sums.get_mut(*function) {
                    Some(sum) => *sum += v,
                    None => {
                        sums.insert((*function).to_owned(), v);
                    }
                }
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
}
