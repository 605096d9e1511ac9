//! xmalloc (after Lever & Boreham's xmalloc-test): producer threads allocate 64-byte objects in
//! batches and pass each full batch to a consumer thread, which frees every object: all frees
//! are remote frees, at full speed. `threads` counts producer/consumer pairs.

use std::alloc::GlobalAlloc;

use crossbeam::channel;

use super::{layout, on_threads, touch, Params};
use crate::worker::Worker;

/// Object size.
const SIZE: usize = 64;
/// Batches in flight per pair.
const IN_FLIGHT: usize = 8;

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let pairs = (workers.len() / 2).max(1);
    let batch = p.scaled(1000, 8);
    // Per pair: full batches one way, empty (recycled) batch vectors the other way; all batch
    // vectors are made here, before timing, so the harness does not allocate while timed.
    let full: Vec<_> = (0..pairs)
        .map(|_| channel::bounded::<Vec<usize>>(IN_FLIGHT + 1))
        .collect();
    let empty: Vec<_> = (0..pairs)
        .map(|_| {
            let (tx, rx) = channel::bounded::<Vec<usize>>(IN_FLIGHT + 1);
            for _ in 0..IN_FLIGHT {
                let _ = tx.send(Vec::with_capacity(batch));
            }
            (tx, rx)
        })
        .collect();
    on_threads(workers, |lane, w| {
        let pair = lane % pairs;
        let (full_tx, full_rx) = &full[pair];
        let (empty_tx, empty_rx) = &empty[pair];
        if lane < pairs {
            // Producer.
            while w.keep_going() {
                let Ok(mut b) = empty_rx.recv() else { break };
                for i in 0..batch {
                    let ptr = w.alloc(layout(SIZE))?;
                    // SAFETY: `ptr` was just allocated with SIZE bytes.
                    unsafe { touch(ptr, SIZE, i as u8) };
                    b.push(ptr as usize);
                }
                if full_tx.send(b).is_err() {
                    break;
                }
            }
            // An empty batch tells the consumer to stop.
            let _ = full_tx.send(Vec::new());
        } else {
            // Consumer.
            while let Ok(mut b) = full_rx.recv() {
                if b.is_empty() {
                    break;
                }
                for &addr in &b {
                    // SAFETY: the producer allocated each address with SIZE bytes; each is freed once.
                    unsafe { w.free(addr as *mut u8, layout(SIZE)) };
                }
                b.clear();
                let _ = empty_tx.send(b);
            }
        }
        Ok(())
    })
}
