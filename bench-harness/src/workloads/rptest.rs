//! rptest (after the rpmalloc benchmark): each thread keeps about 1000 live blocks of random
//! sizes from 8 bytes to 16 KiB (log-uniform) and replaces random ones; one block in 16 is not
//! freed by its owner but handed to the next thread's queue, which frees it (cross-thread handoff).

use std::alloc::GlobalAlloc;

use crossbeam::queue::ArrayQueue;
use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, Worker};

/// Replacements between deadline checks.
const ROUND: usize = 5_000;
/// One freed block in this many goes to the next thread instead.
const HANDOFF_EVERY: u32 = 16;

/// A log-uniform size in 8..=16384.
pub fn size(rng: &mut impl Rng) -> usize {
    let e = rng.gen_range(3..14);
    ((1usize << e) + rng.gen_range(0..(1usize << e))).min(16384)
}

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(1000, 16);
    let lanes = workers.len();
    let queues: Vec<ArrayQueue<Block>> = (0..lanes).map(|_| ArrayQueue::new(4 * n)).collect();
    let queues = &queues;
    let mut workers = on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut slots = vec![Block::EMPTY; n];
        let next = &queues[(lane + 1) % lanes];
        let mine = &queues[lane];
        while w.keep_going() {
            while let Some(b) = mine.pop() {
                // SAFETY: blocks in a queue are live and were pushed exactly once.
                unsafe { w.free(b.addr as *mut u8, layout(b.size)) };
            }
            for _ in 0..ROUND {
                let i = rng.gen_range(0..n);
                let old = slots[i];
                if !old.is_empty() {
                    let handed = rng.gen_ratio(1, HANDOFF_EVERY) && next.push(old).is_ok();
                    if !handed {
                        // SAFETY: a non-empty slot holds a live block of its size.
                        unsafe { w.free(old.addr as *mut u8, layout(old.size)) };
                    }
                }
                let size = size(&mut rng);
                let ptr = w.alloc(layout(size))?;
                // SAFETY: `ptr` was just allocated with `size` bytes.
                unsafe { touch(ptr, size, 3) };
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
    });
    if let Some(w) = workers.first_mut() {
        for q in queues {
            while let Some(b) = q.pop() {
                // SAFETY: every thread has ended; queued blocks are live and owned by the queue.
                unsafe { w.free(b.addr as *mut u8, layout(b.size)) };
            }
        }
    }
    workers
}
