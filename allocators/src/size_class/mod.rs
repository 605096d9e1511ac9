//! The size-class allocator, the flagship: mimalloc-style thread heaps over pages of one size
//! class each, with sharded free lists. This file holds the type, `GlobalAlloc` and the fast paths.
//!
//! - **Thread layer** ([`thread`]): the thread's heap (one `%fs` load), attaching a thread, its
//!   exit hook that parks the heap for the next new thread, the orphan heap after exit.
//! - **Heaps** ([`heap`]): per class a queue of pages and the slow paths that refill the fast
//!   path; [`remote`] batches frees into other threads' pages; [`scavenge`] gives back the OS
//!   pages of partly used pages.
//! - **Pages and segments** ([`page`], [`segment`]): a page's free lists (`free` for its owner,
//!   atomic `thread_free` for others); 4 MiB segments and the page heap with its decay.
//! - [`classes`] (60 classes, four per doubling), [`counters`], [`hardening`].
//!
//! Allocation of up to 1 KiB at alignment up to 16: the thread's heap, one indexed load of the
//! current page for `(size + 7) / 8`, pop its `free` list. A free: mask the pointer to its
//! segment, compare the segment's owner heap with the thread's, push on the page's `free` list.
//! No lock and no atomic read-modify-write; another thread's free is one CAS. Requests above
//! 512 KiB or aligned above 64 KiB go to [`crate::large`]; `dealloc` and `realloc` route by the
//! same `Layout` test. `realloc` stays in place while the new size fits the block's class and
//! uses at least half of it; `alloc_zeroed` skips the memset on pages fresh from the kernel.
//! How memory goes back: [`heap`]; hardened builds' checks: [`hardening`].

mod classes;
mod counters;
mod hardening;
mod heap;
mod page;
mod remote;
mod scavenge;
mod segment;
#[cfg(test)]
mod tests;
mod thread;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;

use self::classes::{
    class_for, DIRECT_ALIGN, DIRECT_CLASS, DIRECT_MAX, MAX_SMALL_ALIGN, MAX_SMALL_SIZE,
};
use self::heap::{Heap, COUNTERS};
use self::page::{Block, Page};
use self::segment::{page_of, segment_of};
use self::thread::{alloc_slow, current_heap, heap_or_init, owns};
use crate::hardened;
use crate::large;
use crate::region_map::{self, Owner};
use crate::stats::Stats;
use crate::Introspect;

/// The size-class allocator; see the module documentation. A zero-sized handle onto one
/// process-wide allocator.
#[derive(Clone, Copy, Debug, Default)]
pub struct SizeClass {
    _private: (),
}

impl SizeClass {
    /// A handle onto the process-wide size-class allocator. Nothing is mapped until first use.
    pub const fn new() -> Self {
        SizeClass { _private: () }
    }
}

