//! fragmentation: each round fills memory with small objects (16-128 bytes), frees 90% of them at
//! random (leaving every page sparsely used), then allocates larger objects (256-2048 bytes),
//! then frees everything. RSS and live bytes are sampled over time by the cell: a good allocator
//! reuses the holes or returns the emptied pages; a poor one keeps growing.

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, Worker};

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(50_000, 64);
    let m = n / 10;
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut small = vec![Block::EMPTY; n];
        let mut large = vec![Block::EMPTY; m];
        while w.keep_going() {
            for s in small.iter_mut() {
                let size = rng.gen_range(16..=128);
                let ptr = w.alloc(layout(size))?;
                // SAFETY: `ptr` was just allocated with `size` bytes.
                unsafe { touch(ptr, size, 10) };
                *s = Block {
                    addr: ptr as usize,
                    size,
                };
            }
            for s in small.iter_mut() {
                if rng.gen_ratio(9, 10) {
                    // SAFETY: a live block of its size, freed once (the slot is emptied).
                    unsafe { w.free(s.addr as *mut u8, layout(s.size)) };
                    *s = Block::EMPTY;
                }
            }
            for l in large.iter_mut() {
                let size = rng.gen_range(256..=2048);
                let ptr = w.alloc(layout(size))?;
                // SAFETY: `ptr` was just allocated with `size` bytes.
                unsafe { touch(ptr, size, 11) };
                *l = Block {
                    addr: ptr as usize,
                    size,
                };
            }
            for b in small.iter_mut().chain(large.iter_mut()) {
                if !b.is_empty() {
                    // SAFETY: a live block of its size, freed once (the slot is emptied).
                    unsafe { w.free(b.addr as *mut u8, layout(b.size)) };
                    *b = Block::EMPTY;
                }
            }
        }
        Ok(())
    })
}
