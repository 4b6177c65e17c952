//! A thread blocked in read() on a pipe across apply and revert receives the bytes written
//! afterwards: no EINTR, nothing lost. The main thread is blocked in read() too, so
//! whichever thread the trigger borrows was in a system call.

use std::thread;
use std::time::Duration;

use libpulp_rs_tests::{apply, revert, App, CSpec, Calc, Work};

#[test]
fn blocked_read() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let app = work.executable("blocked_app", &CSpec::plain(&["blocked_app.c"]).link("calc").threads());
    let meta = calc.patch(&work);

    let mut app = App::start(&app);
    let pid = app.pid();
    assert_eq!(app.ask("1"), "calc(1)=2");
    thread::sleep(Duration::from_millis(100)); // both threads are back in read()

    // Half a line before the patch, the rest after it: the partial data must survive.
    app.write_raw(b"2");
    thread::sleep(Duration::from_millis(100));
    apply(pid, &meta).assert_ok("pulp-trigger");
    app.write_raw(b"1\n");
    assert_eq!(app.recv(), "calc(21)=1042");
    for i in 0..20 {
        assert_eq!(app.ask(&i.to_string()), format!("calc({i})={}", 2 * i + 1000));
    }

    thread::sleep(Duration::from_millis(100));
    revert(pid, &meta).assert_ok("pulp-trigger --revert");
    // A burst of lines in one write after the revert.
    let burst: String = (0..50).map(|i| format!("{i}\n")).collect();
    app.write_raw(burst.as_bytes());
    for i in 0..50 {
        assert_eq!(app.recv(), format!("calc({i})={}", 2 * i));
    }
    app.assert_alive();
}
