//! The slab allocator: Bonwick's object caches (1994, as in Linux SLUB) with per-thread
//! magazines (Bonwick & Adams 2001). This file holds the fast path.
//!
//! Structure, from the top:
//!
//! - **Thread layer** (here): per thread and per cache a *loaded* and a *previous* magazine
//!   ([`magazine`]). `alloc` pops from the loaded magazine, `dealloc` pushes onto it: one
//!   thread-local access, no lock, no atomic read-modify-write. When the loaded magazine is
//!   empty (alloc) or full (free) the two are swapped if that helps; otherwise a full or empty
//!   magazine is exchanged with the cache's depot, under the cache lock. A thread's magazine
//!   size per cache starts small (16 rounds) and doubles with each depot trip, up to about
//!   64 KiB of objects, so short-lived threads stay cheap and long-lived ones trade rarely; an
//!   exiting thread hands its magazines to the depot as they are, part-filled ones included.
//!   A thread's first free into a cache it holds no magazine of (most likely an object another
//!   thread allocated) goes to the bottom of a magazine filled from the slabs, so the thread does
//!   not reuse it first (passive false sharing).
//! - **Depot and slab layer** ([`cache`]): one cache per object size ([`classes`]: 44 sizes,
//!   four per doubling, 8 B to 64 KiB), under one lock each. The depot ([`depot`]) holds full
//!   and empty magazines: at most about 8 MiB of objects per cache, released once unused for a
//!   reap interval (100 ms; Bonwick's working-set reaping) and trimmed when a thread using it
//!   exits (the full policy is in [`cache`]); below it, slabs on partial, full and empty
//!   lists, each slab a run of pages (64 KiB for objects up to 8 KiB, 256 KiB above) carved
//!   into equal objects, with its free list threaded through the free objects.
//! - **Page layer** ([`region`]): 4 MiB regions claimed as [`Owner::Slab`], each holding a header
//!   and a descriptor per 64 KiB unit at its start, so a pointer finds its slab with one mask and
//!   two loads (no per-object header). Empty slabs go back to the kernel (`MADV_DONTNEED`) once
//!   unused for a reap interval (beyond a reserve of two per cache), and wholly free regions are
//!   unmapped (one kept as a spare).
//!
//! Requests above 64 KiB (above 64 KiB + 120 bytes when hardened, so that a 64 KiB request and
//! its canary fit the top cache), or aligned above 64 KiB, are mapped directly by
//! [`crate::large`] (no page-level path in between); a few freed ones of up to 1 MiB are kept for
//! reuse by [`large_cache`] (bounded, and unmapped once unused for a reap interval). A
//! power-of-two size is served by the cache of exactly that size, whose objects are aligned to
//! it; other alignments up to 64 KiB take the smallest cache whose size is a multiple of the
//! alignment.
//!
//! `dealloc` finds the cache from the `Layout`, exactly as `alloc` chose it; only a layout too big
//! (or too aligned) for the inline lookup is routed by the region map (Slab, Large or foreign), and
//! a hardened build checks every pointer's region first. The thread's magazines live in a
//! zero-initialised thread block without a destructor ([`crate::thread_word`]: one
//! `%fs`-relative address, no initialisation check, no `__tls_get_addr` in the preloaded
//! library); a `thread_local!` with a destructor is touched on the thread's first slow path and hands
//! the magazines back to the depots when the thread exits; code running after that (other TLS
//! destructors) allocates and frees straight from the slab layer under the cache lock.
//! Every lock is taken by a `pthread_atfork` handler, so a forked child can allocate. With the
//! `hardened` feature, frees are checked ([`hardening`]: invalid, foreign and double frees, heap
//! overflow by a canary in each object's last word, writes after free by keyed free-list links
//! and tags); each request then reserves the canary's 8 bytes, so a power-of-two size takes the
//! next cache and is aligned as its `Layout` asks, no more.

mod cache;
mod classes;
mod counters;
mod depot;
mod hardening;
mod large_cache;
mod magazine;
mod region;
#[cfg(test)]
mod tests;

use core::alloc::{GlobalAlloc, Layout};
use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use self::cache::Cache;
use self::classes::{
    class_for, depot_limit, grown_rounds, magazine_rounds, slab_units, small_class, NUM_CLASSES,
    SIZES,
};
use self::counters::ThreadCounters;
use self::magazine::{free_magazines, new_magazine, Magazine, MAG_KINDS};
use crate::fork::{self, Slot};
use crate::hardened;
use crate::large;
use crate::os;
use crate::region_map::{self, Owner};
use crate::stats::{GlobalCounters, Stats};
use crate::sync::Lock;
use crate::thread_exit::{Attach, ExitHook, OnThreadExit};
use crate::Introspect;

static COUNTERS: GlobalCounters = GlobalCounters::new();
static ATFORK: AtomicBool = AtomicBool::new(false);

/// A cache's lock on its own cache lines, so threads working on different sizes do not share
/// lines.
#[repr(align(128))]
struct PaddedCache(Lock<Cache>);

