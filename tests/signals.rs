//! Signals that arrive while pulp-trigger borrows a thread are delivered afterwards, none
//! lost: queued real-time signals (which do not coalesce) are sent to a single-threaded
//! application, whose only thread the trigger must borrow, during 20 apply/revert cycles;
//! its handler counts every one of them, with their values.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use libpulp_rs_tests::{apply, revert, App, CSpec, Calc, Work};

fn queue_signal(pid: u32, value: i32) {
    let v = libc::sigval { sival_ptr: value as usize as *mut libc::c_void };
    // SAFETY: sigqueue takes plain values; the sigval is passed by value.
    let rc = unsafe { libc::sigqueue(pid as i32, libc::SIGRTMIN(), v) };
    assert_eq!(rc, 0, "sigqueue: {}", std::io::Error::last_os_error());
}

#[test]
fn signals_during_apply_are_delivered_afterwards() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = work.executable("sig_app", &CSpec::plain(&["sig_app.c"]).link("calc"));
    let meta = calc.patch(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("count"), "count=0 sum=0");

    let done = Arc::new(AtomicBool::new(false));
    let sender = {
        let done = done.clone();
        thread::spawn(move || {
            let mut sent = 0i64;
            let mut total = 0i64;
            while !done.load(Ordering::Relaxed) {
                sent += 1;
                total += sent;
                queue_signal(pid, sent as i32);
                thread::sleep(Duration::from_micros(50));
            }
            (sent, total)
        })
    };
    for cycle in 0..20 {
        apply(pid, &meta).assert_ok(&format!("apply, cycle {cycle}"));
        assert_eq!(app.ask("call 1"), "calc(1)=1002");
        revert(pid, &meta).assert_ok(&format!("revert, cycle {cycle}"));
        assert_eq!(app.ask("call 1"), "calc(1)=2");
    }
    done.store(true, Ordering::Relaxed);
    let (sent, total) = sender.join().unwrap();
    assert!(sent > 20, "the sender ran alongside the patching ({sent} signals)");
    // Delivery is asynchronous: ask until the last one is counted (each ask is a round
    // trip through the application, which handles pending signals first).
    let want = format!("count={sent} sum={total}");
    let mut got = String::new();
    for _ in 0..50 {
        got = app.ask("count");
        if got == want {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got, want, "every queued signal reached the handler exactly once");
    app.assert_alive();
}
