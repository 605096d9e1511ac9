//! The fourteen workloads, written here from the published descriptions of well-known allocator
//! benchmarks (mimalloc-bench, the rpmalloc benchmark, Bonwick's papers), never copied.
//!
//! Every workload is generic over `A: GlobalAlloc` and calls the allocator under test only through
//! a [`Worker`]. Each runs in rounds until the cell's deadline (see [`Shared::keep_going`]), so a
//! cell's duration is the same for a fast and a slow allocator, and is seeded, so every allocator
//! sees the same sequence of requests. `threads` is the number of worker threads (for `xmalloc`:
//! producer/consumer pairs).
//!
//! Two workloads run at a real program's scale instead (`server`, `thread-pool`: hundreds of MiB
//! live at full scale, see [`Params::program_bytes`]): they follow a fixed schedule rather than
//! the deadline, so every allocator goes through the same phases, and take a few seconds.

use std::alloc::{GlobalAlloc, Layout};

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::worker::{OutOfMemory, Recorder, Shared, Worker};

/// A workload's entry in the table.
#[derive(Clone, Copy, Debug)]
pub struct WorkloadInfo {
    /// The name used on the command line and in the results.
    pub name: &'static str,
    /// The allocation pattern.
    pub pattern: &'static str,
    /// What it stresses.
    pub stresses: &'static str,
    /// Whether the total bytes allocated stay near the live bytes (no churn), so an allocator that
    /// never reuses freed memory can serve it.
    pub bounded_total: bool,
    /// Whether RSS and live bytes are sampled over time during the cell.
    pub samples_over_time: bool,
    /// Threads used per requested thread (2 for producer/consumer pairs).
    pub lanes_per_thread: usize,
    /// Whether it runs at a real program's scale (hundreds of MiB live at full scale): the report
    /// charts its RSS and live bytes over time and tables peak RSS / peak live bytes.
    pub program_scale: bool,
}

/// Every workload, in report order: THE table. Adding a workload is one row here (its module,
/// `=>`, its entry) and its file `<module>.rs` with
/// `pub fn run<A: GlobalAlloc + Sync>(workers: Vec<Worker<'_, A>>, params: &Params) -> Vec<Worker<'_, A>>`;
/// the macro declares the module, lists the entry in [`WORKLOADS`] and dispatches [`run`] to it.
macro_rules! workloads {
    ($($module:ident => $info:expr,)*) => {
        $(mod $module;)*

        /// Every workload, in report order.
        pub const WORKLOADS: &[WorkloadInfo] = &[$($info),*];

        /// Runs the workload named `name` on the workers (unknown names: nothing).
        fn dispatch<'a, A: GlobalAlloc + Sync>(
            name: &str,
            workers: Vec<Worker<'a, A>>,
            params: &Params,
        ) -> Vec<Worker<'a, A>> {
            $(if name == ($info).name {
                return $module::run(workers, params);
            })*
            workers
        }
    };
}

workloads! {
    larson => info("larson", "each thread frees and re-allocates random slots (8-1000 B); slots handed to new threads", "server churn, cross-thread frees", false, 1),
    xmalloc => info("xmalloc", "producers allocate 64 B objects in batches, consumers free them (threads = pairs)", "remote frees at full speed", false, 2),
    cache_scratch => info("cache-scratch", "objects handed to threads, which then allocate, write, free in a loop", "false sharing", false, 1),
    mstress => info("mstress", "power-of-two sizes, rare huge ones, pointers swapped through a shared array, threads recreated", "mixed lifetimes, thread churn", false, 1),
    rptest => info("rptest", "random sizes 8 B-16 KiB, 1000 live per thread, cross-thread handoff", "general throughput", false, 1),
    alloc_test => info("alloc-test", "Pareto-distributed sizes up to 1 KiB", "common small sizes", false, 1),
    fixed_size => info("fixed-size", "one object size (64 B), LIFO and random order", "the slab's case", false, 1),
    power_of_two => info("power-of-two", "sizes 2^k only (8 B-4 KiB, rarely up to 64 KiB)", "the buddy's case", false, 1),
    phase => info("phase", "allocate a large set, then free everything", "the bump's case", true, 1),
    realloc_growth => info("realloc-growth", "vectors and strings that grow by doubling", "realloc in place", false, 1),
    fragmentation => WorkloadInfo {
        samples_over_time: true,
        ..info("fragmentation", "fill with small objects, free 90% at random, then allocate other sizes; RSS sampled over time", "memory returned, reuse", false, 1)
    },
    thread_churn => info("thread-churn", "thousands of short-lived threads allocating", "cache hand-back on exit", false, 1),
    server => program("server", "key-value cache, 512 MiB live at full scale, one shard per thread: random keys replaced by values of 16 B-64 KiB whose size mix moves from small to large and back", "fragmentation of a long-running server", 1),
    thread_pool => program("thread-pool", "producer threads spawned per batch (then exit) hand blocks of 16 B-4 KiB to long-lived consumers, which keep 384 MiB live at full scale and free the oldest (threads = consumer/producer pairs); then an idle tail", "memory of exited threads freed by others", 2),
}

const fn info(
    name: &'static str,
    pattern: &'static str,
    stresses: &'static str,
    bounded_total: bool,
    lanes_per_thread: usize,
) -> WorkloadInfo {
    WorkloadInfo {
        name,
        pattern,
        stresses,
        bounded_total,
        samples_over_time: false,
        lanes_per_thread,
        program_scale: false,
    }
}

/// A workload at a real program's scale: RSS and live bytes sampled over time.
const fn program(
    name: &'static str,
    pattern: &'static str,
    stresses: &'static str,
    lanes_per_thread: usize,
) -> WorkloadInfo {
    WorkloadInfo {
        samples_over_time: true,
        program_scale: true,
        ..info(name, pattern, stresses, false, lanes_per_thread)
    }
}

