//! What a workload thread calls instead of the allocator: [`Worker::alloc`], [`Worker::free`] and
//! [`Worker::realloc`] call the allocator under test through `GlobalAlloc` the way a program's
//! `#[global_allocator]` is reached (see [`call_alloc`]), count the operation, time one in
//! [`SAMPLE_EVERY`] of them with the cycle counter, and track the live requested bytes in a shared
//! counter (folded in batches so the tracking does not become a point of contention). All
//! bookkeeping memory is sized before the timed phase.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use crate::timer::ticks;

/// `heap.alloc(layout)`, reached as a program reaches its `#[global_allocator]`: through one call
/// the compiler does not inline (`__rust_alloc` in a program), with the layout a run-time value
/// (the callers pass it through `black_box`). Called directly, our allocators were inlined into
/// the workload loops and their size-class lookup folded for constant layouts, while mimalloc and
/// jemalloc, behind a foreign call, got neither: a bias in our favour (and the hardened builds,
/// too big to be inlined, did not get it either).
///
/// # Safety
/// As for `GlobalAlloc::alloc`.
#[inline(never)]
unsafe fn call_alloc<A: GlobalAlloc>(heap: &A, layout: Layout) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { heap.alloc(layout) }
}

/// `heap.dealloc(ptr, layout)`, reached as [`call_alloc`] reaches `alloc`.
///
/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[inline(never)]
unsafe fn call_dealloc<A: GlobalAlloc>(heap: &A, ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded contract.
    unsafe { heap.dealloc(ptr, layout) }
}

/// `heap.realloc(ptr, layout, new_size)`, reached as [`call_alloc`] reaches `alloc`.
///
/// # Safety
/// As for `GlobalAlloc::realloc`.
#[inline(never)]
unsafe fn call_realloc<A: GlobalAlloc>(
    heap: &A,
    ptr: *mut u8,
    layout: Layout,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    unsafe { heap.realloc(ptr, layout, new_size) }
}

/// One operation in this many is timed (a prime, so it does not beat with workload periods).
pub const SAMPLE_EVERY: u32 = 61;
/// Operations between two folds of a thread's live-byte delta into the shared counter.
const FOLD_EVERY_OPS: u32 = 64;
/// Byte delta (either sign) after which a thread folds early.
const FOLD_EVERY_BYTES: isize = 64 * 1024;

/// A block handed between threads: its address and requested size (plain integers, so `Send`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Block {
    /// The block's address (0 for an empty slot).
    pub addr: usize,
    /// The size it was allocated with.
    pub size: usize,
}

impl Block {
    /// An empty slot.
    pub const EMPTY: Block = Block { addr: 0, size: 0 };

    /// Whether this slot holds no block.
    pub fn is_empty(&self) -> bool {
        self.addr == 0
    }
}

/// The allocator returned null for a request of `size` bytes: the cell stops and is reported as
/// skipped (out of memory), the error travelling back through the workload to [`crate::cell`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfMemory {
    /// The size of the request that got null.
    pub size: usize,
}

impl std::fmt::Display for OutOfMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "out of memory: the allocator returned null for a {}-byte request",
            self.size
        )
    }
}

impl std::error::Error for OutOfMemory {}

/// State shared by all threads of one cell.
#[derive(Debug)]
pub struct Shared {
    deadline: Instant,
    budget_bytes: u64,
    live: AtomicIsize,
    peak_live: AtomicUsize,
    allocated_total: AtomicU64,
    budget_hit: AtomicBool,
    /// The size of the first request that got null, plus one (0: none did).
    failed: AtomicUsize,
}

impl Shared {
    /// Work stops at `deadline`, or once `budget_bytes` have been allocated in total (a cap for
    /// allocators that never reuse memory; `u64::MAX` for none).
    pub fn new(deadline: Instant, budget_bytes: u64) -> Self {
        Shared {
            deadline,
            budget_bytes,
            live: AtomicIsize::new(0),
            peak_live: AtomicUsize::new(0),
            allocated_total: AtomicU64::new(0),
            budget_hit: AtomicBool::new(false),
            failed: AtomicUsize::new(0),
        }
    }

    /// Whether the workload should start another round.
    pub fn keep_going(&self) -> bool {
        !self.budget_hit.load(Ordering::Relaxed)
            && self.failed.load(Ordering::Relaxed) == 0
            && Instant::now() < self.deadline
    }

    /// The first request the allocator refused in this cell, if any.
    pub fn out_of_memory(&self) -> Option<OutOfMemory> {
        match self.failed.load(Ordering::Relaxed) {
            0 => None,
            n => Some(OutOfMemory { size: n - 1 }),
        }
    }

