//! The `.dsc` parser (`pulp pack`'s `pack::dsc::parse`, a pure function of the text) on
//! any bytes that are UTF-8: never panics; whatever it accepts or refuses, the refusal
//! names a line of the text. The parser's own source file is compiled in here, so the
//! target fuzzes exactly what `pulp pack` runs, without the rest of the tools.
#![no_main]

#[path = "../../tools/src/pack/dsc.rs"]
#[allow(dead_code)]
mod dsc;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match dsc::parse(text) {
        Ok(lines) => {
            let _ = format!("{lines:?}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.is_empty());
        }
    }
});
