//! Unit tests of the buddy allocator: the arena's splitting and coalescing checked with its
//! invariant checker, and the global allocator under threads, reallocs and odd layouts.

use super::arena::{Arena, Census};
use super::region::{CAPACITY, GRANULE, MAX_ORDER, META_SIZE, MIN_ORDER};
use super::*;
use crate::hardened::UnsizedPad;
use crate::region_map::REGION_SIZE;

/// Tests that read the shared arenas' census take this exclusively; the others share it.
static SERIAL: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    SERIAL.read().unwrap_or_else(|e| e.into_inner())
}

/// A small xorshift generator (tests must not depend on the allocator under test).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// The census of a wholly free region: the four top blocks, 256 KiB .. 2 MiB.
fn one_free_region() -> Census {
    Census {
        regions: 1,
        free_blocks: 4,
        used_blocks: 0,
        free_bytes: CAPACITY,
    }
}

#[test]
fn order_for_rounds_up_to_powers_of_two() {
    assert_eq!(order_for(0, 1), MIN_ORDER);
    assert_eq!(order_for(1, 1), MIN_ORDER);
    assert_eq!(order_for(16, 8), 4);
    assert_eq!(order_for(17, 8), 5);
    assert_eq!(order_for(1000, 8), 10);
    assert_eq!(order_for(1024, 8), 10);
    assert_eq!(order_for(8, 4096), 12);
    assert_eq!(order_for(1 << 21, 8), MAX_ORDER);
    assert!(order_for((1 << 21) + 1, 8) > MAX_ORDER);
}

#[test]
fn a_region_fully_freed_in_random_order_coalesces_back() {
    let counters = GlobalCounters::new();
    let mut arena = Arena::new(NUM_ARENAS + 1);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    // Fill exactly one region with blocks of random orders (each no larger than the largest free
    // block, so no second region is ever mapped).
    let first = arena.alloc_block(MIN_ORDER, &counters) as usize;
    assert_ne!(first, 0);
    let mut blocks = vec![(first, MIN_ORDER)];
    let mut free = CAPACITY - GRANULE;
    while free > 0 {
        let largest = arena.largest_free_order().expect("some free block");
        let order = MIN_ORDER + rng.below((largest.min(14) - MIN_ORDER + 1) as usize) as u32;
        let p = arena.alloc_block(order, &counters) as usize;
        assert_eq!(
            region::base_of(p),
            region::base_of(first),
            "stayed in one region"
        );
        assert!(p.is_multiple_of(1 << order));
        // SAFETY: p is a fresh block of `order`, ours alone.
        unsafe { (p as *mut u8).write_bytes(0xA5, 1 << order) };
        blocks.push((p, order));
        free -= 1 << order;
    }
    let full = arena.check_invariants();
    assert_eq!(full.regions, 1);
    assert_eq!(full.free_bytes, 0);
    assert_eq!(full.used_blocks, blocks.len());
    rng.shuffle(&mut blocks);
    for (i, &(p, order)) in blocks.iter().enumerate() {
        // SAFETY: each block was allocated above with this order and is freed once.
        unsafe { arena.free_block(p, order, &counters) };
        if i % 4096 == 0 {
            arena.check_invariants();
        }
    }
    // Everything coalesced: the region is its four top blocks again (it is kept as the arena's
    // one spare rather than unmapped).
    assert_eq!(arena.check_invariants(), one_free_region());
    assert_eq!(counters.snapshot().mapped_bytes, REGION_SIZE);
    release_spare(&mut arena, &counters);
}

/// Allocates a second region's worth, frees all, and checks only one region remains.
#[test]
fn a_second_empty_region_goes_back_to_the_kernel() {
    let counters = GlobalCounters::new();
    let mut arena = Arena::new(NUM_ARENAS + 2);
    // Three 2 MiB blocks need two regions (one per region).
    let blocks: Vec<usize> = (0..3)
        .map(|_| arena.alloc_block(MAX_ORDER, &counters) as usize)
        .collect();
    assert!(blocks.iter().all(|&p| p != 0));
    assert_eq!(arena.check_invariants().regions, 3);
    // Mapped counts each region's metadata and its blocks that were ever written (or handed out).
    let block = 1usize << MAX_ORDER;
    assert_eq!(counters.snapshot().mapped_bytes, 3 * (META_SIZE + block));
    for &p in &blocks {
        // SAFETY: allocated above with MAX_ORDER.
        unsafe { arena.free_block(p, MAX_ORDER, &counters) };
    }
    assert_eq!(arena.check_invariants(), one_free_region());
    assert_eq!(counters.snapshot().mapped_bytes, META_SIZE + block);
    release_spare(&mut arena, &counters);
}

