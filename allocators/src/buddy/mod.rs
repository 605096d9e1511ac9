//! The buddy allocator (Knuth; the Linux page allocator): power-of-two blocks that split on
//! allocation and coalesce with their buddy on free.
//!
//! Memory comes in 4 MiB regions aligned to their own size ([`region`]); blocks of `2^k` bytes,
//! from 16 B up to 2 MiB, are carved from them by [`arena::Arena`], which keeps one doubly linked
//! free list per order and the order tags outside the blocks. A request of `size` bytes aligned to
//! `align` takes a block of order `ceil(log2(max(size, align, 16)))`: any power-of-two alignment up
//! to the block size comes for free, because a `2^k` block is `2^k`-aligned. Requests above 2 MiB
//! (or aligned above it) go to [`crate::large`].
//!
//! Scaling: there are [`NUM_ARENAS`] arenas, each behind its own lock, and each thread is given
//! one round-robin. In front of them every thread keeps a small cache per order up to 64 KiB
//! ([`MAX_CACHED_ORDER`]): the fast path of `alloc` and `dealloc` is one thread-local access and a
//! push or pop on an array of addresses (a magazine, so caching a block never touches its
//! memory), with no lock and no atomic read-modify-write. A cache that runs dry takes a batch
//! from its arena under one lock; one that overflows gives its older half back,
//! each block to the arena that owns its region (so frees from another thread's memory are
//! handed back to the right arena). Cached blocks stay tagged "used", so they never coalesce while
//! cached; a thread's caches go back to the arenas when it exits.
//!
//! Memory goes back to the kernel two ways: a region that becomes wholly free is unmapped (each
//! arena keeps one empty region as a spare), and once an arena holds more than 8 MiB of written
//! free blocks of 256 KiB and up, their pages are discarded (see [`arena`]). Free blocks never
//! written since they were mapped or discarded are tagged clean, which lets `alloc_zeroed` skip
//! the memset. Debug and `hardened` builds check the tag on every free (double and invalid frees
//! abort with a message); in debug builds without `hardened` a double free of a block still in a
//! thread cache goes unnoticed (hardened builds tag cached blocks, so it is caught). Hardened
//! builds also keep a canary in the last word of every block with room for it, tag the first
//! word of cached blocks, and encode the arena's free-list links ([`hardening`]).
//!
//! Cost shown by this allocator: rounding every request up to a power of two. It is counted
//! exactly (sum over live blocks of block size minus requested size) and reported by
//! [`Buddy::internal_fragmentation_bytes`].

mod arena;
mod hardening;
mod region;
#[cfg(test)]
mod tests;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

use arena::Arena;
use region::{MAX_ORDER, MIN_ORDER, TAG_ORDER, TAG_USED};

use crate::fork::{self, Slot};
use crate::hardened::{self, Misuse};
use crate::large;
use crate::region_map::{self, Owner};
use crate::stats::{GlobalCounters, LocalCounters, Stats};
use crate::sync::{Lock, LockGuard};
use crate::thread_exit::{Attach, ExitHook, OnThreadExit};
use crate::Introspect;

/// The number of arenas (each with its own lock and regions).
pub const NUM_ARENAS: usize = 4;
/// The largest order kept in the per-thread caches (64 KiB).
pub const MAX_CACHED_ORDER: u32 = 16;
/// Bytes a thread may cache per order (the count is clamped to `4..=64` blocks).
const CACHE_BYTES_PER_ORDER: usize = 256 * 1024;
const NUM_BINS: usize = (MAX_CACHED_ORDER - MIN_ORDER + 1) as usize;
/// Operations after which a thread folds its fragmentation delta into the shared counter.
const WASTE_FLUSH_OPS: u32 = 256;

static COUNTERS: GlobalCounters = GlobalCounters::new();
/// Bytes lost to rounding up, summed over live blocks (folded from the threads' deltas).
static WASTE: AtomicIsize = AtomicIsize::new(0);
static ARENAS: [Lock<Arena>; NUM_ARENAS] = [
    Lock::new(Arena::new(0)),
    Lock::new(Arena::new(1)),
    Lock::new(Arena::new(2)),
    Lock::new(Arena::new(3)),
];
static NEXT_ARENA: AtomicUsize = AtomicUsize::new(0);
static ATFORK: AtomicBool = AtomicBool::new(false);

/// The buddy allocator; see the module documentation. A zero-sized handle onto one process-wide
/// heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Buddy {
    _private: (),
}

