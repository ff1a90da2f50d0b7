use std::process::Command;

use holmes_symbolize::Frame;

use super::*;
use crate::capture::profile::LabelValue;
use crate::capture::symbolize::modules;

/// A stack walked from two functions of this executable, plus a pc in libc and one
/// in the vDSO (as if interrupted there), leaf first.
#[inline(never)]
fn native_test_outer() -> Vec<usize> {
    std::hint::black_box(native_test_inner())
}

#[inline(never)]
fn native_test_inner() -> Vec<usize> {
    let mut out = [0usize; 32];
    crate::unwind::init();
    let n = crate::unwind::walk_here(&mut out);
    let mut stack = vec![libc::getpid as *const () as usize];
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(33) } as usize;
    if vdso != 0 {
        stack.push(vdso + 0x10 + 1);
    }
    // The walk's own leaf is this function; its callers follow.
    stack.extend_from_slice(&out[..n]);
    std::hint::black_box(stack)
}

/// `(module name, build id, offset)` of each native location of a sample, leaf first.
type NativeStack = Vec<(String, String, u64)>;

/// `(module name, build id, offset)` of each native location of `stack`'s sample,
/// leaf first, and the absolute addresses.
fn native_stack(stack: &[usize]) -> crate::TestResult<(NativeStack, NativeProfile)> {
    let mut b = ProfileBuilder::new(&[("samples", "count")], ("cpu", "nanoseconds"), 1);
    b.add_sample(stack, &[1], &[]);
    let p = NativeProfile::decode(&b.encode_native().encode())
        .map_err(|e| format!("decode the native profile: {e}"))?;
    let s = &p.stacks[p.samples[0].stack as usize];
    let native = s
        .iter()
        .map(|l| match &p.locations[*l as usize] {
            Location::Native { module, offset } => {
                let m = &p.modules[*module as usize];
                (m.name.clone(), m.build_id.clone(), *offset)
            }
            Location::Symbolic(f) => (f[0].function.clone(), String::new(), 0),
        })
        .collect();
    Ok((native, p))
}