#[test]
fn dirty_free_blocks_beyond_the_budget_are_discarded() {
    let counters = GlobalCounters::new();
    let mut arena = Arena::new(NUM_ARENAS + 6);
    // Six regions, each holding a written 2 MiB block and a 1 MiB block that pins the region.
    let mut big = Vec::new();
    let mut pins = Vec::new();
    for _ in 0..6 {
        let p = arena.alloc_block(MAX_ORDER, &counters);
        let q = arena.alloc_block(MAX_ORDER - 1, &counters);
        assert!(!p.is_null() && !q.is_null());
        // SAFETY: p is a live 2 MiB block.
        unsafe { p.write_bytes(0x5A, 1 << MAX_ORDER) };
        big.push(p as usize);
        pins.push(q as usize);
    }
    assert_eq!(arena.check_invariants().regions, 6);
    let block = 1usize << MAX_ORDER;
    let before = counters.snapshot().mapped_bytes;
    for &p in &big {
        // SAFETY: live blocks of MAX_ORDER, freed once.
        unsafe { arena.free_block(p, MAX_ORDER, &counters) };
    }
    arena.check_invariants();
    // 12 MiB of dirty 2 MiB blocks exceed the 8 MiB budget: the first five were discarded when
    // the fifth was freed, the sixth is still dirty.
    assert!(6 * block > super::arena::PURGE_THRESHOLD);
    assert_eq!(counters.snapshot().mapped_bytes, before - 5 * block);
    let (p, clean) = arena.alloc_block_clean(MAX_ORDER, &counters);
    assert!(!clean, "the last freed block is reused first and is dirty");
    let (q, clean) = arena.alloc_block_clean(MAX_ORDER, &counters);
    assert!(clean, "a discarded block is clean");
    // SAFETY: q is a live 2 MiB block; the kernel zeroed it past the links.
    unsafe {
        assert!(std::slice::from_raw_parts(q, block)[GRANULE..]
            .iter()
            .all(|&b| b == 0));
        arena.free_block(p as usize, MAX_ORDER, &counters);
        arena.free_block(q as usize, MAX_ORDER, &counters);
        for &p in &pins {
            arena.free_block(p, MAX_ORDER - 1, &counters);
        }
    }
    assert_eq!(arena.check_invariants(), one_free_region());
    release_spare(&mut arena, &counters);
}

/// Unmaps the arena's spare region so tests leave nothing mapped.
fn release_spare(arena: &mut Arena, counters: &GlobalCounters) {
    arena.release_empty_regions(counters);
    assert_eq!(arena.check_invariants(), Census::default());
    assert_eq!(counters.snapshot().mapped_bytes, 0);
}

#[test]
fn split_and_grow_and_shrink_in_place() {
    let counters = GlobalCounters::new();
    let mut arena = Arena::new(NUM_ARENAS + 3);
    let p = arena.alloc_block(MIN_ORDER, &counters) as usize;
    // A fresh region splits its 256 KiB block down to 16 B: the buddies above are free.
    // SAFETY: p is a live block of MIN_ORDER from this arena.
    unsafe {
        assert!(arena.grow_in_place(p, MIN_ORDER, 12, &counters));
        arena.check_invariants();
        (p as *mut u8).write_bytes(1, 4096);
        arena.shrink_in_place(p, 12, 6, &counters);
        let c = arena.check_invariants();
        assert_eq!(c.used_blocks, 1);
        assert_eq!(c.free_bytes, CAPACITY - 64);
        let q = arena.alloc_block(6, &counters) as usize;
        assert_eq!(q, p + 64, "the freed upper half is reused first");
        assert!(!arena.grow_in_place(p, 6, 7, &counters), "buddy in use");
        arena.free_block(q, 6, &counters);
        arena.free_block(p, 6, &counters);
    }
    assert_eq!(arena.check_invariants(), one_free_region());
    release_spare(&mut arena, &counters);
}

