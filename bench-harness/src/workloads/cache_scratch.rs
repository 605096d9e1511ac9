//! cache-scratch (after Berger et al.'s Hoard benchmark for passive false sharing): one thread
//! allocates a small object for every thread (likely neighbours on one cache line) and hands them
//! out; each thread frees the object it was given, then allocates a small object, writes it many
//! times and frees it, in a loop. An allocator that hands a thread memory on a cache line another
//! thread is writing makes the writes slow.

use std::alloc::GlobalAlloc;

use super::{layout, on_threads, Params};
use crate::worker::{Block, OutOfMemory, Worker};

/// Object size (several share a 64-byte line).
const SIZE: usize = 8;
/// Writes to each object before it is freed.
const WRITES: usize = 100;
/// Allocate/write/free iterations between deadline checks.
const ROUND: usize = 2_000;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    mut workers: Vec<Worker<'a, A>>,
    _p: &Params,
) -> Vec<Worker<'a, A>> {
    let n = workers.len();
    let Some(w0) = workers.first_mut() else {
        return workers;
    };
    let handed: Result<Vec<Block>, OutOfMemory> = (0..n)
        .map(|_| {
            Ok(Block {
                addr: w0.alloc(layout(SIZE))? as usize,
                size: SIZE,
            })
        })
        .collect();
    // On an error (in the cell's `Shared` too, which `workloads::run` reports) the blocks made
    // so far are left: the cell's process ends with it.
    let Ok(handed) = handed else {
        return workers;
    };
    on_threads(workers, |lane, w| {
        let given = handed[lane];
        // SAFETY: `given` was allocated above with SIZE bytes and is freed only here.
        unsafe { w.free(given.addr as *mut u8, layout(SIZE)) };
        while w.keep_going() {
            for _ in 0..ROUND {
                let ptr = w.alloc(layout(SIZE))? as *mut u64;
                for j in 0..WRITES {
                    // SAFETY: `ptr` is a live, 8-aligned block of SIZE = 8 bytes.
                    unsafe { ptr.write_volatile(j as u64) };
                }
                // SAFETY: allocated just above with SIZE bytes.
                unsafe { w.free(ptr as *mut u8, layout(SIZE)) };
            }
        }
        Ok(())
    })
}
