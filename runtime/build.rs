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
//!
//! Second, where the start path lies in the file. The runtime is preloaded into every
//! process, and what such a process pays is mostly page faults in the runtime's pages
//! (`docs/benchmarks.md`): each first touch of a text page maps one 64 KiB window, each
//! first write of a data page copies it. A linker script added to the default one
//! (`INSERT`, understood by GNU ld and lld) puts together, at the start of the code
//! segment, everything a process that is never patched runs: `_init`/`_fini` (already
//! there), the PLT (`__cxa_finalize` at exit), the C runtime's `crtbeginS.o` code, std's
//! argv initialiser and the runtime's own start path (`#[link_section = ".text.pulp_start"]`).
//! After `.data` (the runtime's own statics, 80 KiB that a process never patched does not
//! touch) come the few words the dynamic linker relocates at start (`crtbeginS.o`'s
//! `__dso_handle`, std's and `memchr`'s pointers, the personality reference) and std's
//! `ARGC`/`ARGV`, which its initialiser writes: they share the page where `.bss` begins,
//! which the dynamic linker writes anyway (it zeroes the rest of that page); so do the
//! runtime's own flags of the start path (`#[link_section = ".data.pulp_start"]`).
//! `-z separate-loadable-segments` (lld; GNU ld ignores it with a warning) starts each
//! segment on a page of its own, so RELRO takes as few pages as its size needs. Nothing
//! here changes what the code does or how it is protected (RELRO and `BIND_NOW` stay as
//! rustc asks; only writable `.data` input sections move); a section the script names
//! that does not exist (another C runtime, another std) only costs that page fault again.

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

    let script = out.join("start-layout.ld");
    std::fs::write(&script, START_LAYOUT).expect("cannot write the start layout script");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{}", script.display());
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
    println!("cargo:rerun-if-changed=build.rs");
}

/// The start path's layout (see the module comment), inserted into the linker's default
/// script.
const START_LAYOUT: &str = "/* libpulp-rs: what every process runs at start, together (runtime/build.rs) */
SECTIONS {
  .plt : { *(.plt) *(.iplt) }
  .text.pulp_start : {
    *crtbeginS.o(.text .text.*)
    *(.text.*ARGV_INIT_ARRAY*)
    *(.text.pulp_start)
  }
} INSERT BEFORE .text;
SECTIONS {
  .data.pulp_start : {
    *crtbeginS.o(.data .data.rel.local)
    *(.data.DW.ref.*)
    *libstd-*.rlib:*(.data._*)
    *libmemchr-*.rlib:*(.data._*)
    *(.data.pulp_start)
  }
  .bss.pulp_start : { *(.bss.*4args4unix3imp4ARGC* .bss.*4args4unix3imp4ARGV*) }
} INSERT AFTER .data;
";
