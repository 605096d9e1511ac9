//! Contract point: thread exit hands the thread's cached memory back, so thousands of
//! short-lived threads do not grow the memory the allocator holds.

use std::hint::black_box;

use super::Probe;

/// Threads started in total; memory is compared after [`WARMUP_THREADS`] and after all.
pub const CHURN_THREADS: usize = 5_000;
/// Threads after which the baseline is taken.
pub const WARMUP_THREADS: usize = 500;
/// Threads alive at a time.
const WAVE: usize = 8;
/// Bytes each thread allocates (in blocks of a few sizes), all freed before it exits.
pub const BYTES_PER_THREAD: usize = 32 * 1024;
/// Growth allowed for an allocator that reuses memory.
pub const SLACK: usize = 16 << 20;

fn run_threads(n: usize) {
    let mut started = 0;
    while started < n {
        let wave = WAVE.min(n - started);
        let handles: Vec<_> = (0..wave)
            .map(|i| {
                let seed = started + i;
                std::thread::spawn(move || {
                    let mut total = 0;
                    let mut keep: Vec<Vec<u8>> = Vec::new();
                    let mut k = 0;
                    while total < BYTES_PER_THREAD - 4096 {
                        let size = [16, 40, 100, 300, 1000, 4000][(seed + k) % 6];
                        keep.push(vec![seed as u8; size]);
                        total += size;
                        k += 1;
                    }
                    let s: String = (0..50).map(|j| char::from(b'a' + (j % 26) as u8)).collect();
                    black_box((&keep, s));
                })
            })
            .collect();
        for h in handles {
            h.join().expect("short-lived thread panicked");
        }
        started += wave;
    }
}

/// Runs [`CHURN_THREADS`] short-lived threads and checks that the memory held after all of them
/// exceeds the memory held after the first [`WARMUP_THREADS`] by at most [`SLACK`] (or, for an
/// allocator that never reuses memory, by at most twice the bytes the threads allocated plus a
/// few chunks: far less than a 4 MiB chunk per thread).
pub fn check_thread_churn(probe: &Probe) {
    run_threads(WARMUP_THREADS);
    let before = (probe.held_bytes)();
    run_threads(CHURN_THREADS - WARMUP_THREADS);
    let after = (probe.held_bytes)();
    let threads = CHURN_THREADS - WARMUP_THREADS;
    let allowed = if probe.never_reuses {
        // std's own per-thread allocations (names, packets, TLS) are counted generously.
        threads * 2 * (BYTES_PER_THREAD + 4096) + 4 * (4 << 20)
    } else {
        SLACK
    };
    let growth = after.saturating_sub(before);
    println!(
        "{}: held {before} B after {WARMUP_THREADS} threads, {after} B after {CHURN_THREADS} (growth {growth} B, allowed {allowed} B)",
        probe.name
    );
    assert!(
        growth <= allowed,
        "contract violated: thread exit hands the thread's memory back: {} held {before} B after \
         {WARMUP_THREADS} threads and {after} B after {CHURN_THREADS} (growth {growth} B > allowed {allowed} B)",
        probe.name
    );
}
