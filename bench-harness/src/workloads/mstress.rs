//! mstress (after mimalloc-bench's mstress): threads allocate power-of-two blocks (rarely huge
//! ones) and swap them into random slots of one shared array, freeing whatever block they take
//! out (often another thread's); threads are recreated every round. Each block stores its own
//! size in its first word, as the freeing thread needs it.

use std::alloc::GlobalAlloc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::Rng;

use super::{layout, on_threads, Params};
use crate::worker::{OutOfMemory, Worker};

/// Swaps per thread generation.
const ROUND: usize = 10_000;
/// One request in this many is huge (256 KiB-2 MiB).
const HUGE_EVERY: u32 = 5_000;

/// Frees the block stored at `addr` (0: nothing).
///
/// # Safety
/// `addr` is 0 or a live block of `w`'s allocator whose first word holds its size.
unsafe fn free_stored<A: GlobalAlloc>(w: &mut Worker<'_, A>, addr: usize) {
    if addr != 0 {
        // SAFETY: the block starts with its size, written when it was allocated.
        let size = unsafe { (addr as *const usize).read() };
        // SAFETY: a live block of `size` bytes, now owned by this thread alone (swapped out).
        unsafe { w.free(addr as *mut u8, layout(size)) };
    }
}

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let slots: Vec<AtomicUsize> = (0..p.scaled(2000, 16) * workers.len())
        .map(|_| AtomicUsize::new(0))
        .collect();
    let slots = &slots;
    let mut workers = on_threads(workers, |lane, w| {
        let mut round = 0u64;
        while w.keep_going() {
            round += 1;
            let mut rng = p.rng(lane, round);
            let w = &mut *w;
            std::thread::scope(|s| {
                s.spawn(move || -> Result<(), OutOfMemory> {
                    for _ in 0..ROUND {
                        let size = if rng.gen_ratio(1, HUGE_EVERY) {
                            1usize << rng.gen_range(18..=21)
                        } else {
                            1usize << rng.gen_range(4..=12)
                        };
                        let ptr = w.alloc(layout(size))?;
                        // SAFETY: the block has at least 16 bytes, 16-aligned.
                        unsafe { (ptr as *mut usize).write(size) };
                        let i = rng.gen_range(0..slots.len());
                        let old = slots[i].swap(ptr as usize, Ordering::AcqRel);
                        // SAFETY: a slot holds 0 or a live block with its size in front.
                        unsafe { free_stored(w, old) };
                    }
                    Ok(())
                })
                .join()
                .unwrap_or_else(|e| std::panic::resume_unwind(e))
            })?;
        }
        Ok(())
    });
    if let Some(w) = workers.first_mut() {
        for s in slots {
            // SAFETY: every thread has ended; each slot holds 0 or a live block.
            unsafe { free_stored(w, s.swap(0, Ordering::AcqRel)) };
        }
    }
    workers
}
