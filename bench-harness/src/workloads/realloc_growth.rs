//! realloc-growth: each thread grows a few buffers at once (interleaved, as a program building
//! several vectors and strings does), each from 16 bytes by doubling up to a random target
//! (256 bytes-256 KiB, log-uniform), writing the new tail after each step, then frees them.
//! Rewards allocators that grow in place.

use std::alloc::GlobalAlloc;

use rand::Rng;

use super::{layout, on_threads, touch, Params};
use crate::worker::{Block, Worker};

/// Buffers growing at once per thread.
const BUFFERS: usize = 4;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let max_shift = if p.size_factor < 0.5 { 14 } else { 18 };
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        while w.keep_going() {
            let mut bufs = [Block::EMPTY; BUFFERS];
            let mut targets = [0usize; BUFFERS];
            for (b, t) in bufs.iter_mut().zip(targets.iter_mut()) {
                *t = 1usize << rng.gen_range(8..=max_shift);
                let ptr = w.alloc(layout(16))?;
                // SAFETY: `ptr` was just allocated with 16 bytes.
                unsafe { touch(ptr, 16, 8) };
                *b = Block {
                    addr: ptr as usize,
                    size: 16,
                };
            }
            let mut growing = true;
            while growing {
                growing = false;
                for (b, &t) in bufs.iter_mut().zip(targets.iter()) {
                    if b.size < t {
                        let new = b.size * 2;
                        // SAFETY: `b` is a live block of `b.size` bytes.
                        let ptr = unsafe { w.realloc(b.addr as *mut u8, layout(b.size), new) }?;
                        // SAFETY: the new tail b.size..new is writable.
                        unsafe { touch(ptr.add(b.size), new - b.size, 9) };
                        *b = Block {
                            addr: ptr as usize,
                            size: new,
                        };
                        growing = true;
                    }
                }
            }
            for b in bufs {
                // SAFETY: a live block of its size.
                unsafe { w.free(b.addr as *mut u8, layout(b.size)) };
            }
        }
        Ok(())
    })
}