/// The user caches (`0..NUM_CLASSES`, one per size in [`SIZES`]) and the magazine caches (one
/// per magazine capacity, from [`magazine::MAGAZINE_CACHE`]).
static CACHES: [PaddedCache; NUM_CLASSES + MAG_KINDS] =
    [const { PaddedCache(Lock::new(Cache::new())) }; NUM_CLASSES + MAG_KINDS];

/// The slab allocator; see the module documentation. A zero-sized handle onto one process-wide
/// heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Slab {
    _private: (),
}

impl Slab {
    /// A handle onto the process-wide slab heap. Nothing is mapped until the first allocation.
    pub const fn new() -> Self {
        Slab { _private: () }
    }
}

/// A thread's two magazines of one cache and their round counts (Bonwick's per-CPU cache:
/// `cc_loaded`, `cc_prev`, `cc_rounds`, `cc_prounds`, `cc_magsize`).
///
/// Invariants: `loaded` and `previous` are null or live magazines of that cache held by this
/// thread alone; `rounds[..rounds]` of `loaded` and `rounds[..prev_rounds]` of `previous` are free
/// objects; `magsize` is the thread's magazine size for this cache (0 before its first depot
/// trip, then between [`classes::MAG_START`] (or less) and `magazine_rounds(class)`, never
/// shrinking); `cap` is 0 while `loaded` is null and `magsize` otherwise; `rounds` and
/// `prev_rounds` are at most `magazine_rounds(class)` (every magazine's capacity); `previous` is
/// always null, empty or full (it only ever receives a magazine that just ran empty or full).
#[derive(Clone, Copy)]
struct MagazinePair {
    loaded: *mut Magazine,
    previous: *mut Magazine,
    rounds: u32,
    prev_rounds: u32,
    cap: u32,
    magsize: u32,
}

impl MagazinePair {
    const EMPTY: MagazinePair = MagazinePair {
        loaded: ptr::null_mut(),
        previous: ptr::null_mut(),
        rounds: 0,
        prev_rounds: 0,
        cap: 0,
        magsize: 0,
    };

    fn swap(&mut self) {
        core::mem::swap(&mut self.loaded, &mut self.previous);
        core::mem::swap(&mut self.rounds, &mut self.prev_rounds);
    }

    /// A depot trip: the thread keeps using this cache, so its magazines grow.
    fn grow(&mut self, class: usize) {
        self.magsize = grown_rounds(self.magsize, class);
        if !self.loaded.is_null() {
            self.cap = self.magsize;
        }
    }
}

/// A thread's magazines, one pair per user cache, and its unflushed counters. Starts as all-zero
/// bytes (see `thread_slot`): no magazines ([`MagazinePair::EMPTY`]), nothing counted.
struct ThreadCache {
    pairs: [MagazinePair; NUM_CLASSES],
    counters: ThreadCounters,
}

impl ThreadCache {
    #[inline(always)]
    fn pair(&mut self, class: usize) -> &mut MagazinePair {
        debug_assert!(class < NUM_CLASSES);
        // SAFETY: every caller passes a class from `class_for`, which is < NUM_CLASSES.
        unsafe { self.pairs.get_unchecked_mut(class) }
    }

    /// The fast path of `alloc`: pops a round from the loaded magazine; `None` (and nothing
    /// done) if it has none or the counters are due for a fold.
    #[inline(always)]
    fn pop(&mut self, class: usize, size: usize) -> Option<*mut u8> {
        let due = self.counters.due();
        let p = self.pair(class);
        let n = p.rounds;
        if n == 0 || due {
            return None;
        }
        p.rounds = n - 1;
        // SAFETY: rounds > 0 means `loaded` is a live magazine holding `n` rounds (pair
        // invariant), n <= its capacity.
        let block = unsafe { *magazine::round(p.loaded, n as usize - 1) };
        self.counters.count_alloc(size);
        Some(block)
    }

