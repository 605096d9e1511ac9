//! Deliberately broken allocators, each with one bug of a kind seen in real allocators, wrapping
//! `std::alloc::System`. `tests/tests/broken.rs` shows that the conformance checks catch each of
//! them, which proves the checks can fail (a suite that passes everything proves nothing).
//!
//! These are test doubles: they are only ever called directly by the suite, never installed as
//! the global allocator, so they may use std's `Mutex` and `Vec` (which allocate through System).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use std::alloc::System;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Every 5th request that fits gets the previous block's address plus 8: the two blocks overlap
/// (the bug of a free list that hands a block out twice, or of a wrong size-class stride).
#[derive(Debug, Default)]
pub struct Overlapping {
    count: AtomicUsize,
    /// The last real block handed out, and its size.
    last: Mutex<(usize, usize)>,
    /// Addresses handed out as aliases (never passed to System).
    aliases: Mutex<Vec<usize>>,
}

impl Overlapping {
    /// A fresh instance.
    pub const fn new() -> Self {
        Overlapping {
            count: AtomicUsize::new(0),
            last: Mutex::new((0, 0)),
            aliases: Mutex::new(Vec::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// SAFETY: NOT a correct allocator on purpose (overlapping blocks); it is only used to show that
// the suite detects this. Every pointer passed to System came from System with the same layout.
unsafe impl GlobalAlloc for Overlapping {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        let mut last = lock(&self.last);
        if n % 5 == 4 && layout.align() <= 8 && last.0 != 0 && layout.size() + 8 <= last.1 {
            let alias = last.0 + 8;
            lock(&self.aliases).push(alias);
            return alias as *mut u8;
        }
        // SAFETY: forwarded caller's layout.
        let p = unsafe { System.alloc(layout) };
        *last = (p as usize, layout.size());
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Locked in `alloc`'s order: `last`, then `aliases`.
        let mut last = lock(&self.last);
        let mut aliases = lock(&self.aliases);
        if let Some(i) = aliases.iter().position(|&a| a == ptr as usize) {
            aliases.swap_remove(i);
            return;
        }
        if last.0 == ptr as usize {
            *last = (0, 0);
        }
        // A real block with an alias still inside it is leaked, not freed: System would reuse
        // memory the alias's holder still writes, and the test process would crash instead of
        // the suite reporting the overlap.
        let (start, end) = (ptr as usize, ptr as usize + layout.size());
        if aliases.iter().any(|&a| start <= a && a < end) {
            return;
        }
        // SAFETY: ptr is a real System block with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Serves alignments above 4096 with only 4096 (the top bug class of allocator bindings: large
/// alignments silently ignored).
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoresLargeAlign;

fn capped(layout: Layout) -> Layout {
    // SAFETY: align 4096 is a power of two and lowering the align keeps size + padding valid.
    unsafe { Layout::from_size_align_unchecked(layout.size(), layout.align().min(4096)) }
}

// SAFETY: NOT a correct allocator on purpose (misaligned blocks). System sees consistent layouts.
unsafe impl GlobalAlloc for IgnoresLargeAlign {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a valid layout.
        unsafe { System.alloc(capped(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: allocated with the same capped layout.
        unsafe { System.dealloc(ptr, capped(layout)) }
    }
}

/// `alloc_zeroed` skips the memset for every block, assuming memory is always fresh from the
/// kernel (true for fresh pages, false for recycled ones).
#[derive(Clone, Copy, Debug, Default)]
pub struct NotZeroing;

// SAFETY: NOT a correct allocator on purpose (alloc_zeroed may return dirty memory).
unsafe impl GlobalAlloc for NotZeroing {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the bug is the missing memset.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// `realloc` moves every block but copies at most one page: blocks above 4 KiB lose their tail.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReallocLosesBytes;

// SAFETY: NOT a correct allocator on purpose (realloc loses bytes).
unsafe impl GlobalAlloc for ReallocLosesBytes {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees new_size rounded to align fits isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: a valid layout.
        let q = unsafe { System.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both blocks hold at least this many bytes; the bug is the `.min(4096)`.
            unsafe { ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size).min(4096)) };
            // SAFETY: ptr is live with `layout`.
            unsafe { System.dealloc(ptr, layout) };
        }
        q
    }
}

/// A failed `realloc` frees the old block anyway (so the caller's block is gone while the
/// caller still owns it).
#[derive(Clone, Copy, Debug, Default)]
pub struct FreesOnFailedRealloc;

// SAFETY: NOT a correct allocator on purpose (use after free on a failed realloc).
unsafe impl GlobalAlloc for FreesOnFailedRealloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        let q = unsafe { System.realloc(ptr, layout, new_size) };
        if q.is_null() {
            // The bug: the old block is released although the caller still owns it. To keep
            // the test process sound the memory is not given back to System; it is scribbled
            // over, which is what a reusing allocator would do to it.
            // SAFETY: ptr is still a live System block of layout.size() bytes.
            unsafe { ptr.write_bytes(0xDD, layout.size().min(64)) };
        }
        q
    }
}

/// A size computation that wraps: `size + align` overflows for huge requests and a tiny block
/// is handed out instead of null.
#[derive(Clone, Copy, Debug, Default)]
pub struct WrappingSize;

// SAFETY: NOT a correct allocator on purpose (serves impossible requests with tiny blocks).
unsafe impl GlobalAlloc for WrappingSize {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let padded = layout.size().wrapping_add(layout.align()).wrapping_mul(2);
        let size = if padded < layout.size() {
            padded.max(1)
        } else {
            layout.size()
        };
        // SAFETY: a valid layout: the size is either the caller's or a small wrapped value.
        unsafe { System.alloc(Layout::from_size_align_unchecked(size, layout.align())) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let padded = layout.size().wrapping_add(layout.align()).wrapping_mul(2);
        let size = if padded < layout.size() {
            padded.max(1)
        } else {
            layout.size()
        };
        // SAFETY: the same layout as at allocation.
        unsafe { System.dealloc(ptr, Layout::from_size_align_unchecked(size, layout.align())) }
    }
}
