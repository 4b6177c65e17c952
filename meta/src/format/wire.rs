//! The wire format's building blocks: little-endian integers, length-prefixed fields, a
//! bounds-checked reader (also used by `crate::status`), CRC-32, hex.

use super::error::{check_count, check_len, truncated};
use super::MetaError;

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_u32(out, b.len() as u32);
    out.extend_from_slice(b);
}

/// A bounds-checked cursor over the input (also used by [`crate::status`]).
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], MetaError> {
        if self.buf.len() < n {
            return Err(truncated(field));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], MetaError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, field)?);
        Ok(a)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, MetaError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, MetaError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, MetaError> {
        self.array(field).map(u64::from_le_bytes)
    }

    pub(crate) fn count(&mut self, field: &str) -> Result<usize, MetaError> {
        let n = self.u32(&format!("{field} count"))?;
        check_count(field, n as usize)?;
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self, field: &str) -> Result<&'a [u8], MetaError> {
        let n = self.u32(&format!("{field} length"))? as usize;
        check_len(field, n)?;
        self.take(n, field)
    }

    pub(crate) fn string(&mut self, field: &str) -> Result<String, MetaError> {
        let b = self.bytes(field)?;
        std::str::from_utf8(b).map(str::to_owned).map_err(|_| MetaError::InvalidUtf8 { field: field.into() })
    }
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as used by zlib and PNG.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The first 12 hex digits of a patch id, as messages name a patch.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Lower-case hex of a byte string (build-ids).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
