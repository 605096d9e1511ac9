//! alloc-test (after the alloc-test of the allocator test suites): sizes drawn from a Pareto
//! distribution capped at 1 KiB (most requests tiny, a long tail), a working set of random slots
//! replaced at random, plus one short-lived temporary block per step.

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, Worker};

/// Steps between deadline checks.
const ROUND: usize = 5_000;

/// A Pareto-distributed size (scale 8 bytes, shape 1.2), capped at 1024.
pub fn size(rng: &mut impl Rng) -> usize {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    ((8.0 / u.powf(1.0 / 1.2)) as usize).clamp(8, 1024)
}

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(4096, 16);
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut slots = vec![Block::EMPTY; n];
        while w.keep_going() {
            for _ in 0..ROUND {
                let t = size(&mut rng);
                let tmp = w.alloc(layout(t))?;
                // SAFETY: `tmp` was just allocated with `t` bytes.
                unsafe { touch(tmp, t, 4) };
                let i = rng.gen_range(0..n);
                let old = slots[i];
                if !old.is_empty() {
                    // SAFETY: a non-empty slot holds a live block of its size.
                    unsafe { w.free(old.addr as *mut u8, layout(old.size)) };
                }
                let s = size(&mut rng);
                let ptr = w.alloc(layout(s))?;
                // SAFETY: `ptr` was just allocated with `s` bytes.
                unsafe { touch(ptr, s, 5) };
                slots[i] = Block {
                    addr: ptr as usize,
                    size: s,
                };
                // SAFETY: allocated above with `t` bytes.
                unsafe { w.free(tmp, layout(t)) };
            }
        }
        for s in slots.into_iter().filter(|s| !s.is_empty()) {
            // SAFETY: a non-empty slot holds a live block of its size.
            unsafe { w.free(s.addr as *mut u8, layout(s.size)) };
        }
        Ok(())
    })
}
