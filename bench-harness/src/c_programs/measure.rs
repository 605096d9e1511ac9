//! One run of a program under one allocator. The harness does not start the program itself:
//! Linux records the spawning process's resident set in the child's `ru_maxrss` when the child
//! calls `exec` (the parent's whole peak after a `vfork`/`posix_spawn`, its current RSS after a
//! `fork`), so a harness holding a 50 MB sort output would floor every program's peak RSS at
//! 100 MB (seen). Instead it re-executes itself as a small *meter* (`bench-harness meter`, in
//! a fresh process of a few MiB), which starts the program with `LD_PRELOAD` set (or removed
//! for system malloc), its standard output and error into files, and reports as JSON the wall
//! time from spawn to exit and the program's peak RSS from `wait4`'s `ru_maxrss`. A watchdog
//! in the meter kills a run that outlives its timeout; the exit is observed with
//! `waitid(WNOWAIT)` first, so the child is reaped only after the watchdog stood down and the
//! watchdog can never kill a recycled process id. The watchdog also kills a run whose resident
//! set (the program's and its descendants', such as redis-server under its driver) passes
//! [`rss_limit`]: an allocator that never reuses memory (Bump) would otherwise take the
//! machine's memory at full scale.
//!
//! A program that [measures itself](Prepared::measures_itself) (the redis driver: the time
//! that counts is the benchmark's, the memory the server's) gets the library in
//! [`PRELOAD_VAR`] rather than `LD_PRELOAD`, and writes a [`SelfMeasured`] as JSON to the file
//! named in [`MEASURE_VAR`], which replaces the meter's wall time and peak RSS.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::libraries::PreloadAllocator;
use super::programs::Prepared;

/// The environment variable holding the library a self-measuring program must preload into
/// what it measures (empty: none, system malloc).
pub const PRELOAD_VAR: &str = "BENCH_HARNESS_PRELOAD";
/// The environment variable naming the file a self-measuring program writes its
/// [`SelfMeasured`] to.
pub const MEASURE_VAR: &str = "BENCH_HARNESS_MEASURE";

/// What a self-measuring program reports of what it measured.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfMeasured {
    /// The measured part's wall time, ms.
    pub wall_ms: f64,
    /// The measured process's peak RSS, bytes.
    pub peak_rss_bytes: u64,
}

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Exit {
    /// Exited with this status code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// What the meter runs: one program with its environment and files.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeterSpec {
    /// The executable.
    pub exe: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The library to put in `LD_PRELOAD` (`None`: none, system malloc).
    pub preload: Option<PathBuf>,
    /// Standard input (otherwise /dev/null).
    pub stdin: Option<PathBuf>,
    /// Where standard output goes.
    pub stdout: PathBuf,
    /// Where standard error goes.
    pub stderr: PathBuf,
    /// The working directory.
    pub dir: PathBuf,
    /// Kill the program after this long, ms.
    pub timeout_ms: u64,
    /// Kill the program when its resident set (with its descendants') passes this many bytes
    /// (0: no limit).
    #[serde(default)]
    pub rss_limit_bytes: u64,
}

/// What the meter reports.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeterResult {
    /// Spawn to exit, ms.
    pub wall_ms: f64,
    /// The program's peak RSS, bytes.
    pub peak_rss_bytes: u64,
    /// How it ended.
    pub exit: Exit,
    /// Whether the watchdog killed it.
    pub timed_out: bool,
    /// Whether the watchdog killed it for passing the resident-set limit.
    #[serde(default)]
    pub over_memory: bool,
}

/// What one run produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// Spawn to exit, ms.
    pub wall_ms: f64,
    /// The program's peak RSS, bytes.
    pub peak_rss_bytes: u64,
    /// How it ended.
    pub exit: Exit,
    /// Whether the watchdog killed it at the timeout.
    pub timed_out: bool,
    /// Whether the watchdog killed it for passing the resident-set limit.
    pub over_memory: bool,
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

/// The resident-set limit of a run: half the machine's memory, at most 4 GiB (0 if unknown).
pub fn rss_limit() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024);
    (total / 2).min(4 << 30)
}

