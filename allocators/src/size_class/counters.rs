//! A thread heap's unflushed statistics, leaner than [`crate::stats::LocalCounters`] for the
//! size-class fast paths: one budget, in units of 1 KiB, replaces the separate operation and
//! byte thresholds.
//!
//! Every operation on `size` bytes charges `size / 1024 + 1` units to `left`; when it goes
//! negative the counts are folded into the shared [`GlobalCounters`]. Between two folds fewer than
//! [`UNITS`] units are charged, so a running thread holds back fewer than 256 operations and
//! (each operation's bytes being below 1024 times its charge) less than 256 KiB of live-byte
//! delta: the same bounds as `LocalCounters`.
//!
//! Cost per operation: an allocation is three plain read-modify-writes (`allocations`, `bytes`,
//! `left`, the last with the sign test), a free the same with `frees`; the charge is a shift
//! and an add. (The previous budget counted bytes and operations in separate words per direction
//! and charged `size + 1024`: ten instructions per operation against six or seven now, measured
//! in the fast paths' disassembly.)

use crate::stats::GlobalCounters;

/// Units charged between two folds (at most; see the module docs).
const UNITS: isize = 256;
/// `left` after a fold: it must stay non-negative while fewer than [`UNITS`] are charged.
const FULL_LEFT: isize = UNITS - 1;
/// The bytes one unit covers.
const UNIT_SHIFT: u32 = 10;

/// See the module docs.
///
/// Layout: no two words one operation updates are adjacent (only `allocations` and `frees`,
/// never updated together, are): with `frees` next to `bytes` the compiler merged a free's two
/// updates into one 16-byte vector read-modify-write, six instructions instead of two.
#[derive(Debug)]
#[repr(C)]
pub struct HeapCounters {
    /// Requested bytes allocated minus freed since the last fold.
    bytes: isize,
    _gap0: u64,
    allocations: u64,
    frees: u64,
    _gap1: u64,
    /// Units left before the next fold (a fold happens when it goes negative).
    left: isize,
}

impl HeapCounters {
    /// All zero, with a full budget.
    pub const fn new() -> Self {
        HeapCounters {
            bytes: 0,
            _gap0: 0,
            allocations: 0,
            frees: 0,
            _gap1: 0,
            left: FULL_LEFT,
        }
    }

    /// Charges an operation on `size` bytes; `true` when the counts must be folded.
    #[inline(always)]
    fn charge(&mut self, size: usize) -> bool {
        // `!(size >> UNIT_SHIFT)` is `-(size >> UNIT_SHIFT) - 1`: one unit per started KiB plus
        // one, in a single add.
        self.left = self.left.wrapping_add(!(size >> UNIT_SHIFT) as isize);
        self.left < 0
    }

    /// Counts an allocation of `size` requested bytes.
    #[inline(always)]
    pub fn on_alloc(&mut self, size: usize, global: &GlobalCounters) {
        self.allocations += 1;
        self.bytes = self.bytes.wrapping_add(size as isize);
        if self.charge(size) {
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
        self.bytes = self.bytes.wrapping_add(size as isize);
        if self.charge(size) {
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
        self.bytes = self.bytes.wrapping_sub(size as isize);
        if self.charge(size) {
            self.flush(global);
        }
    }

    /// Folds the counts into `global` and resets them.
    #[cold]
    #[inline(never)]
    pub fn flush(&mut self, global: &GlobalCounters) {
        global.fold(self.bytes, self.allocations, self.frees);
        *self = HeapCounters::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bounds of the module docs: a fold before 256 operations or 256 KiB of unflushed
    /// bytes, and nothing lost.
    #[test]
    fn folds_within_bounds_and_exactly() {
        let g = GlobalCounters::new();
        let mut c = HeapCounters::new();
        // Small operations: the fold comes at the 256th.
        for i in 0..255 {
            c.on_alloc(8, &g);
            assert_eq!(g.snapshot().allocations, 0, "folded early at {i}");
        }
        c.on_alloc(8, &g);
        assert_eq!(g.snapshot().allocations, 256);
        assert_eq!(g.snapshot().live_bytes, 256 * 8);
        // Big ones: at most 256 KiB held back.
        let mut total = 256 * 8;
        for _ in 0..1000 {
            c.on_alloc(5000, &g);
            total += 5000;
            assert!(total - g.snapshot().live_bytes < 256 * 1024);
        }
        // Frees, then a final flush: everything arrives.
        for _ in 0..1000 {
            c.on_free(5000, &g);
        }
        c.on_free(8, &g);
        c.flush(&g);
        let s = g.snapshot();
        assert_eq!(s.allocations, 1256);
        assert_eq!(s.frees, 1001);
        assert_eq!(s.live_bytes, 255 * 8);
    }
}