/// What `usable_size` promises for a live block of `size` bytes: at least `size`, less the
/// canary's bytes (`UnsizedPad::UNSIZED_PAD`, 8 in hardened builds), which it leaves out even
/// of a block whose request filled it (see `Introspect::usable_size`).
fn promised_usable(size: usize) -> usize {
    size.saturating_sub(Buddy::UNSIZED_PAD)
}

fn check_global_arenas() {
    for arena in &ARENAS {
        arena.lock().check_invariants();
    }
}

#[test]
fn sizes_alignments_and_contents() {
    let _serial = shared();
    let a = Buddy::new();
    let mut live = Vec::new();
    for shift in 0..23usize {
        for &extra in &[0usize, 1, 3] {
            let size = (1usize << shift) + extra;
            for align in [1usize, 8, 64, 4096, 1 << 16] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a non-zero-size layout.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                // SAFETY: p is a live block of `size` bytes.
                unsafe {
                    assert!(a.usable_size(p).unwrap() >= promised_usable(size));
                    p.write_bytes((shift + extra) as u8, size);
                }
                live.push((p, layout, (shift + extra) as u8));
            }
        }
    }
    check_global_arenas();
    for (p, layout, byte) in live {
        // SAFETY: each block is live with its layout and was filled with `byte`.
        unsafe {
            assert_eq!(*p, byte);
            assert_eq!(*p.add(layout.size() - 1), byte);
            a.dealloc(p, layout);
        }
    }
    check_global_arenas();
}

#[test]
fn huge_alignments_go_to_large() {
    let _serial = shared();
    let a = Buddy::new();
    for shift in [21usize, 22, 26, 30] {
        let layout = Layout::from_size_align(100, 1 << shift).unwrap();
        // SAFETY: a valid layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % (1 << shift), 0);
            p.write_bytes(3, 100);
            a.dealloc(p, layout);
        }
    }
}

#[test]
fn zeroed_memory_is_zero_even_when_recycled() {
    let _serial = shared();
    let a = Buddy::new();
    for size in [16usize, 100, 4096, 70_000, 3 << 20] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: valid layouts; blocks written and freed before being zero-allocated again.
        unsafe {
            let p = a.alloc(layout);
            p.write_bytes(0xFF, size);
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0));
            a.dealloc(q, layout);
        }
    }
}

#[test]
fn realloc_keeps_contents_through_every_path() {
    let _serial = shared();
    let a = Buddy::new();
    let layout = Layout::from_size_align(10, 8).unwrap();
    // SAFETY: each realloc passes the block's current layout; contents checked up to min size.
    unsafe {
        let mut p = a.alloc(layout);
        let mut size = 10usize;
        for i in 0..size {
            *p.add(i) = i as u8;
        }
        for new_size in [
            20usize,
            33,
            5000,
            100_000,
            3 << 20,
            10 << 20,
            1 << 20,
            300,
            17,
            3,
        ] {
            let q = a.realloc(p, Layout::from_size_align(size, 8).unwrap(), new_size);
            assert!(!q.is_null());
            for i in 0..size.min(new_size).min(10) {
                assert_eq!(*q.add(i), i as u8, "byte {i} after {size} -> {new_size}");
            }
            assert!(a.usable_size(q).unwrap() >= promised_usable(new_size));
            p = q;
            size = new_size;
        }
        a.dealloc(p, Layout::from_size_align(size, 8).unwrap());
    }
    check_global_arenas();
}

#[test]
fn internal_fragmentation_is_counted() {
    let _serial = shared();
    // In a fresh thread, so the thread's own delta can be read exactly (other tests running
    // concurrently move the shared counter).
    std::thread::spawn(|| {
        let a = Buddy::new();
        let layout = Layout::from_size_align(600, 8).unwrap();
        let waste = || with_cache(|c| c.waste.get(), || 0);
        with_cache(|c| c.flush_waste(), || ());
        // SAFETY: a valid layout.
        let ptrs: Vec<_> = (0..100).map(|_| unsafe { a.alloc(layout) }).collect();
        assert_eq!(waste(), 100 * (1024 - 600));
        for p in ptrs {
            // SAFETY: allocated above with `layout`.
            unsafe { a.dealloc(p, layout) };
        }
        assert_eq!(waste(), 0);
        // A shrinking realloc in place trades one rounding loss for another.
        // SAFETY: valid layouts; p is live with the layout passed.
        unsafe {
            let p = a.alloc(layout);
            let q = a.realloc(p, layout, 100);
            assert_eq!(q, p);
            assert_eq!(waste(), 128 - 100);
            a.dealloc(q, Layout::from_size_align(100, 8).unwrap());
        }
        assert_eq!(waste(), 0);
    })
    .join()
    .unwrap();
}

