//! Contract point: `alloc_zeroed` returns zeros, also for recycled memory.

use core::alloc::GlobalAlloc;

use super::{expect_block, layout};

/// Sizes (small to a few MiB) and alignments cycled through.
const SIZES: &[(usize, usize)] = &[
    (1, 1),
    (8, 8),
    (16, 16),
    (24, 8),
    (48, 16),
    (100, 4),
    (256, 64),
    (1000, 8),
    (4096, 4096),
    (5000, 16),
    (40_000, 8),
    (300_000, 8),
    (1 << 20, 4096),
    ((3 << 20) + 7, 8),
];

/// Rounds of dirty-free-zeroed.
const ROUNDS: usize = 12;

/// Many rounds of: allocate every size, fill with 0xFF, free (in the reverse order, so a LIFO
/// cache hands the same blocks back), then `alloc_zeroed` the same sizes and require every byte
/// zero, and dirty them again for the next round.
pub fn check_alloc_zeroed<A: GlobalAlloc + Sync>(a: &A) {
    let copies = 4;
    for round in 0..ROUNDS {
        let mut dirty = Vec::new();
        for _ in 0..copies {
            for &(size, align) in SIZES {
                // SAFETY: a valid layout.
                let p = unsafe { a.alloc(layout(size, align)) };
                expect_block(p, size, align, "alloc");
                // SAFETY: fresh block of `size` bytes.
                unsafe { p.write_bytes(0xFF, size) };
                dirty.push((p, size, align));
            }
        }
        for &(p, size, align) in dirty.iter().rev() {
            // SAFETY: allocated by `a` with this layout.
            unsafe { a.dealloc(p, layout(size, align)) };
        }
        let mut zeroed = Vec::new();
        for _ in 0..copies {
            for &(size, align) in SIZES {
                // SAFETY: a valid layout.
                let p = unsafe { a.alloc_zeroed(layout(size, align)) };
                expect_block(p, size, align, "alloc_zeroed");
                // SAFETY: p is a live block of `size` bytes.
                let bytes = unsafe { core::slice::from_raw_parts(p, size) };
                if let Some(off) = bytes.iter().position(|&b| b != 0) {
                    panic!(
                        "contract violated: alloc_zeroed returns zeros, also for recycled memory: \
                         round {round}, size {size} align {align}: byte {off} is {:#x}",
                        bytes[off]
                    );
                }
                // SAFETY: as above.
                unsafe { p.write_bytes(0xFF, size) };
                zeroed.push((p, size, align));
            }
        }
        for &(p, size, align) in zeroed.iter().rev() {
            // SAFETY: allocated by `a` with this layout.
            unsafe { a.dealloc(p, layout(size, align)) };
        }
    }
}
