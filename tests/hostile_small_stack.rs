//! Issue 7 §2, small stacks: the only thread `pulp-trigger` can borrow has a 16 KiB
//! stack, 8 KiB of it in use (it blocks in read() at the bottom of a recursion), and the
//! main thread is busy. The apply must succeed or refuse cleanly (one line, exit 1, the
//! process unchanged); the process stays alive and answers; and once the small thread
//! has stack to spare again, later requests are served: never "the runtime is busy"
//! forever.

use std::time::Duration;

use libpulp_rs_tests::{run_limited, trigger_command, wait_in_syscall, App, CSpec, Calc, Work};

const SYS_READ: &[u64] = &[0];

#[test]
fn borrowed_thread_with_a_small_stack() {
    let work = Work::new();
    let calc = Calc::build(&work);
    let exe = work.executable("stack_app", &CSpec::plain(&["hostile_stack_app.c"]).link("calc").threads());
    let meta = calc.patch(&work);

    let mut app = App::start(&exe);
    let pid = app.pid();
    let deep = app.ask("deep");
    println!("{deep}");
    let tid: u32 = deep
        .strip_prefix("deep tid=")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected reply {deep:?}"));
    wait_in_syscall(pid, tid, SYS_READ);
    assert_eq!(app.ask("call 1"), "calc(1)=2");

    let trigger = |revert: bool| run_limited(&mut trigger_command(pid, &meta, revert), Duration::from_secs(60));
    let first = trigger(false);
    println!("first apply: {:?}", first.out);
    assert!(!first.timed_out, "the apply hung: {first:?}");
    let applied = match first.out.code {
        Some(0) => true,
        Some(1) => {
            first.out.assert_refused(&[]);
            false
        }
        _ => panic!("neither applied nor refused: {:?}", first.out),
    };
    app.assert_alive();
    assert_eq!(app.ask("call 1"), if applied { "calc(1)=1002" } else { "calc(1)=2" });

    // Give the small thread its stack back; the runtime must serve requests again.
    assert_eq!(app.ask("relieve"), format!("relieved tid={tid}"));
    wait_in_syscall(pid, tid, SYS_READ);
    // Revert then apply if the patch went in, apply then revert if it was refused.
    let order = if applied { [true, false] } else { [false, true] };
    for revert in order {
        let l = trigger(revert);
        assert!(!l.timed_out, "a later request hung: {l:?}");
        l.out.assert_ok(if revert { "a later revert" } else { "a later apply" });
        assert_eq!(app.ask("call 1"), if revert { "calc(1)=2" } else { "calc(1)=1002" });
    }
    app.assert_alive();
}
