//! Link the unwinder into `libpulp_rs.so` instead of depending on `libgcc_s.so.1`.
//!
//! Rust's standard library asks the linker for `-lgcc_s` (its panics unwind through the
//! shared libgcc). Loading one more shared library is most of what a preloaded runtime
//! costs every process at start (~95 µs of ~140 µs measured with `pulp-bench startup`),
//! and most programs never load libgcc_s themselves. This build puts a linker script
//! named `libgcc_s.so` first on the runtime's library path; it names the static
//! `libgcc_eh.a` that gcc ships for `-static-libgcc`, so the unwinder's code (hidden
//! symbols, nothing exported) becomes part of the runtime. Panics are still caught at
//! every `extern "C"` boundary; the gates' `_Unwind_Backtrace` walks other objects'
//! frames through `dl_iterate_phdr`/`_dl_find_object`, as libgcc_s does.

use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let dir = out.join("unwinder");
    std::fs::create_dir_all(&dir).expect("cannot create OUT_DIR/unwinder");
    std::fs::write(
        dir.join("libgcc_s.so"),
        "/* libpulp-rs: the static unwinder instead of libgcc_s.so.1 */\nINPUT(-lgcc_eh)\n",
    )
    .expect("cannot write the linker script");
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rerun-if-changed=build.rs");
}
