//! Unit tests of the large-block internals.

#[cfg(not(feature = "hardened"))] // the slots' test only
use core::sync::atomic::Ordering;

use super::cache::*;
use super::resize::relocate;
#[cfg(not(feature = "hardened"))]
use super::slots::*;
use super::*;

#[test]
fn alloc_usable_free() {
    static C: GlobalCounters = GlobalCounters::new();
    let c = &C;
    for align in [1usize, 4096, 1 << 16, REGION_SIZE, 1 << 26] {
        let p = alloc(100_000, align, false, Owner::SizeClass, c);
        assert!(!p.is_null());
        assert_eq!(p as usize % align, 0);
        assert_eq!(region_map::owner_of(p), Owner::Large);
        // SAFETY: p is a live large block.
        unsafe {
            assert_eq!(owner(p), Some(Owner::SizeClass));
            assert!(usable_size(p) >= 100_000);
            p.write_bytes(1, 100_000);
            dealloc(p, 100_000, c);
        }
        // (Whether the window reads Foreign now is racy: a test running in parallel may map
        // the same addresses at once, so only the counters are checked.)
    }
    trim_cache();
    assert_eq!(c.snapshot().mapped_bytes, 0);
}

#[test]
fn realloc_keeps_contents_and_alignment() {
    static C: GlobalCounters = GlobalCounters::new();
    let c = &C;
    for align in [8usize, 1 << 16, 1 << 23] {
        let p = alloc(1 << 20, align, false, Owner::Bump, c);
        assert!(!p.is_null());
        // SAFETY: p is live with 1 MiB usable; q likewise after each realloc.
        unsafe {
            for i in 0..(1 << 20) {
                *p.add(i) = (i % 251) as u8;
            }
            let q = realloc(p, 40 << 20, c);
            assert!(!q.is_null());
            assert_eq!(q as usize % align, 0);
            for i in (0..(1 << 20)).step_by(997) {
                assert_eq!(*q.add(i), (i % 251) as u8);
            }
            *q.add((40 << 20) - 1) = 9;
            let r = realloc(q, 8192, c);
            assert_eq!(r, q);
            assert_eq!(*r.add(8191), (8191 % 251) as u8);
            dealloc(r, 8192, c);
        }
    }
    trim_cache();
    assert_eq!(c.snapshot().mapped_bytes, 0);
}

#[test]
fn not_a_block_start() {
    static C: GlobalCounters = GlobalCounters::new();
    let p = alloc(3 * page_size(), 1, false, Owner::Slab, &C);
    // SAFETY: p + page is inside a live Large mapping.
    unsafe {
        assert_eq!(owner(p.add(page_size())), None);
        assert_eq!(owner(p.add(3)), None);
        dealloc(p, 3 * page_size(), &C);
    }
}

/// Issue 23 item 4: once the kernel has moved a block, another thread may map the old range
/// and claim its windows before the mover touches the region map; the mover must never mark
/// them foreign afterwards. The stand-in for the kernel call claims the old windows for
/// another owner, as that thread would. A failed move leaves the old windows Large.
#[test]
fn a_move_never_releases_windows_claimed_after_the_kernel_call() {
    let len = 2 * REGION_SIZE;
    let old = os::map_aligned(len, REGION_SIZE) as usize;
    let place = os::map_aligned(len, REGION_SIZE) as usize;
    assert!(old != 0 && place != 0);
    assert!(region_map::claim(old, len, Owner::Large));
    assert!(region_map::claim(place, len, Owner::Large));
    // SAFETY: both ranges are mappings of ours that nothing else uses; the closures make no
    // kernel call.
    unsafe {
        let moved = relocate(old, len, place, || {
            assert_eq!(region_map::owner_of(old as *const u8), Owner::Foreign);
            region_map::claim(old, len, Owner::Bump)
        });
        assert!(moved);
        for w in [old, old + REGION_SIZE] {
            assert_eq!(region_map::owner_of(w as *const u8), Owner::Bump);
        }
        assert_eq!(region_map::owner_of(place as *const u8), Owner::Large);
        let moved = relocate(old, len, place, || false);
        assert!(!moved);
        for w in [old, old + REGION_SIZE] {
            assert_eq!(region_map::owner_of(w as *const u8), Owner::Large);
        }
        region_map::release(old, len);
        region_map::release(place, len);
        os::unmap(old as *mut u8, len);
        os::unmap(place as *mut u8, len);
    }
}