    /// The slow path of `alloc`: folds the counters if due; then, if the loaded magazine is empty
    /// (or missing), swaps with the previous one if that has rounds, else loads one at the depot
    /// ([`ThreadCache::load`]). Null only if the kernel refused memory.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, class: usize, size: usize) -> *mut u8 {
        if self.counters.due() {
            self.counters.flush(&COUNTERS);
        }
        let pair = self.pair(class);
        if pair.rounds == 0 {
            if pair.prev_rounds > 0 {
                pair.swap();
            } else {
                self.load(class, ptr::null_mut());
            }
        }
        // None only if `load` got no memory.
        self.pop(class, size).unwrap_or(ptr::null_mut())
    }

    /// Loads a magazine with rounds while neither of the thread's magazines of `class` has any:
    /// trades an empty magazine for a full one at the depot, else fills one from the slabs. The
    /// thread's magazine size grows with the trip.
    ///
    /// With a non-null `block` (the first free into a cache the thread holds no magazine of),
    /// the block becomes the *bottom* round: the objects above it come from the slabs, so the
    /// thread's next allocations do not hand it an object another thread allocated (likely on a
    /// cache line that thread still writes: Hoard's passive false sharing). Returns whether it
    /// took `block`. Afterwards `rounds == 0` only if the kernel refused memory.
    fn load(&mut self, class: usize, block: *mut u8) -> bool {
        let limit = depot_limit(class);
        let pair = self.pair(class);
        debug_assert!(pair.rounds == 0 && pair.prev_rounds == 0);
        pair.grow(class);
        let magsize = pair.magsize;
        // Going to the depot: the moment for the rare chores (the fork handlers are registered
        // in `attached`, which every thread passes before its first depot trip).
        reap_all_if_due();
        // SAFETY: class < NUM_CLASSES (from class_for).
        let lock = unsafe { &CACHES.get_unchecked(class).0 };
        let mut spill = ptr::null_mut();
        let mut cache = lock.lock();
        let full = if block.is_null() {
            cache.pop_full()
        } else {
            ptr::null_mut()
        };
        if !full.is_null() {
            if !pair.previous.is_null() {
                // SAFETY: `previous` is empty here (prev_rounds == 0) and ours to give up.
                unsafe { cache.push_empty(pair.previous, limit, &mut spill) };
            }
            drop(cache);
            // SAFETY: magazines the depot could not keep, empty and now ours alone.
            unsafe { free_magazines(spill, class) };
            // SAFETY: a depot magazine, now ours; its count is set while in the depot.
            let count = unsafe { (*full).count };
            debug_assert!(count > 0 && count <= magazine_rounds(class));
            pair.previous = pair.loaded;
            pair.prev_rounds = 0;
            pair.loaded = full;
            pair.rounds = count;
            pair.magsize = pair.magsize.max(count);
            pair.cap = pair.magsize;
            return false;
        }
        // No full magazine to take: fill the loaded one from the slabs.
        if pair.loaded.is_null() {
            let mut m = cache.depot.pop_empty();
            if m.is_null() {
                drop(cache);
                m = new_magazine(class);
                if m.is_null() {
                    // SAFETY: magazines the depot released, empty and now ours alone.
                    unsafe { free_magazines(spill, class) };
                    return false;
                }
                cache = lock.lock();
            }
            pair.loaded = m;
            pair.rounds = 0;
            pair.cap = magsize;
        }
        let bottom = usize::from(!block.is_null());
        // SAFETY: `loaded` is a live empty magazine held by this thread; magsize <= its capacity.
        let got = unsafe {
            let rounds = magazine::rounds_mut(pair.loaded, magsize as usize);
            cache.alloc_objects(
                class as u8,
                SIZES[class],
                slab_units(class),
                rounds.get_unchecked_mut(bottom..),
            )
        };
        drop(cache);
        // SAFETY: magazines the depot released, empty and now ours alone.
        unsafe { free_magazines(spill, class) };
        if bottom == 1 {
            // SAFETY: round 0 lies inside the loaded magazine (magsize >= 4).
            unsafe { *magazine::round(pair.loaded, 0) = block };
        }
        pair.rounds = (got + bottom) as u32;
        bottom == 1
    }

    /// The fast path of `dealloc`: pushes the block onto the loaded magazine; false (and nothing
    /// done) if it is full or missing or the counters are due for a fold.
    #[inline(always)]
    fn push(&mut self, class: usize, block: *mut u8, size: usize) -> bool {
        let due = self.counters.due();
        let p = self.pair(class);
        let n = p.rounds;
        if n >= p.cap || due {
            return false;
        }
        // SAFETY: cap > 0 means `loaded` is a live magazine (pair invariant); n < cap <= its
        // capacity.
        unsafe { *magazine::round(p.loaded, n as usize) = block };
        p.rounds = n + 1;
        self.counters.count_free(size);
        true
    }

    /// A free inside the slow paths: folds the counters if due, then a push, else an exchange.
    fn free(&mut self, class: usize, block: *mut u8, size: usize) {
        if self.counters.due() {
            self.counters.flush(&COUNTERS);
        }
        if !self.push(class, block, size) {
            self.free_exchange(class, block, size);
        }
    }

    /// The loaded magazine is full (or missing): swap with the previous one if it is empty, else
    /// trade the previous (full) one for an empty magazine at the depot.
    #[cold]
    #[inline(never)]
    fn free_exchange(&mut self, class: usize, block: *mut u8, size: usize) {
        let limit = depot_limit(class);
        let pair = self.pair(class);
        if pair.loaded.is_null() {
            // The thread's first free into this cache (since it last traded both magazines):
            // most likely a block another thread allocated.
            if self.load(class, block) {
                self.counters.on_free(size, &COUNTERS);
                return;
            }
            if self.pair(class).loaded.is_null() {
                // No memory for a magazine: give the block straight back to its slab.
                // SAFETY: the caller frees a live block of this cache.
                unsafe { free_shared(class, block, size) };
                return;
            }
            return self.free(class, block, size);
        }
        if !pair.previous.is_null() && pair.prev_rounds == 0 {
            pair.swap();
            return self.free(class, block, size);
        }
        pair.grow(class);
        reap_all_if_due();
        // SAFETY: class < NUM_CLASSES (from class_for).
        let lock = unsafe { &CACHES.get_unchecked(class).0 };
        let mut spill = ptr::null_mut();
        let mut cache = lock.lock();
        let mut empty = cache.depot.pop_empty();
        if empty.is_null() {
            drop(cache);
            empty = new_magazine(class);
            cache = lock.lock();
            if empty.is_null() {
                // No memory for a magazine: give the block straight back to its slab.
                // SAFETY: the caller frees a live block of this cache.
                unsafe { cache.free_object(block) };
                drop(cache);
                // SAFETY: magazines the depot released, empty and now ours alone.
                unsafe { free_magazines(spill, class) };
                self.counters.on_free(size, &COUNTERS);
                return;
            }
        }
        if !pair.previous.is_null() {
            // SAFETY: `previous` is non-empty (checked above), hence full (pair invariant).
            unsafe {
                (*pair.previous).count = pair.prev_rounds;
                cache.push_full(pair.previous, limit, &mut spill);
            }
        }
        drop(cache);
        // SAFETY: magazines the depot could not keep, empty and now ours alone.
        unsafe { free_magazines(spill, class) };
        pair.previous = pair.loaded;
        pair.prev_rounds = pair.rounds;
        pair.loaded = empty;
        pair.rounds = 0;
        pair.cap = pair.magsize;
        self.free(class, block, size);
    }

    /// Hands every magazine back to its depot (thread exit), as it is: one with rounds joins
    /// the full magazines (with its count; the next thread takes it without touching the slabs),
    /// an empty one the empty magazines; then trims those depots to
    /// [`cache::DEPOT_KEEP_AFTER_EXIT`].
    fn release_all(&mut self) {
        for class in 0..NUM_CLASSES {
            let pair = core::mem::replace(self.pair(class), MagazinePair::EMPTY);
            if pair.loaded.is_null() && pair.previous.is_null() {
                continue;
            }
            let limit = depot_limit(class);
            let mut spill = ptr::null_mut();
            // SAFETY: class < NUM_CLASSES.
            let mut cache = unsafe { CACHES.get_unchecked(class) }.0.lock();
            for (m, n) in [
                (pair.loaded, pair.rounds),
                (pair.previous, pair.prev_rounds),
            ] {
                if m.is_null() {
                    continue;
                }
                // SAFETY: a live magazine of this cache holding `n` rounds, which this thread
                // held and gives up.
                unsafe {
                    (*m).count = n;
                    if n > 0 {
                        cache.push_full(m, limit, &mut spill);
                    } else {
                        cache.push_empty(m, limit, &mut spill);
                    }
                }
            }
            cache.trim(
                cache::DEPOT_KEEP_AFTER_EXIT,
                cache::DEPOT_KEEP_AFTER_EXIT,
                &mut spill,
            );
            cache.release_empty_slabs(cache::EMPTY_RESERVE);
            drop(cache);
            // SAFETY: magazines the depot could not keep, empty and now ours alone.
            unsafe { free_magazines(spill, class) };
        }
        self.counters.flush(&COUNTERS);
    }
}

