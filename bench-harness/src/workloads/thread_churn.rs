//! thread-churn: each lane starts short-lived threads one after another; each allocates a few
//! hundred small blocks, frees most of them and leaves the rest to its lane, which frees them
//! after the thread has exited. Thousands of threads pass per cell: an allocator must hand a
//! dead thread's cache back, or memory grows.

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, OutOfMemory, Worker};

/// Blocks each short-lived thread allocates.
const PER_THREAD: usize = 256;
/// Of which it leaves this many for its lane to free.
const LEFT_OVER: usize = 16;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    on_threads(workers, |lane, w| {
        let mut round = 0u64;
        let mut left = [Block::EMPTY; LEFT_OVER];
        while w.keep_going() {
            round += 1;
            let mut rng = p.rng(lane, round);
            let w2 = &mut *w;
            let left_ref = &mut left;
            std::thread::scope(|s| {
                s.spawn(move || -> Result<(), OutOfMemory> {
                    let mut blocks = [Block::EMPTY; PER_THREAD];
                    for b in blocks.iter_mut() {
                        let size = rng.gen_range(16..=512);
                        let ptr = w2.alloc(layout(size))?;
                        // SAFETY: `ptr` was just allocated with `size` bytes.
                        unsafe { touch(ptr, size, 12) };
                        *b = Block {
                            addr: ptr as usize,
                            size,
                        };
                    }
                    for (i, b) in blocks.iter().enumerate() {
                        if i < LEFT_OVER {
                            left_ref[i] = *b;
                        } else {
                            // SAFETY: a live block of its size, freed once.
                            unsafe { w2.free(b.addr as *mut u8, layout(b.size)) };
                        }
                    }
                    Ok(())
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
            })?;
            for b in left.iter_mut() {
                // SAFETY: blocks left by the exited thread, live, freed once here.
                unsafe { w.free(b.addr as *mut u8, layout(b.size)) };
                *b = Block::EMPTY;
            }
        }
        Ok(())
    })
}
