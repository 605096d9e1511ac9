//! Thread heaps: per class a queue of pages (its head is where allocation happens), a full list,
//! the segments with free pages, and the slow paths that refill the fast path.
//!
//! A heap is used by one thread at a time and needs no lock. Heaps live in memory mapped by this
//! module and are never unmapped: when a thread exits its heap is tidied (empty pages go back to
//! their segments; see `park_tidy` for what it keeps) and parked on the abandoned list, and the next new thread adopts it whole, with its
//! pages (as snmalloc recycles its allocators). A parked heap's pages still receive remote frees;
//! whenever a heap takes a segment (fresh or spare) it first tidies one parked heap, so memory freed into
//! them is given back even if no thread ever adopts them.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use super::classes::{class_size, first_slot, DIRECT_SLOTS, LAST_DIRECT_CLASS, NUM_CLASSES};
use super::counters::HeapCounters;
use super::page::{self, Page};
use super::remote::{self, Pending};
use super::scavenge;
use super::segment::{self, Segment};
use crate::fork::{self, Slot};
use crate::os;
use crate::stats::GlobalCounters;
use crate::sync::Lock;

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
    /// towards [`note_parked_free`]'s reclaim.
    pub parked: AtomicBool,
    /// This thread's chain of frees into another heap's page, not yet pushed (see `remote`).
    pub pending: Pending,
    /// Handed to a thread whose first call was a free: it adopts a parked heap in its stead at
    /// its first allocation (see [`acquire`]).
    pub adopt_later: bool,
    /// Bytes of new pages taken since the last scavenging pass (see `scavenge`).
    pub scavenge_credit: usize,
    /// Growth (bytes counted in `scavenge_credit`) that triggers the next pass.
    pub scavenge_next: usize,
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
            scavenge_credit: 0,
            scavenge_next: scavenge::SCAVENGE_EVERY,
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
/// `on_thread_exit` in the parent module). Empty like [`EMPTY_HEAP`], and never written, but
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

