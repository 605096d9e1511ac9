//! Thread heaps: per class a queue of pages (its head is where allocation happens), a full list,
//! the segments with free pages, and the slow paths that refill the fast path.
//!
//! A heap is used by one thread at a time and needs no lock. Heaps live in memory mapped by this
//! module and are never unmapped: when a thread exits its heap is tidied (empty pages go back to
//! their segments; see `thread::park_tidy` for what it keeps) and parked on the abandoned list, and
//! the next new thread adopts it whole, with its pages (as snmalloc recycles its allocators). A
//! parked heap's pages still receive remote frees; whenever a heap takes a segment (fresh or spare)
//! it first tidies one parked heap, so memory freed into them is given back even if no thread ever
//! adopts them.
//!
//! ## Memory coming back
//!
//! A page whose last block is freed returns to its segment (unless it is the page allocation is
//! using); once the heap holds more than `segment::DIRTY_LIMIT` (1 MiB) of dirty free pages
//! (counted by the bytes they touched), those free for `segment::DECAY_MS` (20 ms) of a coarse
//! clock are discarded (`MADV_DONTNEED`), and segments empty for as long are given back (one per
//! heap is kept for reuse, up to four more process-wide as spares for any heap, with at most 1 MiB
//! of dirty pages each; the rest are unmapped); above `segment::DIRTY_HARD_LIMIT` (32 MiB) of dirty
//! pages everything free goes back at once (the decay runs on the thread's own page frees, so this
//! bounds what an idle thread keeps). Pages that stay partly used (a cache deleting random keys
//! while its size mix shifts) give back their OS pages that hold no live block, without waiting to
//! empty: see [`scavenge`]. At thread exit the heap is tidied and parked for the next new thread:
//! up to `thread::EXITED_DIRTY_LIMIT` (8 MiB) of dirty free pages it keeps them, and its empty
//! segments of small pages, for that thread (above, all are discarded and its empty segments given
//! back as above); tidied again while parked, it keeps up to `thread::PARKED_DIRTY_LIMIT` (4 MiB).
//! A new page is taken dirty rather than fresh when its segment has one. In the unit tests, 1 GiB
//! allocated in four threads and freed leaves `mapped_bytes` within a few MiB of where it started.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use super::classes::{class_size, first_slot, DIRECT_SLOTS, LAST_DIRECT_CLASS, NUM_CLASSES};
use super::counters::HeapCounters;
use super::page::{self, Page};
use super::remote::{self, Pending};
use super::scavenge;
use super::segment::{self, Segment};
use crate::stats::GlobalCounters;

/// The allocator's shared counters.
pub static COUNTERS: GlobalCounters = GlobalCounters::new();

/// A doubly linked list of pages.
#[derive(Clone, Copy)]
pub struct PageQueue {
    /// First page (the one allocation uses), or null.
    pub head: *mut Page,
    /// Last page, or null.
    pub tail: *mut Page,
}

impl PageQueue {
    const EMPTY: PageQueue = PageQueue {
        head: ptr::null_mut(),
        tail: ptr::null_mut(),
    };
}

