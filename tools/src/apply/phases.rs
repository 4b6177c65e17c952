//! Where the time of one operation on one process goes, for `pulp-trigger --json`
//! (`phases_us`) and the benchmark's breakdown: named marks along the phases of
//! `crate::apply`, kept per thread (a process is worked on by one thread from start to
//! end). Marking costs a clock read; nothing else depends on it.

use std::cell::RefCell;
use std::time::{Duration, Instant};

/// When the last mark was made (`None`: not timing), and the phases so far.
struct Timing {
    last: Option<Instant>,
    phases: Vec<(&'static str, Duration)>,
}

thread_local! {
    static PHASES: RefCell<Timing> = const { RefCell::new(Timing { last: None, phases: Vec::new() }) };
}

/// Start timing an operation on this thread (forgets any earlier one).
pub fn start() {
    PHASES.with(|p| *p.borrow_mut() = Timing { last: Some(Instant::now()), phases: Vec::new() });
}

/// The time since the previous mark (or `start`) was spent in phase `name`; a phase met
/// again adds up. Does nothing unless `start` was called on this thread.
pub fn mark(name: &'static str) {
    PHASES.with(|p| {
        let mut p = p.borrow_mut();
        let Some(last) = p.last else { return };
        let now = Instant::now();
        p.last = Some(now);
        match p.phases.iter_mut().find(|(n, _)| *n == name) {
            Some((_, d)) => *d += now - last,
            None => p.phases.push((name, now - last)),
        }
    });
}

/// The phases of the operation, in the order first met; timing stops.
pub fn take() -> Vec<(&'static str, Duration)> {
    PHASES.with(|p| {
        let mut p = p.borrow_mut();
        p.last = None;
        std::mem::take(&mut p.phases)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_add_up_in_order() {
        mark("ignored");
        assert!(take().is_empty());
        start();
        mark("a");
        std::thread::sleep(Duration::from_millis(2));
        mark("b");
        mark("a");
        let p = take();
        assert_eq!(p.iter().map(|(n, _)| *n).collect::<Vec<_>>(), ["a", "b"]);
        assert!(p[1].1 >= Duration::from_millis(2));
        assert!(take().is_empty());
    }
}
