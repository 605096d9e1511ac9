//! A small bounded cache of the slab allocator's directly mapped blocks (requests above 64 KiB,
//! served by [`crate::large`]).
//!
//! Without it every such block costs an `mmap`, a page fault per page touched and a `munmap`
//! (with a TLB shootdown in a multithreaded program): a program that grows a buffer past 64 KiB
//! and frees it, again and again, spent most of its time in the kernel. Freed blocks of up to
//! [`MAX_BLOCK`] usable bytes are kept here (at most [`SLOTS`] of them and [`MAX_BYTES`] in all,
//! pages resident, still counted as mapped) and handed out again for a request that fits (best
//! fit, page alignment at most); a block kept through a whole reap interval without being reused
//! is unmapped by [`reap`], so an idle program gives the memory back within two intervals.
//!
//! A block's header (in [`crate::large`]) stays live while it is cached, so `realloc` of a reused
//! block grows it within its mapping and `usable_size` reports the cached block's full size.

use core::ptr;

use super::COUNTERS;
use crate::hardened::{self, Misuse};
use crate::large;
use crate::os;
use crate::region_map::Owner;
use crate::sync::Lock;

/// Blocks kept at most.
pub const SLOTS: usize = 8;
/// The largest block kept (usable bytes).
pub const MAX_BLOCK: usize = 1 << 20;
/// Usable bytes kept at most, over all blocks.
pub const MAX_BYTES: usize = 2 << 20;

#[derive(Clone, Copy)]
struct Entry {
    /// The block's start (null: free slot).
    block: *mut u8,
    /// Its usable bytes.
    usable: usize,
    /// Whether it was cached since the last reap.
    fresh: bool,
}

const EMPTY: Entry = Entry {
    block: ptr::null_mut(),
    usable: 0,
    fresh: false,
};

/// Invariants: every non-null `block` is a live large block of ours (header magic set, owner
/// Slab) that nobody uses; `bytes` is the sum of their `usable`, at most [`MAX_BYTES`].
struct LargeCache {
    entries: [Entry; SLOTS],
    bytes: usize,
}

// SAFETY: the pointers name cached blocks owned by the cache, reached only under its lock.
unsafe impl Send for LargeCache {}

static CACHE: Lock<LargeCache> = Lock::new(LargeCache {
    entries: [EMPTY; SLOTS],
    bytes: 0,
});

/// A cached block with at least `size` usable bytes (the smallest such), counted as an
/// allocation of `size` bytes; null if none fits or `align` exceeds the page size.
pub fn take(size: usize, align: usize) -> *mut u8 {
    if size > MAX_BLOCK || align > os::page_size() {
        return ptr::null_mut();
    }
    let mut cache = CACHE.lock();
    if cache.bytes == 0 {
        return ptr::null_mut();
    }
    let mut best: Option<usize> = None;
    for (i, e) in cache.entries.iter().enumerate() {
        if !e.block.is_null()
            && e.usable >= size
            && best.is_none_or(|b| e.usable < cache.entries[b].usable)
        {
            best = Some(i);
        }
    }
    let Some(i) = best else {
        return ptr::null_mut();
    };
    let e = core::mem::replace(&mut cache.entries[i], EMPTY);
    cache.bytes -= e.usable;
    drop(cache);
    COUNTERS.record_alloc(size);
    e.block
}

/// Keeps the freed large block `block` (of `size` requested bytes) if it is small enough and
/// there is room, counting its free; returns whether it was kept (otherwise the caller unmaps it).
///
/// # Safety
/// `block` must lie in a window the region map names [`Owner::Large`]; if it starts a live
/// block of ours, the caller frees that block (in hardened builds a block already in the cache is
/// reported as a double free).
pub unsafe fn put(block: *mut u8, size: usize) -> bool {
    // SAFETY: the caller's contract (a Large window); a pointer not starting a live block of ours
    // reads as None.
    let Some(usable) = (unsafe { large::usable_size_if_owned(block, Owner::Slab) }) else {
        return false;
    };
    if usable > MAX_BLOCK {
        return false;
    }
    let mut cache = CACHE.lock();
    if cache.entries.iter().any(|e| e.block == block) {
        drop(cache);
        if hardened::ENABLED {
            hardened::misuse("slab", Misuse::DoubleFree, block);
        }
        // Freed twice: it is cached already.
        return true;
    }
    if cache.bytes + usable > MAX_BYTES {
        return false;
    }
    let Some(slot) = cache.entries.iter_mut().find(|e| e.block.is_null()) else {
        return false;
    };
    *slot = Entry {
        block,
        usable,
        fresh: true,
    };
    cache.bytes += usable;
    drop(cache);
    COUNTERS.record_free(size);
    true
}

/// Unmaps the blocks kept through the whole interval since the last reap (none was reused).
pub fn reap() {
    let mut dead = [ptr::null_mut::<u8>(); SLOTS];
    {
        let mut cache = CACHE.lock();
        if cache.bytes == 0 {
            return;
        }
        let mut freed = 0;
        for (e, d) in cache.entries.iter_mut().zip(dead.iter_mut()) {
            if !e.block.is_null() && !e.fresh {
                *d = e.block;
                freed += e.usable;
                *e = EMPTY;
            }
            e.fresh = false;
        }
        cache.bytes -= freed;
    }
    for block in dead {
        if !block.is_null() {
            // SAFETY: a cached block, removed from the cache above: live, ours, unused.
            unsafe { large::unmap_block(block, &COUNTERS) };
        }
    }
}

/// Takes the cache's lock (fork preparation).
pub fn lock_for_fork() {
    CACHE.force_lock();
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// [`lock_for_fork`] must have been called by this thread, with no guard alive.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { CACHE.force_unlock() };
}
