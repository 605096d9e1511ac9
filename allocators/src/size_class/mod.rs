//! The size-class allocator, the flagship: mimalloc-style thread heaps over pages of one size
//! class each, with sharded free lists.
//!
//! - [`classes`]: 60 size classes, four per doubling (worst-case rounding waste under 20%).
//! - [`page`]: a page's free lists (`free` for its owner, atomic `thread_free` for other threads).
//! - [`segment`]: 4 MiB segments holding pages and their descriptors; the page heap underneath
//!   (pages handed out and taken back, dirty pages discarded after a decay, empty segments
//!   unmapped).
//! - [`heap`]: the thread heaps, their slow paths, and the pool that parks a heap when its thread
//!   exits and gives it to the next new thread.
//! - [`scavenge`]: gives back the OS pages of partly used pages that hold no live block, paced
//!   by the heap's growth (from the allocation slow path).
//! - `checks`: the `hardened` feature's checks (see below).
//!
//! This file holds the fast paths. Allocation of up to 1 KiB at alignment up to 16 is: one `%fs`
//! load of the thread's heap pointer, one indexed load of the current page for `(size + 7) / 8`
//! (the size rounded up to the alignment first),
//! pop from that page's `free` list. A free is: mask the pointer to its segment, compare the
//! segment's owner heap with the thread's, push on the page's `free` list, decrement `used`. No
//! lock and no atomic read-modify-write on either; a free from another thread is one CAS (which
//! also counts the block for its page's owner, see [`page`]).
//! Requests above 512 KiB or aligned above 64 KiB go to [`crate::large`]; `dealloc` and `realloc`
//! route by the same `Layout` test (GlobalAlloc callers must pass the allocation's layout), so
//! the region map is only consulted by `usable_size`.
//!
//! Memory coming back: a page whose last block is freed returns to its segment (unless it is the
//! page allocation is using); once the heap holds more than 1 MiB of dirty free pages (counted by
//! the bytes they touched), those free for 20 ms of a coarse clock are discarded
//! (`MADV_DONTNEED`), and segments empty for as long are given back (one per heap is kept for
//! reuse, up to four more process-wide as spares for any heap, with at most 1 MiB of dirty pages
//! each; the rest are unmapped); above 32 MiB of dirty pages everything free goes back at once
//! (the decay runs on the thread's own page frees, so this bounds what an idle thread keeps).
//! Pages that stay partly used (a cache deleting random keys while its size mix shifts) give
//! back their OS pages that hold no live block, without waiting to empty: see [`scavenge`].
//! At thread exit the heap is tidied and parked for the next new thread: up to 8 MiB of dirty
//! free pages it keeps them, and its empty segments of small pages, for that thread (above, all
//! are discarded and its empty segments given back as above); tidied again while parked, it keeps
//! up to 4 MiB. A new page is taken dirty rather than fresh when its segment has one. In the
//! unit tests, 1 GiB allocated in four threads and freed leaves `mapped_bytes` within a few MiB
//! of where it started.
//!
//! `realloc` stays in place while the new size fits the block's class and uses at least half of
//! it; `alloc_zeroed` skips the memset on pages fresh from the kernel (or discarded since).
//!
//! With the `hardened` feature ([`crate::hardened`]; the checks live in `checks`, each behind an
//! `if hardened::ENABLED` that compiles away otherwise), every request is padded by 8 bytes
//! for its class (blocks are at least 16 bytes), so every block carries a canary in its last
//! word after its request, checked on free (`checks` still handles a request that fills its
//! block, which only a caller passing a smaller layout than it allocated with could make;
//! `usable_size` is the class size minus 8, so a C block, freed by `free_unsized` as that many
//! bytes, has its canary checked too), and keeps a state word in its second word
//! while free (see `checks` for the layout), and:
//! - every free-list link (the owner's `free` list, extended runs, and the atomic `thread_free`
//!   list, encoded before the CAS push) is stored encoded with the per-process key and the slot's
//!   address, and decoded on use; a link that is not null or inside the same page aborts with
//!   "corrupted free list" (a write after free);
//! - `dealloc` and `realloc` check the pointer: a Foreign window, a free page, a header slot or an
//!   address off a block boundary is an invalid free; a state word holding the freed tag (the
//!   canary's complement) a double free, and, when the layout leaves slack, a last word that is
//!   not the block's canary a heap overflow (bytes written past the request); a large block must
//!   start a live large mapping of ours (which has a guard page after it);
//! - a freed block gets the freed tag, and in debug builds its usable bytes are filled with
//!   [`crate::hardened::FREED_BYTE`];
//! - a list of remote frees taken over by the owner is walked once: more blocks than the page
//!   has carved (a cycle) aborts too.
//!
//! Not caught: a stale pointer freed again after its block was handed out anew (it is live then),
//! and two threads freeing one block at the very same instant (both may see the canary).

