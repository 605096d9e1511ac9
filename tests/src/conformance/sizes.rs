//! Contract point: any size and any power-of-two alignment `Layout` allows is served (or null),
//! aligned as asked, and the blocks live at one time never overlap.

use core::alloc::GlobalAlloc;

use super::{expect_block, layout};
use crate::pattern::{fill_edges, verify_edges};

/// Largest alignment checked: 1 GiB.
pub const MAX_ALIGN_CHECKED: usize = 1 << 30;

/// Sizes checked at every alignment, 1 B to 256 MiB; big blocks are only touched at their edges.
pub const SIZES: &[usize] = &[
    1,
    2,
    3,
    7,
    8,
    15,
    16,
    24,
    63,
    100,
    255,
    1000,
    4095,
    4096,
    4097,
    12_345,
    65_536,
    (1 << 20) + 3,
    (4 << 20) - 1,
    (4 << 20) + 17,
    16 << 20,
    256 << 20,
];

/// For each alignment 1, 2, 4 ... 1 GiB: allocates every size of [`SIZES`] (all live at once),
/// checks alignment, writes the first and last byte and a pattern at both ends, verifies every
/// block after all were written (an overlap shows as a foreign pattern), and frees them.
pub fn check_sizes_and_alignments<A: GlobalAlloc + Sync>(a: &A) {
    let mut align = 1;
    let mut id = 0u64;
    while align <= MAX_ALIGN_CHECKED {
        let mut live = [core::ptr::null_mut::<u8>(); SIZES.len()];
        // Sizes in a scrambled order (7 is coprime to the count), so small requests follow big ones.
        for k in 0..SIZES.len() {
            let i = (k * 7) % SIZES.len();
            let size = SIZES[i];
            let slot = &mut live[i];
            let l = layout(size, align);
            // SAFETY: a valid non-zero-size layout.
            let p = unsafe { a.alloc(l) };
            expect_block(p, size, align, "alloc");
            *slot = p;
            // SAFETY: p is a fresh block of `size` bytes owned by this check.
            unsafe {
                p.write(0xAB);
                p.add(size - 1).write(0xCD);
                assert!(
                    (size == 1 || p.read() == 0xAB) && p.add(size - 1).read() == 0xCD,
                    "contract violated: blocks stay intact: first/last byte of size {size} align {align}"
                );
                fill_edges(p, size, id + size as u64);
            }
        }
        for (&p, &size) in live.iter().zip(SIZES) {
            // SAFETY: p is a live block of `size` bytes filled above.
            if let Err(off) = unsafe { verify_edges(p, size, id + size as u64) } {
                panic!(
                    "contract violated: blocks never overlap and stay intact: block of size {size} \
                     align {align} at {p:p} changed at offset {off} while other blocks were written"
                );
            }
            // SAFETY: p was allocated by `a` with this layout.
            unsafe { a.dealloc(p, layout(size, align)) };
        }
        id += 1 << 32;
        align <<= 1;
    }
}