    /// Records a refused request (the first one wins) and stops every lane's next round.
    #[cold]
    #[inline(never)]
    fn fail(&self, size: usize) -> OutOfMemory {
        let _ = self.failed.compare_exchange(
            0,
            size.saturating_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        OutOfMemory { size }
    }

    /// The live requested bytes as last folded.
    pub fn live_bytes(&self) -> usize {
        self.live.load(Ordering::Relaxed).max(0) as usize
    }

    /// The highest live requested bytes seen at a fold.
    pub fn peak_live_bytes(&self) -> usize {
        self.peak_live.load(Ordering::Relaxed)
    }

    /// Whether the allocation budget ended the work early.
    pub fn budget_hit(&self) -> bool {
        self.budget_hit.load(Ordering::Relaxed)
    }

    /// Adds a thread's unfolded delta; `max_delta` is the highest the delta reached since the
    /// last fold, so a peak between two folds is seen too (exactly for one thread).
    fn fold(&self, live_delta: isize, max_delta: isize, allocated: u64) {
        let before = self.live.fetch_add(live_delta, Ordering::Relaxed);
        let peak = before + max_delta.max(live_delta);
        if peak > 0 {
            self.peak_live.fetch_max(peak as usize, Ordering::Relaxed);
        }
        let total = self.allocated_total.fetch_add(allocated, Ordering::Relaxed) + allocated;
        if total >= self.budget_bytes {
            self.budget_hit.store(true, Ordering::Relaxed);
        }
    }
}

/// One thread's counts and latency samples; sized (and its pages touched) before timing starts.
#[derive(Debug)]
pub struct Recorder {
    /// Operations performed.
    pub ops: u64,
    /// Raw tick counts of sampled operations (a ring: the newest overwrite the oldest when full).
    pub samples: Vec<u32>,
    /// Samples written in total (may exceed `samples.len()`).
    pub samples_taken: u64,
}

impl Recorder {
    /// A recorder holding up to `capacity` samples, its memory already resident.
    pub fn new(capacity: usize) -> Self {
        // Zeroed pages may not be resident yet: write every element so they are, before the
        // idle RSS is read.
        let mut samples = vec![0u32; capacity.max(1)];
        for s in samples.iter_mut() {
            *s = black_box(1);
        }
        Recorder {
            ops: 0,
            samples,
            samples_taken: 0,
        }
    }

    /// The samples actually written.
    pub fn taken(&self) -> &[u32] {
        let n = (self.samples_taken as usize).min(self.samples.len());
        &self.samples[..n]
    }

    #[inline]
    fn push(&mut self, raw: u64) {
        let len = self.samples.len() as u64;
        let slot = (self.samples_taken % len) as usize;
        if let Some(s) = self.samples.get_mut(slot) {
            *s = raw.min(u32::MAX as u64) as u32;
        }
        self.samples_taken += 1;
    }
}

/// A workload thread's handle onto the allocator under test.
pub struct Worker<'a, A: GlobalAlloc> {
    heap: &'a A,
    shared: &'a Shared,
    rec: Recorder,
    until_sample: u32,
    until_fold: u32,
    live_delta: isize,
    max_delta: isize,
    allocated: u64,
}

impl<'a, A: GlobalAlloc> Worker<'a, A> {
    /// A worker recording into `rec`.
    pub fn new(heap: &'a A, shared: &'a Shared, rec: Recorder) -> Self {
        Worker {
            heap,
            shared,
            rec,
            until_sample: SAMPLE_EVERY,
            until_fold: FOLD_EVERY_OPS,
            live_delta: 0,
            max_delta: 0,
            allocated: 0,
        }
    }