/// Counts a carve (or unpark) of about [`page::EXTEND_BYTES`] of memory the heap is about to
/// touch, and runs a scavenging pass once [`scavenge::SCAVENGE_EVERY`] bytes were counted: while
/// the heap's memory grows, it first gives back what its partly used pages no longer touch (the
/// pass says how much growth to wait for before the next).
///
/// # Safety
/// The calling thread owns `heap`.
unsafe fn note_growth(heap: *mut Heap) {
    // SAFETY: the caller owns the heap.
    unsafe {
        (*heap).scavenge_credit += page::EXTEND_BYTES;
        if (*heap).scavenge_credit >= (*heap).scavenge_next {
            (*heap).scavenge_credit = 0;
            (*heap).scavenge_next = scavenge::scavenge_heap(heap);
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

/// Collects every queued page, gives back empty pages, and (if `purge`) discards all dirty free
/// pages and the cached segment. Used when a heap is parked or tidied.
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
                page::collect_unless_empty(p);
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

// ---- the heap pool -------------------------------------------------------------------------

/// Heaps parked by exited threads, and the chunk new heaps are carved from.
struct Pool {
    abandoned_head: *mut Heap,
    abandoned_tail: *mut Heap,
    /// Heaps on the abandoned list.
    parked: usize,
    /// Parked heaps that own nothing (see [`is_blank`]), linked through `next_abandoned`.
    blank: *mut Heap,
    chunk_cursor: usize,
    chunk_end: usize,
}

// SAFETY: the raw pointers refer to heap memory owned by the pool, only touched under its lock.
unsafe impl Send for Pool {}

static POOL: Lock<Pool> = Lock::new(Pool {
    abandoned_head: ptr::null_mut(),
    abandoned_tail: ptr::null_mut(),
    parked: 0,
    blank: ptr::null_mut(),
    chunk_cursor: 0,
    chunk_end: 0,
});
/// The heap used (under this lock) by code that allocates after its thread's heap was handed
/// back at thread exit.
static ORPHAN: Lock<usize> = Lock::new(0);
static ATFORK: AtomicBool = AtomicBool::new(false);
const HEAP_CHUNK: usize = 64 * 1024;

fn pool_pop(pool: &mut Pool) -> *mut Heap {
    let h = pool.abandoned_head;
    if !h.is_null() {
        // SAFETY: parked heaps are valid and only linked under the pool lock.
        unsafe {
            pool.abandoned_head = (*h).next_abandoned;
            (*h).next_abandoned = ptr::null_mut();
        }
        if pool.abandoned_head.is_null() {
            pool.abandoned_tail = ptr::null_mut();
        }
        pool.parked -= 1;
    }
    h
}

fn pool_push(pool: &mut Pool, h: *mut Heap) {
    // SAFETY: `h` is a valid heap no thread uses, linked under the pool lock.
    unsafe { (*h).next_abandoned = ptr::null_mut() };
    if pool.abandoned_tail.is_null() {
        pool.abandoned_head = h;
    } else {
        // SAFETY: as above.
        unsafe { (*pool.abandoned_tail).next_abandoned = h };
    }
    pool.abandoned_tail = h;
    pool.parked += 1;
}

/// A heap for a new thread: a parked one if any and `adopt`, else a blank one (a parked heap
/// that owns nothing), else a fresh one. Null if out of memory.
///
/// A thread whose first call is a free does not adopt (`adopt` false) until it allocates
/// ([`adopt_instead`]): a thread that only frees would own the parked heap's pages without
/// ever allocating from them, so the frees other threads make into those pages would never be
/// collected (a heap collects its remote frees on its allocation slow path). In the
/// `thread-pool` workload, where consumer threads only free, consumers adopting their
/// producers' heaps kept RSS at 1.57 times the live bytes (1.11 without).
pub fn acquire(adopt: bool) -> *mut Heap {
    fork::register(&ATFORK, Slot::SizeClass, atfork_prepare, atfork_release);
    let mut pool = POOL.lock();
    let h = if adopt {
        pool_pop(&mut pool)
    } else {
        ptr::null_mut()
    };
    if !h.is_null() {
        // SAFETY: a parked heap, valid for ever (heaps are never unmapped); ours now.
        unsafe { (*h).parked.store(false, Ordering::Relaxed) };
        return h;
    }
    let h = acquire_blank(&mut pool);
    if !h.is_null() {
        // SAFETY: a heap no thread uses (blank or fresh), ours now.
        unsafe { (*h).adopt_later = !adopt };
    }
    h
}

/// For a heap handed out by `acquire(false)` (its thread's first call was a free), at its
/// thread's first allocation: a parked heap to use instead, if there is one, else `heap` itself.
/// The caller switches its thread over (exit hook, thread word) and parks `heap` with
/// [`abandon`] (blank: it never allocated).
///
/// # Safety
/// The calling thread owns `heap`.
#[cold]
pub unsafe fn adopt_instead(heap: *mut Heap) -> *mut Heap {
    // SAFETY: the caller owns the heap.
    unsafe {
        (*heap).adopt_later = false;
        if !is_blank(heap) {
            return heap;
        }
        let parked = {
            let mut pool = POOL.lock();
            pool_pop(&mut pool)
        };
        if parked.is_null() {
            return heap;
        }
        (*parked).parked.store(false, Ordering::Relaxed);
        parked
    }
}

/// A blank heap from the pool, else a fresh one carved from the heap chunk; null if out of
/// memory.
fn acquire_blank(pool: &mut Pool) -> *mut Heap {
    let h = pool.blank;
    if !h.is_null() {
        // SAFETY: a blank parked heap, valid for ever, linked under the pool lock; ours now.
        unsafe {
            pool.blank = (*h).next_abandoned;
            (*h).next_abandoned = ptr::null_mut();
            (*h).parked.store(false, Ordering::Relaxed);
        }
        return h;
    }
    let size = core::mem::size_of::<Heap>().next_multiple_of(64);
    if pool.chunk_cursor + size > pool.chunk_end {
        let chunk = os::map(HEAP_CHUNK);
        if chunk.is_null() {
            return ptr::null_mut();
        }
        COUNTERS.add_mapped(HEAP_CHUNK);
        pool.chunk_cursor = chunk as usize;
        pool.chunk_end = chunk as usize + HEAP_CHUNK;
    }
    let h = pool.chunk_cursor as *mut Heap;
    pool.chunk_cursor += size;
    // SAFETY: fresh, suitably aligned (64) memory inside the chunk, ours alone.
    unsafe { h.write(Heap::empty()) };
    h
}

/// Parks the heap of an exiting thread after tidying it.
///
/// # Safety
/// The calling thread owns `heap` and never uses it again.
pub unsafe fn abandon(heap: *mut Heap) {
    // SAFETY: forwarded ownership.
    let blank = unsafe {
        park_tidy(heap, true);
        (*heap).parked.store(true, Ordering::Relaxed);
        is_blank(heap)
    };
    let mut pool = POOL.lock();
    if blank {
        // Kept apart: it needs no reclaim, and a thread that only frees may take it (else
        // threads that only free, in a key destructor say, would each carve a fresh heap:
        // 5,000 of them grew RSS by 9.6 MB in the preload suite).
        // SAFETY: a heap no thread uses, linked under the pool lock.
        unsafe { (*heap).next_abandoned = pool.blank };
        pool.blank = heap;
    } else {
        pool_push(&mut pool, heap);
    }
}

/// Whether a tidied heap owns nothing: no page, no segment, nothing handed back to it.
///
/// # Safety
/// The calling thread owns `heap` exclusively.
unsafe fn is_blank(heap: *mut Heap) -> bool {
    // SAFETY: exclusive ownership (caller).
    unsafe {
        (*heap).queues.iter().all(|q| q.head.is_null())
            && (*heap).full.head.is_null()
            && (*heap).avail.iter().all(|s| s.is_null())
            && (*heap).cached_segment.is_null()
            && (*heap).rescued.load(Ordering::Relaxed).is_null()
    }
}

/// Bytes remote-freed into parked heaps since their last reclaim.
static PARKED_FREED: AtomicUsize = AtomicUsize::new(0);
/// Bytes remote-freed into parked heaps that trigger a reclaim of every parked heap (8 MiB):
/// memory freed after its threads are gone comes back while it is being freed, by the freeing
/// thread, even if that thread then never allocates again; at most this much waits for the next
/// reclaim (or for a new thread to adopt the heap).
const PARKED_RECLAIM_BYTES: usize = 8 << 20;
/// Parked heaps tidied by one reclaim at most (the pool's round robin takes the next ones
/// at the next reclaim), so that no single free stalls for thousands of heaps.
const RECLAIM_AT_ONCE: usize = 16;

/// Counts `bytes` remote-freed into a page of a parked heap (`free_remote`'s cold path), and
/// tidies every parked heap once [`PARKED_RECLAIM_BYTES`] have been freed into them: their
/// emptied pages go back to their segments, dirty pages beyond what a parked heap keeps are
/// discarded, and empty segments given back (see `park_tidy`).
pub fn note_parked_free(bytes: usize) {
    let before = PARKED_FREED.fetch_add(bytes, Ordering::Relaxed);
    if before < PARKED_RECLAIM_BYTES && before + bytes >= PARKED_RECLAIM_BYTES {
        reclaim_parked();
    }
}

/// Tidies each parked heap once (see [`note_parked_free`]).
#[cold]
#[inline(never)]
fn reclaim_parked() {
    PARKED_FREED.store(0, Ordering::Relaxed);
    let n = POOL.lock().parked.min(RECLAIM_AT_ONCE);
    for _ in 0..n {
        reclaim_one_abandoned();
    }
}

/// Dirty free bytes a parked heap keeps for the next thread that adopts it.
const PARKED_DIRTY_LIMIT: usize = 4 << 20;
/// Dirty free bytes the heap of a thread that is just exiting keeps (it is likely adopted soon).
const EXITED_DIRTY_LIMIT: usize = 8 << 20;

/// Tidies a heap no thread uses. Up to [`EXITED_DIRTY_LIMIT`] (`just_exited`: its thread is
/// exiting) or [`PARKED_DIRTY_LIMIT`] (tidied again while parked) of dirty free pages, it keeps
/// them and its empty segments of small pages for the next thread that adopts it (see
/// `segment::keep_for_next_thread`); above that all of them are discarded and its empty segments
/// given back. Threads re-created in a loop (mstress) otherwise gave back and discarded, at
/// every exit and every tidy of a parked heap, the very pages the next thread then faulted in
/// again (page faults and discards were about 40% of that workload's time).
///
/// # Safety
/// The calling thread owns `heap` exclusively.
unsafe fn park_tidy(heap: *mut Heap, just_exited: bool) {
    // SAFETY: forwarded ownership.
    unsafe {
        tidy(heap, false);
        let limit = if just_exited {
            EXITED_DIRTY_LIMIT
        } else {
            PARKED_DIRTY_LIMIT
        };
        if (*heap).dirty_bytes > limit {
            segment::decay(heap, 0, 0);
        } else {
            segment::keep_for_next_thread(heap);
        }
        segment::release_cached(heap);
    }
}

/// Tidies one parked heap (round robin), so memory remote-freed into it goes back to the kernel.
/// Skipped if the pool is busy.
pub fn reclaim_one_abandoned() {
    let h = match POOL.try_lock() {
        Some(mut pool) => pool_pop(&mut pool),
        None => return,
    };
    if h.is_null() {
        return;
    }
    // SAFETY: popped from the pool, so no thread owns it but us until we push it back.
    unsafe { park_tidy(h, false) };
    pool_push(&mut POOL.lock(), h);
}

/// Runs `f` with the orphan heap (locked), for allocations made after the thread's heap is gone.
pub fn with_orphan<R>(f: impl FnOnce(*mut Heap) -> R, fail: R) -> R {
    // Before the lock: registering may allocate, and that call may come back here.
    fork::register(&ATFORK, Slot::SizeClass, atfork_prepare, atfork_release);
    let mut orphan = ORPHAN.lock();
    if *orphan == 0 {
        let h = acquire(true);
        if h.is_null() {
            return fail;
        }
        *orphan = h as usize;
    }
    f(*orphan as *mut Heap)
}

unsafe extern "C" fn atfork_prepare() {
    ORPHAN.force_lock();
    POOL.force_lock();
}

unsafe extern "C" fn atfork_release() {
    // SAFETY: atfork_prepare took both locks in this thread.
    unsafe {
        POOL.force_unlock();
        ORPHAN.force_unlock();
    }
}
