//! The slab allocator's per-thread operation counters: the cheapest bookkeeping that keeps
//! `stats()` exact within a bound, two plain read-modify-writes and one compare per operation.
//!
//! Unlike the shared [`crate::stats::LocalCounters`] (three counters and a byte-range check per
//! operation, which cost this allocator's fast path about a quarter of its speed in the
//! fixed-size benchmark), allocations and frees share one word (allocations in the low half,
//! frees in the high half), and the thread folds into the shared counters after
//! [`FLUSH_EVERY`] allocations or frees (in the slow path of the operation after that) and at
//! thread exit. Staleness per running thread is therefore at most `FLUSH_EVERY` allocations and
//! as many frees, and `FLUSH_EVERY` times the largest slab object (64 KiB) in live bytes.

use core::cell::Cell;

use crate::stats::GlobalCounters;

/// Allocations (or frees) after which a thread folds its counts.
pub const FLUSH_EVERY: u32 = 256;
const FREE_ONE: u64 = 1 << 32;
/// The bit of either half that says it reached [`FLUSH_EVERY`].
const DUE_MASK: u64 = (FLUSH_EVERY as u64) | ((FLUSH_EVERY as u64) << 32);

/// A thread's unflushed counts.
pub struct ThreadCounters {
    /// Live-byte delta since the last fold.
    bytes: Cell<isize>,
    /// Allocations (low 32 bits) and frees (high 32 bits) since the last fold; neither half
    /// exceeds [`FLUSH_EVERY`], since a thread checks [`ThreadCounters::due`] before counting.
    ops: Cell<u64>,
}

impl ThreadCounters {
    /// All zero (the state the zeroed thread block starts in; tests make one with this).
    #[cfg(test)]
    pub const fn new() -> Self {
        ThreadCounters {
            bytes: Cell::new(0),
            ops: Cell::new(0),
        }
    }

    /// Whether the counts must be folded before the next one is added: the fast paths check this
    /// and leave the fold to their slow paths, so that they themselves call nothing.
    #[inline(always)]
    pub fn due(&self) -> bool {
        self.ops.get() & DUE_MASK != 0
    }

    /// Counts an allocation of `size` requested bytes (the caller checked [`Self::due`]).
    #[inline(always)]
    pub fn count_alloc(&self, size: usize) {
        self.bytes.set(self.bytes.get().wrapping_add(size as isize));
        self.ops.set(self.ops.get() + 1);
    }

    /// Counts a free of `size` requested bytes (the caller checked [`Self::due`]).
    #[inline(always)]
    pub fn count_free(&self, size: usize) {
        self.bytes.set(self.bytes.get().wrapping_sub(size as isize));
        self.ops.set(self.ops.get() + FREE_ONE);
    }

    /// Counts an allocation, folding first if due (the slow paths).
    pub fn on_alloc(&self, size: usize, global: &GlobalCounters) {
        if self.due() {
            self.flush(global);
        }
        self.count_alloc(size);
    }

    /// Counts a free, folding first if due (the slow paths).
    pub fn on_free(&self, size: usize, global: &GlobalCounters) {
        if self.due() {
            self.flush(global);
        }
        self.count_free(size);
    }

    /// Folds the counts into `global` and zeroes them; also the moment for the allocator's
    /// periodic reap (a thread whose work fits in its magazines never reaches the depot, so the
    /// depot's slow paths alone would not drive it). Must not be called with a cache lock held.
    #[cold]
    #[inline(never)]
    pub fn flush(&self, global: &GlobalCounters) {
        let ops = self.ops.get();
        global.fold(self.bytes.get(), ops & (FREE_ONE - 1), ops >> 32);
        self.bytes.set(0);
        self.ops.set(0);
        super::thread::reap_all_if_due();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fold_exactly() {
        let g = GlobalCounters::new();
        let c = ThreadCounters::new();
        for i in 0..1000 {
            if c.due() {
                c.flush(&g);
            }
            c.count_alloc(i);
        }
        // Stale by at most FLUSH_EVERY allocations.
        assert!(g.snapshot().allocations + FLUSH_EVERY as u64 >= 1000);
        for i in 0..400 {
            c.on_free(i, &g);
        }
        assert!(g.snapshot().frees + FLUSH_EVERY as u64 >= 400);
        c.flush(&g);
        let s = g.snapshot();
        assert_eq!(s.allocations, 1000);
        assert_eq!(s.frees, 400);
        assert_eq!(s.live_bytes, (400..1000).sum::<usize>());
    }
}
