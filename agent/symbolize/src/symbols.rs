//! A module's function symbols (`.symtab`, else `.dynsym`), sorted by address, named on
//! lookup: Rust names demangled, without their hash.

use crate::bytes::SectionBytes;

/// `STT_FUNC`.
const STT_FUNC: u8 = 2;
/// `STT_GNU_IFUNC`.
const STT_GNU_IFUNC: u8 = 10;
/// Entries looked at below the closest one when it does not cover the address (a label
/// or a zero-size symbol inside a larger function).
const LOOKBACK: usize = 4;

/// One function symbol: where it starts, how long it is, where its name is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    start: u64,
    size: u64,
    /// Index into [`SymbolTable::strings`].
    table: u8,
    name_at: u32,
}

/// Function symbols by address.
#[derive(Debug, Default)]
pub(crate) struct SymbolTable {
    entries: Vec<Entry>,
    /// The string tables the names are in.
    strings: Vec<SectionBytes>,
}

/// A symbol table's raw bytes and the string table its names are in.
pub(crate) struct RawTable {
    pub(crate) symbols: SectionBytes,
    pub(crate) strings: SectionBytes,
}

impl SymbolTable {
    /// Reads the function symbols of `tables` (ELF `Elf32_Sym`/`Elf64_Sym` arrays);
    /// malformed entries are skipped.
    pub(crate) fn parse(tables: Vec<RawTable>, class64: bool, little_endian: bool) -> Self {
        let mut entries = Vec::new();
        let mut strings = Vec::new();
        let size = if class64 { 24 } else { 16 };
        for (table, raw) in tables.into_iter().enumerate() {
            let Ok(table) = u8::try_from(table) else {
                break;
            };
            for sym in raw.symbols.chunks_exact(size) {
                let Some(e) = entry(sym, class64, little_endian, table) else {
                    continue;
                };
                entries.push(e);
            }
            strings.push(raw.strings);
        }
        // Aliases at one address: keep the longest.
        entries.sort_unstable_by_key(|e| (e.start, std::cmp::Reverse(e.size)));
        entries.dedup_by_key(|e| e.start);
        entries.shrink_to_fit();
        SymbolTable { entries, strings }
    }

    /// Whether there are no function symbols.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The raw (mangled) name of the function covering `address` (a zero-size symbol
    /// covers its own address only).
    pub(crate) fn lookup(&self, address: u64) -> Option<&[u8]> {
        let upto = self.entries.partition_point(|e| e.start <= address);
        let first = upto.saturating_sub(LOOKBACK);
        let found = self
            .entries
            .get(first..upto)?
            .iter()
            .rev()
            .find(|e| address == e.start || address - e.start < e.size)?;
        self.name(found)
    }

    fn name(&self, e: &Entry) -> Option<&[u8]> {
        let strings = self.strings.get(usize::from(e.table))?;
        let rest = strings.get(e.name_at as usize..)?;
        let end = rest.iter().position(|b| *b == 0)?;
        rest.get(..end).filter(|n| !n.is_empty())
    }

    /// Raw names of all function symbols.
    pub(crate) fn names(&self) -> impl Iterator<Item = &[u8]> {
        self.entries.iter().filter_map(|e| self.name(e))
    }