/// When the last reap of all caches started (milliseconds of [`os::coarse_millis`]).
static LAST_REAP_MS: AtomicU64 = AtomicU64::new(0);

/// Runs [`Cache::reap`] on every cache if a reap interval has passed since the last time; one
/// thread wins the right to do it. Called from the slow paths (at most once per magazine
/// exchange, and from every thread's counter fold, once per 256 allocations or frees), so the
/// reaping needs no thread of its own; a program that stops allocating
/// altogether keeps what its caches hold (bounded per cache).
#[inline]
fn reap_all_if_due() {
    let now = os::coarse_millis();
    let last = LAST_REAP_MS.load(Ordering::Relaxed);
    if now.wrapping_sub(last) < depot::REAP_INTERVAL_MS {
        return;
    }
    if LAST_REAP_MS
        .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    reap_all();
}

#[cold]
fn reap_all() {
    crate::large::expire_cache();
    for (index, padded) in CACHES.iter().enumerate() {
        let limit = if index < NUM_CLASSES {
            depot_limit(index)
        } else {
            0
        };
        let mut spill = ptr::null_mut();
        padded.0.lock().reap(limit, &mut spill);
        // (The magazine caches' depots stay empty, so only user caches spill.)
        if index < NUM_CLASSES {
            // SAFETY: magazines of cache `index` the depot released, empty and now ours alone.
            unsafe { free_magazines(spill, index) };
        }
    }
    large_cache::reap();
}

/// Hands the thread's magazines back when the thread exits (armed once per thread, from a slow
/// path, in [`attached`]).
static EXIT_HOOK: ExitHook<SlabExit> = ExitHook::new();

