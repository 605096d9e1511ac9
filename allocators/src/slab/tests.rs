//! Unit tests of the slab allocator, calling it directly (it is not the test binary's global
//! allocator). Tests in one binary share the process-wide heap, so none asserts on totals.

use super::classes::depot_limit;
use super::*;
use std::sync::mpsc;
use std::thread;

const A: Slab = Slab::new();

fn layout(size: usize, align: usize) -> Layout {
    Layout::from_size_align(size, align).unwrap()
}

fn fill(p: *mut u8, size: usize, seed: u8) {
    for i in 0..size {
        // SAFETY: p is a live block of at least `size` bytes.
        unsafe { *p.add(i) = seed.wrapping_add(i as u8) };
    }
}

fn check(p: *const u8, size: usize, seed: u8) {
    for i in 0..size {
        // SAFETY: as in `fill`.
        assert_eq!(unsafe { *p.add(i) }, seed.wrapping_add(i as u8));
    }
}

#[test]
fn every_size_and_alignment_is_served_and_aligned() {
    let mut live = Vec::new();
    for align_shift in 0..=16 {
        let align = 1usize << align_shift;
        for size in [
            1usize, 7, 8, 9, 24, 63, 100, 640, 1000, 4096, 5000, 8192, 9000, 70_000,
        ] {
            let l = layout(size, align);
            // SAFETY: a valid non-zero layout.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            // SAFETY: p is live.
            let usable = unsafe { A.usable_size(p) }.unwrap();
            assert!(usable >= size);
            fill(p, size, size as u8);
            live.push((p, l));
        }
    }
    for &(p, l) in &live {
        check(p, l.size(), l.size() as u8);
    }
    for (p, l) in live {
        // SAFETY: live blocks with their layouts.
        unsafe { A.dealloc(p, l) };
    }
}

#[test]
#[cfg_attr(
    feature = "hardened",
    ignore = "hardened builds reserve a canary word, so a power-of-two size takes the next cache"
)]
fn power_of_two_sizes_are_naturally_aligned() {
    for shift in 3..=15 {
        let size = 1usize << shift;
        let ps: Vec<_> = (0..100)
            // SAFETY: a valid layout.
            .map(|_| unsafe { A.alloc(layout(size, 1)) })
            .collect();
        for &p in &ps {
            assert_eq!(p as usize % size, 0);
            // SAFETY: live block.
            assert_eq!(unsafe { A.usable_size(p) }, Some(size));
        }
        for p in ps {
            // SAFETY: live block.
            unsafe { A.dealloc(p, layout(size, 1)) };
        }
    }
}

#[test]
fn blocks_do_not_overlap_and_survive_churn() {
    let mut rng = 0x1234_5678u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut live: Vec<(*mut u8, Layout, u8)> = Vec::new();
    for round in 0..50_000u32 {
        if live.len() < 2000 && (next() % 3 != 0 || live.is_empty()) {
            let size = if round % 10 == 0 {
                1 + (next() % 34_000) as usize
            } else {
                1 + (next() % 3000) as usize
            };
            let l = layout(size, 1 << (next() % 5));
            // SAFETY: valid layout.
            let p = unsafe { A.alloc(l) };
            assert!(!p.is_null());
            fill(p, size, round as u8);
            live.push((p, l, round as u8));
        } else {
            let i = (next() as usize) % live.len();
            let (p, l, seed) = live.swap_remove(i);
            check(p, l.size(), seed);
            // SAFETY: live block.
            unsafe { A.dealloc(p, l) };
        }
    }
    let mut spans: Vec<(usize, usize)> = live
        .iter()
        .map(|&(p, l, _)| (p as usize, l.size()))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0);
    }
    for (p, l, seed) in live {
        check(p, l.size(), seed);
        // SAFETY: live block.
        unsafe { A.dealloc(p, l) };
    }
}

#[test]
fn realloc_keeps_contents_across_caches_and_large() {
    let mut l = layout(5, 8);
    // SAFETY: valid layout; each realloc's result is live with the new layout.
    unsafe {
        let mut p = A.alloc(l);
        fill(p, 5, 3);
        for new in [
            6usize, 8, 100, 3000, 8192, 20_000, 3_000_000, 12_000, 700, 3,
        ] {
            let q = A.realloc(p, l, new);
            assert!(!q.is_null());
            check(q, l.size().min(new).min(5), 3);
            p = q;
            l = layout(new, 8);
        }
        A.dealloc(p, l);
    }
}

