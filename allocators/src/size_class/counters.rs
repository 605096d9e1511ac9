//! A thread heap's unflushed statistics, leaner than [`crate::stats::LocalCounters`] for the
//! size-class fast paths: one budget replaces the separate operation and byte thresholds.
//!
//! Every operation spends `size + OP_COST` from `budget`; when it goes negative the counts are
//! folded into the shared [`GlobalCounters`]. So a running thread holds back at most
//! `BUDGET / OP_COST` = 256 operations and 256 KiB of live-byte delta (the same bounds as
//! `LocalCounters`), at the cost of three plain read-modify-writes and one sign test.
//!
//! Allocation and free each own a pair of adjacent words (count, bytes): the compiler may update
//! a pair with one 16-byte load and store, and keeping the pairs disjoint means such a load never
//! straddles words the other path wrote separately (which would defeat store forwarding).

use crate::stats::GlobalCounters;

/// Budget refilled at each flush.
const BUDGET: isize = 256 * 1024;
/// Budget charged per operation besides its bytes.
const OP_COST: isize = 1024;

/// See the module docs.
#[derive(Debug)]
#[repr(C, align(16))]
pub struct HeapCounters {
    allocations: u64,
    alloc_bytes: u64,
    frees: u64,
    free_bytes: u64,
    budget: isize,
}

impl HeapCounters {
    /// All zero, with a full budget.
    pub const fn new() -> Self {
        HeapCounters {
            allocations: 0,
            alloc_bytes: 0,
            frees: 0,
            free_bytes: 0,
            budget: BUDGET,
        }
    }

    /// Counts an allocation of `size` requested bytes.
    #[inline(always)]
    pub fn on_alloc(&mut self, size: usize, global: &GlobalCounters) {
        self.allocations += 1;
        self.alloc_bytes += size as u64;
        self.budget -= size as isize + OP_COST;
        if self.budget < 0 {
            self.flush(global);
        }
    }

    /// Counts an allocation of `size` bytes and returns `block` (so that the rare flush is a tail
    /// call and the caller's fast path needs no stack frame).
    #[inline(always)]
    pub fn on_alloc_returning(
        &mut self,
        size: usize,
        global: &GlobalCounters,
        block: *mut u8,
    ) -> *mut u8 {
        self.allocations += 1;
        self.alloc_bytes += size as u64;
        self.budget -= size as isize + OP_COST;
        if self.budget < 0 {
            return self.flush_returning(global, block);
        }
        block
    }

    #[cold]
    #[inline(never)]
    fn flush_returning(&mut self, global: &GlobalCounters, block: *mut u8) -> *mut u8 {
        self.flush(global);
        block
    }

    /// Counts a free of `size` requested bytes.
    #[inline(always)]
    pub fn on_free(&mut self, size: usize, global: &GlobalCounters) {
        self.frees += 1;
        self.free_bytes += size as u64;
        self.budget -= size as isize + OP_COST;
        if self.budget < 0 {
            self.flush(global);
        }
    }

    /// Folds the counts into `global` and resets them.
    #[cold]
    #[inline(never)]
    pub fn flush(&mut self, global: &GlobalCounters) {
        let delta = self.alloc_bytes.wrapping_sub(self.free_bytes) as i64 as isize;
        global.fold(delta, self.allocations, self.frees);
        *self = HeapCounters::new();
    }
}
