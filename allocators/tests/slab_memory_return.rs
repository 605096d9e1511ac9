//! The slab allocator gives memory back: 1 GiB of small objects allocated by four threads, freed
//! by other threads, must leave only a few MiB mapped; and a burst freed by a thread that keeps
//! running drains back within a few reap intervals. Its own process (an integration test), so
//! no other test's blocks are counted; the tests here take turns.

use allocators::{Introspect, Slab};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::{Arc, Barrier};
use std::thread;

const A: Slab = Slab::new();

/// The tests of this file run one at a time, so that one test's memory figures are its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}
const THREADS: usize = 4;
const TOTAL: usize = 1 << 30;
/// One thread's blocks: (address, size).
type Share = Arc<std::sync::Mutex<Vec<(usize, usize)>>>;

const SIZES: [usize; 7] = [24, 64, 100, 256, 512, 2000, 12_000];

#[test]
fn one_gib_of_small_objects_comes_back() {
    let _serial = serial();
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

#[test]
fn a_burst_freed_by_a_running_thread_drains_back() {
    let _serial = serial();
    let layout = Layout::from_size_align(200, 8).unwrap();
    let before = A.stats().mapped_bytes;
    // SAFETY: a valid layout; every block freed once.
    let blocks: Vec<usize> = (0..(256 << 20) / 200)
        .map(|_| unsafe { A.alloc(layout) } as usize)
        .collect();
    assert!(blocks.iter().all(|&p| p != 0));
    for p in blocks {
        // SAFETY: a live block of this layout.
        unsafe { A.dealloc(p as *mut u8, layout) };
    }
    let cached = A.stats().mapped_bytes;
    // This thread keeps running and allocating a little (another size); the reaper, driven from
    // its slow paths, hands the unused burst back within a few intervals.
    let small = Layout::from_size_align(48, 8).unwrap();
    for _ in 0..10 {
        std::thread::sleep(std::time::Duration::from_millis(60));
        // SAFETY: a valid layout; every block freed once.
        unsafe {
            let v: Vec<usize> = (0..200).map(|_| A.alloc(small) as usize).collect();
            for p in v {
                A.dealloc(p as *mut u8, small);
            }
        }
    }
    let after = A.stats().mapped_bytes;
    eprintln!(
        "slab: burst of 256 MiB freed by a running thread: mapped {} KiB before, {} KiB right after \
         the frees, {} KiB 600 ms later",
        before >> 10,
        cached >> 10,
        after >> 10
    );
    assert!(
        after <= before + (8 << 20),
        "mapped {after} B, before {before} B"
    );
}
