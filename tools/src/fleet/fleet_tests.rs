//! Unit tests of `fleet`: exit statuses combined, the summary line, the pool.

use super::*;

fn result(kind: Kind) -> ProcessResult {
    ProcessResult::done(1, "x".into(), kind, String::new(), None)
}

#[test]
fn exit_statuses_combine_most_pressing_first() {
    let mut s = Summary::default();
    assert_eq!(s.exit_status(), 1, "nothing selected is an error");
    s.allow_none = true;
    assert_eq!(s.exit_status(), 0, "unless allowed");
    s.allow_none = false;
    assert_eq!(s.to_text("p"), "p: no process selected");
    for k in [Kind::Applied, Kind::AlreadyApplied, Kind::NotLivePatchable] {
        s.add(&result(k));
    }
    assert_eq!(s.exit_status(), 0);
    s.add(&result(Kind::Exited));
    assert_eq!(s.exit_status(), 3);
    s.add(&result(Kind::RolledBack));
    assert_eq!(s.exit_status(), 1);
    s.add(&result(Kind::LeftRunning));
    assert_eq!(s.exit_status(), 2);
    s.interrupted = Some(libc::SIGINT);
    assert_eq!(s.exit_status(), 130);
}

#[test]
fn the_summary_names_counts_and_reasons() {
    let mut s = Summary::default();
    for _ in 0..3 {
        s.add(&result(Kind::Applied));
    }
    let mut refused = result(Kind::Refused);
    refused.reason = Some(("not permitted", "not_permitted"));
    s.add(&refused);
    s.add(&result(Kind::LeftRunning));
    s.skip(Skipped {
        pid: 9,
        name: "a".into(),
        why: "mapping another build of libx.so".into(),
        key: "",
        detail: "".into(),
    });
    assert_eq!(
        s.to_text("patch 0123"),
        "patch 0123: applied to 3, refused 1 (not permitted), left running 1, skipped 1: 1 mapping another build of libx.so"
    );
    assert!(s.changed());
}

#[test]
fn the_pool_runs_everything_once_and_stops_when_asked() {
    let items: Vec<u32> = (0..100).collect();
    let mut seen = Vec::new();
    let left = pool(&items, 4, |&i| i * 2, |r| seen.push(r), |_| {});
    seen.sort_unstable();
    assert_eq!(left, 0);
    assert_eq!(seen, (0..100).map(|i| i * 2).collect::<Vec<_>>());
    let mut got = 0;
    let left = pool(
        &items,
        2,
        |_| std::thread::sleep(Duration::from_millis(20)),
        |_| got += 1,
        |stop| stop.store(true, Ordering::Relaxed),
    );
    assert!(left > 0 && got + left == 100, "left {left}, got {got}");
}
