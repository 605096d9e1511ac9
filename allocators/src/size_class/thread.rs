//! SizeClass's per-thread state: the thread's heap word (one `%fs`-relative load), attaching a
//! thread (a heap from the pool: a parked one, a blank one or a fresh one), its exit hook (the
//! heap is tidied and parked for the next new thread), the locked orphan heap that serves
//! allocations after a thread's exit hook ran, and the allocation slow path that sets all this
//! up. The pool and the orphan heap are the allocator's only locks, taken by its fork hooks
//! ([`Slot::SizeClass`]).

use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::heap::{self, detached_heap, empty_heap, tidy, Heap, COUNTERS};
use super::page;
use super::segment;
use crate::fork::{self, Slot};
use crate::os;
use crate::sync::Lock;
use crate::thread_exit::{ExitHook, OnThreadExit};

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
        unsafe { abandon(heap.cast()) };
    }
}

/// The calling thread's heap, or one of the two sentinels (see [`heap_word`]).
#[inline(always)]
pub(super) fn current_heap() -> *mut Heap {
    heap_word::get() as *mut Heap
}

/// Whether `heap` (a value of [`heap_word`]) is a real heap, not a sentinel.
#[inline(always)]
pub(super) fn owns(heap: *mut Heap) -> bool {
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
    let h = acquire(adopt);
    // SAFETY: a heap of this thread's, valid until the hook parks it at thread exit.
    if !h.is_null() && !unsafe { EXIT_HOOK.arm(h.cast()) } {
        // SAFETY: the heap was never used; parking it hands it to the next thread.
        unsafe { abandon(h) };
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
pub(super) fn heap_or_init(heap: *mut Heap, adopt: bool) -> *mut Heap {
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
pub(super) unsafe fn alloc_slow(mut heap: *mut Heap, class: usize, size: usize) -> *mut u8 {
    if !owns(heap) {
        heap = heap_or_init(heap, true);
        if heap.is_null() {
            let p = with_orphan(
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
    let other = unsafe { parked_instead(heap) };
    if other == heap {
        return heap;
    }
    // SAFETY: `other` is ours now, valid until the hook parks it at thread exit.
    if !unsafe { EXIT_HOOK.arm(other.cast()) } {
        // SAFETY: ours, never used: parked again.
        unsafe { abandon(other) };
        return heap;
    }
    heap_word::set(other as usize);
    // SAFETY: the thread's word and hook no longer name `heap`: it is never used here again.
    unsafe { abandon(heap) };
    other
}

/// Allocates from class `class` of an owned heap without counting (fast pop or slow path).
pub(super) unsafe fn alloc_in(heap: *mut Heap, class: usize) -> *mut u8 {
    // SAFETY: the caller owns `heap`; its queue heads are live pages.
    unsafe {
        let page = (*heap).queues[class].head;
        if !page.is_null() && !(*page).free.is_null() {
            return page::pop(page);
        }
        heap::alloc_slow(heap, class)
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
fn acquire(adopt: bool) -> *mut Heap {
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
unsafe fn parked_instead(heap: *mut Heap) -> *mut Heap {
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
unsafe fn abandon(heap: *mut Heap) {
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
pub(super) fn note_parked_free(bytes: usize) {
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
pub(super) fn reclaim_one_abandoned() {
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
fn with_orphan<R>(f: impl FnOnce(*mut Heap) -> R, fail: R) -> R {
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
