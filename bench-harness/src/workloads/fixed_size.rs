//! fixed-size: one object size (64 bytes), allocated in sets and freed once in LIFO order and
//! once in random order, per round: the case object caches (slabs) are built for.

use std::alloc::GlobalAlloc;

use rand::seq::SliceRandom;

use super::{layout, on_threads, touch, Params};
use crate::worker::Worker;

/// The object size.
const SIZE: usize = 64;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = p.scaled(1000, 16);
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        let mut set: Vec<usize> = Vec::with_capacity(n);
        while w.keep_going() {
            for random_order in [false, true] {
                for i in 0..n {
                    let ptr = w.alloc(layout(SIZE))?;
                    // SAFETY: `ptr` was just allocated with SIZE bytes.
                    unsafe { touch(ptr, SIZE, i as u8) };
                    set.push(ptr as usize);
                }
                if random_order {
                    set.shuffle(&mut rng);
                }
                while let Some(addr) = set.pop() {
                    // SAFETY: each address in `set` is a live block of SIZE bytes, freed once.
                    unsafe { w.free(addr as *mut u8, layout(SIZE)) };
                }
            }
        }
        Ok(())
    })
}