#[test]
fn threads_with_cross_thread_frees() {
    let _serial = shared();
    const THREADS: usize = 4;
    const PER_THREAD: usize = 20_000;
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            std::thread::spawn(move || {
                let a = Buddy::new();
                let mut rng = Rng(t as u64 * 7919 + 1);
                let mut out = Vec::with_capacity(PER_THREAD);
                for i in 0..PER_THREAD {
                    let shift = 4 + rng.below(13);
                    let size = 1 + rng.below(1 << shift);
                    let layout = Layout::from_size_align(size, 8).unwrap();
                    // SAFETY: a valid layout.
                    let p = unsafe { a.alloc(layout) };
                    assert!(!p.is_null());
                    // SAFETY: p is live with `size` bytes.
                    unsafe { p.write_bytes(t as u8, size) };
                    if i % 3 == 0 {
                        // SAFETY: freeing our own live block.
                        unsafe { a.dealloc(p, layout) };
                    } else {
                        out.push((p as usize, layout, t as u8));
                    }
                }
                out
            })
        })
        .collect();
    let mut all: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    Rng(5).shuffle(&mut all);
    // Free everything from other threads than the allocating ones.
    let chunks: Vec<Vec<_>> = all.chunks(all.len() / 3 + 1).map(|c| c.to_vec()).collect();
    let frees: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || {
                let a = Buddy::new();
                for (p, layout, byte) in chunk {
                    let p = p as *mut u8;
                    // SAFETY: a live block with this layout, filled with `byte`.
                    unsafe {
                        assert_eq!(*p, byte);
                        assert_eq!(*p.add(layout.size() - 1), byte);
                        a.dealloc(p, layout);
                    }
                }
            })
        })
        .collect();
    for f in frees {
        f.join().unwrap();
    }
    check_global_arenas();
}

