//! thread-pool: producer threads that come and go, consumers that stay. `threads` is the number
//! of (consumer, producer) pairs: lanes `0..threads` are the long-lived consumers, lanes
//! `threads..2*threads` the producers, spawned afresh for each of [`BATCHES`] batches and exiting
//! at its end (each batch's producers run on new threads, reusing the lanes' recorders).
//!
//! A producer allocates blocks of 16 B to 4 KiB (log-uniform), writes them in full and hands them
//! in chunks to the consumers in turn. Each consumer keeps the blocks it received in arrival
//! order and frees the oldest while it holds more than its share of the live set (384 MiB in
//! all at full scale, [`Params::program_bytes`]): nearly every free is of a block whose
//! allocating thread has exited. After the last batch the consumers free everything, then idle
//! for a while, allocating a 4 KiB block now and then: the RSS sampled over time shows whether
//! the memory of the exited threads goes back to the kernel.
//!
//! The schedule is fixed (it does not stop at the cell's deadline), so every allocator goes through
//! the same batches; the cell lasts as long as that takes (a few seconds at full scale).

use std::alloc::GlobalAlloc;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, Sender};
use rand::Rng;

use super::{layout, value_size, write_value, Params};
use crate::worker::{OutOfMemory, Worker};

/// The consumers' live set at full scale, over all consumers.
pub const FULL_LIVE_BYTES: usize = 384 << 20;

/// Batches of producers; together they produce four times the live set.
const BATCHES: usize = 16;

/// Blocks per chunk handed from a producer to a consumer.
const CHUNK: usize = 256;

/// A chunk of blocks (addresses; each block's size is in its first word).
type Chunk = Vec<usize>;

/// The idle tail after everything is freed, at full scale (shorter at smaller scales).
const FULL_IDLE: Duration = Duration::from_millis(600);

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    mut workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let pairs = (workers.len() / 2).max(1);
    let producers = workers.split_off(pairs.min(workers.len()));
    let consumers = workers;
    let live = p.program_bytes(FULL_LIVE_BYTES);
    let consumer_limit = live / pairs;
    let per_producer_batch = live * 4 / (BATCHES * pairs);
    let scale = live as f64 / FULL_LIVE_BYTES as f64;
    let idle = FULL_IDLE.mul_f64(scale.clamp(0.1, 1.0));

    let (txs, rxs): (Vec<Sender<Chunk>>, Vec<Receiver<Chunk>>) =
        (0..consumers.len()).map(|_| bounded(8)).unzip();
    std::thread::scope(|s| {
        let consumer_threads: Vec<_> = consumers
            .into_iter()
            .zip(rxs)
            .map(|(mut w, rx)| {
                s.spawn(move || {
                    // An error is in the cell's `Shared` too, which `workloads::run` reports.
                    let _ = consume(&mut w, rx, consumer_limit, idle);
                    w
                })
            })
            .collect();
        let mut producers = producers;
        for batch in 0..BATCHES {
            let threads: Vec<_> = producers
                .into_iter()
                .enumerate()
                .map(|(j, mut w)| {
                    let txs = txs.clone();
                    s.spawn(move || {
                        // As for `consume`.
                        let _ = produce(&mut w, &txs, p, pairs + j, batch, per_producer_batch);
                        w
                    })
                })
                .collect();
            producers = threads.into_iter().map(join).collect();
        }
        drop(txs);
        let mut all: Vec<Worker<'a, A>> = consumer_threads.into_iter().map(join).collect();
        all.extend(producers);
        all
    })
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().unwrap_or_else(|_| std::process::exit(3))
}

/// One producer's batch: `bytes` of blocks, in chunks to the consumers in turn.
fn produce<A: GlobalAlloc>(
    w: &mut Worker<'_, A>,
    txs: &[Sender<Chunk>],
    p: &Params,
    lane: usize,
    batch: usize,
    bytes: usize,
) -> Result<(), OutOfMemory> {
    let mut rng = p.rng(lane, batch as u64);
    let mut made = 0usize;
    let mut next = lane % txs.len().max(1);
    while made < bytes {
        let mut chunk = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK && made < bytes {
            let size = (rng.gen_range(4.0f64..12.0).exp2() as usize).clamp(16, 4096);
            let ptr = w.alloc(layout(size))?;
            // SAFETY: `ptr` was just allocated with `size >= 16` bytes, 16-byte aligned.
            unsafe { write_value(ptr, size, batch as u8) };
            chunk.push(ptr as usize);
            made += size;
        }
        if let Err(e) = txs[next].send(chunk) {
            // Cannot happen (consumers live until every sender is gone); free rather than leak.
            for b in e.into_inner() {
                // SAFETY: a live block written by `write_value`, never handed out.
                unsafe { w.free(b as *mut u8, layout(value_size(b))) };
            }
        }
        next = (next + 1) % txs.len();
    }
    Ok(())
}

/// A consumer: keeps the blocks it receives, frees the oldest while over `limit` bytes; when
/// the producers are done, frees everything and idles for `idle`.
fn consume<A: GlobalAlloc>(
    w: &mut Worker<'_, A>,
    rx: Receiver<Chunk>,
    limit: usize,
    idle: Duration,
) -> Result<(), OutOfMemory> {
    let mut held: VecDeque<usize> = VecDeque::with_capacity(limit / 512);
    let mut live = 0usize;
    for chunk in rx {
        for b in chunk {
            // SAFETY: a live block written by `write_value`, handed over by its producer.
            live += unsafe { value_size(b) };
            held.push_back(b);
            while live > limit {
                let Some(old) = held.pop_front() else { break };
                // SAFETY: a live block, taken out of `held`, so freed once.
                unsafe {
                    let size = value_size(old);
                    w.free(old as *mut u8, layout(size));
                    live -= size;
                }
            }
        }
    }
    for b in held.drain(..) {
        // SAFETY: as above.
        unsafe { w.free(b as *mut u8, layout(value_size(b))) };
    }
    // The idle tail: a 4 KiB block now and then, as a program that goes on lightly.
    let end = Instant::now() + idle;
    while Instant::now() < end {
        let ptr = w.alloc(layout(4096))?;
        // SAFETY: `ptr` was just allocated with 4096 bytes; freed once right after.
        unsafe {
            write_value(ptr, 4096, 1);
            w.free(ptr, layout(4096));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}