impl Buddy {
    /// A handle onto the process-wide buddy heap. Nothing is mapped until the first allocation.
    pub const fn new() -> Self {
        Buddy { _private: () }
    }

    /// Bytes lost to rounding requests up to a power of two: the sum over live blocks of block
    /// size minus requested size (blocks served by [`crate::large`] are not counted). Accurate to
    /// within a few hundred operations' worth per running thread, like [`Introspect::stats`].
    pub fn internal_fragmentation_bytes(&self) -> usize {
        WASTE.load(Ordering::Relaxed).max(0) as usize
    }
}

/// The block order serving `size` bytes aligned to `align`; above [`MAX_ORDER`] means `large`.
#[inline(always)]
fn order_for(size: usize, align: usize) -> u32 {
    let s = size.max(align).max(1 << MIN_ORDER);
    usize::BITS - (s - 1).leading_zeros()
}

/// Takes arena `index`'s lock (registering the fork handlers on first use).
#[inline]
fn lock_arena(index: usize) -> LockGuard<'static, Arena> {
    fork::register(&ATFORK, Slot::Buddy, atfork_prepare, atfork_release);
    debug_assert!(index < NUM_ARENAS);
    ARENAS[index % NUM_ARENAS].lock()
}

/// The arena owning the region of `addr`.
///
/// # Safety
/// `addr` must lie in a live buddy region.
#[inline]
unsafe fn arena_of(addr: usize) -> usize {
    // SAFETY: the header of a live region; its `arena` field never changes.
    unsafe { (*region::header_of(addr)).arena }
}

unsafe extern "C" fn atfork_prepare() {
    for arena in &ARENAS {
        arena.force_lock();
    }
}

unsafe extern "C" fn atfork_release() {
    for arena in ARENAS.iter().rev() {
        // SAFETY: atfork_prepare took every arena lock in this thread.
        unsafe { arena.force_unlock() };
    }
}

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
struct ThreadCache {
    /// Where the thread stands with its exit hook; the cache is used only while `Attached`.
    attach: Attach,
    bins: [Bin; NUM_BINS],
    /// The thread's arena plus one (0 until assigned).
    arena_plus_one: usize,
    counters: LocalCounters,
    waste: Cell<isize>,
    waste_ops: Cell<u32>,
}

