//! Heap profiles of C programs under `LD_PRELOAD`: when the environment variable
//! [`PROFILE_ENV`] (`ALLOCATORS_PROFILE`) names a file, the profile is written there at exit,
//! and again each time the process receives `SIGUSR2` (for long-running servers). A `%p` in the
//! name is replaced by the process id (so that forked children do not overwrite the parent's).
//!
//! The signal handler only sets a flag; a small thread, started only when the variable is set,
//! notices it within [`POLL_MS`] milliseconds and writes the profile (writing allocates, which a
//! signal handler must not do).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the file to write (unset: nothing is written).
pub const PROFILE_ENV: &str = "ALLOCATORS_PROFILE";
/// How often the writer thread looks for a `SIGUSR2`.
pub const POLL_MS: u64 = 100;

static PATH: OnceLock<String> = OnceLock::new();
static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Serialises writers (the signal thread and the exit handler may meet).
static WRITING: Mutex<()> = Mutex::new(());

/// The file to write, with `%p` replaced by the current process id.
fn target() -> Option<String> {
    let p = PATH.get()?;
    Some(p.replace("%p", &std::process::id().to_string()))
}

/// Writes the profile to the configured file, reporting a failure on standard error.
pub fn write_now() {
    let _quiet = allocators::profile::suspend();
    let _one = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = target() {
        if let Err(e) = crate::write_pprof(&path) {
            eprintln!("allocators: cannot write the heap profile to {path}: {e}");
        }
    }
}

extern "C" fn at_exit() {
    write_now();
}

extern "C" fn on_signal(_sig: libc::c_int) {
    REQUESTED.store(true, Ordering::Relaxed);
}

/// Reads [`PROFILE_ENV`]; if it names a file, arranges for the profile to be written there at
/// exit and on `SIGUSR2`. Called once by each preload library's constructor.
pub fn init() {
    let Some(path) = std::env::var_os(PROFILE_ENV) else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    if path.is_empty() || PATH.set(path).is_err() {
        return;
    }
    // SAFETY: `at_exit` is a plain function that may run at any point of `exit()`; it only
    // writes a file.
    unsafe { libc::atexit(at_exit) };
    // SAFETY: a zeroed sigaction with a handler that only stores to an atomic (async-signal
    // safe); SA_RESTART so that interrupted system calls of the program resume.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
    let _ = std::thread::Builder::new()
        .name("heap-profile".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_millis(POLL_MS));
            if REQUESTED.swap(false, Ordering::Relaxed) {
                write_now();
            }
        });
}
