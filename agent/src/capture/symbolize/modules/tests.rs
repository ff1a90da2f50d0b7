use super::*;

#[inline(never)]
fn a_function_of_this_executable() -> u64 {
    std::hint::black_box(1)
}

#[test]
fn addresses_become_module_offsets() -> crate::TestResult {
    let map = current();
    let exe = map
        .executable()
        .ok_or("the executable is not listed first")?;
    let own = executable_name();
    assert_eq!(exe.module.name, own);
    assert_eq!(exe.module.build_id.len(), 40, "{exe:?}");
    assert!(exe.module.build_id.bytes().all(|b| b.is_ascii_hexdigit()));

    let addr = a_function_of_this_executable as *const () as usize;
    let (index, offset) = map
        .find(addr)
        .ok_or_else(|| format!("no module holds this executable's {addr:#x}"))?;
    assert_eq!(index, 0);
    assert_eq!(offset, (addr - exe.bias) as u64);
    // The offset is the file's: the symbolizer names it from the file alone.
    let info = holmes_symbolize::DebugInfo::from_elf_file("/proc/self/exe".as_ref())
        .map_err(|e| format!("read /proc/self/exe: {e}"))?;
    assert_eq!(info.build_id(), Some(exe.module.build_id.as_str()));
    let frames = info.frames(offset);
    assert!(
        frames.last().is_some_and(|f| f
            .function
            .ends_with("modules::tests::a_function_of_this_executable")),
        "{frames:#?}"
    );

    let getpid = libc::getpid as *const () as usize;
    let (index, _) = map
        .find(getpid)
        .ok_or_else(|| format!("no module holds getpid at {getpid:#x}"))?;
    let libc_module = &map
        .get(index)
        .ok_or_else(|| format!("no module {index}"))?
        .module;
    assert!(libc_module.name.starts_with("libc"), "{libc_module:?}");
    assert!(map.find(8).is_none());
    Ok(())
}

#[test]
fn the_vdso_is_a_module_named_from_memory() -> crate::TestResult {
    let map = current();
    // SAFETY: getauxval has no preconditions.
    let vdso = unsafe { libc::getauxval(AT_SYSINFO_EHDR) } as usize;
    if vdso == 0 {
        return Ok(()); // a kernel without a vDSO
    }
    let (index, offset) = map
        .find(vdso + 0x10)
        .ok_or_else(|| format!("no module holds the vDSO at {vdso:#x}"))?;
    let module = map.get(index).ok_or_else(|| format!("no module {index}"))?;
    assert_eq!(module.module.name, "[vdso]");
    assert!(!module.module.build_id.is_empty());
    assert!(offset < 1 << 20);
    let image = module
        .image_bytes()
        .ok_or("the vDSO's image could not be read")?;
    let info = holmes_symbolize::DebugInfo::from_elf_bytes(&image)
        .map_err(|e| format!("read the vDSO's image: {e}"))?;
    assert_eq!(info.build_id(), Some(module.module.build_id.as_str()));
    assert!(info.has_symbols());
    Ok(())
}

#[test]
fn the_table_is_kept_until_the_loader_changes() {
    let a = current();
    let b = current();
    assert!(Arc::ptr_eq(&a, &b));
    let c = refreshed();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(a.list.len(), c.list.len());
}
