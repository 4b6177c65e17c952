//! `PatchMeta::decode` on any bytes: never panics, and what it accepts encodes back to
//! exactly the same bytes (a decoder that accepted two spellings of one patch could be
//! shown one file and apply another).
//!
//! Input that does not start with the magic is taken as a payload and given a valid
//! header and checksum first: random bytes almost never pass the CRC-32, and the payload
//! decoder is where the fields are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulp_meta::format::{crc32, FORMAT_VERSION, MAGIC};
use pulp_meta::PatchMeta;

fuzz_target!(|data: &[u8]| {
    let framed;
    let bytes = if data.starts_with(&MAGIC) {
        data
    } else {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
        f.extend_from_slice(&crc32(data).to_le_bytes());
        framed = f;
        &framed
    };
    if let Ok(meta) = PatchMeta::decode(bytes) {
        assert_eq!(meta.encode(), bytes, "an accepted patch.meta must encode to the same bytes");
        // What the tools print about it must not panic either.
        let _ = (meta.id(), meta.short_id(), meta.function_count(), format!("{meta:?}"));
    }
});