#[test]
fn a_thousand_short_threads_do_not_grow_memory() {
    let run = || {
        let handles: Vec<_> = (0..100)
            .map(|_| {
                std::thread::spawn(|| {
                    let a = Buddy::new();
                    let layouts: Vec<_> = (4..17)
                        .map(|k| Layout::from_size_align(1 << k, 8).unwrap())
                        .collect();
                    let ps: Vec<_> = layouts
                        .iter()
                        // SAFETY: valid layouts.
                        .map(|&l| unsafe { a.alloc(l) })
                        .collect();
                    for (p, l) in ps.into_iter().zip(layouts) {
                        // SAFETY: freeing what we allocated.
                        unsafe { a.dealloc(p, l) };
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    };
    let _serial = SERIAL.write().unwrap_or_else(|e| e.into_inner());
    let census = || {
        ARENAS.iter().fold(Census::default(), |sum, a| {
            let c = a.lock().check_invariants();
            Census {
                regions: sum.regions + c.regions,
                free_blocks: sum.free_blocks + c.free_blocks,
                used_blocks: sum.used_blocks + c.used_blocks,
                free_bytes: sum.free_bytes + c.free_bytes,
            }
        })
    };
    let before = census();
    for _ in 0..10 {
        run();
    }
    // Every exited thread handed its caches back: no block stays tagged used, and the arenas
    // hold at most one spare region more each.
    let after = census();
    assert!(
        after.used_blocks <= before.used_blocks,
        "{before:?} -> {after:?}"
    );
    assert!(
        after.regions <= before.regions + NUM_ARENAS,
        "{before:?} -> {after:?}"
    );
}

#[test]
fn foreign_and_interior_pointers_are_not_ours() {
    let _serial = shared();
    let a = Buddy::new();
    let x = 7u64;
    let layout = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: usable_size on foreign and interior pointers is allowed.
    unsafe {
        assert_eq!(a.usable_size(&x as *const u64 as *const u8), None);
        let p = a.alloc(layout);
        // The whole 64-byte block (hardened: less the canary's bytes, see `promised_usable`).
        assert_eq!(a.usable_size(p), Some(64 - Buddy::UNSIZED_PAD));
        assert_eq!(a.usable_size(p.add(16)), None);
        assert_eq!(a.usable_size(p.add(3)), None);
        a.dealloc(p, layout);
    }
}

#[test]
fn fork_while_threads_allocate_then_run_out_of_memory_in_the_child() {
    let _serial = SERIAL.write().unwrap_or_else(|e| e.into_inner());
    // The child may map 1 GiB more than the process holds now.
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().next().unwrap().parse().unwrap();
    let limit = pages * crate::os::page_size() as u64 + (1 << 30);
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let a = Buddy::new();
                let mut rng = Rng(t + 11);
                while !stop.load(Ordering::Relaxed) {
                    let layout = Layout::from_size_align(1 + rng.below(5000), 8).unwrap();
                    // SAFETY: a valid layout; the block is freed at once.
                    unsafe { a.dealloc(a.alloc(layout), layout) };
                }
            })
        })
        .collect();
    for _ in 0..5 {
        // SAFETY: the child only uses the allocator (no std locks) and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let ok = child_allocates_until_refused(limit);
            // SAFETY: ends the child without running the parent's test harness.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        assert!(pid > 0);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child crashed: {status}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
}

/// In a forked child: allocates 1 MiB blocks under an address-space limit of `bytes` until the
/// allocator returns null, then frees them and checks it works again. Uses no other allocator.
fn child_allocates_until_refused(bytes: u64) -> bool {
    let a = Buddy::new();
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: plain syscalls on our own process; the array lives on the stack.
    unsafe {
        if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
            return false;
        }
        let layout = Layout::from_size_align(1 << 20, 8).unwrap();
        let mut blocks = [ptr::null_mut::<u8>(); 2048];
        let mut n = 0;
        while n < blocks.len() {
            let p = a.alloc(layout);
            if p.is_null() {
                break;
            }
            blocks[n] = p;
            n += 1;
        }
        if n == 0 || n == blocks.len() {
            return false;
        }
        for &p in &blocks[..n] {
            a.dealloc(p, layout);
        }
        let p = a.alloc(layout);
        if p.is_null() {
            return false;
        }
        a.dealloc(p, layout);
    }
    true
}

#[test]
fn random_operations_keep_the_arena_consistent() {
    let counters = GlobalCounters::new();
    let mut arena = Arena::new(NUM_ARENAS + 4);
    let mut rng = Rng(0xDEAD_BEEF);
    let mut live: Vec<(usize, u32)> = Vec::new();
    for step in 0..20_000 {
        match rng.below(10) {
            0..=4 => {
                let orders = if rng.below(50) == 0 { 18 } else { 10 };
                let order = MIN_ORDER + rng.below(orders) as u32;
                let p = arena.alloc_block(order, &counters) as usize;
                assert_ne!(p, 0);
                assert!(p.is_multiple_of(1 << order));
                // SAFETY: a fresh block of `order`; the first and last byte are ours.
                unsafe {
                    (p as *mut u8).write(order as u8);
                    ((p + (1 << order) - 1) as *mut u8).write(order as u8);
                }
                live.push((p, order));
            }
            5..=7 if !live.is_empty() => {
                let (p, order) = live.swap_remove(rng.below(live.len()));
                // SAFETY: a live block of `order`, whose marks must be intact.
                unsafe {
                    assert_eq!(*(p as *const u8), order as u8);
                    assert_eq!(*((p + (1 << order) - 1) as *const u8), order as u8);
                    arena.free_block(p, order, &counters);
                }
            }
            8 if !live.is_empty() => {
                let i = rng.below(live.len());
                let (p, order) = live[i];
                if order < MAX_ORDER && arena_grow(&mut arena, p, order, order + 1, &counters) {
                    live[i].1 = order + 1;
                    // SAFETY: the block now spans the grown size.
                    unsafe { ((p + (2 << order) - 1) as *mut u8).write(order as u8 + 1) };
                }
                // SAFETY: p is live; the first byte marks the current order.
                unsafe { (p as *mut u8).write(live[i].1 as u8) };
            }
            9 if !live.is_empty() => {
                let i = rng.below(live.len());
                let (p, order) = live[i];
                if order > MIN_ORDER {
                    // SAFETY: a live block of `order`; its upper half is dead from here on.
                    unsafe {
                        arena.shrink_in_place(p, order, order - 1, &counters);
                        (p as *mut u8).write(order as u8 - 1);
                        ((p + (1 << (order - 1)) - 1) as *mut u8).write(order as u8 - 1);
                    }
                    live[i].1 = order - 1;
                }
            }
            _ => {}
        }
        if step % 2000 == 0 {
            let c = arena.check_invariants();
            assert_eq!(c.used_blocks, live.len());
        }
    }
    for (p, order) in live.drain(..) {
        // SAFETY: each live block freed once.
        unsafe { arena.free_block(p, order, &counters) };
    }
    assert_eq!(arena.check_invariants(), one_free_region());
    release_spare(&mut arena, &counters);
}

fn arena_grow(arena: &mut Arena, p: usize, old: u32, new: u32, c: &GlobalCounters) -> bool {
    // SAFETY: p is a live block of `old` from this arena (caller); new = old + 1 <= MAX_ORDER.
    unsafe { arena.grow_in_place(p, old, new, c) }
}

#[test]
fn clean_blocks_are_zero_and_written_blocks_are_not_clean() {
    let counters = GlobalCounters::new();
    let mut arena = Arena::new(NUM_ARENAS + 5);
    let (small, clean) = arena.alloc_block_clean(MIN_ORDER, &counters);
    assert!(clean, "a fresh region's blocks are clean");
    let (p, clean) = arena.alloc_block_clean(14, &counters);
    assert!(clean);
    // SAFETY: p is a live block of 16 KiB.
    unsafe {
        let bytes = std::slice::from_raw_parts(p, 1 << 14);
        assert!(bytes[GRANULE..].iter().all(|&b| b == 0));
        p.write_bytes(0xEE, 1 << 14);
        arena.free_block(p as usize, 14, &counters);
    }
    // The written block merged back into its (clean) buddies: the result is not clean.
    let (q, clean) = arena.alloc_block_clean(14, &counters);
    assert_eq!(q, p);
    assert!(!clean, "a recycled block is never reported clean");
    // SAFETY: both blocks are live and freed once.
    unsafe {
        arena.free_block(q as usize, 14, &counters);
        arena.free_block(small as usize, MIN_ORDER, &counters);
    }
    assert_eq!(arena.check_invariants(), one_free_region());
    release_spare(&mut arena, &counters);
}

#[test]
#[cfg(any(debug_assertions, feature = "hardened"))]
fn double_and_invalid_frees_abort_in_checked_builds() {
    let _serial = SERIAL.write().unwrap_or_else(|e| e.into_inner());
    let layout = Layout::from_size_align(1 << 20, 8).unwrap();
    for offset in [0usize, 64] {
        // SAFETY: the child only uses the allocator and leaves with _exit or an abort.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let a = Buddy::new();
            // SAFETY: deliberate misuse, expected to abort the child before any harm.
            unsafe {
                let p = a.alloc(layout);
                a.dealloc(p, layout);
                if region_map::owner_of(p) != Owner::Buddy {
                    // The region went back to the kernel: nothing left to check against.
                    libc::_exit(77);
                }
                a.dealloc(p.add(offset), layout);
                libc::_exit(0);
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 77 {
            continue;
        }
        assert!(
            libc::WIFSIGNALED(status),
            "misuse at +{offset} went unnoticed"
        );
        assert_eq!(libc::WTERMSIG(status), libc::SIGABRT);
    }
}

/// A plain build drops a double free of the block its thread cache received last, instead of
/// caching it twice and handing it out twice (checked builds abort on it instead).
#[test]
#[cfg(not(any(debug_assertions, feature = "hardened")))]
fn a_repeated_free_of_the_last_cached_block_is_dropped() {
    let a = Buddy::new();
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: deliberately freeing `p` twice, which the plain build must survive; every other
    // block is allocated and freed once.
    unsafe {
        let p = a.alloc(layout);
        assert!(!p.is_null());
        a.dealloc(p, layout);
        a.dealloc(p, layout);
        let q = a.alloc(layout);
        let r = a.alloc(layout);
        assert_ne!(q, r, "one block handed out twice");
        a.dealloc(q, layout);
        a.dealloc(r, layout);
    }
}