/// A thread heap; see the module docs.
///
/// Invariants: `pages_direct[s]` is the head of the queue of class `DIRECT_CLASS[s]`, or
/// [`EMPTY_PAGE`] when that queue is empty; every page in `queues[c]` serves class `c` and is not
/// marked full; every page on `full` has `in_full` set.
#[repr(C)]
pub struct Heap {
    /// Current page per direct slot `(size + 7) / 8` (first so the fast path's offset is small).
    pub pages_direct: [*mut Page; DIRECT_SLOTS],
    /// Pages with (possibly) free blocks, per class.
    pub queues: [PageQueue; NUM_CLASSES],
    /// Pages found full (all classes).
    pub full: PageQueue,
    /// Full pages handed back by remote frees (pushed by other threads).
    pub rescued: AtomicPtr<Page>,
    /// Segments with free pages, per kind.
    pub avail: [*mut Segment; 3],
    /// One empty segment kept mapped.
    pub cached_segment: *mut Segment,
    /// Bytes of dirty free pages in `avail` segments (their `dirty_len`s).
    pub dirty_bytes: usize,
    /// Clock (`os::coarse_millis`) at which the next decay sweep may run.
    pub next_sweep: u64,
    /// Unflushed statistics.
    pub counters: HeapCounters,
    /// Link on the abandoned list.
    pub next_abandoned: *mut Heap,
    /// Set while the heap is parked (no thread owns it): remote frees into its pages then count
    /// towards [`note_parked_free`](super::thread::note_parked_free)'s reclaim.
    pub parked: AtomicBool,
    /// This thread's chain of frees into another heap's page, not yet pushed (see `remote`).
    pub pending: Pending,
    /// Handed to a thread whose first call was a free: it adopts a parked heap in its stead at
    /// its first allocation (see `thread::acquire`).
    pub adopt_later: bool,
    /// The footprint (all heaps' mapped bytes) at which this heap's next scavenging pass runs
    /// (see [`note_growth`]).
    pub scavenge_at: usize,
}

/// The page every empty slot points at: it never has a free block.
pub struct EmptyPage(pub UnsafeCell<Page>);
// SAFETY: the sentinel is never written (its `free` is null so the fast path never pops from it).
unsafe impl Sync for EmptyPage {}
/// See [`EmptyPage`].
pub static EMPTY_PAGE: EmptyPage = EmptyPage(UnsafeCell::new(Page::empty()));

impl Heap {
    /// A heap with no pages.
    pub const fn empty() -> Heap {
        Heap {
            pages_direct: [EMPTY_PAGE.0.get(); DIRECT_SLOTS],
            queues: [PageQueue::EMPTY; NUM_CLASSES],
            full: PageQueue::EMPTY,
            rescued: AtomicPtr::new(ptr::null_mut()),
            avail: [ptr::null_mut(); 3],
            cached_segment: ptr::null_mut(),
            dirty_bytes: 0,
            next_sweep: 0,
            counters: HeapCounters::new(),
            next_abandoned: ptr::null_mut(),
            parked: AtomicBool::new(false),
            pending: Pending::new(),
            adopt_later: false,
            scavenge_at: 0,
        }
    }
}

/// The heap a thread sees before it has one (and after its heap was handed back): every slot
/// points at [`EMPTY_PAGE`], so the fast path falls through to the slow path. Never written.
/// `repr(transparent)`: the static's address is the heap's (the thread word starts there).
#[repr(transparent)]
pub struct EmptyHeap(pub UnsafeCell<Heap>);
// SAFETY: never written; see the type docs.
unsafe impl Sync for EmptyHeap {}
/// See [`EmptyHeap`].
pub static EMPTY_HEAP: EmptyHeap = EmptyHeap(UnsafeCell::new(Heap::empty()));

/// The empty heap's address.
#[inline(always)]
pub fn empty_heap() -> *mut Heap {
    EMPTY_HEAP.0.get()
}

/// The heap a thread sees while it has no heap of its own and must not be given one now: while
/// its heap is being set up, and after its exit hook handed its heap back (see `init_heap` and
/// `on_thread_exit` in `thread.rs`). Empty like [`EMPTY_HEAP`], and never written, but
/// told apart from it: allocations go to the orphan heap, frees to the shared counters.
pub static DETACHED_HEAP: EmptyHeap = EmptyHeap(UnsafeCell::new(Heap::empty()));

/// The detached heap's address.
#[inline(always)]
pub fn detached_heap() -> *mut Heap {
    DETACHED_HEAP.0.get()
}

/// Unlinks `page` from queue `q`.
///
/// # Safety
/// The caller owns the queue and the page is on it.
pub unsafe fn queue_remove(q: *mut PageQueue, page: *mut Page) {
    // SAFETY: the caller owns the list and the page is on it.
    unsafe {
        let (prev, next) = ((*page).prev, (*page).next);
        if prev.is_null() {
            (*q).head = next;
        } else {
            (*prev).next = next;
        }
        if next.is_null() {
            (*q).tail = prev;
        } else {
            (*next).prev = prev;
        }
        (*page).next = ptr::null_mut();
        (*page).prev = ptr::null_mut();
    }
}