/// The resident set of process `pid` and its descendants, bytes (what can be read of it).
fn tree_rss(pid: u32, depth: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    if depth == 0 {
        return own;
    }
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return own;
    };
    let mut sum = own;
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            sum += tree_rss(child, depth - 1);
        }
    }
    sum
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

/// The meter's side: runs `spec`'s program to its end (or the timeout) and measures it; `Err`
/// if it could not be started or waited for. A crash, a non-zero exit or a timeout is a
/// [`MeterResult`] to judge.
pub fn meter(spec: &MeterSpec) -> Result<MeterResult, String> {
    let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
    let stdin = match &spec.stdin {
        Some(p) => {
            Stdio::from(std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?)
        }
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&spec.exe);
    cmd.args(&spec.args)
        .current_dir(&spec.dir)
        .stdin(stdin)
        .stdout(file(&spec.stdout)?)
        .stderr(file(&spec.stderr)?);
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    match &spec.preload {
        Some(lib) => cmd.env("LD_PRELOAD", lib),
        None => cmd.env_remove("LD_PRELOAD"),
    };
    let timeout = Duration::from_millis(spec.timeout_ms);

    let start = Instant::now();
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.exe.display()))?;
    let pid = child.id() as libc::pid_t;
    // The watchdog: kills the child at the deadline, or when its resident set passes the
    // limit (checked every 50 ms), unless told it has exited. It answers why it killed.
    let exited = Arc::new((Mutex::new(false), Condvar::new()));
    let limit = spec.rss_limit_bytes;
    let watchdog = {
        let exited = Arc::clone(&exited);
        std::thread::spawn(move || {
            let (lock, cv) = &*exited;
            let mut done = lock.lock().unwrap_or_else(|e| e.into_inner());
            let deadline = start + timeout;
            while !*done {
                let now = Instant::now();
                let over = limit > 0 && tree_rss(pid as u32, 4) > limit;
                if now >= deadline || over {
                    // SAFETY: the child is not reaped while `done` is false (the main thread
                    // reaps only after setting it under this lock), so `pid` is still ours.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return Some(over);
                }
                let wait = (deadline - now).min(Duration::from_millis(50));
                done = cv
                    .wait_timeout(done, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            None
        })
    };
    let waited = wait_exited(pid);
    let wall = start.elapsed();
    {
        let (lock, cv) = &*exited;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
    }
    let killed = watchdog.join().unwrap_or(None);
    let (timed_out, over_memory) = (killed == Some(false), killed == Some(true));
    waited?;
    let (status, usage) = reap(pid)?;
    drop(child);
    let exit = if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    };
    Ok(MeterResult {
        // To the microsecond: finer digits are noise.
        wall_ms: (wall.as_secs_f64() * 1e6).round() / 1e3,
        // ru_maxrss is in KiB on Linux.
        peak_rss_bytes: (usage.ru_maxrss.max(0) as u64) * 1024,
        exit,
        timed_out,
        over_memory,
    })
}

