//! Counters every allocator keeps, readable at any time through `stats()`.
//!
//! Fast paths count into a thread's own [`LocalCounters`] (plain loads and stores, no atomic
//! read-modify-write) and fold them into the allocator's shared [`GlobalCounters`] every
//! [`FLUSH_EVERY_OPS`] operations, whenever the unflushed byte delta exceeds
//! [`FLUSH_EVERY_BYTES`], and at thread exit. A [`Stats`] snapshot is therefore exact for memory
//! obtained from the kernel and accurate to within those bounds per running thread for the
//! live-byte and operation counts (like jemalloc's `stats.allocated`, which is also refreshed
//! lazily).

use core::cell::Cell;
use core::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};

/// Unflushed operations after which a thread folds its counters into the shared ones.
pub const FLUSH_EVERY_OPS: u32 = 256;
/// Unflushed byte delta (either sign) after which a thread folds its counters.
pub const FLUSH_EVERY_BYTES: isize = 256 * 1024;

/// A snapshot of an allocator's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes requested by live allocations (the sum of `Layout::size()` not yet freed).
    pub live_bytes: usize,
    /// The highest `live_bytes` seen at a flush.
    pub peak_live_bytes: usize,
    /// Bytes currently mapped from the kernel and held by the allocator (including metadata and
    /// free memory it keeps cached; excluding pages it has discarded with `madvise`).
    pub mapped_bytes: usize,
    /// The highest `mapped_bytes` seen.
    pub peak_mapped_bytes: usize,
    /// Allocations served (including reallocations that moved the block).
    pub allocations: u64,
    /// Blocks freed.
    pub frees: u64,
}

/// The shared half of an allocator's counters; one per allocator type, in a `static`.
#[derive(Debug)]
pub struct GlobalCounters {
    live: AtomicIsize,
    peak_live: AtomicUsize,
    mapped: AtomicUsize,
    peak_mapped: AtomicUsize,
    allocations: AtomicU64,
    frees: AtomicU64,
}

impl Default for GlobalCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl GlobalCounters {
    /// All counters at zero.
    pub const fn new() -> Self {
        GlobalCounters {
            live: AtomicIsize::new(0),
            peak_live: AtomicUsize::new(0),
            mapped: AtomicUsize::new(0),
            peak_mapped: AtomicUsize::new(0),
            allocations: AtomicU64::new(0),
            frees: AtomicU64::new(0),
        }
    }

    /// Records `bytes` newly mapped from the kernel (or re-faulted after a discard).
    #[inline]
    pub fn add_mapped(&self, bytes: usize) {
        let now = self.mapped.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak_mapped.fetch_max(now, Ordering::Relaxed);
    }

    /// Bytes mapped now (see [`Stats::mapped_bytes`]).
    #[inline]
    pub fn mapped(&self) -> usize {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Records `bytes` returned to the kernel (unmapped or discarded).
    #[inline]
    pub fn sub_mapped(&self, bytes: usize) {
        self.mapped.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Records one allocation of `size` bytes directly (for slow paths without a thread cache).
    pub fn record_alloc(&self, size: usize) {
        self.fold(size as isize, 1, 0);
    }

    /// Records one free of `size` bytes directly (for slow paths without a thread cache).
    pub fn record_free(&self, size: usize) {
        self.fold(-(size as isize), 0, 1);
    }

    /// Adds a batch of counts at once: a live-byte delta, allocations and frees (for allocators
    /// that keep their own thread-local tallies).
    pub fn fold(&self, bytes: isize, allocations: u64, frees: u64) {
        if allocations != 0 {
            self.allocations.fetch_add(allocations, Ordering::Relaxed);
        }
        if frees != 0 {
            self.frees.fetch_add(frees, Ordering::Relaxed);
        }
        if bytes != 0 {
            let now = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
            if now > 0 {
                self.peak_live.fetch_max(now as usize, Ordering::Relaxed);
            }
        }
    }

    /// A snapshot of the counters.
    pub fn snapshot(&self) -> Stats {
        Stats {
            live_bytes: self.live.load(Ordering::Relaxed).max(0) as usize,
            peak_live_bytes: self.peak_live.load(Ordering::Relaxed),
            mapped_bytes: self.mapped.load(Ordering::Relaxed),
            peak_mapped_bytes: self.peak_mapped.load(Ordering::Relaxed),
            allocations: self.allocations.load(Ordering::Relaxed),
            frees: self.frees.load(Ordering::Relaxed),
        }
    }
}

/// A thread's unflushed counts; lives inside the thread's cache of each allocator.
#[derive(Debug)]
pub struct LocalCounters {
    bytes: Cell<isize>,
    allocations: Cell<u64>,
    frees: Cell<u64>,
    ops: Cell<u32>,
}

impl Default for LocalCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalCounters {
    /// All counters at zero.
    pub const fn new() -> Self {
        LocalCounters {
            bytes: Cell::new(0),
            allocations: Cell::new(0),
            frees: Cell::new(0),
            ops: Cell::new(0),
        }
    }

    /// Counts an allocation of `size` requested bytes.
    #[inline(always)]
    pub fn on_alloc(&self, size: usize, global: &GlobalCounters) {
        self.allocations.set(self.allocations.get() + 1);
        self.bump(size as isize, global);
    }

    /// Counts a free of `size` requested bytes.
    #[inline(always)]
    pub fn on_free(&self, size: usize, global: &GlobalCounters) {
        self.frees.set(self.frees.get() + 1);
        self.bump(-(size as isize), global);
    }

    #[inline(always)]
    fn bump(&self, delta: isize, global: &GlobalCounters) {
        let bytes = self.bytes.get() + delta;
        self.bytes.set(bytes);
        let ops = self.ops.get() + 1;
        self.ops.set(ops);
        if ops >= FLUSH_EVERY_OPS || !(-FLUSH_EVERY_BYTES..=FLUSH_EVERY_BYTES).contains(&bytes) {
            self.flush(global);
        }
    }

    /// Folds the unflushed counts into `global` and zeroes them (also called at thread exit).
    #[cold]
    pub fn flush(&self, global: &GlobalCounters) {
        global.fold(self.bytes.get(), self.allocations.get(), self.frees.get());
        self.bytes.set(0);
        self.allocations.set(0);
        self.frees.set(0);
        self.ops.set(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_counts_reach_global_after_flush() {
        let g = GlobalCounters::new();
        let l = LocalCounters::new();
        l.on_alloc(100, &g);
        l.on_alloc(50, &g);
        l.on_free(100, &g);
        l.flush(&g);
        let s = g.snapshot();
        assert_eq!(s.live_bytes, 50);
        assert_eq!(s.peak_live_bytes, 50);
        assert_eq!(s.allocations, 2);
        assert_eq!(s.frees, 1);
    }

    #[test]
    fn large_deltas_flush_at_once() {
        let g = GlobalCounters::new();
        let l = LocalCounters::new();
        l.on_alloc(FLUSH_EVERY_BYTES as usize + 1, &g);
        assert_eq!(g.snapshot().live_bytes, FLUSH_EVERY_BYTES as usize + 1);
    }

    #[test]
    fn mapped_peak_tracks_maximum() {
        let g = GlobalCounters::new();
        g.add_mapped(4096);
        g.add_mapped(8192);
        g.sub_mapped(4096);
        let s = g.snapshot();
        assert_eq!(s.mapped_bytes, 8192);
        assert_eq!(s.peak_mapped_bytes, 12288);
    }
}