/// Slab's exit hook; allocations after it (later key destructors, libc's own teardown) take the
/// slab layer.
struct SlabExit;

impl OnThreadExit for SlabExit {
    unsafe fn on_thread_exit(_: *mut c_void) {
        attach_state().set(Attach::Exited);
        // SAFETY: no other reference to the thread cache is live: destructors run outside the
        // allocator, and nothing in `release_all` allocates through the global allocator.
        unsafe { &mut *thread_cache() }.release_all();
    }
}

crate::thread_word::thread_block!(
    /// The thread's magazines and counters (all zero: no magazines), reached without a call
    /// also from the preloaded library (see [`crate::thread_word`]).
    thread_slot,
    "allocators_slab_thread_cache",
    ThreadCache
);

crate::thread_word::thread_block!(
    /// Where the thread stands with its exit hook (zero: [`Attach::Fresh`]).
    attach_slot,
    "allocators_slab_attach",
    Cell<Attach>
);

/// The calling thread's cache. Each use makes a reference that ends before the next one begins:
/// the allocator never calls itself, and [`attached`] runs with no reference live.
#[inline(always)]
fn thread_cache() -> *mut ThreadCache {
    thread_slot::get()
}

/// The calling thread's [`Attach`] state.
#[inline(always)]
fn attach_state() -> &'static Cell<Attach> {
    // SAFETY: the thread's own cell, valid for the thread's life, only touched by this thread.
    unsafe { &*attach_slot::get() }
}

/// Whether the thread may hold magazines, registering its exit hook on the first call. Called by
/// the slow paths only, with no reference to the thread cache live (the registration may
/// allocate, and that allocation must find the thread not attached, so it takes the slab layer).
#[cold]
#[inline(never)]
fn attached() -> bool {
    let attach = attach_state();
    match attach.get() {
        Attach::Attached => true,
        Attach::Attaching | Attach::Exited => false,
        Attach::Fresh => {
            attach.set(Attach::Attaching);
            // Both may allocate (glibc's node for the destructor; pthread_atfork's table): such
            // a nested call finds the thread attaching and takes the slab layer.
            // SAFETY: a non-null value (the thread's cache, which outlives the thread's key
            // destructors); `on_thread_exit` does not panic.
            let ok = unsafe { EXIT_HOOK.arm(thread_cache().cast()) };
            fork::register(&ATFORK, Slot::Slab, atfork_prepare, atfork_release);
            attach.set(if ok { Attach::Attached } else { Attach::Exited });
            ok
        }
    }
}

/// The cache serving `size` bytes aligned to `align` (with room for the canary when hardened),
/// or `None` for a large block.
///
/// Hardened, a zero-size request is served as 1 byte: an object must hold its first word (the
/// loose tag's) apart from the canary (a 0-byte request once got a one-word object, whose
/// free reported a heap overflow).
#[inline(always)]
fn cache_for(size: usize, align: usize) -> Option<usize> {
    let size = if hardened::ENABLED { size.max(1) } else { size };
    class_for(size + hardening::CANARY, align)
}

/// The fast path of `alloc` for a small block: one pop from the thread's loaded magazine.
#[inline(always)]
fn alloc_small(class: usize, size: usize) -> *mut u8 {
    // SAFETY: a reference that ends here (see `thread_cache`).
    match unsafe { &mut *thread_cache() }.pop(class, size) {
        Some(p) => {
            // SAFETY: a round of the magazine: an object of cache `class`, now the caller's.
            unsafe { hardening::on_alloc(p, class) };
            p
        }
        // A tail call, which checks its block itself: the fast path calls nothing that returns.
        None => alloc_refill(class, size),
    }
}

/// The thread's [`ThreadCache::refill`], or the slab layer if the thread holds no magazines.
#[cold]
#[inline(never)]
fn alloc_refill(class: usize, size: usize) -> *mut u8 {
    let p = if attached() {
        // SAFETY: a reference that ends here (see `thread_cache`).
        unsafe { &mut *thread_cache() }.refill(class, size)
    } else {
        alloc_shared(class, size)
    };
    if !p.is_null() {
        // SAFETY: a fresh object of cache `class`, now the caller's.
        unsafe { hardening::on_alloc(p, class) };
    }
    p
}

/// The fast path of `dealloc` for a small block: one push onto the thread's loaded magazine.
#[inline(always)]
fn free_small(class: usize, block: *mut u8, size: usize) {
    // SAFETY: a reference that ends here (see `thread_cache`).
    if !unsafe { &mut *thread_cache() }.push(class, block, size) {
        free_slow(class, block, size);
    }
}

/// The thread's [`ThreadCache::free`] (a fold or a magazine exchange), or straight back to the
/// block's slab if the thread holds no magazines.
#[cold]
#[inline(never)]
fn free_slow(class: usize, block: *mut u8, size: usize) {
    if !attached() {
        // SAFETY: the caller frees a live block of this cache.
        return unsafe { free_shared(class, block, size) };
    }
    // SAFETY: a reference that ends here (see `thread_cache`).
    unsafe { &mut *thread_cache() }.free(class, block, size);
}

