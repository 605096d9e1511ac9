//! Minimal reproductions of bugs the suites found in Bump, kept as regression tests.

use std::alloc::{GlobalAlloc, Layout};

/// Bump's refill (`Arena::alloc_refill`) used to hand the rest of the current chunk to the shared
/// spare list, then `take_chunk` popped the head of that list, which is the tail it had just pushed;
/// if the request did not fit in that tail, `alloc_refill` returned null instead of mapping a
/// fresh chunk. So the fourth 1 MiB block of a thread (4 MiB chunks, 8-byte headers) is null.
#[test]
fn bump_refill_does_not_return_null_for_a_request_larger_than_the_leftover_tail() {
    std::thread::spawn(|| {
        let a = allocators::Bump::new();
        let l = Layout::from_size_align(1 << 20, 8).expect("valid layout");
        for i in 0..8 {
            // SAFETY: a valid layout; the blocks are leaked on purpose (Bump never reuses them).
            let p = unsafe { a.alloc(l) };
            assert!(
                !p.is_null(),
                "Bump returned null for the 1 MiB block number {i} (satisfiable)"
            );
        }
    })
    .join()
    .expect("the allocation thread");
}
