//! The runtime's request decoder (`pulp_meta::abi::Request::decode`, what the runtime
//! reads from its buffer) on any bytes: never panics, and what it accepts encodes back
//! to exactly the same bytes; the `patch.meta` inside goes through its own decoder as
//! the runtime does. The request format of ABI version 6.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pulp_meta::abi::Request;
use pulp_meta::PatchMeta;

fuzz_target!(|data: &[u8]| {
    if let Some(req) = Request::decode(data) {
        assert_eq!(req.encode(), data, "an accepted request must encode to the same bytes");
        let _ = PatchMeta::decode(req.meta);
    }
});
