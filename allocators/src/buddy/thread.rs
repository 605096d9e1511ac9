//! Buddy's thread layer: every thread keeps a small cache per order up to 64 KiB
//! ([`super::MAX_CACHED_ORDER`]), an array of addresses per order (a magazine, so caching a block
//! never touches its memory). The fast path of `alloc` and `dealloc` is one thread-local access
//! and a push or pop, with no lock and no atomic read-modify-write. A cache that runs dry takes a
//! batch from its arena under one lock; one that overflows gives its older half back, each block
//! to the arena that owns its region (so frees from another thread's memory are handed back to
//! the right arena). Cached blocks stay tagged "used", so they never coalesce while cached; a
//! thread's caches go back to the arenas when it exits (its exit hook), and code running after
//! that takes the arenas directly under their locks.

use core::cell::Cell;
use core::ffi::c_void;
use core::sync::atomic::Ordering;

use super::arena::Arena;
use super::region::MIN_ORDER;
use super::{
    arena_of, atfork_prepare, atfork_release, hardening, lock_arena, ATFORK, COUNTERS,
    MAX_CACHED_ORDER, NEXT_ARENA, NUM_ARENAS, WASTE,
};
use crate::fork::{self, Slot};
use crate::stats::LocalCounters;
use crate::sync::LockGuard;
use crate::thread_exit::{Attach, ExitHook, OnThreadExit};

/// Bytes a thread may cache per order (the count is clamped to `4..=64` blocks).
const CACHE_BYTES_PER_ORDER: usize = 256 * 1024;
const NUM_BINS: usize = (MAX_CACHED_ORDER - MIN_ORDER + 1) as usize;
/// Operations after which a thread folds its fragmentation delta into the shared counter.
const WASTE_FLUSH_OPS: u32 = 256;

/// The most blocks any bin holds.
const BIN_CAPACITY: usize = 64;

/// A stack of cached blocks of one order: an array of addresses (a magazine), so caching a
/// block never touches its memory.
///
/// Invariant: `slots[..count]` are the cached blocks, `count <= BIN_CAPACITY`.
#[derive(Clone, Copy)]
struct Bin {
    count: usize,
    slots: [*mut u8; BIN_CAPACITY],
}

/// The most blocks of `order` a thread caches (at most [`BIN_CAPACITY`]).
#[inline(always)]
const fn bin_limit(order: u32) -> usize {
    let n = CACHE_BYTES_PER_ORDER >> order;
    if n < 4 {
        4
    } else if n > BIN_CAPACITY {
        BIN_CAPACITY
    } else {
        n
    }
}

/// A thread's caches and counters.
///
/// Invariants: every block in `bins[k]` is a block of order `MIN_ORDER + k`, tagged used, that no
/// one else references; `arena < NUM_ARENAS` once assigned.
///
/// Starts as all-zero bytes (see `thread_slot`): not attached, no blocks, no arena yet.
pub(super) struct ThreadCache {
    /// Where the thread stands with its exit hook; the cache is used only while `Attached`.
    attach: Attach,
    bins: [Bin; NUM_BINS],
    /// The thread's arena plus one (0 until assigned).
    arena_plus_one: usize,
    pub(super) counters: LocalCounters,
    pub(super) waste: Cell<isize>,
    waste_ops: Cell<u32>,
}

impl ThreadCache {
    /// The fast path: pop a cached block of `order`, or go to the arena. Also tells whether the
    /// block is clean (see [`Arena::alloc_block_clean`]); cached blocks never are.
    #[inline(always)]
    pub(super) fn alloc(&mut self, order: u32, size: usize) -> (*mut u8, bool) {
        let (p, clean) = if order <= MAX_CACHED_ORDER {
            // SAFETY: MIN_ORDER <= order <= MAX_CACHED_ORDER, so the index is in bounds.
            let bin = unsafe { self.bins.get_unchecked_mut((order - MIN_ORDER) as usize) };
            if bin.count == 0 {
                (self.refill(order), false)
            } else {
                bin.count -= 1;
                // SAFETY: count < BIN_CAPACITY after the decrement (bin invariant).
                let p = unsafe { *bin.slots.get_unchecked(bin.count) };
                // SAFETY: a block just taken from this thread's cache, now the caller's.
                unsafe { hardening::untag_cached(p as usize) };
                (p, false)
            }
        } else {
            self.alloc_uncached(order)
        };
        if !p.is_null() {
            self.counters.on_alloc(size, &COUNTERS);
            self.note_waste(((1usize << order) - size) as isize);
        }
        (p, clean)
    }

