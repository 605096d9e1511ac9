//! Contract point: `fork()` in a multithreaded program: the child can allocate. Several threads
//! allocate and free without pause while the main thread forks; a lock held by one of them at
//! the fork would stay locked in the child, so the child would hang (caught by a timeout).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Forks performed.
pub const FORKS: usize = 20;
/// Busy allocating threads while forking.
pub const BUSY_THREADS: usize = 4;
/// A child that has not exited after this long is considered deadlocked.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

/// What the child does: allocate Vec, String, Box, a large block and enough small blocks to need
/// fresh memory, check them, and `_exit` with 0 on success.
fn child_body() -> i32 {
    let work = std::panic::catch_unwind(|| {
        let strings: Vec<String> = (0..20_000).map(|i| format!("child-{i}")).collect();
        let boxed = Box::new([7u8; 1000]);
        let big = vec![3u8; 3 << 20];
        let total: usize = strings.iter().map(String::len).sum();
        let expected: usize = (0..20_000).map(|i: usize| 6 + i.to_string().len()).sum();
        total == expected && boxed.iter().all(|&b| b == 7) && big.iter().all(|&b| b == 3)
    });
    match work {
        Ok(true) => 0,
        Ok(false) => 2,
        Err(_) => 3,
    }
}

/// Forks [`FORKS`] times while [`BUSY_THREADS`] threads allocate; each child must exit 0 within
/// [`CHILD_TIMEOUT`].
pub fn check_fork_with_busy_threads() {
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..BUSY_THREADS)
        .map(|t| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut n = 0usize;
                let mut keep: Vec<Vec<u8>> = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    // Mostly small blocks; every 64th a large one (the large-block path's lock).
                    let size = if n % 64 == 63 {
                        2 << 20
                    } else {
                        [8, 64, 500, 5000, 70_000][(n + t) % 5]
                    };
                    keep.push(vec![n as u8; size]);
                    if keep.len() > 64 {
                        keep.swap_remove(n % 64);
                    }
                    let s = format!("{t}:{n}");
                    black_box(s);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut failures = Vec::new();
    for i in 0..FORKS {
        std::thread::sleep(Duration::from_millis(3 + (i as u64 % 5)));
        // SAFETY: fork has no memory-safety preconditions; the child only runs child_body (which
        // allocates, the point of the test) and then _exit, never returning into the harness.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_body();
            // SAFETY: _exit ends the child at once, running no destructors or atexit handlers.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        if let Err(e) = wait_with_timeout(pid, CHILD_TIMEOUT) {
            failures.push(format!("fork {i}: {e}"));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let ops: usize = busy
        .into_iter()
        .map(|h| h.join().expect("busy thread"))
        .sum();
    println!("fork: {FORKS} forks while {BUSY_THREADS} threads did {ops} allocations");
    assert!(
        failures.is_empty(),
        "contract violated: fork() in a multithreaded program: the child can allocate: {failures:?}"
    );
}

/// Waits for `pid`; kills it and returns an error if it has not exited within `timeout` or exits
/// with a non-zero status.
pub fn wait_with_timeout(pid: libc::pid_t, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: waiting for our own child with a valid out-pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
                return Ok(());
            }
            return Err(format!("child exited with status {status:#x}"));
        }
        if r < 0 {
            return Err("waitpid failed".into());
        }
        if start.elapsed() > timeout {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!(
                "child still running after {timeout:?} (deadlocked?), killed"
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The timeout path works: a child that never exits (as a deadlocked one would not) is
    /// reported and killed, and a child exiting non-zero is reported.
    #[test]
    fn wait_with_timeout_reports_hung_and_failing_children() {
        // SAFETY: the child only sleeps or exits, through async-signal-safe calls.
        let hung = unsafe { libc::fork() };
        if hung == 0 {
            loop {
                // SAFETY: pause is async-signal-safe; the parent kills this child.
                unsafe { libc::pause() };
            }
        }
        let err = wait_with_timeout(hung, Duration::from_millis(200))
            .expect_err("a hung child must fail");
        assert!(err.contains("killed"), "{err}");

        // SAFETY: as above.
        let failing = unsafe { libc::fork() };
        if failing == 0 {
            // SAFETY: ends the child at once.
            unsafe { libc::_exit(5) };
        }
        let err =
            wait_with_timeout(failing, Duration::from_secs(10)).expect_err("exit 5 must fail");
        assert!(err.contains("status"), "{err}");
    }
}