impl ThreadCache {
    /// The fast path: pop a cached block of `order`, or go to the arena. Also tells whether the
    /// block is clean (see [`Arena::alloc_block_clean`]); cached blocks never are.
    #[inline(always)]
    fn alloc(&mut self, order: u32, size: usize) -> (*mut u8, bool) {
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
    unsafe fn free(&mut self, addr: usize, order: u32, size: usize) {
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
    fn note_waste(&self, delta: isize) {
        self.waste.set(self.waste.get() + delta);
        let ops = self.waste_ops.get() + 1;
        self.waste_ops.set(ops);
        if ops >= WASTE_FLUSH_OPS {
            self.flush_waste();
        }
    }

    #[cold]
    fn flush_waste(&self) {
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
fn with_cache<R>(f: impl FnOnce(&mut ThreadCache) -> R, fallback: impl FnOnce() -> R) -> R {
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
fn alloc_shared(order: u32, size: usize) -> (*mut u8, bool) {
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
unsafe fn free_shared(addr: usize, order: u32, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { free_to_arena(addr, order) };
    COUNTERS.record_free(size);
    WASTE.fetch_add(size as isize - (1isize << order), Ordering::Relaxed);
}

/// Checks that `addr` starts a live block of `order` (debug builds and the `hardened` feature): the
/// caller's layout gives the order, which realloc keeps in step with the tag. A block freed to its
/// arena reads as free (double free); in hardened builds one sitting in a thread cache carries the
/// cache tag in its first word (double free, see [`hardening`]'s cached tag); in plain debug builds
/// a cached block still reads as used.
/// Hardened builds check the cache tag and the block's canary, if its `size` left room for one,
/// together ([`hardening::check_free`]); with `freeing` (the caller gives the block up: dealloc,
/// not realloc) they then write the cache tag, which [`ThreadCache::free`] expects.
#[inline(always)]
fn check_live(addr: usize, order: u32, size: usize, freeing: bool) {
    if hardened::ENABLED || cfg!(debug_assertions) {
        // SAFETY: the region map says addr lies in a live buddy region.
        let tag = unsafe { region::get_tag(addr) };
        let misaligned = !addr.is_multiple_of(region::GRANULE)
            || addr - region::base_of(addr) < region::META_SIZE;
        if misaligned || tag != TAG_USED | order as u8 {
            let kind = if !misaligned && tag & region::TAG_FREE != 0 {
                Misuse::DoubleFree
            } else {
                Misuse::InvalidFree
            };
            hardened::misuse("buddy", kind, addr as *const u8);
        }
        // SAFETY: a block of `order` of a live buddy region, tagged used (just checked), allocated
        // for `size` bytes (the caller's layout); with `freeing`, the caller gives it up.
        unsafe { hardening::check_free(addr, order, size, freeing) };
    }
}

/// The size a block of `order` is taken to hold when it is freed (or measured) without its
/// `Layout`: such a block was requested through `unsized_request`, so in a hardened build it
/// leaves the canary's 8 bytes.
#[inline(always)]
fn unsized_block_size(order: u32) -> usize {
    (1usize << order).saturating_sub(hardening::CANARY_BYTES)
}

#[inline(always)]
fn alloc_block(layout: Layout) -> *mut u8 {
    let order = order_for(layout.size(), layout.align());
    if order > MAX_ORDER {
        return alloc_large(layout, false);
    }
    let size = layout.size();
    let p = with_cache(|c| c.alloc(order, size), || alloc_shared(order, size)).0;
    if hardened::ENABLED && !p.is_null() {
        // SAFETY: p is a fresh block of `order` for `size` bytes, ours alone.
        unsafe { hardening::arm_fresh(p as usize, order, size) };
    }
    p
}

/// A large block, zeroed if asked (a reused mapping is dirty).
#[cold]
fn alloc_large(layout: Layout, zeroed: bool) -> *mut u8 {
    large::alloc(
        layout.size(),
        layout.align(),
        zeroed,
        Owner::Buddy,
        &COUNTERS,
    )
}

// SAFETY: every block handed out is a distinct buddy block (tagged used, off every free list and
// out of every cache until freed) of at least the requested size, aligned to its own size and so
// to any alignment up to it; larger or more aligned requests are large mappings.
unsafe impl GlobalAlloc for Buddy {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| alloc_block(layout);
        crate::profile::alloc_hooked(layout, false, Owner::Buddy, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| {
            let order = order_for(layout.size(), layout.align());
            if order > MAX_ORDER {
                return alloc_large(layout, true);
            }
            let size = layout.size();
            let (p, clean) = with_cache(|c| c.alloc(order, size), || alloc_shared(order, size));
            if !p.is_null() {
                // A clean block is zero but for the free-list links in its first granule; any other
                // block may be recycled and is cleared whole.
                let dirty = if clean {
                    size.min(region::GRANULE)
                } else {
                    size
                };
                // SAFETY: p is a block of `order` (at least `size` bytes), ours alone.
                unsafe {
                    ptr::write_bytes(p, 0, dirty);
                    hardening::arm(p as usize, order, size);
                }
            }
            p
        };
        crate::profile::alloc_hooked(layout, true, Owner::Buddy, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match region_map::owner_of(ptr) {
            Owner::Buddy => {
                let order = order_for(layout.size(), layout.align());
                let (addr, size) = (ptr as usize, layout.size());
                check_live(addr, order, size, true);
                with_cache(
                    // SAFETY: as above.
                    |c| unsafe { c.free(addr, order, size) },
                    // SAFETY: as above.
                    || unsafe { free_shared(addr, order, size) },
                );
            }
            // SAFETY: the caller passes a live block of ours; in a Large window it is a large block.
            Owner::Large => unsafe {
                large::dealloc(ptr, layout.size(), &COUNTERS);
            },
            _ if hardened::ENABLED => hardened::misuse("buddy", Misuse::InvalidFree, ptr),
            _ => {}
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old_size = layout.size();
        let old = order_for(old_size, layout.align());
        let new = order_for(new_size, layout.align());
        match region_map::owner_of(ptr) {
            Owner::Buddy if new <= MAX_ORDER => {
                let addr = ptr as usize;
                check_live(addr, old, old_size, false);
                let resized = if new == old {
                    true
                } else {
                    // SAFETY: a live block of ours of order `old` (caller); when shrinking, the
                    // bytes past new_size are dead by realloc's contract.
                    unsafe {
                        let mut arena = lock_arena(arena_of(addr));
                        if new < old {
                            arena.shrink_in_place(addr, old, new, &COUNTERS);
                            true
                        } else {
                            arena.grow_in_place(addr, old, new, &COUNTERS)
                        }
                    }
                };
                if resized {
                    // SAFETY: the block is now of order `new` for `new_size` bytes, still ours.
                    unsafe { hardening::arm(addr, new, new_size) };
                    let waste = ((1isize << new) - new_size as isize)
                        - ((1isize << old) - old_size as isize);
                    with_cache(
                        |c| {
                            c.counters.on_free(old_size, &COUNTERS);
                            c.counters.on_alloc(new_size, &COUNTERS);
                            c.note_waste(waste);
                        },
                        || {
                            COUNTERS.record_free(old_size);
                            COUNTERS.record_alloc(new_size);
                            WASTE.fetch_add(waste, Ordering::Relaxed);
                        },
                    );
                    return ptr;
                }
            }
            Owner::Large if new > MAX_ORDER => {
                // SAFETY: a live large block of ours.
                return unsafe { large::realloc_counted(ptr, old_size, new_size, &COUNTERS) };
            }
            _ => {}
        }
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { crate::realloc_by_moving(self, ptr, layout, new_size) }
    }
}

impl Introspect for Buddy {
    const NAME: &'static str = "buddy";

    /// A nested call finds the thread attaching and goes to the arenas (see `attach`).
    const SERVES_REENTRY: bool = true;

    /// Hardened builds keep a canary only where a request leaves 8 bytes of slack in its block,
    /// and only the `Layout` tells: a block `free_unsized` releases must have been requested
    /// with that slack (see `unsized_request`).
    const UNSIZED_PAD: usize = hardening::CANARY_BYTES;

    /// In a hardened build, the size of the block `size + 8` bytes take, less 8: it covers
    /// `size`, and the request itself leaves the 8 bytes of slack a canary needs (`size + 8`
    /// may fill its block, and then has none). Above the largest order (large blocks, which
    /// have no canary) it is `size + 8`.
    #[inline]
    fn unsized_request(size: usize) -> Option<usize> {
        let padded = size.checked_add(hardening::CANARY_BYTES)?;
        if !hardened::ENABLED {
            return Some(padded);
        }
        let order = order_for(padded, 1);
        Some(if order > MAX_ORDER {
            padded
        } else {
            unsized_block_size(order)
        })
    }

    fn stats(&self) -> Stats {
        COUNTERS.snapshot()
    }

    unsafe fn usable_size(&self, ptr: *const u8) -> Option<usize> {
        match region_map::owner_of(ptr) {
            Owner::Buddy => {
                let addr = ptr as usize;
                if addr - region::base_of(addr) < region::META_SIZE
                    || !addr.is_multiple_of(region::GRANULE)
                {
                    return None;
                }
                // SAFETY: addr lies in a live buddy region (the region map says so).
                let tag = unsafe { region::get_tag(addr) };
                let order = (tag & TAG_ORDER) as u32;
                (tag & TAG_USED != 0 && addr.is_multiple_of(1 << order))
                    .then_some(unsized_block_size(order))
            }
            // SAFETY: the pointer lies in a Large window.
            Owner::Large => unsafe { large::usable_size_if_owned(ptr, Owner::Buddy) },
            _ => None,
        }
    }

    /// One lookup: the block's order is in its tag, next to the region map entry already read.
    unsafe fn free_unsized(&self, ptr: *mut u8) {
        match region_map::owner_of(ptr) {
            Owner::Buddy => {
                let addr = ptr as usize;
                // SAFETY: addr lies in a live buddy region (the region map says so).
                let tag = unsafe { region::get_tag(addr) };
                let order = (tag & TAG_ORDER) as u32;
                // Debug and hardened builds stop here on anything but a live block's tag (or on
                // an overwritten canary); past it, a hardened build's block is freed below (the
                // early return is for plain builds).
                check_live(addr, order, unsized_block_size(order), true);
                if tag & (TAG_USED | region::TAG_FREE) != TAG_USED || order < MIN_ORDER {
                    // Not a block handed out (a plain build's double free of a block given back
                    // to its arena): ignored, as C's free of an unknown pointer is.
                    return;
                }
                let size = unsized_block_size(order);
                with_cache(
                    // SAFETY: a live block of `order`, given up by the caller.
                    |c| unsafe { c.free(addr, order, size) },
                    // SAFETY: as above.
                    || unsafe { free_shared(addr, order, size) },
                );
            }
            // SAFETY: the pointer lies in a Large window; a live block of ours is given up.
            Owner::Large => unsafe { large::free_unsized(ptr, Owner::Buddy, &COUNTERS) },
            _ => {}
        }
    }
}
