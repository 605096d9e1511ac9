//! phase: each round allocates a large set of objects (16-256 bytes), writing each as it is
//! allocated, then frees everything in allocation order, as a compiler pass or a request arena
//! does. The frees find their objects out of the cache (the set is about 14 MB), so a free that
//! reads or writes its object pays a cache miss that one touching only the allocator's own
//! bookkeeping avoids. The only workload whose total allocation a never-reusing allocator can
//! afford (it runs under a byte budget).

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, Worker};

/// Objects between two deadline checks in the allocation phase.
const CHECK_EVERY: usize = 4096;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(100_000, 64);
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut set = vec![Block::EMPTY; n];
        while w.keep_going() {
            // The allocation phase stops early at the deadline (checked every CHECK_EVERY
            // objects), so a slow allocator's last round cannot run far past it.
            let mut filled = set.len();
            for (i, s) in set.iter_mut().enumerate() {
                if i % CHECK_EVERY == CHECK_EVERY - 1 && !w.keep_going() {
                    filled = i;
                    break;
                }
                let size = rng.gen_range(16..=256);
                let ptr = w.alloc(layout(size))?;
                // SAFETY: `ptr` was just allocated with `size` bytes.
                unsafe { touch(ptr, size, 7) };
                *s = Block {
                    addr: ptr as usize,
                    size,
                };
            }
            for s in set[..filled].iter() {
                // SAFETY: every entry below `filled` is a live block of its size, freed once per round.
                unsafe { w.free(s.addr as *mut u8, layout(s.size)) };
            }
        }
        Ok(())
    })
}
