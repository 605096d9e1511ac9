//! The slab allocator gives memory back: 1 GiB of small objects allocated by four threads, freed
//! by other threads, must leave only a few MiB mapped. Its own process (an integration test), so
//! no other test's blocks are counted.

use allocators::{Introspect, Slab};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Barrier};
use std::thread;

const A: Slab = Slab::new();
const THREADS: usize = 4;
const TOTAL: usize = 1 << 30;
/// One thread's blocks: (address, size).
type Share = Arc<std::sync::Mutex<Vec<(usize, usize)>>>;

const SIZES: [usize; 7] = [24, 64, 100, 256, 512, 2000, 12_000];

#[test]
fn one_gib_of_small_objects_comes_back() {
    let per_thread = TOTAL / THREADS;
    let barrier = Arc::new(Barrier::new(THREADS));
    // Each thread allocates its share, then frees the share of the next thread.
    let shares: Vec<Share> = (0..THREADS).map(|_| Arc::default()).collect();
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            let shares = shares.clone();
            thread::spawn(move || {
                let mut mine = Vec::new();
                let mut bytes = 0;
                let mut i = t;
                while bytes < per_thread {
                    let size = SIZES[i % SIZES.len()];
                    i += 1;
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: a valid layout.
                    let p = unsafe { A.alloc(layout) };
                    assert!(!p.is_null());
                    // SAFETY: p is live with `size` bytes.
                    unsafe { p.write_bytes(t as u8, size) };
                    mine.push((p as usize, size));
                    bytes += size;
                }
                *shares[t].lock().unwrap() = mine;
                barrier.wait();
                let theirs = std::mem::take(&mut *shares[(t + 1) % THREADS].lock().unwrap());
                for (p, size) in theirs {
                    // SAFETY: a live block of `size` bytes, freed once (only this thread frees
                    // the next thread's share).
                    unsafe { A.dealloc(p as *mut u8, Layout::from_size_align(size, 8).unwrap()) };
                }
                barrier.wait();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let s = A.stats();
    eprintln!(
        "slab: peak mapped {} MiB, mapped after freeing everything {} KiB, live {} B",
        s.peak_mapped_bytes >> 20,
        s.mapped_bytes >> 10,
        s.live_bytes
    );
    assert!(s.peak_mapped_bytes >= TOTAL);
    assert_eq!(s.live_bytes, 0);
    assert!(s.mapped_bytes <= 8 << 20, "mapped {} B", s.mapped_bytes);
}
