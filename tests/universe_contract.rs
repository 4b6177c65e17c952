//! A patch that changes a contract between two functions (an encoder and its decoder)
//! is safe under a transition: 8 threads run encode→decode pairs, each pair inside one
//! library entry, across 200 apply/revert cycles, and never decode with one version what
//! the other version encoded. Both versions are seen.

use libpulp_rs_tests::{apply, revert, App, Uni, Work};
use std::time::Instant;

const THREADS: usize = 8;
const CYCLES: usize = 200;

/// `iters=I old=O new=N bad=B` -> (I, O, N, B)
fn stats(app: &mut App) -> (u64, u64, u64, u64) {
    let line = app.ask("cstats");
    let v: Vec<u64> = line.split_whitespace().map(|kv| kv.split_once('=').unwrap().1.parse().unwrap()).collect();
    assert_eq!(v.len(), 4, "{line}");
    (v[0], v[1], v[2], v[3])
}

#[test]
fn universe_contract() {
    let work = Work::new();
    let uni = Uni::build(&work);
    let app = uni.app.clone();
    let meta = work.patch("codec", &uni.fix, &[(&uni.lib, &[("encode", "encode_new"), ("decode", "decode_new")])]);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask(&format!("contract {THREADS}")), format!("contract {THREADS}"));
    let old = "o".repeat(THREADS);
    let new = "n".repeat(THREADS);
    assert_eq!(app.ask("csync"), format!("last={old}"));

    let start = Instant::now();
    let mut last_iters = 0;
    for cycle in 0..CYCLES {
        apply(pid, &meta).assert_ok("pulp-trigger");
        if cycle % 20 == 0 {
            assert_eq!(app.ask("csync"), format!("last={new}"), "cycle {cycle}: after apply");
        }
        revert(pid, &meta).assert_ok("pulp-trigger --revert");
        if cycle % 20 == 0 {
            assert_eq!(app.ask("csync"), format!("last={old}"), "cycle {cycle}: after revert");
            let (iters, _, _, bad) = stats(&mut app);
            assert_eq!(bad, 0, "cycle {cycle}: a pair mixed the versions: {}", app.ask("cbad"));
            assert!(iters > last_iters, "cycle {cycle}: the workers stopped");
            last_iters = iters;
        }
    }
    let took = start.elapsed();
    let (iters, o, n, bad) = stats(&mut app);
    println!("{CYCLES} apply/revert cycles in {took:?}; {iters} roundtrips: {o} old, {n} new, {bad} mixed");
    assert_eq!(bad, 0, "a pair decoded with one version what the other encoded: {}", app.ask("cbad"));
    assert!(o > 0 && n > 0, "both versions ran: old={o} new={n}");
    app.assert_alive();
}