unsafe fn queue_push_front(q: *mut PageQueue, page: *mut Page) {
    // SAFETY: the caller owns the list and the page is on no list.
    unsafe {
        let head = (*q).head;
        (*page).prev = ptr::null_mut();
        (*page).next = head;
        if head.is_null() {
            (*q).tail = page;
        } else {
            (*head).prev = page;
        }
        (*q).head = page;
    }
}

unsafe fn queue_push_back(q: *mut PageQueue, page: *mut Page) {
    // SAFETY: the caller owns the list and the page is on no list.
    unsafe {
        let tail = (*q).tail;
        (*page).next = ptr::null_mut();
        (*page).prev = tail;
        if tail.is_null() {
            (*q).head = page;
        } else {
            (*tail).next = page;
        }
        (*q).tail = page;
    }
}

/// Whether `page` is the head of its class queue (the page allocation is using).
///
/// # Safety
/// The caller owns `heap`; `page` is an in-use page of it.
#[inline(always)]
pub unsafe fn is_current(heap: *mut Heap, page: *mut Page) -> bool {
    // SAFETY: the caller owns the heap; a page's class is below NUM_CLASSES.
    unsafe { (*heap).queues.get_unchecked((*page).class as usize).head == page }
}

/// Points the direct slots of `class` at the head of its queue.
unsafe fn sync_direct(heap: *mut Heap, class: usize) {
    if class > LAST_DIRECT_CLASS {
        return;
    }
    // SAFETY: the caller owns the heap; slots first_slot..=size/8 are below DIRECT_SLOTS.
    unsafe {
        let head = (*heap).queues[class].head;
        let target = if head.is_null() {
            EMPTY_PAGE.0.get()
        } else {
            head
        };
        for s in first_slot(class)..=class_size(class) / 8 {
            *(*heap).pages_direct.get_unchecked_mut(s) = target;
        }
    }
}

/// Moves the pages that remote frees handed back (see `page::push_thread_free`) from the full
/// list to their class queues.
unsafe fn drain_rescued(heap: *mut Heap) {
    // SAFETY: the caller owns the heap; pushed pages stay alive until drained (they hold at least
    // the remote-freed block, counted in `used`).
    unsafe {
        let mut p = (*heap).rescued.swap(ptr::null_mut(), Ordering::Acquire);
        while !p.is_null() {
            let next = (*p).rescue_next;
            debug_assert!((*p).in_full);
            queue_remove(&raw mut (*heap).full, p);
            (*p).in_full = false;
            let class = (*p).class as usize;
            let q = &raw mut (*heap).queues[class];
            let was_empty = (*q).head.is_null();
            queue_push_back(q, p);
            if was_empty {
                sync_direct(heap, class);
            }
            p = next;
        }
    }
}

/// The allocation slow path for `class`: collect the current pages' frees, retire full pages,
/// or take a fresh page. Null when out of memory.
///
/// # Safety
/// The calling thread owns `heap` (not the empty heap).
#[cold]
#[inline(never)]
pub unsafe fn alloc_slow(heap: *mut Heap, class: usize) -> *mut u8 {
    // The large-block cache decays on this path too (one load while it is empty).
    crate::large::expire_cache();
    // SAFETY: the caller owns the heap and all its pages.
    unsafe {
        remote::flush(heap);
        if !(*heap).rescued.load(Ordering::Relaxed).is_null() {
            drain_rescued(heap);
        }
        let q = &raw mut (*heap).queues[class];
        let first = (*q).head;
        let mut p = first;
        while !p.is_null() {
            // A page past the head may still have free blocks: use them first, and leave its
            // remote frees for later (merging them now means walking that whole list to find
            // its tail: 76% of this function's cycles in a larson-shaped C program).
            if (*p).free.is_null() {
                page::collect(p);
            }
            let listed = !(*p).free.is_null();
            if listed || page::extend(p) || scavenge::unpark(p) {
                if (*q).head != p {
                    queue_remove(q, p);
                    queue_push_front(q, p);
                }
                if !listed {
                    // Memory about to be touched (carved or unparked): pace the scavenger
                    // (which leaves queue heads alone, `p` included).
                    note_growth(heap);
                }
                if p != first {
                    sync_direct(heap, class);
                }
                return page::pop(p);
            }
            if !page::try_mark_full(p) {
                continue; // a remote free arrived: collect again
            }
            let next = (*p).next;
            queue_remove(q, p);
            (*p).in_full = true;
            queue_push_back(&raw mut (*heap).full, p);
            p = next;
        }
        note_growth(heap);
        let p = segment::alloc_page(heap, class);
        if p.is_null() {
            sync_direct(heap, class);
            return ptr::null_mut();
        }
        queue_push_front(q, p);
        sync_direct(heap, class);
        page::extend(p);
        page::pop(p)
    }
}

