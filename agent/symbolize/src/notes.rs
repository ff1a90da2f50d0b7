//! GNU build ids, from ELF notes.

/// `n_type` of the GNU build-id note.
const NT_GNU_BUILD_ID: u32 = 3;
/// Longest build id accepted (GNU ld writes 20 bytes, others 8 to 32).
const MAX_BUILD_ID_BYTES: usize = 64;

/// The GNU build id in the ELF notes `notes` (a `PT_NOTE` segment or an `SHT_NOTE`
/// section), as lowercase hex; `None` when there is none. `align` is the segment's or
/// section's alignment (4 or 8: name and descriptor are padded to it); `little_endian`
/// is the file's byte order. Never reads outside `notes`.
pub fn build_id_from_notes(notes: &[u8], align: u64, little_endian: bool) -> Option<String> {
    let align = if align == 8 { 8 } else { 4 };
    let word = |at: usize| -> Option<u32> {
        let b: [u8; 4] = notes.get(at..at.checked_add(4)?)?.try_into().ok()?;
        Some(if little_endian {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let pad = |n: usize| -> Option<usize> { n.checked_add(align - 1).map(|v| v & !(align - 1)) };
    let mut at = 0usize;
    while at.checked_add(12)? <= notes.len() {
        let namesz = word(at)? as usize;
        let descsz = word(at + 4)? as usize;
        let kind = word(at + 8)?;
        let name_at = at + 12;
        let desc_at = name_at.checked_add(pad(namesz)?)?;
        let next = desc_at.checked_add(pad(descsz)?)?;
        let name = notes.get(name_at..name_at.checked_add(namesz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
            if desc.is_empty() || desc.len() > MAX_BUILD_ID_BYTES {
                return None;
            }
            return Some(hex(desc));
        }
        if next <= at {
            return None;
        }
        at = next;
    }
    None
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(name: &[u8], kind: u32, desc: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&(name.len() as u32).to_le_bytes());
        v.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        v.extend_from_slice(&kind.to_le_bytes());
        v.extend_from_slice(name);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v.extend_from_slice(desc);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    #[test]
    fn finds_the_gnu_build_id_among_other_notes() {
        let mut notes = note(b"GNU\0", 5, &[1, 2, 3, 4, 5, 6, 7, 8]);
        notes.extend(note(b"Go\0", 3, &[9; 4]));
        notes.extend(note(b"GNU\0", 3, &[0xde, 0xad, 0xbe, 0xef, 0x01]));
        assert_eq!(
            build_id_from_notes(&notes, 4, true).as_deref(),
            Some("deadbeef01")
        );
    }

    #[test]
    fn truncated_or_empty_notes_have_no_build_id() {
        let notes = note(b"GNU\0", 3, &[0xab; 20]);
        assert_eq!(
            build_id_from_notes(&notes, 4, true).as_deref(),
            Some("abababababababababababababababababababab")
        );
        for cut in 0..notes.len() {
            assert_eq!(build_id_from_notes(&notes[..cut], 4, true), None, "{cut}");
        }
        // Sizes that point far past the end.
        let mut huge = notes.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(build_id_from_notes(&huge, 4, true), None);
        assert_eq!(build_id_from_notes(&[], 8, false), None);
    }
}