    /// The cell's shared state.
    pub fn shared(&self) -> &'a Shared {
        self.shared
    }

    /// Whether the workload should start another round.
    pub fn keep_going(&self) -> bool {
        self.shared.keep_going()
    }

    /// Folds the counters and hands the recorder back.
    pub fn finish(mut self) -> Recorder {
        self.fold();
        self.rec
    }

    #[inline(always)]
    fn sampled(&mut self) -> bool {
        self.until_sample -= 1;
        if self.until_sample == 0 {
            self.until_sample = SAMPLE_EVERY;
            true
        } else {
            false
        }
    }

    #[inline(always)]
    fn count(&mut self, live_delta: isize, allocated: usize) {
        self.rec.ops += 1;
        self.live_delta += live_delta;
        self.max_delta = self.max_delta.max(self.live_delta);
        self.allocated += allocated as u64;
        self.until_fold -= 1;
        if self.until_fold == 0 || self.live_delta.abs() > FOLD_EVERY_BYTES {
            self.fold();
        }
    }

    #[cold]
    fn fold(&mut self) {
        self.shared
            .fold(self.live_delta, self.max_delta, self.allocated);
        self.live_delta = 0;
        self.max_delta = 0;
        self.allocated = 0;
        self.until_fold = FOLD_EVERY_OPS;
    }

    /// Allocates `layout` (its size must be non-zero); never a null pointer. If the allocator
    /// returns null, the error (which also stops the other lanes) is for the workload to return.
    // Always inlined: returning a `Result` made the compiler keep `alloc` and `free` out of line
    // (callgrind: about 10 more instructions per operation, in every allocator's cells, which
    // narrowed every ratio between allocators).
    #[inline(always)]
    pub fn alloc(&mut self, layout: Layout) -> Result<*mut u8, OutOfMemory> {
        assert!(layout.size() != 0, "workloads never allocate zero bytes");
        let p = if self.sampled() {
            let t0 = ticks();
            // SAFETY: the layout's size is non-zero (checked above).
            let p = unsafe { call_alloc(self.heap, black_box(layout)) };
            let t1 = ticks();
            self.rec.push(t1.wrapping_sub(t0));
            p
        } else {
            // SAFETY: the layout's size is non-zero (checked above).
            unsafe { call_alloc(self.heap, black_box(layout)) }
        };
        if p.is_null() {
            return Err(self.shared.fail(layout.size()));
        }
        self.count(layout.size() as isize, layout.size());
        Ok(black_box(p))
    }

    /// Frees `ptr`.
    ///
    /// # Safety
    /// `ptr` must have been returned by this cell's allocator for `layout` (by [`Worker::alloc`]
    /// or [`Worker::realloc`] of any worker of the cell) and not freed since.
    #[inline(always)]
    pub unsafe fn free(&mut self, ptr: *mut u8, layout: Layout) {
        if self.sampled() {
            let t0 = ticks();
            // SAFETY: the caller guarantees `ptr` is a live block of this allocator with `layout`.
            unsafe { call_dealloc(self.heap, ptr, black_box(layout)) };
            let t1 = ticks();
            self.rec.push(t1.wrapping_sub(t0));
        } else {
            // SAFETY: as above.
            unsafe { call_dealloc(self.heap, ptr, black_box(layout)) };
        }
        self.count(-(layout.size() as isize), 0);
    }

    /// Resizes `ptr` to `new_size` bytes (non-zero); never a null pointer (see
    /// [`Worker::alloc`]; on the error the old block is still live).
    ///
    /// # Safety
    /// As for [`Worker::free`]; afterwards the block is described by `layout` with `new_size`.
    #[inline(always)]
    pub unsafe fn realloc(
        &mut self,
        ptr: *mut u8,
        layout: Layout,
        new_size: usize,
    ) -> Result<*mut u8, OutOfMemory> {
        assert!(new_size != 0, "workloads never reallocate to zero bytes");
        let p = if self.sampled() {
            let t0 = ticks();
            // SAFETY: the caller guarantees `ptr` is a live block with `layout`; size non-zero.
            let p = unsafe { call_realloc(self.heap, ptr, black_box(layout), black_box(new_size)) };
            let t1 = ticks();
            self.rec.push(t1.wrapping_sub(t0));
            p
        } else {
            // SAFETY: as above.
            unsafe { call_realloc(self.heap, ptr, black_box(layout), black_box(new_size)) }
        };
        if p.is_null() {
            return Err(self.shared.fail(new_size));
        }
        self.count(
            new_size as isize - layout.size() as isize,
            new_size.saturating_sub(layout.size()),
        );
        Ok(black_box(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::time::Duration;

    #[test]
    fn counts_ops_and_tracks_live_bytes() {
        let shared = Shared::new(Instant::now() + Duration::from_secs(5), u64::MAX);
        let mut w = Worker::new(&System, &shared, Recorder::new(16));
        let l = Layout::from_size_align(100, 8).unwrap();
        let ps: Vec<_> = (0..200).map(|_| w.alloc(l).unwrap()).collect();
        for p in ps {
            // SAFETY: allocated just above with `l`.
            unsafe { w.free(p, l) };
        }
        let rec = w.finish();
        assert_eq!(rec.ops, 400);
        assert_eq!(shared.live_bytes(), 0);
        assert!(shared.peak_live_bytes() >= 100 * 150);
        assert_eq!(rec.samples_taken, 400 / SAMPLE_EVERY as u64);
    }

    #[test]
    fn budget_stops_work() {
        let shared = Shared::new(Instant::now() + Duration::from_secs(5), 1000);
        let mut w = Worker::new(&System, &shared, Recorder::new(4));
        let l = Layout::from_size_align(100, 8).unwrap();
        for _ in 0..20 {
            let p = w.alloc(l).unwrap();
            // SAFETY: allocated just above with `l`.
            unsafe { w.free(p, l) };
        }
        let _ = w.finish();
        assert!(!shared.keep_going());
        assert!(shared.budget_hit());
    }

    /// An allocator that refuses everything.
    struct Refuses;

    // SAFETY: it never hands out memory, so it never hands out overlapping memory.
    unsafe impl GlobalAlloc for Refuses {
        unsafe fn alloc(&self, _: Layout) -> *mut u8 {
            std::ptr::null_mut()
        }
        unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
    }

    #[test]
    fn null_is_an_error_that_stops_the_cell() {
        let shared = Shared::new(Instant::now() + Duration::from_secs(5), u64::MAX);
        let mut w = Worker::new(&Refuses, &shared, Recorder::new(4));
        let l = Layout::from_size_align(100, 8).unwrap();
        assert_eq!(w.alloc(l), Err(OutOfMemory { size: 100 }));
        assert!(!shared.keep_going());
        assert_eq!(shared.out_of_memory(), Some(OutOfMemory { size: 100 }));
    }
}