// SAFETY: blocks come from disjoint slots of pages owned by one heap at a time (or from
// `large`), aligned as asked (class sizes are multiples of the alignment and page areas are
// MAX_SMALL_ALIGN-aligned), and are handed out again only after they were freed.
unsafe impl GlobalAlloc for SizeClass {
    // Always: with the profiler's hook the inliner's estimate crossed its threshold and C's
    // `malloc` paid a call (7 instructions more per allocation, measured with callgrind).
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| {
            if is_large(layout.size(), layout.align()) {
                return alloc_large(layout, false);
            }
            // SAFETY: a small layout.
            unsafe { alloc_small(layout) }
        };
        crate::profile::alloc_hooked(layout, false, Owner::SizeClass, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| {
            if is_large(layout.size(), layout.align()) {
                return alloc_large(layout, true);
            }
            // SAFETY: a small layout; the block has at least layout.size() bytes.
            unsafe {
                let p = alloc_small(layout);
                if !p.is_null() {
                    zero_small(p, layout.size());
                }
                p
            }
        };
        crate::profile::alloc_hooked(layout, true, Owner::SizeClass, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_large(layout.size(), layout.align()) {
            // A tail call that checks too (hardened): a check called here, before it, made
            // every `dealloc` save and restore registers for the call's sake.
            dealloc_large(ptr, layout.size());
            return;
        }
        // A sampled block (see `profile`) lives in a Large window whatever its layout.
        // Hardened builds check any pointer (a foreign one is reported by `free_small`).
        let sampled = if hardened::ENABLED {
            region_map::owner_of(ptr) == Owner::Large
        } else {
            // SAFETY: a live block of ours (the caller's contract) lies in a claimed window.
            unsafe { region_map::in_large_window(ptr) }
        };
        if sampled {
            dealloc_large(ptr, layout.size());
            return;
        }
        // SAFETY: a small layout for a block outside Large windows: it came from a segment.
        unsafe { free_small(ptr, layout.size()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        // A sampled block (see `profile`) lives in a Large window whatever its layout: moved.
        let small = !is_large(old, layout.align()) && region_map::owner_of(ptr) != Owner::Large;
        let mut canary = 0;
        if hardened::ENABLED {
            // SAFETY: any address may be checked (it is attributed through the region map).
            unsafe {
                if small {
                    canary = hardening::check_small(ptr, old, false).1;
                } else {
                    hardening::check_large(ptr);
                }
            }
        }
        if small && !is_large(new_size, layout.align()) {
            // SAFETY: a live small block: its page descriptor is valid.
            let bsize = unsafe { (*page_of(ptr as usize)).block_size };
            // Hardened: stays in place only with room for the canary after `new_size` bytes.
            let fits = new_size + hardened::CANARY_BYTES <= bsize;
            if fits && (new_size >= bsize / 2 || bsize <= 64) {
                if hardened::ENABLED {
                    // SAFETY: a live block of ours of `bsize` bytes, checked above.
                    unsafe { hardening::resized(ptr, bsize, new_size, canary) };
                }
                count_realloc(old, new_size);
                return ptr;
            }
        } else if !small && is_large(new_size, layout.align()) {
            // SAFETY: a live large block of ours.
            return unsafe { large::realloc_counted(ptr, old, new_size, &COUNTERS) };
        }
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { crate::realloc_by_moving(self, ptr, layout, new_size) }
    }
}

/// Whether a request goes to [`crate::large`] (hardened: also the last 8 bytes below the largest
/// class, so that a block with room for the canary after the request always exists: see
/// [`alloc_small`]).
#[inline(always)]
fn is_large(size: usize, align: usize) -> bool {
    size > MAX_SMALL_SIZE - hardened::CANARY_BYTES || align > MAX_SMALL_ALIGN
}

/// The fast allocation path. Hardened builds pad every request by the canary's bytes
/// ([`hardened::CANARY_BYTES`], 0 in plain builds), so every block keeps a canary after its
/// request and a small overflow is caught whatever the request's size (a request filling its
/// class exactly, 48 bytes say, used to keep none). Counted as `layout.size()` bytes.
#[inline(always)]
unsafe fn alloc_small(layout: Layout) -> *mut u8 {
    let size = layout.size();
    // Hardened blocks are at least 16 bytes (a free block needs its link word and its state
    // word; see `hardening`): the class tables map smaller sizes to 16 (`classes::MIN_CLASS`).
    let need = size + hardened::CANARY_BYTES;
    let heap = current_heap();
    if need <= DIRECT_MAX && layout.align() <= DIRECT_ALIGN {
        // Rounding up to the alignment makes the slot's class a multiple of it (see
        // `classes::DIRECT_ALIGN`); rounding up to a word as well gives `(size + 7) / 8` for
        // alignments up to 8. One mask does both (fewer instructions than two roundings).
        let mask = (layout.align() - 1) | 7;
        let slot = ((need + mask) & !mask) >> 3;
        // Why the block below is sound: the rounded size is at most DIRECT_MAX (a multiple of
        // every align <= DIRECT_ALIGN), so slot <= DIRECT_MAX / 8 < DIRECT_SLOTS; the heap is the
        // thread's own (or the never-written empty heap, whose pages have no free block, so it
        // is never popped or counted into).
        // SAFETY: slot < DIRECT_SLOTS (see above).
        unsafe { alloc_direct(heap, slot, size) }
    } else {
        // SAFETY: as above.
        unsafe { alloc_by_class(heap, need, layout.align(), size) }
    }
}

/// Allocates from direct slot `slot` (the block size rounded up to the alignment, in words),
/// counted as `size` bytes.
///
/// # Safety
/// `slot < DIRECT_SLOTS`; `heap` is the thread's heap or a sentinel (both have a live page, or
/// the empty page, in every slot).
#[inline(always)]
unsafe fn alloc_direct(heap: *mut Heap, slot: usize, size: usize) -> *mut u8 {
    // SAFETY: the caller's contract; a sentinel's slot pages have no free block, so they are
    // never popped or counted into.
    unsafe {
        let page = *(*heap).pages_direct.get_unchecked(slot);
        if !(*page).free.is_null() {
            return pop_counted(heap, page, size);
        }
        alloc_slow(heap, *DIRECT_CLASS.get_unchecked(slot) as usize, size)
    }
}

/// Pops the first free block of `page` and counts `size` bytes in `heap`'s counters.
///
/// # Safety
/// The caller owns `heap` (not the empty heap) and `page`, whose free list is non-empty.
#[inline(always)]
unsafe fn pop_counted(heap: *mut Heap, page: *mut Page, size: usize) -> *mut u8 {
    // SAFETY: caller's contract.
    unsafe {
        let b = page::pop(page);
        (*heap).counters.on_alloc_returning(size, &COUNTERS, b)
    }
}

/// The fast free path.
///
/// # Safety
/// `ptr` is a live block of this allocator's segments (hardened: checked by `hardening::check_small`).
#[inline(always)]
unsafe fn free_small(ptr: *mut u8, size: usize) {
    let (key, canary, checked_page) = if hardened::ENABLED {
        // SAFETY: any address may be checked (it is attributed through the region map).
        unsafe { hardening::check_small(ptr, size, true) }
    } else {
        (0, 0, ptr::null_mut())
    };
    debug_assert_eq!(region_map::owner_of(ptr), Owner::SizeClass);
    let heap = current_heap();
    // SAFETY: ptr lies in a live segment (caller), so its header and page descriptor are valid.
    unsafe {
        let seg = segment_of(ptr as usize);
        // Hardened: the checks found it already (not found again: their stores to the block
        // may alias the segment header, as far as the compiler knows).
        let page = if hardened::ENABLED {
            checked_page
        } else {
            page_of(ptr as usize)
        };
        let block = ptr.cast::<Block>();
        if hardened::ENABLED {
            hardening::retire(page, ptr, canary);
        }
        if (*seg).heap.load(core::sync::atomic::Ordering::Relaxed) == heap {
            page::push_local(page, block, key);
            // An emptied page needs the slow path only if allocation is not using it: a block
            // allocated and freed in a loop (cache-scratch) took it on every free, 30-odd
            // instructions more per free. (A full-listed page is never its queue's head.)
            // Both rare calls are tail calls, so the fast path needs no stack frame.
            if ((*page).used == 0 && !heap::is_current(heap, page)) || (*page).in_full {
                return free_local_slow_counted(heap, page, size);
            }
            (*heap).counters.on_free(size, &COUNTERS);
        } else {
            free_remote(heap, page, block, size);
        }
    }
}

/// Allocation of a block bigger than [`DIRECT_MAX`] or aligned above [`DIRECT_ALIGN`] (kept
/// out of line so the inlined fast path stays small).
///
/// # Safety
/// `heap` is the thread's heap (or the empty heap); `need` and `align` are a small request's.
#[inline(never)]
unsafe fn alloc_by_class(heap: *mut Heap, need: usize, align: usize, size: usize) -> *mut u8 {
    let class = class_for(need, align);
    // SAFETY: the heap is the thread's own (or the never-written empty heap, whose queues are
    // empty); a queue head is a live page of the heap or null.
    unsafe {
        let page = (*heap).queues.get_unchecked(class).head;
        if !page.is_null() && !(*page).free.is_null() {
            return pop_counted(heap, page, size);
        }
        alloc_slow(heap, class, size)
    }
}

/// The local free's slow path (page emptied or on the full list), counting the free too.
///
/// # Safety
/// As for `heap::free_local_slow`.
#[cold]
#[inline(never)]
unsafe fn free_local_slow_counted(heap: *mut Heap, page: *mut Page, size: usize) {
    // SAFETY: forwarded contract; the heap is the thread's own.
    unsafe {
        heap::free_local_slow(heap, page);
        (*heap).counters.on_free(size, &COUNTERS);
    }
}

/// A free from a thread that does not own the block's page (or has no heap): chained in the
/// thread's heap and pushed in batches (see [`remote`]), straight to the page without one.
#[cold]
#[inline(never)]
unsafe fn free_remote(mut heap: *mut Heap, page: *mut Page, block: *mut Block, size: usize) {
    if !owns(heap) {
        // A thread that only frees gets a heap too: it would otherwise hit the shared atomic
        // counters, and push every block with a CAS of its own. A fresh heap: see `heap::acquire`.
        heap = heap_or_init(heap, false);
        if heap.is_null() {
            // SAFETY: `block` is live in `page` (caller), owned by another heap.
            unsafe { remote::free_direct(page, block) };
            COUNTERS.record_free(size);
            return;
        }
    }
    // SAFETY: the thread's own heap; `block` is live in `page` (caller), owned by another heap.
    // Its counters are only touched by this thread.
    unsafe {
        remote::free(heap, page, block);
        (*heap).counters.on_free(size, &COUNTERS);
    }
}

/// C's `free` of a pointer outside our segments: a large block of ours, or not ours (ignored).
///
/// # Safety
/// As for `free_unsized`.
#[cold]
#[inline(never)]
unsafe fn free_unsized_other(ptr: *mut u8) {
    if region_map::owner_of(ptr) == Owner::Large {
        // SAFETY: the pointer lies in a Large window; a live block of ours is given up.
        unsafe { large::free_unsized(ptr, Owner::SizeClass, &COUNTERS) }
    }
}

/// A large block, zeroed if asked (a reused mapping is dirty).
#[cold]
fn alloc_large(layout: Layout, zeroed: bool) -> *mut u8 {
    large::alloc_layout(layout, zeroed, Owner::SizeClass, &COUNTERS)
}

/// Zeroes a freshly allocated small block unless its page guarantees zeros.
///
/// # Safety
/// `p` is a block just allocated from a segment, with at least `size` bytes.
unsafe fn zero_small(p: *mut u8, size: usize) {
    // The page's `is_zero` is read only when the page belongs to this thread's own heap (the
    // owner field is atomic): a block from the orphan heap, which other threads use under its
    // lock (released by now), is cleared in full without reading it.
    // SAFETY: p is live in a segment, so its segment header and page descriptor are valid.
    unsafe {
        let page = page_of(p as usize);
        let own = (*segment_of(p as usize))
            .heap
            .load(core::sync::atomic::Ordering::Relaxed)
            == current_heap();
        if own && (*page).is_zero {
            p.cast::<usize>().write(0);
        } else {
            ptr::write_bytes(p, 0, size);
        }
    }
}

/// Counts a `realloc` kept in place as a free of `old` bytes and an allocation of `new`.
fn count_realloc(old: usize, new: usize) {
    let heap = current_heap();
    if owns(heap) {
        // SAFETY: the thread's own heap.
        unsafe {
            (*heap).counters.on_free(old, &COUNTERS);
            (*heap).counters.on_alloc(new, &COUNTERS);
        }
    } else {
        COUNTERS.record_free(old);
        COUNTERS.record_alloc(new);
    }
}

/// Frees a block that `dealloc`'s layout routes to [`crate::large`]; hardened builds first
/// check that it starts a live large block of ours.
#[cold]
fn dealloc_large(ptr: *mut u8, size: usize) {
    if hardened::ENABLED {
        // SAFETY: any address may be checked (it is attributed through the region map).
        unsafe { hardening::check_large(ptr) };
    }
    // SAFETY: the caller passes a block routed by its layout: a live large block of ours
    // (hardened: checked above).
    unsafe { large::dealloc(ptr, size, &COUNTERS) };
}

// No padding: C blocks need none to have their canaries checked (see `UnsizedPad`).
impl hardened::UnsizedPad for SizeClass {}

impl Introspect for SizeClass {
    const NAME: &'static str = "sizeclass";

    /// A nested call finds the busy heap and is served from the orphan heap (see `init_heap`).
    const SERVES_REENTRY: bool = true;

    fn stats(&self) -> Stats {
        let heap = current_heap();
        if owns(heap) {
            // SAFETY: the thread's own heap.
            unsafe { (*heap).counters.flush(&COUNTERS) };
        }
        COUNTERS.snapshot()
    }

    /// Hardened builds answer the block size minus the canary's 8 bytes: what any request
    /// (padded for its canary, see `alloc_small`) may use.
    unsafe fn usable_size(&self, ptr: *const u8) -> Option<usize> {
        match region_map::owner_of(ptr) {
            Owner::SizeClass => {
                let addr = ptr as usize;
                // SAFETY: the address lies in one of our live segments; descriptors are valid
                // (a freed segment is released from the region map before it is unmapped).
                unsafe {
                    let page = page_of(addr);
                    let p = &*page;
                    if !p.in_use || addr < p.start {
                        return None;
                    }
                    let off = addr - p.start;
                    let ok = off.is_multiple_of(p.block_size)
                        && off / p.block_size < p.capacity as usize;
                    ok.then_some(p.block_size - hardened::CANARY_BYTES)
                }
            }
            // SAFETY: the pointer lies in a Large window.
            Owner::Large => unsafe { large::usable_size_if_owned(ptr, Owner::SizeClass) },
            _ => None,
        }
    }

    /// C's `malloc` of 1 to [`DIRECT_MAX`] bytes in one compare and the direct slot (16-byte
    /// alignment: the slot of `size` rounded up to 16); anything else as the default does.
    #[inline(always)]
    fn alloc_unsized(&self, size: usize) -> *mut u8 {
        const { assert!(crate::HINT_ALIGN == 16 && DIRECT_ALIGN >= 16) };
        if !hardened::ENABLED && size.wrapping_sub(1) < DIRECT_MAX {
            // (size + 15) rounded down to 16 is at most DIRECT_MAX, so its slot (that over 8)
            // is below DIRECT_SLOTS; the heap is the thread's own or a sentinel.
            let slot = ((size + 15) & !15) >> 3;
            // SAFETY: see above.
            let plain = |_: Layout| unsafe { alloc_direct(current_heap(), slot, size) };
            // SAFETY: 1..=1024 bytes at 16 is a valid layout.
            let layout = unsafe { Layout::from_size_align_unchecked(size, 16) };
            return crate::profile::alloc_hooked(layout, false, Owner::SizeClass, &COUNTERS, plain);
        }
        crate::alloc_unsized_by_layout(self, size)
    }

    /// One lookup: the block's page descriptor, found from the address, gives its size. Freed
    /// as `usable_size` bytes, so hardened builds always check the canary.
    #[inline(always)]
    unsafe fn free_unsized(&self, ptr: *mut u8) {
        if region_map::is_owned_by(ptr, Owner::SizeClass) {
            // SAFETY: the address lies in one of our live segments, whose page descriptors
            // are valid; a live block (the caller's contract; checked by free_small in
            // hardened builds) is freed.
            unsafe {
                let size = (*page_of(ptr as usize)).block_size - hardened::CANARY_BYTES;
                free_small(ptr, size);
            }
        } else {
            // SAFETY: forwarded contract.
            unsafe { free_unsized_other(ptr) };
        }
    }
}
