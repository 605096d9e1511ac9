//! larson (after Larson & Krishnan's server simulation): each thread owns an array of slots and
//! repeatedly frees a random slot and refills it with a block of 8-1000 bytes; after each round
//! the slots pass to a NEW thread, which frees blocks its predecessor allocated (cross-thread
//! frees, thread churn).

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, OutOfMemory, Worker};

/// Slot replacements per thread generation.
const ROUND: usize = 20_000;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(1000, 16);
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut slots = vec![Block::EMPTY; n];
        for s in slots.iter_mut() {
            let size = rng.gen_range(8..=1000);
            let ptr = w.alloc(layout(size))?;
            // SAFETY: `ptr` was just allocated with `size` bytes.
            unsafe { touch(ptr, size, 1) };
            *s = Block {
                addr: ptr as usize,
                size,
            };
        }
        let mut round = 0u64;
        while w.keep_going() {
            round += 1;
            let mut rng = p.rng(lane, round);
            let slots = &mut slots;
            let w = &mut *w;
            // A new thread per generation, inheriting the previous generation's blocks.
            std::thread::scope(|s| {
                s.spawn(move || -> Result<(), OutOfMemory> {
                    for _ in 0..ROUND {
                        let i = rng.gen_range(0..slots.len());
                        let old = slots[i];
                        // SAFETY: every slot holds a live block allocated with its size.
                        unsafe { w.free(old.addr as *mut u8, layout(old.size)) };
                        let size = rng.gen_range(8..=1000);
                        let ptr = w.alloc(layout(size))?;
                        // SAFETY: `ptr` was just allocated with `size` bytes.
                        unsafe { touch(ptr, size, 2) };
                        slots[i] = Block {
                            addr: ptr as usize,
                            size,
                        };
                    }
                    Ok(())
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
            })?;
        }
        for s in slots {
            // SAFETY: every slot holds a live block allocated with its size.
            unsafe { w.free(s.addr as *mut u8, layout(s.size)) };
        }
        Ok(())
    })
}