mod checks;
mod classes;
mod counters;
mod heap;
mod page;
mod remote;
mod scavenge;
mod segment;
#[cfg(test)]
mod tests;

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr;

use self::classes::{
    class_for, DIRECT_ALIGN, DIRECT_CLASS, DIRECT_MAX, MAX_SMALL_ALIGN, MAX_SMALL_SIZE,
};
use self::heap::{detached_heap, empty_heap, Heap, COUNTERS};
use self::page::{Block, Page};
use self::segment::{page_of, segment_of};
use crate::hardened;
use crate::large;
use crate::region_map::{self, Owner};
use crate::stats::Stats;
use crate::thread_exit::{ExitHook, OnThreadExit};
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

crate::thread_word::thread_word!(
    /// The thread's heap: [`heap::EMPTY_HEAP`] until the thread first allocates,
    /// [`heap::DETACHED_HEAP`] while its heap is set up and after its exit hook ran (see
    /// [`init_heap`]). One `%fs`-relative load, also in the preloaded library.
    heap_word,
    "allocators_sizeclass_heap",
    init = super::heap::EMPTY_HEAP
);

/// Hands the thread's heap back to the pool when the thread exits.
static EXIT_HOOK: ExitHook<SizeClassExit> = ExitHook::new();

/// SizeClass's exit hook: parks the thread's heap (the value armed by `init_heap`).
/// Allocations after it (later key destructors, libc's own teardown) go to the orphan heap.
struct SizeClassExit;

impl OnThreadExit for SizeClassExit {
    unsafe fn on_thread_exit(heap: *mut c_void) {
        heap_word::set(detached_heap() as usize);
        // SAFETY: `heap` is the exiting thread's own heap, armed by `init_heap` (the hook's
        // contract); this thread, with its word detached, never reaches it again.
        unsafe { heap::abandon(heap.cast()) };
    }
}

/// The calling thread's heap, or one of the two sentinels (see [`heap_word`]).
#[inline(always)]
fn current_heap() -> *mut Heap {
    heap_word::get() as *mut Heap
}

/// Whether `heap` (a value of [`heap_word`]) is a real heap, not a sentinel.
#[inline(always)]
fn owns(heap: *mut Heap) -> bool {
    heap != empty_heap() && heap != detached_heap()
}

/// Gives the thread a heap and arms its exit hook; null if it cannot have one (no memory, or
/// the hook could not be armed).
///
/// This is the C interface's reentry guard too: arming the hook may make glibc `calloc` (its
/// key table), and a preloaded library's `calloc` is ours. While this runs the thread's word
/// holds [`heap::DETACHED_HEAP`], whose pages have no free block, so such a nested call falls
/// through to [`alloc_slow`], which serves it from the locked orphan heap (no lock is held
/// here), and a nested free finds no heap of its own and frees remotely.
#[cold]
#[inline(never)]
fn init_heap(adopt: bool) -> *mut Heap {
    heap_word::set(detached_heap() as usize);
    let h = heap::acquire(adopt);
    // SAFETY: a heap of this thread's, valid until the hook parks it at thread exit.
    if !h.is_null() && !unsafe { EXIT_HOOK.arm(h.cast()) } {
        // SAFETY: the heap was never used; parking it hands it to the next thread.
        unsafe { heap::abandon(h) };
        // No hook (the process ran out of pthread keys, or of memory for glibc's key table):
        // the thread stays on the orphan heap rather than retrying this on every call.
        heap_word::set(detached_heap() as usize);
        return ptr::null_mut();
    }
    heap_word::set(if h.is_null() { empty_heap() } else { h } as usize);
    h
}

/// For a sentinel `heap`: the thread's new heap if it has none yet ([`init_heap`]; a parked one
/// if `adopt`, see `heap::acquire`), or null if it must not get one now (nested in `init_heap`,
/// or after its exit hook ran, or no memory).
#[inline(always)]
fn heap_or_init(heap: *mut Heap, adopt: bool) -> *mut Heap {
    if heap == empty_heap() {
        init_heap(adopt)
    } else {
        ptr::null_mut()
    }
}

