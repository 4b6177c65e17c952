//! Issue 7 §2, EINTR: no blocking call may return EINTR to the program because of the
//! tool. One thread of the application is blocked in each of epoll_wait, poll, select,
//! accept, futex, nanosleep, read and wait4 (each counts its EINTR returns) through 20
//! apply/revert cycles of a transition patch, during which the trigger stops threads to
//! borrow one and to sample the others. Afterwards no call saw EINTR, and each still
//! returns when its event comes.

use std::time::{Duration, Instant};

use libpulp_rs_tests::{apply, revert, wait_in_syscall, App, CSpec, Mix, Work};

/// Each blocking call and the system calls its thread waits in.
const CALLS: &[(&str, &[u64])] = &[
    ("epoll_wait", &[232, 281, 441]),
    ("poll", &[7, 271]),
    ("select", &[23, 270]),
    ("accept", &[43, 288]),
    ("futex", &[202]),
    ("nanosleep", &[35, 230]),
    ("read", &[0]),
    ("wait4", &[61, 247]),
];

/// `NAME=EINTR/RETURNS ...` -> (name, eintr, returns); an error other than EINTR panics.
fn counts(app: &mut App) -> Vec<(String, u64, u64)> {
    let line = app.ask("counts");
    line.split_whitespace()
        .map(|kv| {
            let (name, v) = kv.split_once('=').unwrap_or_else(|| panic!("{line}"));
            assert!(!v.starts_with('!'), "{name} failed with errno {}: {line}", &v[1..]);
            let (e, r) = v.split_once('/').unwrap_or_else(|| panic!("{line}"));
            (name.to_string(), e.parse().unwrap(), r.parse().unwrap())
        })
        .collect()
}

#[test]
fn no_eintr_from_twenty_cycles() {
    let work = Work::new();
    let mix = Mix::build(&work, 0);
    let meta = mix.patch(&work, "mix", &[]);
    let exe = work.executable("eintr_app", &CSpec::plain(&["hostile_eintr_app.c"]).link("mix").threads());
    let mut app = App::start(&exe);
    let pid = app.pid();
    assert_eq!(app.ask("probe"), "g=1");

    let tids = app.ask("tids");
    for kv in tids.split_whitespace() {
        let (name, tid) = kv.split_once('=').unwrap();
        let nrs = CALLS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{tids}")).1;
        wait_in_syscall(pid, tid.parse().unwrap(), nrs);
    }
    let before = counts(&mut app);

    for cycle in 0..20 {
        apply(pid, &meta).assert_ok(&format!("apply, cycle {cycle}"));
        revert(pid, &meta).assert_ok(&format!("revert, cycle {cycle}"));
    }
    assert_eq!(app.ask("probe"), "g=1");

    assert_eq!(app.ask("fire"), "fired");
    let start = Instant::now();
    let after = loop {
        let now = counts(&mut app);
        let all_returned = now.iter().zip(&before).all(|(n, b)| n.2 > b.2);
        if all_returned || start.elapsed() > Duration::from_secs(5) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("EINTR/returns after 20 cycles and one event each: {after:?}");
    let interrupted: Vec<String> =
        after.iter().filter(|(_, e, _)| *e > 0).map(|(n, e, _)| format!("{n}: {e} EINTR")).collect();
    let silent: Vec<&str> = after.iter().zip(&before).filter(|(n, b)| n.2 <= b.2).map(|(n, _)| n.0.as_str()).collect();
    assert!(interrupted.is_empty(), "the tool made blocking calls return EINTR: {interrupted:?}");
    assert!(silent.is_empty(), "these calls did not return for their event: {silent:?}");
    app.assert_alive();
}
