//! Text from files and processes, made safe to print: a label, a symbol name or a message
//! from a runtime may hold terminal escape sequences or other control characters, which
//! are shown escaped (`\x1b`, `\u{9b}`) instead of being sent to the terminal.

use std::borrow::Cow;

/// `s` with every control character (C0, DEL, C1) and every Unicode format character
/// that can reorder text (bidirectional overrides) written as an escape.
pub fn printable(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        c.is_control() || matches!(c, '\u{200e}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 && unsafe_char(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A duration as every message of the tools writes one: `850 µs`, `12.40 ms`, `3.00 s`.
pub fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs_f64();
    if d.as_secs() > 100 * 365 * 86400 {
        "no limit".into()
    } else if s < 1e-3 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// `1 function`, `2 functions`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_control_and_reordering_characters() {
        assert_eq!(printable("CVE-2026-1234"), "CVE-2026-1234");
        assert_eq!(printable("a\x1b[2Jb"), "a\\x1b[2Jb");
        assert_eq!(printable("x\u{9b}31m"), "x\\u{9b}31m");
        assert_eq!(printable("l\u{202e}tx"), "l\\u{202e}tx");
        assert_eq!(printable("two\nlines\x7f"), "two\\nlines\\x7f");
        assert_eq!(printable("héllo"), "héllo");
    }

    #[test]
    fn durations_and_counts_read_the_same_everywhere() {
        use std::time::Duration;
        assert_eq!(duration(Duration::ZERO), "0 µs");
        assert_eq!(duration(Duration::from_micros(850)), "850 µs");
        assert_eq!(duration(Duration::from_millis(12)), "12.00 ms");
        assert_eq!(duration(Duration::from_secs(3)), "3.00 s");
        assert_eq!(duration(Duration::MAX), "no limit");
        assert_eq!(count(1, "thread", "threads"), "1 thread");
        assert_eq!(count(0, "thread", "threads"), "0 threads");
    }
}
