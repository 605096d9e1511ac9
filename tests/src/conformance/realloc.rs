//! Contract point: `realloc` keeps bytes `0..min(old, new)`, growing and shrinking, at small and
//! large alignments; a failed `realloc` returns null and leaves the old block intact and usable.

use core::alloc::GlobalAlloc;

use super::impossible::max_size_for;
use super::{expect_block, layout};
use crate::pattern::{fill, verify};

/// The size chain each block is grown through and then shrunk back along.
const CHAIN: &[usize] = &[
    1,
    2,
    3,
    8,
    17,
    64,
    100,
    1000,
    4095,
    4096,
    5000,
    65_536,
    100_000,
    (1 << 20) - 5,
    (1 << 20) + 5,
    3 << 20,
    (5 << 20) + 123,
    9 << 20,
];

/// Alignments the chains run at.
const ALIGNS: &[usize] = &[1, 8, 16, 64, 256, 4096];

/// For each alignment, grows a block through [`CHAIN`] and shrinks it back, verifying after each
/// step that bytes `0..min(old, new)` kept their pattern, then refilling to the new size. A
/// second block is allocated between steps (so growth in place is sometimes impossible and the
/// move path runs too), and its contents are checked at the end.
pub fn check_realloc_keeps_bytes<A: GlobalAlloc + Sync>(a: &A) {
    for (n, &align) in ALIGNS.iter().enumerate() {
        let id = 1000 + n as u64;
        let mut size = CHAIN[0];
        // SAFETY: a valid layout.
        let mut p = unsafe { a.alloc(layout(size, align)) };
        expect_block(p, size, align, "alloc before realloc");
        // SAFETY: fresh block of `size` bytes.
        unsafe { fill(p, 0..size, id) };
        let mut blockers = Vec::new();
        let steps = CHAIN.iter().skip(1).chain(CHAIN.iter().rev().skip(1));
        for (step, &new_size) in steps.enumerate() {
            // SAFETY: p is live with layout (size, align); new_size rounded to align fits isize.
            let q = unsafe { a.realloc(p, layout(size, align), new_size) };
            expect_block(q, new_size, align, "realloc");
            let kept = size.min(new_size);
            // SAFETY: q is a live block of new_size >= kept bytes.
            if let Err(off) = unsafe { verify(q, 0..kept, id) } {
                panic!(
                    "contract violated: realloc keeps bytes 0..min(old, new): {size} -> {new_size} \
                     (align {align}) lost byte {off}"
                );
            }
            // SAFETY: as above; the new tail belongs to the block now.
            unsafe { fill(q, kept..new_size, id) };
            p = q;
            size = new_size;
            if step % 2 == 0 {
                let bsize = 24 + step * 8;
                // SAFETY: a valid layout.
                let b = unsafe { a.alloc(layout(bsize, 8)) };
                expect_block(b, bsize, 8, "alloc between reallocs");
                // SAFETY: fresh block.
                unsafe { fill(b, 0..bsize, id * 100 + step as u64) };
                blockers.push((b, bsize, id * 100 + step as u64));
            }
        }
        for (b, bsize, bid) in blockers {
            // SAFETY: live block filled above.
            if let Err(off) = unsafe { verify(b, 0..bsize, bid) } {
                panic!(
                    "contract violated: blocks stay intact: a block allocated between reallocs \
                     (size {bsize}) changed at offset {off}"
                );
            }
            // SAFETY: allocated by `a` with this layout.
            unsafe { a.dealloc(b, layout(bsize, 8)) };
        }
        // SAFETY: p is live with this layout.
        unsafe { a.dealloc(p, layout(size, align)) };
    }
}

/// A realloc to a size no allocator can serve (`isize::MAX + 1 - align`, so `Layout` stays
/// valid) returns null and leaves the block intact; the block can still be written, grown
/// normally and freed.
pub fn check_failed_realloc_keeps_block<A: GlobalAlloc + Sync>(a: &A) {
    for (i, &(size, align)) in [
        (24, 8),
        (100, 16),
        (5000, 4096),
        (3 << 20, 8),
        (64, 1 << 21),
    ]
    .iter()
    .enumerate()
    {
        let id = 77 + i as u64;
        // SAFETY: a valid layout.
        let p = unsafe { a.alloc(layout(size, align)) };
        expect_block(p, size, align, "alloc before failing realloc");
        // SAFETY: fresh block.
        unsafe { fill(p, 0..size, id) };
        for huge in [max_size_for(align), max_size_for(align) / 2 + 1, 1 << 52] {
            // SAFETY: p is live with this layout; `huge` rounded up to align fits isize.
            let q = unsafe { a.realloc(p, layout(size, align), huge) };
            assert!(
                q.is_null(),
                "contract violated: an impossible realloc returns null: {size} -> {huge:#x} gave {q:p}"
            );
            // SAFETY: the failed realloc left p live.
            if let Err(off) = unsafe { verify(p, 0..size, id) } {
                panic!(
                    "contract violated: on a failed realloc the old block is untouched: size {size} \
                     align {align}: byte {off} changed"
                );
            }
        }
        // Still usable: rewrite, grow, verify, free.
        // SAFETY: p is live.
        unsafe { fill(p, 0..size, id + 1) };
        // SAFETY: p is live with this layout; the new size is small.
        let q = unsafe { a.realloc(p, layout(size, align), size * 2) };
        expect_block(q, size * 2, align, "realloc after a failed realloc");
        // SAFETY: q holds at least `size` bytes.
        if let Err(off) = unsafe { verify(q, 0..size, id + 1) } {
            panic!(
                "contract violated: after a failed realloc the block stays usable: growing it lost byte {off}"
            );
        }
        // SAFETY: allocated by `a` with this layout.
        unsafe { a.dealloc(q, layout(size * 2, align)) };
    }
}
