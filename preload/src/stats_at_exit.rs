//! The allocator's counters printed at exit (like mimalloc's `MIMALLOC_SHOW_STATS`): when the
//! environment variable [`STATS_ENV`] (`ALLOCATORS_STATS`) is set to anything but `0` or the
//! empty string, one line goes to standard error as the process exits:
//!
//! ```text
//! allocators: sizeclass: live_bytes=0 peak_live_bytes=41943040 mapped_bytes=8388608 peak_mapped_bytes=50331648 allocations=120 frees=120
//! ```
//!
//! The figures are [`allocators::Stats`] (requested bytes live and at their peak, bytes mapped
//! from the kernel now and at their peak, allocations and frees). Running threads fold their
//! counts lazily, so the live figures are exact only for threads that have exited. `free` does
//! not know the request, so a C block is counted out at its usable size after being counted in
//! at the size asked for: live bytes drift low by the size classes' rounding (2.4% for blocks of
//! 1,000 bytes; more in hardened builds, whose blocks carry a canary).

use std::io::Write;
use std::sync::OnceLock;

use allocators::Stats;

/// The environment variable that asks for the line.
pub const STATS_ENV: &str = "ALLOCATORS_STATS";

/// The library's allocator: its name and how to read its counters.
struct Source {
    name: &'static str,
    stats: fn() -> Stats,
}

static SOURCE: OnceLock<Source> = OnceLock::new();

/// The line printed for allocator `name` with counters `s` (without the newline).
pub fn line(name: &str, s: &Stats) -> String {
    format!(
        "allocators: {name}: live_bytes={} peak_live_bytes={} mapped_bytes={} \
         peak_mapped_bytes={} allocations={} frees={}",
        s.live_bytes,
        s.peak_live_bytes,
        s.mapped_bytes,
        s.peak_mapped_bytes,
        s.allocations,
        s.frees
    )
}

extern "C" fn at_exit() {
    if let Some(src) = SOURCE.get() {
        let text = line(src.name, &(src.stats)());
        // A closed standard error is not the program's failure: the line is dropped.
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

/// Whether [`STATS_ENV`] asks for the line.
fn asked() -> bool {
    std::env::var_os(STATS_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Arranges for the line of allocator `name` (counters read by `stats`) to be printed at exit
/// when [`STATS_ENV`] asks for it. Called once by each preload library's constructor.
pub fn init(name: &'static str, stats: fn() -> Stats) {
    if !asked() || SOURCE.set(Source { name, stats }).is_err() {
        return;
    }
    // SAFETY: `at_exit` is a plain function that may run at any point of `exit()`; it reads the
    // allocator's counters and writes one line.
    unsafe { libc::atexit(at_exit) };
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_line_names_every_counter() {
        let s = allocators::Stats {
            live_bytes: 1,
            peak_live_bytes: 2,
            mapped_bytes: 3,
            peak_mapped_bytes: 4,
            allocations: 5,
            frees: 6,
        };
        assert_eq!(
            super::line("slab", &s),
            "allocators: slab: live_bytes=1 peak_live_bytes=2 mapped_bytes=3 \
             peak_mapped_bytes=4 allocations=5 frees=6"
        );
    }
}