/// Looks a workload up by name.
pub fn find(name: &str) -> Option<&'static WorkloadInfo> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// What a workload needs besides the allocator.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Worker threads requested.
    pub threads: usize,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Size factor of the live sets (1.0 at default scale, smaller for `--quick`).
    pub size_factor: f64,
}

impl Params {
    /// A reproducible generator for lane `lane`, round `round`.
    pub fn rng(&self, lane: usize, round: u64) -> SmallRng {
        SmallRng::seed_from_u64(
            self.seed ^ (lane as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.rotate_left(32),
        )
    }

    /// `n` scaled by the size factor (at least `min`).
    pub fn scaled(&self, n: usize, min: usize) -> usize {
        ((n as f64 * self.size_factor) as usize).max(min)
    }

    /// The live set of a program-scale workload: `full` bytes at full scale, scaled by the cube
    /// of the size factor (1/64 for `--quick`'s 0.25, so 512 MiB becomes 8 MiB), at least 1 MiB.
    pub fn program_bytes(&self, full: usize) -> usize {
        ((full as f64 * self.size_factor.clamp(0.0, 1.0).powi(3)) as usize).max(1 << 20)
    }
}

/// Runs workload `name` on `heap` with one recorder per lane; returns the recorders filled, or
/// the first request the allocator refused (the cell then stops). Unknown names run nothing.
pub fn run<A: GlobalAlloc + Sync>(
    name: &str,
    heap: &A,
    shared: &Shared,
    params: &Params,
    recorders: Vec<Recorder>,
) -> Result<Vec<Recorder>, OutOfMemory> {
    let workers: Vec<Worker<'_, A>> = recorders
        .into_iter()
        .map(|r| Worker::new(heap, shared, r))
        .collect();
    let done = dispatch(name, workers, params);
    let recorders = done.into_iter().map(Worker::finish).collect();
    match shared.out_of_memory() {
        Some(e) => Err(e),
        None => Ok(recorders),
    }
}

/// The layout every workload uses for `size` bytes: 16-byte alignment like `malloc`'s (8 for
/// blocks under 16 bytes).
#[inline]
pub fn layout(size: usize) -> Layout {
    let size = size.max(1);
    let align = if size >= 16 { 16 } else { 8 };
    Layout::from_size_align(size, align).unwrap_or(Layout::new::<u64>())
}

/// Writes the first and last byte of a block, as a program initialising it would.
///
/// # Safety
/// `p` must point to at least `size >= 1` writable bytes.
#[inline]
pub unsafe fn touch(p: *mut u8, size: usize, value: u8) {
    // SAFETY: the caller guarantees `p..p+size` is writable and size >= 1.
    unsafe {
        p.write_volatile(value);
        p.add(size - 1).write_volatile(value);
    }
}

/// Writes a value of `size >= 16` bytes as a program filling it would (every byte), with its
/// size in its first word, so an index needs to keep only its address (see [`value_size`]).
///
/// # Safety
/// `p` must point to at least `size >= 16` writable bytes, aligned to 8.
#[inline]
pub unsafe fn write_value(p: *mut u8, size: usize, fill: u8) {
    debug_assert!(size >= 16 && (p as usize).is_multiple_of(8));
    // SAFETY: the caller guarantees `p..p+size` is writable, size >= 16 and 8-byte alignment.
    unsafe {
        std::ptr::write_bytes(p, fill, size);
        (p as *mut usize).write(size);
    }
}

/// The size of a value written by [`write_value`].
///
/// # Safety
/// `addr` must be a live value written by [`write_value`].
#[inline]
pub unsafe fn value_size(addr: usize) -> usize {
    // SAFETY: the caller guarantees a live value whose first word holds its size.
    unsafe { (addr as *const usize).read() }
}

/// Runs `body` for each worker on its own scoped thread and returns the workers in order. A
/// lane's error ends only that lane: the worker that met it has recorded it in the cell's
/// [`Shared`], which stops the other lanes' next round and makes [`run`] return it.
pub fn on_threads<'a, A, F>(workers: Vec<Worker<'a, A>>, body: F) -> Vec<Worker<'a, A>>
where
    A: GlobalAlloc + Sync,
    F: Fn(usize, &mut Worker<'a, A>) -> Result<(), OutOfMemory> + Sync,
{
    let body = &body;
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(lane, mut w)| {
                s.spawn(move || {
                    // The error is in `Shared` too (see above).
                    let _ = body(lane, &mut w);
                    w
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| std::process::exit(3)))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::time::{Duration, Instant};

    #[test]
    fn table_names_are_unique_and_dispatch() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert!(WORKLOADS[i + 1..].iter().all(|o| o.name != w.name));
            assert_eq!(find(w.name).map(|f| f.name), Some(w.name));
        }
        assert_eq!(WORKLOADS.len(), 14);
    }

    #[test]
    fn every_workload_runs_briefly_and_frees_everything() {
        for w in WORKLOADS {
            for threads in [1, 2] {
                let shared = Shared::new(Instant::now() + Duration::from_millis(20), u64::MAX);
                let params = Params {
                    threads,
                    seed: 7,
                    size_factor: 0.05,
                };
                let recs = (0..threads * w.lanes_per_thread)
                    .map(|_| Recorder::new(1024))
                    .collect();
                let recs = run(w.name, &System, &shared, &params, recs).unwrap();
                let ops: u64 = recs.iter().map(|r| r.ops).sum();
                assert!(ops > 0, "{} ran no operation", w.name);
                assert_eq!(shared.live_bytes(), 0, "{} leaked", w.name);
                assert!(shared.peak_live_bytes() > 0, "{}", w.name);
            }
        }
    }
}