/// Allocation while the thread holds no magazines: straight from the slab layer.
#[cold]
fn alloc_shared(class: usize, size: usize) -> *mut u8 {
    fork::register(&ATFORK, Slot::Slab, atfork_prepare, atfork_release);
    let mut out = [ptr::null_mut(); 1];
    // SAFETY: class < NUM_CLASSES.
    let got = unsafe { CACHES.get_unchecked(class) }
        .0
        .lock()
        .alloc_objects(class as u8, SIZES[class], slab_units(class), &mut out);
    if got == 0 {
        return ptr::null_mut();
    }
    COUNTERS.record_alloc(size);
    out[0]
}

/// A free while the thread holds no magazines: straight back to the slab.
///
/// # Safety
/// `block` must be a live block of cache `class`, unused afterwards.
#[cold]
unsafe fn free_shared(class: usize, block: *mut u8, size: usize) {
    // SAFETY: class < NUM_CLASSES; the caller's contract covers the block.
    unsafe { CACHES.get_unchecked(class).0.lock().free_object(block) };
    COUNTERS.record_free(size);
}

/// Counts a resize in place in the calling thread's counters (or the shared ones).
fn count_resize(old: usize, new: usize) {
    if attach_state().get() == Attach::Attached {
        // SAFETY: a reference that ends here (see `thread_cache`).
        let tc = unsafe { &*thread_cache() };
        tc.counters.on_free(old, &COUNTERS);
        tc.counters.on_alloc(new, &COUNTERS);
    } else {
        // The thread's counters are folded only while it is attached.
        COUNTERS.record_free(old);
        COUNTERS.record_alloc(new);
    }
}

/// The cache of a request aligned to at most 16 bytes (the common case, looked up inline), or
/// `None` for a large or more aligned one (which [`alloc_other`] and [`dealloc_other`] sort out).
#[inline(always)]
fn common_cache_for(layout: Layout) -> Option<usize> {
    if layout.align() > 16 {
        return None;
    }
    cache_for(layout.size(), layout.align())
}

/// `alloc` of anything [`common_cache_for`] does not place: a small block aligned to more than
/// 16 bytes, or a large block.
#[cold]
#[inline(never)]
fn alloc_other(layout: Layout, zeroed: bool) -> *mut u8 {
    let Some(class) = cache_for(layout.size(), layout.align()) else {
        return alloc_large(layout, zeroed);
    };
    let p = alloc_small(class, layout.size());
    if zeroed && !p.is_null() {
        // SAFETY: p is a fresh object of at least layout.size() bytes.
        unsafe { ptr::write_bytes(p, 0, layout.size()) };
    }
    p
}

/// Frees a small block after the hardened checks (none in a plain build).
///
/// # Safety
/// `ptr` lies in a Slab region and is (the caller's contract) a live object of cache `class`.
#[inline(always)]
unsafe fn free_small_checked(class: usize, ptr: *mut u8, size: usize) {
    debug_assert_eq!(
        // SAFETY: a pointer in a Slab region.
        unsafe { (*region::slab_of(ptr as usize)).cache } as usize,
        class
    );
    // SAFETY: ptr lies in a Slab region.
    if unsafe { hardening::free_passes(ptr, class) } {
        free_small(class, ptr, size);
    } else {
        // SAFETY: forwarded contract. A tail call: the fast path calls nothing that returns.
        unsafe { free_small_suspect(class, ptr, size) };
    }
}

/// A free whose quick check failed: the full check, which aborts on misuse (and returns only
/// for a live object after all), then the free.
///
/// # Safety
/// As for [`free_small_checked`].
#[cold]
#[inline(never)]
unsafe fn free_small_suspect(class: usize, ptr: *mut u8, size: usize) {
    // SAFETY: forwarded contract.
    unsafe { hardening::free_misuse(ptr, class) };
    free_small(class, ptr, size);
}

/// `dealloc` of anything [`GlobalAlloc::dealloc`] did not free inline: a small block aligned to
/// more than 16 bytes, a large block, or a pointer that is not ours.
///
/// # Safety
/// As for `GlobalAlloc::dealloc`.
#[cold]
#[inline(never)]
unsafe fn dealloc_other(ptr: *mut u8, layout: Layout) {
    match (
        region_map::owner_of(ptr),
        cache_for(layout.size(), layout.align()),
    ) {
        // SAFETY: in a Slab region, and a live block allocated with this layout (the caller's
        // contract), so an object of cache `class`.
        (Owner::Slab, Some(class)) => unsafe { free_small_checked(class, ptr, layout.size()) },
        // SAFETY: the caller passes a live block of ours; in a Large window it is a large block,
        // which the cache keeps or which is unmapped here.
        // A sampled block is never cached: its free must reach `large`, which tells the profiler.
        (Owner::Large, _) => unsafe {
            if large::is_sampled(ptr) || !large_cache::put(ptr, layout.size()) {
                large::dealloc(ptr, layout.size(), &COUNTERS);
            }
        },
        // Foreign, or a slab object freed with a layout too big for any cache.
        _ => hardening::on_foreign_free(ptr),
    }
}