/// A freed mapping is reused (same address, old bytes still there) by the next request of a
/// fitting size, and comes back zeroed when asked. Other tests share the cache and may take
/// the mapping first, so reuse is required in some, not all, of several rounds.
#[test]
#[cfg(not(feature = "hardened"))] // hardened builds use no slots (see `alloc_slot`)
fn sampled_block_slots_are_reused_resized_and_read_dead_when_freed() {
    static C: GlobalCounters = GlobalCounters::new();
    let page = page_size();
    assert!(alloc_slot(slot_block_bytes() + 1, false, Owner::Slab, &C).is_null());
    // SAFETY: every pointer used is a live block of ours until freed, then only inspected
    // through its header (Large windows stay mapped).
    unsafe {
        let p = alloc_slot(100, true, Owner::Slab, &C);
        assert!(!p.is_null() && (p as usize).is_multiple_of(page));
        assert_eq!(region_map::owner_of(p), Owner::Large);
        assert_eq!(owner(p), Some(Owner::Slab));
        assert_eq!(usable_size(p), page);
        assert!(core::slice::from_raw_parts(p, page).iter().all(|&b| b == 0));
        p.write_bytes(7, page);
        // Grows within the slot: same address.
        let q = realloc(p, slot_block_bytes(), &C);
        assert_eq!(q, p);
        assert_eq!(usable_size(q), slot_block_bytes());
        // Grows past it: moved to a mapping of its own, contents kept, the slot freed.
        let r = realloc(q, slot_block_bytes() * 4, &C);
        assert!(!r.is_null() && r != q);
        assert!(core::slice::from_raw_parts(r, page).iter().all(|&b| b == 7));
        assert_eq!(owner(q), None);
        dealloc(r, slot_block_bytes() * 4, &C);
        // Many rounds of alloc and free reuse slots: no new window per round.
        let before = SLOT_WINDOWS_USED.load(Ordering::Relaxed);
        for _ in 0..1000 {
            let x = alloc_slot(64, false, Owner::Buddy, &C);
            assert!(!x.is_null());
            x.write(1);
            dealloc(x, 64, &C);
            assert_eq!(owner(x), None, "a freed slot reads dead");
        }
        assert!(SLOT_WINDOWS_USED.load(Ordering::Relaxed) <= before + 1);
    }
}

#[test]
#[cfg(not(feature = "hardened"))] // hardened builds cache nothing (see `put_cached`)
fn freed_mappings_are_reused_and_zeroed_on_request() {
    static C: GlobalCounters = GlobalCounters::new();
    let size = (9 << 20) + 12345;
    let mut reused = 0;
    for round in 0..10u8 {
        let p = alloc(size, 8, false, Owner::SizeClass, &C);
        assert!(!p.is_null());
        // SAFETY: p is live with `size` bytes; q likewise.
        unsafe {
            p.write_bytes(round | 1, size);
            dealloc(p, size, &C);
            let q = alloc(size, 8, true, Owner::SizeClass, &C);
            assert!(!q.is_null());
            if q == p {
                reused += 1;
            }
            for i in (0..size).step_by(4093).chain([size - 1]) {
                assert_eq!(*q.add(i), 0, "byte {i} of a zeroed block");
            }
            q.write_bytes(7, size);
            dealloc(q, size, &C);
            let r = alloc(size, 8, false, Owner::Buddy, &C);
            assert!(!r.is_null());
            if r == q {
                assert_eq!(*r.add(size / 2), 7, "a reused block is not cleared unasked");
                reused += 1;
            }
            assert_eq!(owner(r), Some(Owner::Buddy));
            dealloc(r, size, &C);
        }
    }
    assert!(reused > 0, "no freed mapping was reused");
    trim_cache();
    assert_eq!(C.snapshot().mapped_bytes, 0);
}

/// A cached mapping unused for longer than the decay is unmapped (and uncounted) by a later
/// large operation, without `trim_cache`.
#[test]
fn cached_mappings_decay() {
    static C: GlobalCounters = GlobalCounters::new();
    static OTHER: GlobalCounters = GlobalCounters::new();
    let p = alloc(5 << 20, 8, false, Owner::Slab, &C);
    assert!(!p.is_null());
    // SAFETY: p is live; freed once.
    unsafe { dealloc(p, 5 << 20, &C) };
    std::thread::sleep(std::time::Duration::from_millis(CACHE_DECAY_MS + 200));
    // A large operation of another size (another test may take the cached mapping first,
    // which uncounts it too).
    let q = alloc(40 << 20, 8, false, Owner::Slab, &OTHER);
    assert!(!q.is_null());
    assert_eq!(C.snapshot().mapped_bytes, 0);
    // SAFETY: q is live; freed once.
    unsafe { dealloc(q, 40 << 20, &OTHER) };
}
