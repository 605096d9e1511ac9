//! Whether a run counts: it must not time out, its preload library must have loaded, it must exit
//! with status 0, and its standard output must equal system malloc's byte for byte. Anything
//! else is a failure with the reason (never hidden, never a number in a table).

use super::measure::{Exit, Measured};
use crate::cell::Status;

/// How a timed-out run's reason starts (such a run is not repeated).
pub const TIMED_OUT: &str = "timed out";
/// The note on a run with no system-malloc output to compare with.
pub const NOT_CHECKED: &str = "output not checked (system malloc's run failed)";

/// How the reason of a run killed for its memory starts (such a run is not repeated either).
pub const OVER_MEMORY: &str = "resident set above";

/// The common name of a few signals.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL (out of memory or the timeout)",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

fn with_stderr(msg: String, stderr: &str) -> String {
    let s = stderr.trim();
    if s.is_empty() {
        msg
    } else {
        let lines: Vec<&str> = s.lines().rev().take(3).collect();
        let lines: Vec<&str> = lines.into_iter().rev().collect();
        format!("{msg}: {}", lines.join(" / "))
    }
}

/// Where `got` first differs from `want`, in words; `None` if they are equal.
pub fn first_difference(want: &[u8], got: &[u8]) -> Option<String> {
    if want == got {
        return None;
    }
    let at = want
        .iter()
        .zip(got)
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(got.len()));
    let line = want[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let show = |b: &[u8]| {
        let end = b[at..]
            .iter()
            .position(|&c| c == b'\n')
            .map_or(b.len(), |p| at + p)
            .min(at + 40);
        format!("{:?}", String::from_utf8_lossy(&b[at..end]))
    };
    Some(format!(
        "{} bytes instead of {}, first difference at byte {at} (line {line}): {} instead of {}",
        got.len(),
        want.len(),
        show(got),
        show(want)
    ))
}

/// The status of a run and why, given system malloc's output (`None` if there is none yet, as
/// for system's own first run, or none at all).
pub fn judge(m: &Measured, reference: Option<&[u8]>) -> (Status, String) {
    if m.over_memory {
        return (
            Status::Failed,
            format!(
                "{OVER_MEMORY} the limit of {} MiB (killed; memory never reused?)",
                super::measure::rss_limit() >> 20
            ),
        );
    }
    if m.timed_out {
        return (
            Status::Failed,
            format!("{TIMED_OUT} after {:.0} s (killed)", m.wall_ms / 1e3),
        );
    }
    if m.stderr_tail.contains("cannot be preloaded") {
        return (
            Status::Failed,
            with_stderr("the preload library did not load".into(), &m.stderr_tail),
        );
    }
    match m.exit {
        Exit::Signal(s) => {
            return (
                Status::Failed,
                with_stderr(
                    format!("killed by signal {s} ({})", signal_name(s)),
                    &m.stderr_tail,
                ),
            )
        }
        Exit::Code(c) if c != 0 => {
            return (
                Status::Failed,
                with_stderr(format!("exit status {c}"), &m.stderr_tail),
            )
        }
        Exit::Code(_) => {}
    }
    match reference {
        None => (Status::Ok, NOT_CHECKED.into()),
        Some(want) => match first_difference(want, &m.stdout) {
            None => (Status::Ok, String::new()),
            Some(d) => (
                Status::Failed,
                format!("wrong output (differs from system malloc's): {d}"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(exit: Exit, stdout: &[u8], stderr: &str) -> Measured {
        Measured {
            wall_ms: 1500.0,
            peak_rss_bytes: 1 << 20,
            exit,
            timed_out: false,
            over_memory: false,
            stdout: stdout.to_vec(),
            stderr_tail: stderr.into(),
        }
    }

    #[test]
    fn equal_output_is_ok() {
        let m = measured(Exit::Code(0), b"a\nb\n", "");
        assert_eq!(judge(&m, Some(b"a\nb\n")), (Status::Ok, String::new()));
    }

    #[test]
    fn a_wrong_output_is_a_failure_saying_where() {
        let m = measured(Exit::Code(0), b"a\nX\n", "");
        let (status, why) = judge(&m, Some(b"a\nb\n"));
        assert_eq!(status, Status::Failed);
        assert!(why.starts_with("wrong output"), "{why}");
        assert!(why.contains("byte 2 (line 2)"), "{why}");
        let short = measured(Exit::Code(0), b"a\n", "");
        let (status, why) = judge(&short, Some(b"a\nb\n"));
        assert_eq!(status, Status::Failed);
        assert!(why.contains("2 bytes instead of 4"), "{why}");
    }

    #[test]
    fn crashes_exits_timeouts_and_unloaded_libraries_fail() {
        let (s, why) = judge(
            &measured(Exit::Signal(libc::SIGSEGV), b"", "boom"),
            Some(b""),
        );
        assert_eq!(s, Status::Failed);
        assert!(why.contains("SIGSEGV") && why.contains("boom"), "{why}");
        let (s, why) = judge(&measured(Exit::Code(1), b"", ""), Some(b""));
        assert_eq!((s, why.as_str()), (Status::Failed, "exit status 1"));
        let mut t = measured(Exit::Signal(libc::SIGKILL), b"", "");
        t.timed_out = true;
        let (s, why) = judge(&t, Some(b""));
        assert_eq!(s, Status::Failed);
        assert!(why.starts_with(TIMED_OUT));
        let mut big = measured(Exit::Signal(libc::SIGKILL), b"", "");
        big.over_memory = true;
        let (s, why) = judge(&big, Some(b""));
        assert_eq!(s, Status::Failed);
        assert!(why.starts_with(OVER_MEMORY), "{why}");
        let ld = "ERROR: ld.so: object 'x.so' from LD_PRELOAD cannot be preloaded: ignored.";
        let (s, why) = judge(&measured(Exit::Code(0), b"", ld), Some(b""));
        assert_eq!(s, Status::Failed);
        assert!(why.contains("did not load"));
    }

    #[test]
    fn without_a_reference_the_output_is_not_checked() {
        let m = measured(Exit::Code(0), b"x", "");
        assert_eq!(judge(&m, None), (Status::Ok, NOT_CHECKED.to_string()));
    }
}