#[test]
fn stacks_become_module_offsets_and_identical_ones_are_stored_once() -> crate::TestResult {
    let stack = native_test_outer();
    let map = modules::current();
    let exe = map
        .executable()
        .ok_or("the executable is not among the modules")?;
    let bias = exe.bias;
    let exe = exe.module.clone();
    let mut b = ProfileBuilder::new(
        &[("samples", "count"), ("cpu", "nanoseconds")],
        ("cpu", "nanoseconds"),
        52_631_578,
    );
    b.set_time(1_700_000_000_000_000_000, 10_000_000_000);
    b.add_comment("holmes pre-trigger cpu profile at 19 Hz");
    b.add_sample(
        &stack,
        &[1, 52],
        &[("phase", LabelValue::Str("pre-trigger"))],
    );
    b.add_sample(
        &stack,
        &[2, 104],
        &[("phase", LabelValue::Str("pre-trigger"))],
    );
    b.add_sample(&stack[2..], &[1, 52], &[("n", LabelValue::Num(3, "bytes"))]);
    b.add_sample(&[16, stack[2]], &[1, 1], &[]);
    let frames = [Frame {
        function: "checkout::wait".into(),
        file: "src/wait.rs".into(),
        line: 9,
    }];
    b.add_symbolic_sample(&frames, &[4, 0], &[]);
    let p = NativeProfile::decode(&b.encode_native().encode())
        .map_err(|e| format!("decode the native profile: {e}"))?;

    assert_eq!(p.period, 52_631_578);
    assert_eq!(p.time_unix_nanos, 1_700_000_000_000_000_000);
    assert_eq!(p.duration_nanos, 10_000_000_000);
    assert_eq!(p.comments, vec!["holmes pre-trigger cpu profile at 19 Hz"]);
    assert_eq!(p.sample_types[1], ValueType::new("cpu", "nanoseconds"));
    // Merged: the first two samples are one.
    assert_eq!(p.samples.len(), 4, "{p:#?}");
    assert_eq!(p.samples[0].values, vec![3, 156]);
    assert_eq!(p.samples[0].labels[0].str, "pre-trigger");
    assert_eq!(p.samples[1].labels[0].num, 3);
    assert_eq!(p.samples[1].labels[0].unit, "bytes");
    // Each module and location once; the executable with its build id.
    assert!(p.modules.contains(&exe), "{:?}", p.modules);
    assert_eq!(p.modules.iter().filter(|m| **m == exe).count(), 1);
    let distinct: std::collections::HashSet<&Location> = p.locations.iter().collect();
    assert_eq!(distinct.len(), p.locations.len());
    // The walk's frames are offsets of the executable: address − bias, the pc as it
    // is and return addresses minus one.
    let (native, _) = native_stack(&stack)?;
    for (i, (entry, addr)) in native.iter().zip(&stack).enumerate().skip(2) {
        if entry.0 != exe.name {
            continue;
        }
        let lookup = crate::capture::symbolize::lookup_address(*addr, i == 0);
        assert_eq!(entry.2, (lookup - bias) as u64, "{native:?}");
    }
    assert!(native[0].0.starts_with("libc"), "{native:?}");
    assert!(
        native.iter().filter(|e| e.0 == exe.name).count() >= 2,
        "{native:?}"
    );
    // An address in no module is a symbolic "[unknown]", never the address.
    let unknown = &p.stacks[p.samples[2].stack as usize];
    assert_eq!(
        p.locations[unknown[0] as usize],
        Location::Symbolic(vec![SymbolicFrame {
            function: UNKNOWN_FUNCTION.into(),
            file: String::new(),
            line: 0
        }])
    );
    // Symbolic frames pass through.
    let symbolic = &p.stacks[p.samples[3].stack as usize];
    assert_eq!(
        p.locations[symbolic[0] as usize],
        Location::Symbolic(vec![SymbolicFrame {
            function: "checkout::wait".into(),
            file: "src/wait.rs".into(),
            line: 9
        }])
    );
    Ok(())
}

/// Run by [`two_processes_of_one_build_give_the_same_native_stacks`] in a child
/// process: prints the native stack of a fixed code path and its absolute addresses.
#[test]
#[ignore = "a child of two_processes_of_one_build_give_the_same_native_stacks"]
fn native_stack_child() -> crate::TestResult {
    let stack = native_test_outer();
    let (native, _) = native_stack(&stack)?;
    // The harness' own frames above the test function vary with the thread it ran
    // on; the test's code path is the first frames up to the test function.
    let keep = stack.len().min(5);
    println!("NATIVE {:?}", &native[..keep]);
    println!("ABSOLUTE {:?}", &stack[..keep]);
    Ok(())
}

#[test]
fn two_processes_of_one_build_give_the_same_native_stacks() -> crate::TestResult {
    let exe = std::env::current_exe()?;
    let run = || -> crate::TestResult<(String, String)> {
        let out = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "capture::profile::native::tests::native_stack_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .map_err(|e| format!("run {}: {e}", exe.display()))?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = |tag: &str| -> Result<String, String> {
            // libtest prints the test's name on the same line, before its output.
            text.lines()
                .find_map(|l| l.find(tag).map(|i| l[i + tag.len()..].to_owned()))
                .ok_or_else(|| format!("no {tag:?} in the child's output: {text}"))
        };
        Ok((line("NATIVE ")?, line("ABSOLUTE ")?))
    };
    let (native_a, absolute_a) = run()?;
    let (native_b, absolute_b) = run()?;
    assert_eq!(native_a, native_b);
    assert!(native_a.contains("libc"), "{native_a}");
    assert!(native_a.contains("[vdso]"), "{native_a}");
    let aslr = std::fs::read_to_string("/proc/sys/kernel/randomize_va_space")
        .is_ok_and(|v| v.trim() != "0");
    if aslr {
        assert_ne!(absolute_a, absolute_b, "ASLR moved nothing?");
    }
    Ok(())
}