/// A request too big for the slabs: a cached large block if one fits ([`large_cache`]; zeroed
/// here if asked), else a block from [`large`] (zeroed there if asked).
#[cold]
fn alloc_large(layout: Layout, zeroed: bool) -> *mut u8 {
    fork::register(&ATFORK, Slot::Slab, atfork_prepare, atfork_release);
    let p = large_cache::take(layout.size(), layout.align());
    if p.is_null() {
        return large::alloc(
            layout.size(),
            layout.align(),
            zeroed,
            Owner::Slab,
            &COUNTERS,
        );
    }
    if zeroed {
        // SAFETY: a cached block handed to us, with at least layout.size() usable bytes.
        unsafe { ptr::write_bytes(p, 0, layout.size()) };
    }
    p
}

/// Fork prepare hook (run by [`crate::fork`]'s registry): takes every cache lock (in index
/// order), then the large block cache's and the page layer's, so no lock is held by another
/// thread across `fork()`.
///
/// # Safety
/// Called by libc before `fork()`, paired with [`atfork_release`].
unsafe extern "C" fn atfork_prepare() {
    for c in CACHES.iter() {
        c.0.force_lock();
    }
    large_cache::lock_for_fork();
    region::lock_for_fork();
}

/// Fork release hook (parent and child): releases what [`atfork_prepare`] took.
///
/// # Safety
/// Called by libc after `fork()`, in the thread that ran [`atfork_prepare`].
unsafe extern "C" fn atfork_release() {
    // SAFETY: atfork_prepare took every one of these locks in this thread, without guards.
    unsafe {
        region::unlock_after_fork();
        large_cache::unlock_after_fork();
        for c in CACHES.iter() {
            c.0.force_unlock();
        }
    }
}

// SAFETY: every small block is an object of one slab, handed out by exactly one magazine or slab
// free list at a time (objects move between them under the cache lock or inside one thread's
// cache); objects of a cache whose size is a multiple of the alignment start at multiples of
// their size from a slab base aligned to at least 64 KiB, so they are aligned as asked. Large blocks come
// from `large`, which aligns them itself.
unsafe impl GlobalAlloc for Slab {
    // Always: with the profiler's hook the inliner's estimate crossed its threshold and C's
    // `malloc` paid a call (7 instructions more per allocation, measured with callgrind).
    #[inline(always)]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| match common_cache_for(layout) {
            Some(class) => alloc_small(class, layout.size()),
            None => alloc_other(layout, false),
        };
        crate::profile::alloc_hooked(layout, false, Owner::Slab, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| {
            match common_cache_for(layout) {
                Some(class) => {
                    let p = alloc_small(class, layout.size());
                    if !p.is_null() {
                        // SAFETY: p is a fresh object of at least layout.size() bytes.
                        unsafe { ptr::write_bytes(p, 0, layout.size()) };
                    }
                    p
                }
                None => alloc_other(layout, true),
            }
        };
        crate::profile::alloc_hooked(layout, true, Owner::Slab, &COUNTERS, plain)
    }

    /// Trusts the `Layout` as the `GlobalAlloc` contract allows (as jemalloc's sized free does): a
    /// small layout means a slab object, since `alloc` serves every small layout from a slab. A
    /// hardened build first checks that the pointer lies in a Slab region, so that a pointer from
    /// elsewhere is reported rather than cached.
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = common_cache_for(layout) {
            // A sampled block (see `profile`) lives in a Large window whatever its layout.
            let ours = if hardened::ENABLED {
                region_map::owner_of(ptr) == Owner::Slab
            } else {
                // SAFETY: a live block of ours (the caller's contract) lies in a claimed window.
                !unsafe { region_map::in_large_window(ptr) }
            };
            if ours {
                // SAFETY: ptr is (the caller's contract) a live block allocated with this layout,
                // so an object of cache `class`, in a Slab region (checked when hardened).
                unsafe { free_small_checked(class, ptr, layout.size()) };
                return;
            }
        }
        // SAFETY: forwarded contract.
        unsafe { dealloc_other(ptr, layout) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old, align) = (layout.size(), layout.align());
        let new_class = cache_for(new_size, align);
        match region_map::owner_of(ptr) {
            Owner::Slab if new_class.is_some() && new_class == cache_for(old, align) => {
                // Same cache: the object already has room.
                count_resize(old, new_size);
                return ptr;
            }
            Owner::Large
                if new_class.is_none()
                    && new_size >= old
                    // SAFETY: a live large block of ours (the caller's contract), in a Large window.
                    && new_size <= unsafe { large::usable_size(ptr) } =>
            {
                // Growth into room the block has already (maybe a bigger block reused from the
                // large cache): no system call. (Shrinking goes to `large`, which returns pages.)
                count_resize(old, new_size);
                return ptr;
            }
            Owner::Large if new_class.is_none() => {
                // SAFETY: a live large block of ours; large::realloc keeps its alignment.
                return unsafe { large::realloc_counted(ptr, old, new_size, &COUNTERS) };
            }
            _ => {}
        }
        // SAFETY: the caller's guarantees, forwarded; the old block is freed only after the copy.
        unsafe { crate::realloc_by_moving(self, ptr, layout, new_size) }
    }
}