/// The harness's side: runs `prog` under `alloc` through the meter (`harness meter --spec
/// JSON`), with its output files in `work_dir`, and collects what it printed.
pub fn run(
    harness: &Path,
    prog: &Prepared,
    alloc: &PreloadAllocator,
    work_dir: &Path,
    timeout: Duration,
) -> Result<Measured, String> {
    let measure_file = work_dir.join(format!("{}.measure.json", prog.name));
    let _ = std::fs::remove_file(&measure_file);
    let mut env = prog.env.clone();
    let mut preload = alloc.library.clone();
    if prog.measures_itself {
        let lib = preload
            .take()
            .map_or(String::new(), |l| l.display().to_string());
        env.push((PRELOAD_VAR.into(), lib));
        env.push((MEASURE_VAR.into(), measure_file.display().to_string()));
    }
    let spec = MeterSpec {
        exe: prog.exe.clone(),
        args: prog
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        env,
        preload,
        stdin: prog.stdin.clone(),
        stdout: work_dir.join(format!("{}.stdout", prog.name)),
        stderr: work_dir.join(format!("{}.stderr", prog.name)),
        dir: work_dir.to_path_buf(),
        timeout_ms: timeout.as_millis() as u64,
        rss_limit_bytes: rss_limit(),
    };
    let json = serde_json::to_string(&spec).map_err(|e| e.to_string())?;
    let out = Command::new(harness)
        .args(["meter", "--spec", &json])
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot start the meter {}: {e}", harness.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let result: MeterResult = match text.lines().rev().find(|l| l.starts_with('{')) {
        Some(line) => serde_json::from_str(line).map_err(|e| format!("meter said {line}: {e}"))?,
        None => {
            return Err(format!(
                "the meter failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    };
    let stdout = std::fs::read(&spec.stdout).unwrap_or_default();
    let stderr =
        String::from_utf8_lossy(&std::fs::read(&spec.stderr).unwrap_or_default()).into_owned();
    let _ = std::fs::remove_file(&spec.stdout);
    let _ = std::fs::remove_file(&spec.stderr);
    let (mut wall_ms, mut peak_rss_bytes) = (result.wall_ms, result.peak_rss_bytes);
    if prog.measures_itself {
        let clean = result.exit == Exit::Code(0) && !result.timed_out && !result.over_memory;
        match std::fs::read_to_string(&measure_file) {
            Ok(text) => {
                let m: SelfMeasured = serde_json::from_str(&text).map_err(|e| {
                    format!("{}: bad measurement {text:?}: {e}", measure_file.display())
                })?;
                (wall_ms, peak_rss_bytes) = (m.wall_ms, m.peak_rss_bytes);
            }
            // A failed run is judged on its exit; a clean one must have measured itself.
            Err(_) if !clean => {}
            Err(e) => {
                return Err(format!(
                    "{} did not report its measurement ({}: {e})",
                    prog.name,
                    measure_file.display()
                ))
            }
        }
        let _ = std::fs::remove_file(&measure_file);
    }
    Ok(Measured {
        wall_ms,
        peak_rss_bytes,
        exit: result.exit,
        timed_out: result.timed_out,
        over_memory: result.over_memory,
        stdout,
        stderr_tail: tail(&stderr, 600).to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    fn shell(script: &str, dir: &Path, timeout_ms: u64) -> MeterSpec {
        MeterSpec {
            exe: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hi".into())],
            preload: None,
            stdin: None,
            stdout: dir.join("out"),
            stderr: dir.join("err"),
            dir: dir.to_path_buf(),
            timeout_ms,
            rss_limit_bytes: 0,
        }
    }

    #[test]
    fn status_and_rss_of_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let spec = shell("echo $GREETING; echo oops >&2; exit 3", dir.path(), 20_000);
        let m = meter(&spec).unwrap();
        assert_eq!(std::fs::read(&spec.stdout).unwrap(), b"hi\n");
        assert_eq!(std::fs::read(&spec.stderr).unwrap(), b"oops\n");
        assert_eq!(m.exit, Exit::Code(3));
        assert!(!m.timed_out && m.peak_rss_bytes > 0 && m.wall_ms > 0.0);
    }

    #[test]
    fn the_watchdog_kills_a_run_past_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let m = meter(&shell("exec sleep 30", dir.path(), 200)).unwrap();
        assert!(m.timed_out);
        assert_eq!(m.exit, Exit::Signal(libc::SIGKILL));
        assert!(m.wall_ms < 20_000.0);
    }

    #[test]
    fn the_watchdog_kills_a_run_past_its_memory_limit() {
        let dir = tempfile::tempdir().unwrap();
        // A shell whose child holds 64 MiB (python3 is there wherever the preload tests run).
        let mut spec = shell(
            "python3 -c 'import time; b = bytearray(64 << 20); time.sleep(30)'",
            dir.path(),
            20_000,
        );
        spec.rss_limit_bytes = 32 << 20;
        let m = meter(&spec).unwrap();
        assert!(m.over_memory && !m.timed_out, "{m:?}");
        assert!(m.wall_ms < 20_000.0);
        assert!(rss_limit() > 0);
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 2), "ef");
        assert_eq!(tail("ab", 10), "ab");
        assert_eq!(tail("aé", 1), "");
    }
}
