//! Contract point: a frees from B's memory is normal and safe. Threads allocate patterned blocks
//! and hand many of them to other threads (crossbeam channels), which verify and free them.

use core::alloc::GlobalAlloc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::layout;
use crate::pattern::{fill, verify, Rng};

/// Allocations plus frees the default run performs (at least).
pub const STRESS_OPERATIONS: u64 = 1_000_000;

/// A block in flight between threads.
struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    id: u64,
}

// SAFETY: a block is owned by exactly one thread at a time; it moves by value through a channel.
unsafe impl Send for Block {}

/// Runs the stress with 4 threads and [`STRESS_OPERATIONS`] operations; returns the operations
/// counted.
pub fn check_cross_thread_stress<A: GlobalAlloc + Sync>(a: &A) -> u64 {
    let start = std::time::Instant::now();
    let ops = check_cross_thread_stress_with(a, 4, STRESS_OPERATIONS);
    println!(
        "cross-thread stress: {ops} operations (allocations + frees) in {:?}",
        start.elapsed()
    );
    assert!(
        ops >= STRESS_OPERATIONS,
        "suite bug: only {ops} operations counted"
    );
    ops
}

/// Runs `threads` threads that together perform about `operations` allocations and frees, about
/// half of the frees on a thread other than the allocating one. Every block carries its id's
/// pattern, verified when it is freed. Returns the operations counted.
pub fn check_cross_thread_stress_with<A: GlobalAlloc + Sync>(
    a: &A,
    threads: usize,
    operations: u64,
) -> u64 {
    let allocations_per_thread = operations.div_ceil(2 * threads as u64);
    let counted = AtomicU64::new(0);
    let (senders, receivers): (Vec<Sender<Block>>, Vec<Receiver<Block>>) =
        (0..threads).map(|_| unbounded()).unzip();
    std::thread::scope(|s| {
        let workers: Vec<_> = receivers
            .into_iter()
            .enumerate()
            .map(|(t, rx)| {
                let senders = senders.clone();
                let counted = &counted;
                s.spawn(move || {
                    let ops = worker(a, t, senders, rx, allocations_per_thread);
                    counted.fetch_add(ops, Ordering::Relaxed);
                })
            })
            .collect();
        // Only the workers hold senders now, so each receiver disconnects when all are done.
        drop(senders);
        for w in workers {
            // Re-raise a worker's panic with its own message (it names the violation).
            if let Err(payload) = w.join() {
                std::panic::resume_unwind(payload);
            }
        }
    });
    counted.load(Ordering::Relaxed)
}

fn free_block<A: GlobalAlloc>(a: &A, b: Block, by: usize) {
    // SAFETY: b is a live block of `size` bytes, owned by this thread now.
    if let Err(off) = unsafe { verify(b.ptr, 0..b.size, b.id) } {
        panic!(
            "contract violated: blocks stay intact until freed (cross-thread): block {:#x} of size \
             {} changed at offset {off}, found by thread {by}",
            b.id, b.size
        );
    }
    // SAFETY: allocated by `a` with this layout, freed once.
    unsafe { a.dealloc(b.ptr, layout(b.size, b.align)) };
}

fn worker<A: GlobalAlloc>(
    a: &A,
    t: usize,
    senders: Vec<Sender<Block>>,
    rx: Receiver<Block>,
    allocations: u64,
) -> u64 {
    let mut rng = Rng::new(0xC0FFEE + t as u64);
    let mut local: Vec<Block> = Vec::with_capacity(512);
    let mut ops = 0u64;
    for n in 0..allocations {
        let size = rng.small_biased_size(64 * 1024);
        let align = 1usize << rng.below(7);
        // SAFETY: a valid layout.
        let p = unsafe { a.alloc(layout(size, align)) };
        assert!(
            !p.is_null() && (p as usize).is_multiple_of(align),
            "contract violated: alloc(size {size}, align {align}) gave {p:p} (null or misaligned)"
        );
        let id = ((t as u64) << 48) | n;
        // SAFETY: a fresh block of `size` bytes.
        unsafe { fill(p, 0..size, id) };
        ops += 1;
        let b = Block {
            ptr: p,
            size,
            align,
            id,
        };
        match rng.below(4) {
            // Hand it to another thread (or, rarely, back to ourselves through the channel).
            0 | 1 => {
                let to = rng.below(senders.len());
                if let Err(e) = senders[to].send(b) {
                    free_block(a, e.into_inner(), t);
                    ops += 1;
                }
            }
            _ => local.push(b),
        }
        if local.len() > 256 {
            let i = rng.below(local.len());
            free_block(a, local.swap_remove(i), t);
            ops += 1;
        }
        while let Ok(b) = rx.try_recv() {
            free_block(a, b, t);
            ops += 1;
        }
    }
    for b in local.drain(..) {
        free_block(a, b, t);
        ops += 1;
    }
    drop(senders);
    // Every thread drops its senders when done, so this ends once all have finished sending.
    for b in rx.iter() {
        free_block(a, b, t);
        ops += 1;
    }
    ops
}
