//! `rust-app`: a Rust program whose C library (`libpricing.so`, built live-patchable by
//! build.rs) can be fixed while it runs.
//!
//! Reads one command a line on stdin and answers with one line:
//!
//! - `price QUANTITY UNIT_CENTS` → `total(QUANTITY x UNIT_CENTS)=CENTS`
//! - `version` → the library's version string
//! - `quit`
//!
//! It prints `ready` first. `rust-app --paths` prints the library, the patch and the
//! patch description (`.dsc`) built next to it, one a line, and exits.
//!
//! ```sh
//! LD_PRELOAD=target/release/libpulp_rs.so target/release/rust-app
//! pulp pack "$(target/release/rust-app --paths | sed -n 3p)" -o pricing_fix.meta
//! pulp-trigger -p "$(pidof rust-app)" pricing_fix.meta
//! ```

use std::ffi::CStr;
use std::io::{self, BufRead, Write};
use std::os::raw::{c_char, c_long};

extern "C" {
    fn pricing_total(quantity: c_long, unit_cents: c_long) -> c_long;
    fn pricing_version() -> *const c_char;
}

fn total(quantity: i64, unit_cents: i64) -> i64 {
    // SAFETY: pricing_total takes two integers by value and touches no memory of ours.
    unsafe { pricing_total(quantity, unit_cents) }
}

fn version() -> String {
    // SAFETY: pricing_version takes no arguments and returns a pointer to a static,
    // NUL-terminated string (in the library or, once patched, in the patch object,
    // which is never unloaded).
    let p = unsafe { pricing_version() };
    if p.is_null() {
        return "(null)".into();
    }
    // SAFETY: p is non-null and points to a NUL-terminated string that lives forever.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn answer(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    Some(match words.as_slice() {
        ["price", q, u] => match (q.parse::<i64>(), u.parse::<i64>()) {
            (Ok(q), Ok(u)) => format!("total({q} x {u})={}", total(q, u)),
            _ => "error: usage: price QUANTITY UNIT_CENTS".into(),
        },
        ["version"] => version(),
        ["quit"] => return None,
        _ => "unknown command".into(),
    })
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("--paths") {
        println!("{}", env!("PULP_RUST_APP_LIB"));
        println!("{}", env!("PULP_RUST_APP_FIX"));
        println!("{}", env!("PULP_RUST_APP_DSC"));
        return;
    }
    let stdout = io::stdout();
    let mut out = stdout.lock();
    if writeln!(out, "ready").and_then(|_| out.flush()).is_err() {
        return;
    }
    for line in io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let Some(reply) = answer(&line) else { break };
        if writeln!(out, "{reply}").and_then(|_| out.flush()).is_err() {
            break;
        }
    }
}
