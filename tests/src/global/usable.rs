//! `usable_size` agrees with every block: for many sizes and alignments, and after realloc, it
//! answers `Some(n)` with `n >= size` (less the allocator's padding, see `Probe::unsized_pad`),
//! and writing all `n` bytes leaves every other block intact.
//! A stack address is not ours: `None` (for allocators that recognise foreign memory).

use std::alloc::{alloc, dealloc, realloc, Layout};

use super::Probe;
use crate::pattern::{fill, verify};

struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    usable: usize,
    id: u64,
}

fn usable_of(probe: &Probe, b: &Block) -> usize {
    // SAFETY: b is a live block of the global allocator.
    let n = unsafe { (probe.usable_size)(b.ptr) };
    match n {
        // An allocator's padding (hardened canaries) is not usable; a request made without it
        // may get that much less (see `hardened::UnsizedPad::UNSIZED_PAD`).
        // The requested bytes are the caller's whatever the answer: the test writes them all.
        Some(n) if n + probe.unsized_pad >= b.size => n.max(b.size),
        other => panic!(
            "{}: usable_size of a live block of size {} align {} is {other:?}, expected Some(n >= {})",
            probe.name,
            b.size,
            b.align,
            b.size - b.size.min(probe.unsized_pad)
        ),
    }
}

/// Allocates blocks of many sizes and alignments through the global allocator, fills each one's
/// whole usable size with its pattern, and verifies all of them (a usable size that reaches into
/// a neighbour shows as a foreign pattern); then reallocs every block and does it again.
pub fn check_usable_size(probe: &Probe) {
    let sizes = [
        1usize,
        7,
        8,
        9,
        16,
        24,
        31,
        48,
        64,
        100,
        255,
        512,
        1000,
        2047,
        4096,
        5000,
        20_000,
        100_000,
        1 << 20,
        3 << 20,
    ];
    let aligns = [1usize, 8, 16, 64, 4096, 1 << 16, 1 << 22];
    let mut blocks = Vec::new();
    let mut id = 1u64;
    for _ in 0..3 {
        for &align in &aligns {
            for &size in &sizes {
                let l = Layout::from_size_align(size, align).expect("valid layout");
                // SAFETY: a valid non-zero-size layout.
                let ptr = unsafe { alloc(l) };
                assert!(
                    !ptr.is_null(),
                    "{}: alloc({size}, {align}) returned null",
                    probe.name
                );
                let mut b = Block {
                    ptr,
                    size,
                    align,
                    usable: 0,
                    id,
                };
                id += 1;
                b.usable = usable_of(probe, &b);
                // SAFETY: the allocator says `usable` bytes at ptr are the block's.
                unsafe { fill(b.ptr, 0..b.usable, b.id) };
                blocks.push(b);
            }
        }
    }
    verify_all(probe, &blocks, "after allocation");

    for (i, b) in blocks.iter_mut().enumerate() {
        let new_size = if i % 2 == 0 {
            b.size * 3 + 5
        } else {
            b.size.div_ceil(2)
        };
        let l = Layout::from_size_align(b.size, b.align).expect("valid layout");
        // SAFETY: b is live with layout l; new_size is small.
        let q = unsafe { realloc(b.ptr, l, new_size) };
        assert!(!q.is_null(), "{}: realloc returned null", probe.name);
        let kept = b.size.min(new_size);
        // SAFETY: q holds at least `kept` bytes.
        if let Err(off) = unsafe { verify(q, 0..kept, b.id) } {
            panic!(
                "{}: realloc {} -> {new_size} lost byte {off}",
                probe.name, b.size
            );
        }
        b.ptr = q;
        b.size = new_size;
        b.id += 1_000_000;
        b.usable = usable_of(probe, b);
        // SAFETY: as above.
        unsafe { fill(b.ptr, 0..b.usable, b.id) };
    }
    verify_all(probe, &blocks, "after realloc");

    if probe.recognises_foreign {
        let on_stack = [0u8; 64];
        // SAFETY: a foreign address; allocators that recognise foreign memory answer None.
        let n = unsafe { (probe.usable_size)(on_stack.as_ptr()) };
        assert_eq!(
            n, None,
            "{}: usable_size of a stack address must be None",
            probe.name
        );
    }

    for b in blocks {
        // SAFETY: b is live with this layout.
        unsafe {
            dealloc(
                b.ptr,
                Layout::from_size_align(b.size, b.align).expect("valid layout"),
            )
        };
    }
}

fn verify_all(probe: &Probe, blocks: &[Block], when: &str) {
    for b in blocks {
        // SAFETY: every block is live and `usable` bytes long.
        if let Err(off) = unsafe { verify(b.ptr, 0..b.usable, b.id) } {
            panic!(
                "{}: writing every block's usable size disturbed a neighbour ({when}): block of size {} \
                 align {} (usable {}) changed at offset {off}",
                probe.name, b.size, b.align, b.usable
            );
        }
    }
}
