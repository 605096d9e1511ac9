//! power-of-two: every request is a power of two (8 bytes to 4 KiB, one in 100 up to 64 KiB),
//! replacing random slots of a working set: no rounding waste for a buddy allocator.

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, Worker};

/// Replacements between deadline checks.
const ROUND: usize = 5_000;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(2000, 16);
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut slots = vec![Block::EMPTY; n];
        while w.keep_going() {
            for _ in 0..ROUND {
                let i = rng.gen_range(0..n);
                let old = slots[i];
                if !old.is_empty() {
                    // SAFETY: a non-empty slot holds a live block of its size.
                    unsafe { w.free(old.addr as *mut u8, layout(old.size)) };
                }
                let k = if rng.gen_ratio(1, 100) {
                    rng.gen_range(13..=16)
                } else {
                    rng.gen_range(3..=12)
                };
                let size = 1usize << k;
                let ptr = w.alloc(layout(size))?;
                // SAFETY: `ptr` was just allocated with `size` bytes.
                unsafe { touch(ptr, size, 6) };
                slots[i] = Block {
                    addr: ptr as usize,
                    size,
                };
            }
        }
        for s in slots.into_iter().filter(|s| !s.is_empty()) {
            // SAFETY: a non-empty slot holds a live block of its size.
            unsafe { w.free(s.addr as *mut u8, layout(s.size)) };
        }
        Ok(())
    })
}