/// A zero-size layout (which `Layout` allows) gets distinct blocks that free cleanly, again and
/// again. Hardened builds once gave it a one-word object whose canary the loose tag overwrote,
/// and its free stopped the program with a false heap overflow.
#[test]
fn zero_size_blocks_are_distinct_and_free_cleanly() {
    let l = layout(0, 8);
    for _ in 0..3 {
        // SAFETY: a zero-size layout (outside GlobalAlloc's contract, inside this allocator's);
        // each block is freed once with its layout.
        unsafe {
            let ps: Vec<_> = (0..100).map(|_| A.alloc(l)).collect();
            assert!(ps.iter().all(|p| !p.is_null()));
            let mut sorted = ps.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), ps.len(), "a zero-size block handed out twice");
            for &p in &ps {
                A.dealloc(p, l);
            }
        }
    }
}

#[test]
fn alloc_zeroed_zeroes_recycled_objects() {
    for size in [8usize, 48, 500, 4096, 8000] {
        let l = layout(size, 8);
        // SAFETY: valid layout; blocks freed once.
        unsafe {
            let ps: Vec<_> = (0..200).map(|_| A.alloc(l)).collect();
            for &p in &ps {
                p.write_bytes(0xEE, size);
            }
            for &p in &ps {
                A.dealloc(p, l);
            }
            for _ in 0..200 {
                let z = A.alloc_zeroed(l);
                assert!((0..size).all(|i| *z.add(i) == 0));
                A.dealloc(z, l);
            }
        }
    }
}

#[test]
fn huge_alignments_go_to_large() {
    for shift in [17u32, 21, 22, 26, 30] {
        let l = layout(100, 1 << shift);
        // SAFETY: valid layout.
        unsafe {
            let p = A.alloc(l);
            assert!(!p.is_null());
            assert_eq!(p as usize % (1 << shift), 0);
            assert_eq!(region_map::owner_of(p), Owner::Large);
            *p = 1;
            A.dealloc(p, l);
        }
    }
}