/// C's `free` of a pointer outside Slab's regions: a large block of ours, or not ours (ignored).
///
/// # Safety
/// As for `free_unsized`.
#[cold]
#[inline(never)]
unsafe fn free_unsized_other(ptr: *mut u8) {
    if region_map::owner_of(ptr) != Owner::Large {
        return;
    }
    // SAFETY: the pointer lies in a Large window.
    let usable = unsafe { large::usable_size_if_owned(ptr, Owner::Slab) };
    if let Some(layout) = usable.and_then(|n| Layout::from_size_align(n, 1).ok()) {
        // SAFETY: a live large block of ours, given up by the caller; dealloc_other keeps it in
        // the large cache or unmaps it, as `dealloc` does.
        unsafe { dealloc_other(ptr, layout) };
    }
}

impl Introspect for Slab {
    const NAME: &'static str = "slab";

    /// A nested call finds the thread attaching and takes the slab layer (see `attached`).
    const SERVES_REENTRY: bool = true;

    fn stats(&self) -> Stats {
        COUNTERS.snapshot()
    }

    /// C's `malloc` of 1 to 1024 bytes: one compare and the small lookup of the size rounded up
    /// to 16 (`class_for`'s answer at `malloc`'s alignment); anything else as the default does.
    #[inline(always)]
    fn alloc_unsized(&self, size: usize) -> *mut u8 {
        const { assert!(crate::HINT_ALIGN == 16) };
        if !hardened::ENABLED && size.wrapping_sub(1) < 1024 {
            // SAFETY: size <= 1024, so rounded up to 16 it is still at most 1024.
            let class = unsafe { small_class((size + 15) & !15) };
            let plain = |_: Layout| alloc_small(class, size);
            // SAFETY: 1..=1024 bytes at 16 is a valid layout.
            let layout = unsafe { Layout::from_size_align_unchecked(size, 16) };
            return crate::profile::alloc_hooked(layout, false, Owner::Slab, &COUNTERS, plain);
        }
        crate::alloc_unsized_by_layout(self, size)
    }

    unsafe fn usable_size(&self, ptr: *const u8) -> Option<usize> {
        match region_map::owner_of(ptr) {
            Owner::Slab => {
                let addr = ptr as usize;
                // SAFETY: a pointer in a Slab region: its header is mapped and initialised. Only
                // the fields fixed while a slab is owned by a cache are read (`size` is non-zero
                // exactly then); the slab of a live block cannot change owner meanwhile.
                let slab = unsafe { region::slab_of(addr) };
                if slab.is_null() {
                    return None;
                }
                // SAFETY: a non-null head names a descriptor in the same mapped header.
                let s = unsafe { &*slab };
                if s.size == 0 || s.cache as usize >= NUM_CLASSES {
                    return None;
                }
                let size = s.size as usize;
                let inside = addr >= s.base && addr < s.carve_end;
                (inside && (addr - s.base).is_multiple_of(size)).then_some(size - hardening::CANARY)
            }
            // SAFETY: the pointer lies in a Large window.
            Owner::Large => unsafe { large::usable_size_if_owned(ptr, Owner::Slab) },
            _ => None,
        }
    }

    /// One lookup: the object's slab descriptor, found from the address, names its cache.
    #[inline(always)]
    unsafe fn free_unsized(&self, ptr: *mut u8) {
        if !region_map::is_owned_by(ptr, Owner::Slab) {
            // SAFETY: forwarded contract.
            return unsafe { free_unsized_other(ptr) };
        }
        // SAFETY: a pointer in a Slab region: its header is mapped and initialised; for a live
        // object (the caller's contract) its slab is owned by the object's cache, so the fields
        // read are fixed.
        let slab = unsafe { region::slab_of(ptr as usize) };
        // SAFETY: a non-null head names a descriptor in the same mapped header.
        let (class, size) = match unsafe { slab.as_ref() } {
            Some(s) if s.size != 0 && (s.cache as usize) < NUM_CLASSES => {
                (s.cache as usize, s.size as usize)
            }
            _ => return hardening::on_foreign_free(ptr),
        };
        // SAFETY: ptr lies in a Slab region and (the caller's contract) is a live object, of
        // cache `class` by its slab descriptor.
        unsafe { free_small_checked(class, ptr, size - hardening::CANARY) };
    }
}
