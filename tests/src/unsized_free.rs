//! `Introspect::free_unsized` (what C's `free` calls) really frees: for blocks of many sizes and
//! alignments, small and large, allocated on one thread and freed on another, every free is
//! counted and the live bytes drop; memory the allocator never mapped is left alone.
//!
//! The counters are per allocator and shared by every thread using it, so each allocator's check
//! must be the only user of that allocator in its test binary (`tests/tests/free_unsized.rs`).

use std::alloc::GlobalAlloc;

use allocators::Introspect;

use crate::conformance::{expect_block, layout};

/// The (size, alignment) pairs checked: every size band of every allocator (small, page-sized,
/// a 100 KiB block past the thread caches, and directly mapped large blocks), at C's alignment and
/// at larger ones (`posix_memalign`).
pub const UNSIZED_CASES: &[(usize, usize)] = &[
    (1, 16),
    (16, 16),
    (24, 8),
    (100, 16),
    (1000, 16),
    (4096, 16),
    (5000, 64),
    (100 << 10, 16),
    (300 << 10, 4096),
    (3 << 20, 16),
    (8 << 20, 16),
    (48, 4096),
];

/// Runs the check on `a` (see the module documentation).
pub fn check_free_unsized<A: Introspect>(a: &A) {
    const ROUNDS: usize = 20;
    // Allocate on one thread and let it exit (which folds its counters into the shared ones).
    let blocks: Vec<usize> = std::thread::scope(|s| {
        s.spawn(|| {
            let mut v = Vec::new();
            for _ in 0..ROUNDS {
                for &(size, align) in UNSIZED_CASES {
                    // Padded as C's malloc pads a block its free will not know the size of.
                    let l = layout(A::unsized_request(size).unwrap(), align);
                    // SAFETY: a non-zero size.
                    let p = unsafe { a.alloc(l) };
                    expect_block(p, size, align, "free_unsized setup");
                    // SAFETY: the block holds `size` writable bytes.
                    unsafe {
                        p.write(0x5a);
                        p.add(size - 1).write(0xa5);
                    }
                    v.push(p as usize);
                }
            }
            v
        })
        .join()
        .unwrap()
    });
    let after_alloc = a.stats();
    let requested: usize = UNSIZED_CASES.iter().map(|c| c.0).sum::<usize>() * ROUNDS;
    // Free them from another thread (remote frees), which exits too.
    std::thread::scope(|s| {
        s.spawn(|| {
            for &p in &blocks {
                // SAFETY: a live block of `a`, not used afterwards.
                unsafe { a.free_unsized(p as *mut u8) };
            }
            // Memory `a` never mapped is left alone: a stack array and a block of the system
            // allocator.
            let mut local = [0u64; 4];
            let l = layout(64, 16);
            // SAFETY: a valid layout; the block is freed below by its own allocator.
            let sys = unsafe { std::alloc::System.alloc(l) };
            assert!(!sys.is_null());
            // SAFETY: neither pointer is memory `a` mapped.
            unsafe {
                a.free_unsized(local.as_mut_ptr().cast());
                a.free_unsized(sys);
                std::alloc::System.dealloc(sys, l);
            }
            std::hint::black_box(&mut local);
        })
        .join()
        .unwrap()
    });
    let after_free = a.stats();
    let freed = after_free.frees - after_alloc.frees;
    assert_eq!(
        freed,
        blocks.len() as u64,
        "free_unsized: {} blocks freed, {freed} frees counted ({after_alloc:?} -> {after_free:?})",
        blocks.len()
    );
    // Frees are counted at the usable size (at least the requested one).
    assert!(
        after_free.live_bytes + requested <= after_alloc.live_bytes || after_free.live_bytes == 0,
        "free_unsized: live bytes fell by less than the {requested} freed \
         ({after_alloc:?} -> {after_free:?})"
    );
}