/// The generic slow path for class `class`: sets up the thread's heap when needed, falls back to
/// the locked orphan heap after thread exit, and counts the allocation of `size` bytes.
#[cold]
#[inline(never)]
unsafe fn alloc_slow(mut heap: *mut Heap, class: usize, size: usize) -> *mut u8 {
    if !owns(heap) {
        heap = heap_or_init(heap, true);
        if heap.is_null() {
            let p = heap::with_orphan(
                // SAFETY: the orphan heap is owned by whoever holds its lock, which we do.
                |h| unsafe { alloc_in(h, class) },
                ptr::null_mut(),
            );
            if !p.is_null() {
                COUNTERS.record_alloc(size);
            }
            return p;
        }
    }
    // SAFETY: `heap` is the calling thread's own heap.
    unsafe {
        if (*heap).adopt_later {
            heap = adopt_instead(heap);
        }
        let p = heap::alloc_slow(heap, class);
        if !p.is_null() {
            (*heap).counters.on_alloc(size, &COUNTERS);
        }
        p
    }
}

/// The first allocation of a thread whose first call was a free: it takes a parked heap now
/// if there is one (see `heap::acquire`), and parks its own blank heap. Returns the thread's
/// heap from now on.
///
/// # Safety
/// `heap` is the calling thread's own heap, with `adopt_later` set.
#[cold]
#[inline(never)]
unsafe fn adopt_instead(heap: *mut Heap) -> *mut Heap {
    // SAFETY: the caller owns `heap`.
    let other = unsafe { heap::adopt_instead(heap) };
    if other == heap {
        return heap;
    }
    // SAFETY: `other` is ours now, valid until the hook parks it at thread exit.
    if !unsafe { EXIT_HOOK.arm(other.cast()) } {
        // SAFETY: ours, never used: parked again.
        unsafe { heap::abandon(other) };
        return heap;
    }
    heap_word::set(other as usize);
    // SAFETY: the thread's word and hook no longer name `heap`: it is never used here again.
    unsafe { heap::abandon(heap) };
    other
}

/// Allocates from class `class` of an owned heap without counting (fast pop or slow path).
unsafe fn alloc_in(heap: *mut Heap, class: usize) -> *mut u8 {
    // SAFETY: the caller owns `heap`; its queue heads are live pages.
    unsafe {
        let page = (*heap).queues[class].head;
        if !page.is_null() && !(*page).free.is_null() {
            return page::pop(page);
        }
        heap::alloc_slow(heap, class)
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

/// The fast allocation path. Hardened builds pad every request by the canary's bytes
/// ([`hardened::CANARY_BYTES`], 0 in plain builds), so every block keeps a canary after its
/// request and a small overflow is caught whatever the request's size (a request filling its
/// class exactly, 48 bytes say, used to keep none). Counted as `layout.size()` bytes.
#[inline(always)]
unsafe fn alloc_small(layout: Layout) -> *mut u8 {
    let size = layout.size();
    // Hardened blocks are at least 16 bytes (a free block needs its link word and its state
    // word; see `checks`): the class tables map smaller sizes to 16 (`classes::MIN_CLASS`).
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

/// Whether a request goes to [`crate::large`] (hardened: also the last 8 bytes below the largest
/// class, so that a block with room for the canary after the request always exists: see
/// [`alloc_small`]).
#[inline(always)]
fn is_large(size: usize, align: usize) -> bool {
    size > MAX_SMALL_SIZE - hardened::CANARY_BYTES || align > MAX_SMALL_ALIGN
}

/// The fast free path.
///
/// # Safety
/// `ptr` is a live block of this allocator's segments (hardened: checked by `checks::check_small`).
#[inline(always)]
unsafe fn free_small(ptr: *mut u8, size: usize) {
    let (key, canary, checked_page) = if hardened::ENABLED {
        // SAFETY: any address may be checked (it is attributed through the region map).
        unsafe { checks::check_small(ptr, size, true) }
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
            checks::retire(page, ptr, canary);
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
                    canary = checks::check_small(ptr, old, false).1;
                } else {
                    checks::check_large(ptr);
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
                    unsafe { checks::resized(ptr, bsize, new_size, canary) };
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
        unsafe { checks::check_large(ptr) };
    }
    // SAFETY: the caller passes a block routed by its layout: a live large block of ours
    // (hardened: checked above).
    unsafe { large::dealloc(ptr, size, &COUNTERS) };
}

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