/// Called before the heap touches more memory (a carve, an unpark, a fresh page): runs a
/// scavenging pass when the footprint (`COUNTERS`' mapped bytes, all heaps) passed this heap's
/// `scavenge_at`, which then becomes the footprint plus the growth the pass asks to wait for.
/// The mark only rises: memory given back and touched again below the last pass's level (a
/// steady churn that frees and refills the same spans) runs no pass, since discarding spans
/// that are about to be refilled only trades page faults for nothing; growth past it does.
///
/// # Safety
/// The calling thread owns `heap`.
unsafe fn note_growth(heap: *mut Heap) {
    let now = COUNTERS.mapped();
    // SAFETY: the caller owns the heap.
    unsafe {
        if now >= (*heap).scavenge_at {
            (*heap).scavenge_at = now.saturating_add(scavenge::scavenge_heap(heap));
        }
    }
}

/// The local-free slow path: the page just became empty or was on the full list.
///
/// # Safety
/// The calling thread owns `heap` and `page`; a block was just pushed on its `free` list.
#[cold]
#[inline(never)]
pub unsafe fn free_local_slow(heap: *mut Heap, page: *mut Page) {
    // SAFETY: the caller owns the heap and the page.
    unsafe {
        let class = (*page).class as usize;
        let q = &raw mut (*heap).queues[class];
        if (*page).in_full {
            if !page::try_unmark_full(page) {
                return; // a remote free is handing it back through `rescued`
            }
            queue_remove(&raw mut (*heap).full, page);
            (*page).in_full = false;
            let was_empty = (*q).head.is_null();
            queue_push_back(q, page);
            if was_empty {
                sync_direct(heap, class);
            }
        }
        if (*page).used == 0 && (*q).head != page {
            // Empty and not the page allocation is using: back to the page heap.
            queue_remove(q, page);
            segment::free_page(heap, page);
        }
    }
}

/// Gives back the queued pages that are empty or that their remote frees empty (other pages'
/// remote frees stay for the next owner: see [`page::collect_if_emptied`]), and (if `purge`)
/// discards all dirty free pages and the cached segment. Used when a heap is parked or tidied.
///
/// # Safety
/// The calling thread owns `heap` exclusively.
pub unsafe fn tidy(heap: *mut Heap, purge: bool) {
    // SAFETY: exclusive ownership of the heap and its pages.
    unsafe {
        remote::flush(heap);
        drain_rescued(heap);
        for class in 0..NUM_CLASSES {
            let q = &raw mut (*heap).queues[class];
            let mut p = (*q).head;
            while !p.is_null() {
                let next = (*p).next;
                page::collect_if_emptied(p);
                if (*p).used == 0 {
                    queue_remove(q, p);
                    segment::free_page(heap, p);
                }
                p = next;
            }
            sync_direct(heap, class);
        }
        if purge {
            segment::decay(heap, 0, 0);
            segment::drop_cached(heap);
        }
        (*heap).counters.flush(&COUNTERS);
    }
}