    /// The fast path of free: push onto the cache of `order`, or give back to the arena.
    ///
    /// # Safety
    /// `addr` must be a live block of `order` from this allocator, not used afterwards, and
    /// passed through `check_live(.., true)` (which tags it for the cache in hardened builds).
    #[inline(always)]
    pub(super) unsafe fn free(&mut self, addr: usize, order: u32, size: usize) {
        if order <= MAX_CACHED_ORDER {
            // SAFETY: MIN_ORDER <= order <= MAX_CACHED_ORDER.
            let mut bin = unsafe { self.bins.get_unchecked_mut((order - MIN_ORDER) as usize) };
            // A double free of the block freed last (the commonest kind) is dropped here, where
            // the cache knows it: pushed twice, the block would be handed out twice.
            // SAFETY: count - 1 < count <= BIN_CAPACITY when count > 0.
            if bin.count > 0
                && unsafe { *bin.slots.get_unchecked(bin.count - 1) } == addr as *mut u8
            {
                return;
            }
            if bin.count >= bin_limit(order) {
                self.flush_bin(order, bin_limit(order) / 2);
                // SAFETY: as above.
                bin = unsafe { self.bins.get_unchecked_mut((order - MIN_ORDER) as usize) };
            }
            // The caller's `check_live` already gave the block its cache tag in hardened builds.
            // SAFETY: count < bin_limit <= BIN_CAPACITY here; the dead block now belongs to
            // the cache.
            unsafe { *bin.slots.get_unchecked_mut(bin.count) = addr as *mut u8 };
            bin.count += 1;
        } else {
            // SAFETY: forwarded contract.
            unsafe { free_to_arena(addr, order) };
        }
        self.counters.on_free(size, &COUNTERS);
        self.note_waste(size as isize - (1isize << order));
    }

    #[inline(always)]
    pub(super) fn note_waste(&self, delta: isize) {
        self.waste.set(self.waste.get() + delta);
        let ops = self.waste_ops.get() + 1;
        self.waste_ops.set(ops);
        if ops >= WASTE_FLUSH_OPS {
            self.flush_waste();
        }
    }

    #[cold]
    pub(super) fn flush_waste(&self) {
        WASTE.fetch_add(self.waste.replace(0), Ordering::Relaxed);
        self.waste_ops.set(0);
    }

    /// The thread's arena, assigned round-robin on first use.
    #[inline]
    fn arena(&mut self) -> usize {
        if self.arena_plus_one == 0 {
            self.arena_plus_one = NEXT_ARENA.fetch_add(1, Ordering::Relaxed) % NUM_ARENAS + 1;
        }
        self.arena_plus_one - 1
    }

    #[cold]
    fn alloc_uncached(&mut self, order: u32) -> (*mut u8, bool) {
        let index = self.arena();
        lock_arena(index).alloc_block_clean(order, &COUNTERS)
    }

    /// Takes half a cache's worth of blocks of `order` from the arena; returns one of them.
    #[cold]
    fn refill(&mut self, order: u32) -> *mut u8 {
        // The large-block cache decays on this path too (one load while it is empty).
        crate::large::expire_cache();
        let index = self.arena();
        let batch = bin_limit(order) / 2;
        let mut arena = lock_arena(index);
        let first = arena.alloc_block(order, &COUNTERS);
        if first.is_null() {
            return first;
        }
        // SAFETY: in bounds (order <= MAX_CACHED_ORDER, checked by the caller).
        let bin = unsafe { self.bins.get_unchecked_mut((order - MIN_ORDER) as usize) };
        debug_assert_eq!(bin.count, 0);
        let key = hardening::cache_key();
        for slot in bin.slots.iter_mut().take(batch).skip(1) {
            let p = arena.alloc_block(order, &COUNTERS);
            if p.is_null() {
                break;
            }
            // SAFETY: p is a block of `order` just allocated, now the cache's.
            unsafe { hardening::tag_cached(p as usize, key) };
            *slot = p;
            bin.count += 1;
        }
        // The blocks went to slots 1.., keep them at the bottom of the stack.
        bin.slots.copy_within(1..=bin.count, 0);
        first
    }

