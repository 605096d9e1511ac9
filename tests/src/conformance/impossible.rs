//! Contract point: requests that cannot be served (sizes near `isize::MAX`, huge alignments with
//! huge sizes) return null, and the allocator keeps working afterwards.

use core::alloc::GlobalAlloc;

use super::{expect_block, layout};
use crate::pattern::{fill, verify};

/// The largest size `Layout` accepts for `align`: `isize::MAX + 1 - align`.
pub fn max_size_for(align: usize) -> usize {
    (isize::MAX as usize + 1) - align
}

/// Impossible requests through `alloc` and `alloc_zeroed` return null; then ordinary requests
/// are still served correctly.
pub fn check_impossible_requests<A: GlobalAlloc + Sync>(a: &A) {
    let mut requests = Vec::new();
    for align in [1usize, 8, 16, 4096, 1 << 21, 1 << 30] {
        requests.push((max_size_for(align), align));
        requests.push((max_size_for(align) / 2 + 1, align));
        requests.push((1usize << 52, align));
    }
    requests.push((1 << 47, 1 << 30));
    for (size, align) in requests {
        let l = layout(size, align);
        // SAFETY: a valid layout; a non-null result would be freed below.
        let p = unsafe { a.alloc(l) };
        if !p.is_null() {
            // SAFETY: returned by `a` for this layout.
            unsafe { a.dealloc(p, l) };
            panic!(
                "contract violated: an impossible request returns null: alloc(size {size:#x}, align {align:#x}) \
                 returned {p:p}"
            );
        }
        // SAFETY: as above.
        let p = unsafe { a.alloc_zeroed(l) };
        if !p.is_null() {
            // SAFETY: returned by `a` for this layout.
            unsafe { a.dealloc(p, l) };
            panic!(
                "contract violated: an impossible request returns null: alloc_zeroed(size {size:#x}, align \
                 {align:#x}) returned {p:p}"
            );
        }
    }
    // The allocator keeps working.
    let mut blocks = Vec::new();
    for i in 0..2000usize {
        let size = 1 + (i * 37) % 3000 + if i % 500 == 0 { 3 << 20 } else { 0 };
        let align = 1 << (i % 13);
        // SAFETY: a valid layout.
        let p = unsafe { a.alloc(layout(size, align)) };
        expect_block(p, size, align, "alloc after impossible requests");
        // SAFETY: fresh block of `size` bytes.
        unsafe { fill(p, 0..size, i as u64) };
        blocks.push((p, size, align, i as u64));
    }
    for (p, size, align, id) in blocks {
        // SAFETY: live block filled above.
        if let Err(off) = unsafe { verify(p, 0..size, id) } {
            panic!(
                "contract violated: the allocator keeps working after impossible requests: block {id} \
                 (size {size}) changed at offset {off}"
            );
        }
        // SAFETY: allocated by `a` with this layout.
        unsafe { a.dealloc(p, layout(size, align)) };
    }
}
