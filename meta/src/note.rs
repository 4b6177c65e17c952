//! ELF notes: the GNU build-id that identifies every object a patch is tied to.

/// GNU build-id note type.
const NT_GNU_BUILD_ID: u32 = 3;

/// The `NT_GNU_BUILD_ID` descriptor among ELF notes (4-byte aligned name and descriptor),
/// as found in a `PT_NOTE` segment; `None` if absent or malformed. In the runtime's start
/// section (`runtime/build.rs`): a process with patches installed runs it at start.
#[link_section = ".text.pulp_start"]
pub fn gnu_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    let word =
        |b: &[u8], i: usize| -> Option<usize> { Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize) };
    let align4 = |n: usize| n.checked_add(3).map(|n| n & !3);
    while notes.len() >= 12 {
        let (namesz, descsz, kind) = (word(notes, 0)?, word(notes, 4)?, word(notes, 8)? as u32);
        let name = notes.get(12..12usize.checked_add(namesz)?)?;
        let desc_at = 12 + align4(namesz)?;
        let desc = notes.get(desc_at..desc_at.checked_add(descsz)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return Some(desc);
        }
        notes = notes.get(desc_at + align4(descsz)?..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(kind: u32, name: &[u8], desc: &[u8]) -> Vec<u8> {
        let mut n = Vec::new();
        n.extend_from_slice(&(name.len() as u32).to_le_bytes());
        n.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        n.extend_from_slice(&kind.to_le_bytes());
        n.extend_from_slice(name);
        n.resize(n.len().next_multiple_of(4), 0);
        n.extend_from_slice(desc);
        n.resize(n.len().next_multiple_of(4), 0);
        n
    }

    #[test]
    fn finds_gnu_build_id_after_other_notes() {
        let mut n = note(1, b"GNU\0", &[0; 16]);
        n.extend(note(3, b"GNU\0", &[0xaa, 0xbb, 0xcc]));
        assert_eq!(gnu_build_id(&n), Some(&[0xaa, 0xbb, 0xcc][..]));
        assert_eq!(gnu_build_id(&n[..30]), None);
        assert_eq!(gnu_build_id(&note(3, b"XYZ\0", &[1])), None);
    }

    #[test]
    fn survives_huge_sizes() {
        let mut n = vec![0xff; 12];
        n.extend_from_slice(&[0; 8]);
        assert_eq!(gnu_build_id(&n), None);
    }
}
