//! The buddy allocator (Knuth; the Linux page allocator): power-of-two blocks that split on
//! allocation and coalesce with their buddy on free. This file holds the type, `GlobalAlloc` and
//! the fast paths.
//!
//! - **Thread layer** ([`thread`]): a small cache of block addresses per order up to 64 KiB; the
//!   fast path is one push or pop on it.
//! - **Arenas** ([`arena`]): [`NUM_ARENAS`] arenas behind their own locks, each thread given one
//!   round-robin; one free list per order, blocks split on alloc and coalesce on free.
//! - **Regions** ([`region`]): 4 MiB regions aligned to their size, order tags outside the blocks.
//!
//! A request takes a block of order `ceil(log2(max(size, align, 16)))`, so any power-of-two
//! alignment up to the block size is free; above 2 MiB it goes to [`crate::large`]. Wholly free
//! regions are unmapped (one spare per arena), written free blocks of 256 KiB and up are
//! discarded beyond 8 MiB per arena, and clean blocks let `alloc_zeroed` skip the memset.
//! Hardened builds check tags and canaries and encode links ([`hardening`]). The cost shown:
//! rounding up to a power of two, reported by [`Buddy::internal_fragmentation_bytes`].

mod arena;
mod hardening;
mod region;
#[cfg(test)]
mod tests;
mod thread;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

use arena::Arena;
use region::{MAX_ORDER, MIN_ORDER, TAG_ORDER, TAG_USED};
use thread::{alloc_shared, free_shared, with_cache};

use crate::fork::{self, Slot};
use crate::hardened::{self, Misuse};
use crate::large;
use crate::region_map::{self, Owner};
use crate::stats::{GlobalCounters, Stats};
use crate::sync::{Lock, LockGuard};
use crate::Introspect;

/// The number of arenas (each with its own lock and regions).
pub const NUM_ARENAS: usize = 4;
/// The largest order kept in the per-thread caches (64 KiB).
pub const MAX_CACHED_ORDER: u32 = 16;

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

impl hardened::UnsizedPad for Buddy {
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
}

impl Introspect for Buddy {
    const NAME: &'static str = "buddy";

    /// A nested call finds the thread attaching and goes to the arenas (see `attach`).
    const SERVES_REENTRY: bool = true;

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
    large::alloc_layout(layout, zeroed, Owner::Buddy, &COUNTERS)
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
