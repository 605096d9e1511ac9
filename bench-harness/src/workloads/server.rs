//! server: a key-value cache at a real program's scale. Each thread owns one shard of the cache,
//! with a byte limit (512 MiB in all at full scale, [`Params::program_bytes`]), like a cache's
//! `maxmemory`. Keys are replaced continuously: insert a value of the current phase's size mix
//! (written in full) and, while the shard is over its limit, delete a random key.
//!
//! Values are 16 B to 64 KiB; log2 of a value's size is the phase's centre plus a triangular
//! spread of +-4 octaves. The centre moves from small to large and back ([`CENTRES`]): the first
//! phase fills the cache with small values, each later phase inserts half the cache's size in
//! new values. Random deletion leaves the small values' pages sparsely used when large values
//! come in, the pattern that fragments long-running servers; RSS is sampled over time by the cell.
//!
//! The schedule is fixed (it does not stop at the cell's deadline), so every allocator goes through
//! the same phases; the cell lasts as long as that takes (a few seconds at full scale).

use std::alloc::GlobalAlloc;

use rand::rngs::SmallRng;
use rand::Rng;

use super::{layout, on_threads, value_size, write_value, Params};
use crate::worker::Worker;

/// The cache's byte limit at full scale, over all shards.
pub const FULL_LIVE_BYTES: usize = 512 << 20;

/// log2 of the size at the centre of each phase's mix: 256 B, 2 KiB, 16 KiB and back. The first
/// phase fills the cache; each later one inserts [`TURNOVER`] times the cache's size.
const CENTRES: [f64; 5] = [8.0, 11.0, 14.0, 11.0, 8.0];

/// New bytes inserted by each phase after the first, as a fraction of the cache's size. (The
/// schedule is sized to take a few seconds at full scale: one cache-sized fill and two more
/// cache sizes of inserts, every byte written, take about 2-4 s at 2 threads on 2 cores.)
const TURNOVER: f64 = 0.5;

/// Smallest and largest value.
const MIN_VALUE: usize = 16;
const MAX_VALUE: usize = 64 << 10;

/// A value size of the phase centred on `centre` (log2).
fn value_size_around(rng: &mut SmallRng, centre: f64) -> usize {
    // Triangular on [-4, 4] octaves: the sum of two uniforms on [-2, 2].
    let x = centre + rng.gen_range(-2.0..2.0) + rng.gen_range(-2.0..2.0);
    (x.exp2() as usize).clamp(MIN_VALUE, MAX_VALUE)
}

/// Runs the workload; see the module documentation.
pub fn run<'a, A: GlobalAlloc + Sync>(
    workers: Vec<Worker<'a, A>>,
    p: &Params,
) -> Vec<Worker<'a, A>> {
    let shard_limit = p.program_bytes(FULL_LIVE_BYTES) / p.threads.max(1);
    let per_phase = (shard_limit as f64 * TURNOVER) as usize;
    on_threads(workers, |lane, w| {
        let mut rng = p.rng(lane, 0);
        // The index: one address per key (a value's size is in its first word). Sized for the
        // first phase's count so it rarely grows: about 1% of the live bytes.
        let mut keys: Vec<usize> = Vec::with_capacity(shard_limit / 512);
        let mut live = 0usize;
        for (phase, &centre) in CENTRES.iter().enumerate() {
            let fill = phase as u8;
            let mut inserted = 0usize;
            // Phase 0 fills the cache; later phases each insert `per_phase` bytes.
            while if phase == 0 {
                live < shard_limit
            } else {
                inserted < per_phase
            } {
                let size = value_size_around(&mut rng, centre);
                while live + size > shard_limit && !keys.is_empty() {
                    let victim = keys.swap_remove(rng.gen_range(0..keys.len()));
                    // SAFETY: `victim` is a live value written by `write_value`, removed from
                    // the index so it is freed once.
                    unsafe {
                        let victim_size = value_size(victim);
                        w.free(victim as *mut u8, layout(victim_size));
                        live -= victim_size;
                    }
                }
                let ptr = w.alloc(layout(size))?;
                // SAFETY: `ptr` was just allocated with `size >= 16` bytes, 16-byte aligned.
                unsafe { write_value(ptr, size, fill) };
                keys.push(ptr as usize);
                live += size;
                inserted += size;
            }
        }
        for k in keys.drain(..) {
            // SAFETY: every key left in the index is a live value, freed once (drained).
            unsafe { w.free(k as *mut u8, layout(value_size(k))) };
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sizes_stay_in_range_and_follow_the_centre() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mean = |rng: &mut SmallRng, c: f64| {
            (0..10_000)
                .map(|_| value_size_around(rng, c))
                .inspect(|s| assert!((MIN_VALUE..=MAX_VALUE).contains(s)))
                .sum::<usize>()
                / 10_000
        };
        let small = mean(&mut rng, 8.0);
        let large = mean(&mut rng, 14.0);
        assert!(small < 1024 && large > 8 * 1024, "{small} {large}");
    }
}
