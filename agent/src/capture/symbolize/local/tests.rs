use super::*;

#[inline(never)]
fn local_symbols_test_target() -> u64 {
    std::hint::black_box(3)
}

#[test]
fn names_functions_of_this_binary_and_libc_and_gives_the_memory_back() -> crate::TestResult {
    let symbolizer = LocalSymbolizer::default();
    assert!(!symbolizer.is_loaded());
    let (own, libc_frames, nowhere) = symbolizer.with(|s| {
        let mut resolver = Resolver::new();
        (
            s.frames(
                &mut resolver,
                local_symbols_test_target as *const () as usize,
            ),
            s.frames(&mut resolver, libc::getpid as *const () as usize),
            s.frames(&mut resolver, 16),
        )
    });
    let outer = own
        .last()
        .ok_or("no frames for local_symbols_test_target")?;
    assert_eq!(
        outer.function,
        "holmes_agent::capture::symbolize::local::tests::local_symbols_test_target"
    );
    assert!(
        outer.file.ends_with("symbolize/local/tests.rs"),
        "{outer:?}"
    );
    assert!(outer.line > 0);
    assert!(
        libc_frames.iter().any(|f| f.function.contains("getpid")),
        "{libc_frames:?}"
    );
    assert_eq!(nowhere[0].function, "0x10");
    assert!(symbolizer.is_loaded());
    // Used just now: kept.
    assert!(!symbolizer.release_if_idle(Duration::from_secs(3600)));
    assert!(symbolizer.is_loaded());
    assert!(symbolizer.release_if_idle(Duration::ZERO));
    assert!(!symbolizer.is_loaded());
    Ok(())
}

#[test]
fn code_in_a_module_without_symbols_is_named_module_plus_offset() -> crate::TestResult {
    let mut symbols = LocalSymbols::default();
    let mut resolver = Resolver::new();
    let addr = local_symbols_test_target as *const () as usize;
    let (index, offset) = resolver
        .find(addr)
        .ok_or_else(|| format!("no module holds this executable's {addr:#x}"))?;
    let module = resolver
        .map()
        .get(index)
        .ok_or_else(|| format!("no module {index}"))?
        .module
        .clone();
    // As if its debug info could not be read.
    symbols.modules.insert(module.clone(), None);
    let frames = symbols.frames(&mut resolver, addr);
    assert_eq!(frames[0].function, format!("{}+{offset:#x}", module.name));
    assert_eq!(symbols.loaded(), 0);
    Ok(())
}