    /// Bytes of the table itself (the string tables are counted as sections).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

fn entry(sym: &[u8], class64: bool, little: bool, table: u8) -> Option<Entry> {
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = sym.get(at..at + 2)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = sym.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |at: usize| -> Option<u64> {
        let b: [u8; 8] = sym.get(at..at + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // Elf64_Sym: name u32, info u8, other u8, shndx u16, value u64, size u64.
    // Elf32_Sym: name u32, value u32, size u32, info u8, other u8, shndx u16.
    let (name_at, info, shndx, start, size) = if class64 {
        (
            u32_at(0)?,
            *sym.get(4)?,
            u16_at(6)?,
            u64_at(8)?,
            u64_at(16)?,
        )
    } else {
        (
            u32_at(0)?,
            *sym.get(12)?,
            u16_at(14)?,
            u64::from(u32_at(4)?),
            u64::from(u32_at(8)?),
        )
    };
    let kind = info & 0xf;
    let function = kind == STT_FUNC || kind == STT_GNU_IFUNC;
    (function && shndx != 0 && start != 0 && name_at != 0).then_some(Entry {
        start,
        size,
        table,
        name_at,
    })
}

/// A symbol name as people read it: Rust names demangled without their hash, anything
/// else as it is.
pub(crate) fn demangle(name: &[u8]) -> String {
    let name = String::from_utf8_lossy(name);
    match rustc_demangle::try_demangle(&name) {
        Ok(d) => strip_hash(&format!("{d:#}")).to_owned(),
        Err(_) => name.into_owned(),
    }
}

/// Whether `name` is a mangled Rust symbol.
pub(crate) fn is_mangled_rust(name: &str) -> bool {
    rustc_demangle::try_demangle(name).is_ok()
}

/// `foo::bar::h0123456789abcdef` → `foo::bar`.
pub fn strip_hash(name: &str) -> &str {
    if let Some(pos) = name.rfind("::h") {
        let hash = name.get(pos + 3..).unwrap_or("");
        if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return name.get(..pos).unwrap_or(name);
        }
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym64(name_at: u32, kind: u8, shndx: u16, start: u64, size: u64) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&name_at.to_le_bytes());
        v.push(0x10 | kind);
        v.push(0);
        v.extend_from_slice(&shndx.to_le_bytes());
        v.extend_from_slice(&start.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v
    }

    #[test]
    fn finds_the_function_covering_an_address() {
        let strings = SectionBytes::owned(b"\0outer\0label\0data\0other\0".to_vec());
        let mut symbols = sym64(1, STT_FUNC, 1, 0x1000, 0x100);
        symbols.extend(sym64(7, STT_FUNC, 1, 0x1050, 0)); // a label inside `outer`
        symbols.extend(sym64(13, 1, 1, 0x3000, 0x10)); // an object, not a function
        symbols.extend(sym64(18, STT_FUNC, 1, 0x2000, 0x10));
        symbols.extend(sym64(18, STT_FUNC, 0, 0x2800, 0x10)); // undefined
        symbols.extend_from_slice(&[1, 2, 3]); // a torn entry
        let symbols = SectionBytes::owned(symbols);
        let table = SymbolTable::parse(vec![RawTable { symbols, strings }], true, true);
        assert_eq!(table.lookup(0x1000), Some(&b"outer"[..]));
        assert_eq!(table.lookup(0x1050), Some(&b"label"[..]));
        assert_eq!(table.lookup(0x1060), Some(&b"outer"[..]));
        assert_eq!(table.lookup(0x10ff), Some(&b"outer"[..]));
        assert_eq!(table.lookup(0x1100), None);
        assert_eq!(table.lookup(0x2005), Some(&b"other"[..]));
        assert_eq!(table.lookup(0x2805), None);
        assert_eq!(table.lookup(0x3005), None);
        assert_eq!(table.lookup(0), None);
        assert_eq!(table.lookup(u64::MAX), None);
    }

    #[test]
    fn names_are_demangled_without_the_hash() {
        assert_eq!(
            demangle(b"_ZN4core3fmt5write17h0123456789abcdefE"),
            "core::fmt::write"
        );
        assert_eq!(
            demangle(b"_ZN9bar_truth8bar_spin17h9f0c1d2e3a4b5c6dE"),
            "bar_truth::bar_spin"
        );
        assert_eq!(demangle(b"__clone3"), "__clone3");
        assert_eq!(strip_hash("a::b::h0123456789abcdef"), "a::b");
        assert_eq!(strip_hash("a::b::hello"), "a::b::hello");
        assert_eq!(strip_hash("::h"), "::h");
    }
}
