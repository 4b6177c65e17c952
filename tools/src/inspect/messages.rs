//! `pulp messages -p PID`: the runtime's own log of what it did (patches loaded, applied,
//! refused and why, transitions), read from its ring in memory without stopping any
//! thread (layout: `pulp_meta::abi::MessageRing`).

use crate::error::{Result, TriggerError};
use crate::inject::process::Process;
use crate::inject::runtime::runtime_info;
use crate::text::printable;
use pulp_meta::abi::MessageRing;

/// One line of the log.
#[derive(Debug, PartialEq, Eq)]
pub struct Message {
    /// Unix time (seconds) the runtime wrote it; `None` for a line without one.
    pub time: Option<u64>,
    pub text: String,
}

/// The lines still in the ring of process `pid`, oldest first.
pub fn read(pid: i32) -> Result<Vec<Message>> {
    let proc = Process::open(pid)?;
    let objects = proc.objects()?;
    let info = runtime_info(&proc, &objects)?;
    let bad = |what: &str| TriggerError::Target { pid, what: format!("unreadable runtime log: {what}") };
    if info.messages == 0 || info.messages_len < MessageRing::HEADER as u64 || info.messages_len > 16 << 20 {
        return Err(bad("no ring"));
    }
    // The runtime makes the counter odd while it writes a line.
    let area = proc
        .read_consistent(info.messages, || proc.read(info.messages, info.messages_len as usize))?
        .ok_or_else(|| bad("it kept changing"))?;
    // The runtime's first line is there from build time, without a time: it loaded when
    // the process started.
    let started = process_start(pid);
    Ok(MessageRing::decode(&area)
        .iter()
        .map(|l| parse(l))
        .map(|m| match m.time {
            None if m.text.starts_with("runtime loaded") => Message { time: started, ..m },
            _ => m,
        })
        .collect())
}

/// When process `pid` started, in Unix seconds (boot time plus its start in clock ticks).
fn process_start(pid: i32) -> Option<u64> {
    let ticks = crate::inject::process::start_time(pid)?;
    let stat = crate::inject::process::read_proc_file("/proc/stat").ok()?;
    let boot: u64 = stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(boot + ticks / hz)
}

fn parse(line: &str) -> Message {
    match line.split_once(' ') {
        Some((t, rest)) if t.bytes().all(|b| b.is_ascii_digit()) && !t.is_empty() => {
            Message { time: t.parse().ok(), text: rest.to_string() }
        }
        _ => Message { time: None, text: line.to_string() },
    }
}

/// `2026-11-30 00:12:03 UTC text`, escaped.
pub fn to_text(m: &Message) -> String {
    match m.time {
        Some(t) => format!("{} {}", utc(t), printable(&m.text)),
        None => printable(&m.text).into_owned(),
    }
}

/// Unix time as `YYYY-MM-DD HH:MM:SS UTC` (proleptic Gregorian calendar).
pub fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86400, secs % 86400);
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_798_675_323), "2026-12-31 00:02:03 UTC");
    }

    #[test]
    fn lines_keep_their_time_and_are_escaped() {
        let m = parse("1700000000 patch 0123: loaded\x1b[2J");
        assert_eq!(m.time, Some(1_700_000_000));
        assert_eq!(to_text(&m), "2023-11-14 22:13:20 UTC patch 0123: loaded\\x1b[2J");
        assert_eq!(parse("cut line").time, None);
    }
}
