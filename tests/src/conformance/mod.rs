//! The conformance suite: one check function per point of the allocator contract (DESIGN.md,
//! "The contract"), generic over any `GlobalAlloc + Sync` and called on the allocator directly.
//!
//! Each check panics with a message that starts with `contract violated:` and names the point
//! broken. [`conformance_tests!`](crate::conformance_tests) makes one `#[test]` per check.

mod impossible;
mod model;
mod realloc;
mod sizes;
mod stress;
mod zeroed;

pub use impossible::check_impossible_requests;
pub use model::{check_no_overlap_model, check_no_overlap_model_with};
pub use realloc::{check_failed_realloc_keeps_block, check_realloc_keeps_bytes};
pub use sizes::check_sizes_and_alignments;
pub use stress::{check_cross_thread_stress, check_cross_thread_stress_with, STRESS_OPERATIONS};
pub use zeroed::check_alloc_zeroed;

use core::alloc::Layout;

/// A layout, or a panic naming the suite's own mistake (never the allocator's).
pub(crate) fn layout(size: usize, align: usize) -> Layout {
    match Layout::from_size_align(size, align) {
        Ok(l) => l,
        Err(_) => panic!("suite bug: invalid layout size {size} align {align}"),
    }
}

/// Panics unless `ptr` is non-null and aligned to `align`.
pub(crate) fn expect_block(ptr: *mut u8, size: usize, align: usize, what: &str) {
    assert!(
        !ptr.is_null(),
        "contract violated: {what}: a satisfiable request (size {size}, align {align}) returned null"
    );
    assert!(
        (ptr as usize).is_multiple_of(align),
        "contract violated: blocks are aligned as asked: {what}: size {size} align {align} got {ptr:p}"
    );
}

/// One `#[test]` per conformance check, in a module named `$name`, for the allocator value
/// `$make` (an expression evaluated afresh for each test; the allocators of this workspace are
/// zero-sized handles onto one heap, so that is the same heap each time). A trailing
/// `ignore = "reason"` marks every test `#[ignore]` (for an allocator with a known bug; run them
/// with `--ignored`).
///
/// ```text
/// allocator_suites::conformance_tests!(bump, allocators::Bump::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($name:ident, $make:expr) => {
        $crate::conformance_tests!(@gen $name, $make, []);
    };
    ($name:ident, $make:expr, ignore = $reason:literal) => {
        $crate::conformance_tests!(@gen $name, $make, [#[ignore = $reason]]);
    };
    (@gen $name:ident, $make:expr, [$(#[$attr:meta])*]) => {
        mod $name {
            fn allocator() -> impl ::core::alloc::GlobalAlloc + Sync {
                $make
            }

            #[test]
            $(#[$attr])*
            fn sizes_and_alignments() {
                $crate::conformance::check_sizes_and_alignments(&allocator());
            }

            #[test]
            $(#[$attr])*
            fn realloc_keeps_bytes() {
                $crate::conformance::check_realloc_keeps_bytes(&allocator());
            }

            #[test]
            $(#[$attr])*
            fn failed_realloc_keeps_block() {
                $crate::conformance::check_failed_realloc_keeps_block(&allocator());
            }

            #[test]
            $(#[$attr])*
            fn alloc_zeroed_returns_zeros() {
                $crate::conformance::check_alloc_zeroed(&allocator());
            }

            #[test]
            $(#[$attr])*
            fn no_overlap_model() {
                $crate::conformance::check_no_overlap_model(&allocator());
            }

            #[test]
            $(#[$attr])*
            fn cross_thread_stress() {
                $crate::conformance::check_cross_thread_stress(&allocator());
            }

            #[test]
            $(#[$attr])*
            fn impossible_requests() {
                $crate::conformance::check_impossible_requests(&allocator());
            }
        }
    };
}
