//! The loops behind the criterion micro-benchmarks (`benches/alloc_pairs.rs`), generic over the
//! allocator and reached through each registry entry's [`Micro`], so the benchmarks cover every
//! allocator of the table without a second list. They return the time taken for `iters`
//! iterations, as criterion's `iter_custom` wants.

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// An allocator's micro-benchmark entry points.
#[derive(Clone, Copy, Debug)]
pub struct Micro {
    /// `iters` alloc/free pairs of `layout`.
    pub pairs: fn(Layout, u64) -> Duration,
    /// `iters` times: a buffer grown from 16 bytes to the given size by doubling, then freed.
    pub growth: fn(usize, u64) -> Duration,
}

/// `iters` alloc/free pairs of `layout` (non-zero size) on `heap`; stops early on null.
pub fn pairs<A: GlobalAlloc>(heap: &A, layout: Layout, iters: u64) -> Duration {
    let layout = if layout.size() == 0 {
        Layout::new::<u8>()
    } else {
        layout
    };
    let start = Instant::now();
    for _ in 0..iters {
        // SAFETY: the layout's size is non-zero.
        let p = unsafe { heap.alloc(layout) };
        if p.is_null() {
            break;
        }
        // SAFETY: `p` is a live block of `layout`; written once so the pair is not optimised out.
        unsafe {
            p.write(1);
            heap.dealloc(black_box(p), layout);
        }
    }
    start.elapsed()
}

/// `iters` times: grows a buffer from 16 bytes to `max` by doubling with `realloc`, writing its
/// last byte after each step, then frees it; stops early on null.
pub fn growth<A: GlobalAlloc>(heap: &A, max: usize, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let mut layout = Layout::from_size_align(16, 16).unwrap_or(Layout::new::<u128>());
        // SAFETY: non-zero size.
        let mut p = unsafe { heap.alloc(layout) };
        while !p.is_null() && layout.size() < max {
            let new = layout.size() * 2;
            // SAFETY: `p` is a live block of `layout`; `new` is non-zero.
            let q = unsafe { heap.realloc(p, layout, new) };
            if q.is_null() {
                break;
            }
            p = q;
            layout = Layout::from_size_align(new, 16).unwrap_or(layout);
            // SAFETY: the block now has `layout.size()` bytes.
            unsafe { p.add(layout.size() - 1).write(2) };
        }
        if !p.is_null() {
            // SAFETY: `p` is a live block of `layout`.
            unsafe { heap.dealloc(black_box(p), layout) };
        }
    }
    start.elapsed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn loops_run() {
        let l = Layout::from_size_align(64, 8).unwrap();
        let _ = pairs(&System, l, 100);
        let _ = growth(&System, 1 << 16, 10);
    }
}
