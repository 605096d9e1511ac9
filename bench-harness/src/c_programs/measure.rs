//! One run of a program under one allocator: `LD_PRELOAD` set (or removed for system malloc),
//! standard output and error into files, the wall time from spawn to exit, and the peak RSS from
//! `wait4`'s `ru_maxrss` (the child's own, not the harness's). A watchdog kills a run that
//! outlives its timeout. The exit is observed with `waitid(WNOWAIT)` first, so the child is
//! reaped only after the watchdog stood down: it can never kill a recycled process id.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::libraries::PreloadAllocator;
use super::programs::Prepared;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// What one run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Spawn to exit, ms.
    pub wall_ms: f64,
    /// The child's peak RSS, bytes.
    pub peak_rss_bytes: u64,
    /// How it ended.
    pub exit: Exit,
    /// Whether the watchdog killed it.
    pub timed_out: bool,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// The end of its standard error.
    pub stderr_tail: String,
}

/// Keeps the last `max` bytes of `s` (on a character boundary).
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Blocks until the child `pid` has exited, without reaping it.
fn wait_exited(pid: libc::pid_t) -> Result<(), String> {
    loop {
        // SAFETY: an all-zero siginfo_t is a valid value of this plain C struct.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a valid, writable siginfo_t; `pid` is our unreaped child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("waitid: {e}"));
        }
    }
}

/// Reaps the exited child `pid`: its wait status and resource usage.
fn reap(pid: libc::pid_t) -> Result<(libc::c_int, libc::rusage), String> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid and writable; `pid` is our exited, unreaped child.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if rc >= 0 || e.kind() != std::io::ErrorKind::Interrupted {
            return Err(format!("wait4: {e}"));
        }
    }
}

/// Runs `prog` under `alloc`, writing its output into `work_dir`; `Err` if it could not be
/// started or waited for. A crash, a non-zero exit or a timeout is a [`Measured`] to judge.
pub fn run(
    prog: &Prepared,
    alloc: &PreloadAllocator,
    work_dir: &Path,
    timeout: Duration,
) -> Result<Measured, String> {
    let out_path = work_dir.join(format!("{}.stdout", prog.name));
    let err_path = work_dir.join(format!("{}.stderr", prog.name));
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let stdin = match &prog.stdin {
        Some(p) => {
            Stdio::from(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&prog.exe);
    cmd.args(&prog.args)
        .current_dir(work_dir)
        .stdin(stdin)
        .stdout(file(&out_path)?)
        .stderr(file(&err_path)?);
    for (k, v) in &prog.env {
        cmd.env(k, v);
    }
    match &alloc.library {
        Some(lib) => cmd.env("LD_PRELOAD", lib),
        None => cmd.env_remove("LD_PRELOAD"),
    };

    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", prog.exe.display()))?;
    let pid = child.id() as libc::pid_t;
    // The watchdog: kills the child at the deadline unless told it has exited.
    let exited = Arc::new((Mutex::new(false), Condvar::new()));
    let watchdog = {
        let exited = Arc::clone(&exited);
        std::thread::spawn(move || {
            let (lock, cv) = &*exited;
            let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = start + timeout;
            while !*done {
                let now = Instant::now();
                if now >= deadline {
                    // SAFETY: the child is not reaped while `done` is false (the main thread
                    // reaps only after setting it under this lock), so `pid` is still ours.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return true;
                }
                done = cv
                    .wait_timeout(done, deadline - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            false
        })
    };
    let waited = wait_exited(pid);
    let wall = start.elapsed();
    {
        let (lock, cv) = &*exited;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    let timed_out = watchdog.join().unwrap_or(false);
    waited?;
    let (status, usage) = reap(pid)?;
    drop(child);

    let exit = if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    };
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let stderr =
        String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    Ok(Measured {
        // To the microsecond: finer digits are noise.
        wall_ms: (wall.as_secs_f64() * 1e6).round() / 1e3,
        // ru_maxrss is in KiB on Linux.
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
        exit,
        timed_out,
        stdout,
        stderr_tail: tail(&stderr, 600).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn shell(script: &str) -> Prepared {
        Prepared {
            name: "sh".into(),
            exe: "/bin/sh".into(),
            args: vec![OsString::from("-c"), OsString::from(script)],
            env: vec![("GREETING".into(), "hi".into())],
            stdin: None,
            display: String::new(),
        }
    }

    #[test]
    fn output_status_and_rss_of_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let system = PreloadAllocator::system();
        let m = run(
            &shell("echo $GREETING; echo oops >&2; exit 3"),
            &system,
            dir.path(),
            Duration::from_secs(20),
        )
        .unwrap();
        assert_eq!(m.stdout, b"hi\n");
        assert_eq!(m.stderr_tail, "oops\n");
        assert_eq!(m.exit, Exit::Code(3));
        assert!(!m.timed_out && m.peak_rss_bytes > 0 && m.wall_ms > 0.0);
    }

    #[test]
    fn the_watchdog_kills_a_run_past_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let m = run(
            &shell("exec sleep 30"),
            &PreloadAllocator::system(),
            dir.path(),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(m.timed_out);
        assert_eq!(m.exit, Exit::Signal(libc::SIGKILL));
        assert!(m.wall_ms < 20_000.0);
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 2), "ef");
        assert_eq!(tail("ab", 10), "ab");
        assert_eq!(tail("aé", 1), "");
    }
}