    /// Gives the `n` oldest blocks of the cache of `order` back to their arenas (the most
    /// recently freed, likeliest still in the CPU cache, stay).
    #[cold]
    fn flush_bin(&mut self, order: u32, n: usize) {
        // SAFETY: in bounds (order <= MAX_CACHED_ORDER).
        let bin = unsafe { self.bins.get_unchecked_mut((order - MIN_ORDER) as usize) };
        let n = n.min(bin.count);
        let mut held: Option<(usize, LockGuard<'static, Arena>)> = None;
        let key = hardening::cache_key();
        for &block in &bin.slots[..n] {
            let addr = block as usize;
            // SAFETY: cached blocks lie in live regions.
            let index = unsafe { arena_of(addr) };
            let arena = match &mut held {
                Some((i, guard)) if *i == index => guard,
                _ => {
                    held = None;
                    &mut held.insert((index, lock_arena(index))).1
                }
            };
            // SAFETY: a cached block is a used block of `order` that nobody references, carrying
            // the cache tag in hardened builds (the arena rewrites its order tag).
            unsafe {
                hardening::check_cached(addr, key);
                arena.free_block(addr, order, &COUNTERS);
            }
        }
        drop(held);
        bin.slots.copy_within(n..bin.count, 0);
        bin.count -= n;
    }

    /// Empties every cache and folds the counters (thread exit).
    fn release_all(&mut self) {
        for order in MIN_ORDER..=MAX_CACHED_ORDER {
            self.flush_bin(order, usize::MAX);
        }
        self.counters.flush(&COUNTERS);
        self.flush_waste();
    }
}

/// Frees a block straight to the arena owning its region.
///
/// # Safety
/// `addr` must be a live block of `order` from this allocator, not used afterwards.
#[cold]
unsafe fn free_to_arena(addr: usize, order: u32) {
    // SAFETY: the block lies in a live region (caller).
    let index = unsafe { arena_of(addr) };
    // SAFETY: forwarded contract (the arena rewrites the block's tag).
    unsafe { lock_arena(index).free_block(addr, order, &COUNTERS) };
}

crate::thread_word::thread_block!(
    /// The thread's cache (all zero: not attached, empty), reached without a call also from the
    /// preloaded library (see [`crate::thread_word`]).
    thread_slot,
    "allocators_buddy_thread_cache",
    ThreadCache
);

/// Empties the thread's cache when the thread exits (armed once per thread, in [`attach`]).
static EXIT_HOOK: ExitHook<BuddyExit> = ExitHook::new();

/// Buddy's exit hook; operations after it (later key destructors, libc's own teardown) go to the
/// arenas.
struct BuddyExit;

impl OnThreadExit for BuddyExit {
    unsafe fn on_thread_exit(_: *mut c_void) {
        // SAFETY: the thread's own cache; destructors run outside the allocator, so no other
        // reference to it is live.
        let cache = unsafe { &mut *thread_slot::get() };
        cache.attach = Attach::Exited;
        cache.release_all();
    }
}

/// Runs `f` on the calling thread's cache, or `fallback` while the thread has none (before it
/// attached, while it attaches, and after its cache was emptied at thread exit).
#[inline(always)]
pub(super) fn with_cache<R>(
    f: impl FnOnce(&mut ThreadCache) -> R,
    fallback: impl FnOnce() -> R,
) -> R {
    // SAFETY: the cache is only reached through this function, which never re-enters itself on
    // one thread (nothing inside allocates through the global allocator, and the one libc call
    // that may, in `attach`, runs with no reference live), so this is the only live reference.
    let cache = unsafe { &mut *thread_slot::get() };
    if cache.attach == Attach::Attached {
        return f(cache);
    }
    if attach() {
        // SAFETY: as above.
        return f(unsafe { &mut *thread_slot::get() });
    }
    fallback()
}

/// Attaches a fresh thread (registering its exit hook and the fork handlers); whether the
/// thread's cache may be used.
#[cold]
#[inline(never)]
fn attach() -> bool {
    let state = thread_slot::get();
    // SAFETY: the thread's own cache; no reference to it is live (see `with_cache`), and the
    // calls below that may re-enter the allocator find the thread `Attaching`.
    unsafe {
        if (*state).attach != Attach::Fresh {
            return false;
        }
        (*state).attach = Attach::Attaching;
        // `state` is non-null and outlives the thread's key destructors; `on_thread_exit`
        // does not panic.
        let ok = EXIT_HOOK.arm(state.cast());
        fork::register(&ATFORK, Slot::Buddy, atfork_prepare, atfork_release);
        (*state).attach = if ok { Attach::Attached } else { Attach::Exited };
        ok
    }
}

/// Allocation without a thread cache (after the thread's cache was destroyed).
#[cold]
pub(super) fn alloc_shared(order: u32, size: usize) -> (*mut u8, bool) {
    let (p, clean) = lock_arena(0).alloc_block_clean(order, &COUNTERS);
    if !p.is_null() {
        COUNTERS.record_alloc(size);
        WASTE.fetch_add(((1usize << order) - size) as isize, Ordering::Relaxed);
    }
    (p, clean)
}

/// Free without a thread cache.
///
/// # Safety
/// As for [`free_to_arena`].
#[cold]
pub(super) unsafe fn free_shared(addr: usize, order: u32, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { free_to_arena(addr, order) };
    COUNTERS.record_free(size);
    WASTE.fetch_add(size as isize - (1isize << order), Ordering::Relaxed);
}
