//! Unit tests of the bump allocator's internals.

use super::*;

/// A request that does not fit the rest of the chunk, when that rest is long enough to go on
/// the spare list, must get a fresh chunk (it once got its own too-short tail back, and null).
#[test]
fn refill_skips_spare_tails_too_short_for_the_request() {
    std::thread::spawn(|| {
        let bump = Bump::new();
        let small = Layout::from_size_align(16, 16).unwrap();
        // SAFETY: valid layouts; the blocks are never used after the thread ends.
        unsafe {
            let first = bump.alloc(small);
            assert!(!first.is_null());
            let chunk_end = region_map::window_base(first) + CHUNK_SIZE;
            // Fill the chunk until between 5 KiB and 6 KiB are left.
            loop {
                let cursor = bump.alloc(small) as usize + 16;
                let left = chunk_end - cursor;
                if left < 6 * 1024 {
                    assert!(left >= 5 * 1024, "step overshot: {left}");
                    break;
                }
                let step = (left - 5 * 1024 - 2 * HEADER - 32).min(LARGE_THRESHOLD);
                assert!(!bump
                    .alloc(Layout::from_size_align(step, 16).unwrap())
                    .is_null());
            }
            let big = bump.alloc(Layout::from_size_align(8192, 16).unwrap());
            assert!(!big.is_null());
            big.write_bytes(1, 8192);
        }
    })
    .join()
    .unwrap();
}