#[test]
fn cross_thread_frees() {
    let (tx, rx) = mpsc::channel::<Vec<usize>>();
    let producers: Vec<_> = (0..3)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for batch in 0..50 {
                    let v: Vec<usize> = (0..500)
                        .map(|i| {
                            let size = 8 + (i * 37 + t) % 700;
                            // SAFETY: valid layout.
                            let p = unsafe { A.alloc(layout(size, 8)) };
                            fill(p, size, batch as u8);
                            p as usize
                        })
                        .collect();
                    tx.send(v).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let consumer = thread::spawn(move || {
        let mut n = 0;
        for v in rx {
            for (i, p) in v.into_iter().enumerate() {
                // The producer index is unknown here; recompute the size per slot instead.
                let _ = i;
                // SAFETY: usable_size of a live block gives its cache size; free with a layout
                // of that cache (the same cache the original size chose).
                unsafe {
                    let usable = A.usable_size(p as *const u8).unwrap();
                    A.dealloc(p as *mut u8, layout(usable, 8));
                }
                n += 1;
            }
        }
        n
    });
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(consumer.join().unwrap(), 3 * 50 * 500);
}

#[test]
fn short_lived_threads_hand_their_magazines_back() {
    for _ in 0..20 {
        let hs: Vec<_> = (0..50)
            .map(|_| {
                thread::spawn(|| {
                    let l = layout(64, 8);
                    // SAFETY: valid layout, freed once.
                    unsafe {
                        let ps: Vec<_> = (0..300).map(|_| A.alloc(l)).collect();
                        for p in ps {
                            A.dealloc(p, l);
                        }
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }
    // Every thread's magazines went back: the 64-byte cache's depot is bounded and consistent.
    let counts = CACHES[class_for(64, 8).unwrap()].0.lock().check();
    assert!(counts[3] <= cache::DEPOT_KEEP_AFTER_EXIT as usize + 50);
    assert!(counts[4] <= depot_limit(class_for(64, 8).unwrap()) as usize);
}

#[test]
fn foreign_pointers_are_recognised() {
    let x = 7u64;
    // SAFETY: usable_size only inspects metadata for our own regions.
    assert_eq!(
        unsafe { A.usable_size(&x as *const u64 as *const u8) },
        None
    );
    // SAFETY: valid layout, freed once.
    unsafe {
        let p = A.alloc(layout(100, 8));
        assert_eq!(A.usable_size(p.add(8)), None);
        A.dealloc(p, layout(100, 8));
    }
}

#[test]
fn cache_lists_stay_consistent() {
    let l = layout(200, 8);
    // SAFETY: valid layout, each block freed once.
    unsafe {
        let ps: Vec<_> = (0..5000).map(|_| A.alloc(l)).collect();
        for p in ps.into_iter().rev().step_by(1) {
            A.dealloc(p, l);
        }
    }
    for c in CACHES.iter() {
        c.0.lock().check();
    }
}

#[test]
fn fork_child_can_allocate() {
    // Hold magazines in flight in another thread while forking.
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    let churn = thread::spawn(move || {
        while !s2.load(core::sync::atomic::Ordering::Relaxed) {
            // SAFETY: valid layout, freed once.
            unsafe {
                let p = A.alloc(layout(2000, 8));
                A.dealloc(p, layout(2000, 8));
            }
        }
    });
    for _ in 0..20 {
        // SAFETY: the child only calls the allocator and _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: valid layouts; the child exits without unwinding.
            unsafe {
                let p = A.alloc(layout(2000, 8));
                let q = A.alloc(layout(100_000, 8));
                let ok = !p.is_null() && !q.is_null();
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    stop.store(true, core::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

#[test]
fn depot_releases_magazines_unused_for_a_reap_interval() {
    // 7000-byte objects: a cache no other test here uses.
    let l = layout(7000, 8);
    let class = class_for(7000, 8).unwrap();
    let churn = |n: usize| {
        // SAFETY: valid layout, each block freed once.
        unsafe {
            let ps: Vec<_> = (0..n).map(|_| A.alloc(l)).collect();
            for p in ps {
                A.dealloc(p, l);
            }
        }
    };
    churn(1000);
    let burst = CACHES[class].0.lock().check()[3];
    assert!(
        burst >= 50,
        "the burst of frees should sit in the depot, got {burst}"
    );
    // Two quiet intervals with a little traffic: the burst was not needed, so it goes.
    for _ in 0..2 {
        thread::sleep(std::time::Duration::from_millis(
            depot::REAP_INTERVAL_MS + 50,
        ));
        churn(40);
    }
    let after = CACHES[class].0.lock().check()[3];
    assert!(
        after <= 8,
        "depot still holds {after} full magazines (burst {burst})"
    );
}

#[test]
fn cached_large_blocks_are_reused_zeroed_and_grow_in_place() {
    // 300 KiB: a size no other test here uses, so the block found again is this test's.
    let l = layout(300 << 10, 8);
    // SAFETY: valid layouts; every block freed once with its current layout.
    unsafe {
        let p = A.alloc(l);
        assert!(!p.is_null());
        fill(p, l.size(), 3);
        A.dealloc(p, l);
        let q = A.alloc_zeroed(l);
        assert!(!q.is_null());
        assert!(
            (0..l.size()).all(|i| *q.add(i) == 0),
            "a reused block is zeroed"
        );
        fill(q, l.size(), 5);
        let r = A.realloc(q, l, 600 << 10);
        assert!(!r.is_null());
        check(r, l.size(), 5);
        assert!(A.usable_size(r).unwrap() >= 600 << 10);
        A.dealloc(r, layout(600 << 10, 8));
        // Over-aligned requests never take a cached block.
        let big = layout(200 << 10, 1 << 20);
        let s = A.alloc(big);
        assert_eq!(s as usize % (1 << 20), 0);
        A.dealloc(s, big);
    }
}

#[test]
fn a_thread_does_not_first_reuse_an_object_another_thread_allocated() {
    let l = layout(40, 8);
    // SAFETY: valid layout; the block is freed once, by the other thread.
    let given = unsafe { A.alloc(l) } as usize;
    let got = thread::spawn(move || {
        // SAFETY: a live block of this layout, handed over; the new one is freed once.
        unsafe {
            A.dealloc(given as *mut u8, l);
            let p = A.alloc(l);
            A.dealloc(p, l);
            p as usize
        }
    })
    .join()
    .unwrap();
    assert_ne!(got, given);
}
