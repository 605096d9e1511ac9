//! Each deliberately broken allocator of `allocator_suites::broken` is caught by the check for
//! the contract point it breaks: the check panics, with a message naming that point. (The same
//! checks pass for System in `conformance.rs`, so the panics are real detections.)

use std::panic::{catch_unwind, AssertUnwindSafe};

use allocator_suites::broken::{
    FreesOnFailedRealloc, IgnoresLargeAlign, NotZeroing, Overlapping, ReallocLosesBytes,
    WrappingSize,
};
use allocator_suites::conformance as c;

/// Runs `check`, requires it to panic, and returns the panic message.
fn caught(check: impl FnOnce()) -> String {
    let result = catch_unwind(AssertUnwindSafe(check));
    let payload = match result {
        Ok(()) => panic!("the check passed a broken allocator: the suite missed the bug"),
        Err(p) => p,
    };
    if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else {
        String::from("<non-string panic>")
    }
}

fn assert_names(msg: &str, point: &str) {
    assert!(
        msg.contains("contract violated") && msg.contains(point),
        "the check failed, but not for the expected reason ({point:?}): {msg}"
    );
}

#[test]
fn overlapping_blocks_are_caught_by_the_model() {
    let a = Overlapping::new();
    let msg = caught(|| c::check_no_overlap_model_with(&a, 16, 100));
    assert_names(&msg, "blocks never overlap");
}

#[test]
fn overlapping_blocks_are_caught_by_sizes_and_alignments() {
    let a = Overlapping::new();
    let msg = caught(|| c::check_sizes_and_alignments(&a));
    assert_names(&msg, "never overlap");
}

#[test]
fn overlapping_blocks_are_caught_by_the_stress() {
    let a = Overlapping::new();
    let msg = caught(|| {
        c::check_cross_thread_stress_with(&a, 1, 20_000);
    });
    assert_names(&msg, "stay intact until freed");
}

#[test]
fn ignored_large_alignment_is_caught() {
    let msg = caught(|| c::check_sizes_and_alignments(&IgnoresLargeAlign));
    assert_names(&msg, "aligned as asked");
}

#[test]
fn missing_zeroing_of_recycled_memory_is_caught() {
    let msg = caught(|| c::check_alloc_zeroed(&NotZeroing));
    assert_names(&msg, "alloc_zeroed returns zeros");
}

#[test]
fn realloc_losing_bytes_is_caught() {
    let msg = caught(|| c::check_realloc_keeps_bytes(&ReallocLosesBytes));
    assert_names(&msg, "realloc keeps bytes");
}

#[test]
fn failed_realloc_freeing_the_block_is_caught() {
    let msg = caught(|| c::check_failed_realloc_keeps_block(&FreesOnFailedRealloc));
    assert_names(&msg, "old block is untouched");
}

#[test]
fn wrapping_size_computation_is_caught() {
    let msg = caught(|| c::check_impossible_requests(&WrappingSize));
    assert_names(&msg, "impossible request returns null");
}
