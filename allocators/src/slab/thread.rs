//! Slab's thread layer: per thread and per cache a *loaded* and a *previous* magazine
//! ([`super::magazine`]). `alloc` pops from the loaded magazine, `dealloc` pushes onto it: one
//! thread-local access, no lock, no atomic read-modify-write. When the loaded magazine is empty
//! (alloc) or full (free) the two are swapped if that helps; otherwise a full or empty magazine
//! is exchanged with the cache's depot, under the cache lock. A thread's magazine size per cache
//! starts small (16 rounds) and doubles with each depot trip, up to 16 KiB of objects, so
//! short-lived threads stay cheap and long-lived ones trade rarely; an exiting thread hands its
//! magazines to the depot as they are, part-filled ones included. A thread's first free into a
//! cache it holds no magazine of (most likely an object another thread allocated) goes to the
//! bottom of a magazine filled from the slabs, so the thread does not reuse it first (passive
//! false sharing).
//!
//! The magazines live in a zero-initialised thread block without a destructor
//! ([`crate::thread_word`]: one `%fs`-relative address, no initialisation check, no
//! `__tls_get_addr` in the preloaded library); an exit hook armed on the thread's first slow path
//! hands them back to the depots when the thread exits; code running after that (other TLS
//! destructors) allocates and frees straight from the slab layer under the cache lock. Reaping
//! (Bonwick's working-set reaping) runs from these slow paths too, so it needs no thread.

use core::cell::Cell;
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};

use super::cache;
use super::classes::{depot_limit, grown_rounds, magazine_rounds, slab_units, NUM_CLASSES, SIZES};
use super::counters::ThreadCounters;
use super::magazine::{self, free_magazines, new_magazine, Magazine};
use super::{
    atfork_prepare, atfork_release, depot, hardening, large_cache, ATFORK, CACHES, COUNTERS,
};
use crate::fork::{self, Slot};
use crate::os;
use crate::thread_exit::{Attach, ExitHook, OnThreadExit};

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
pub(super) struct ThreadCache {
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
    pub(super) fn pop(&mut self, class: usize, size: usize) -> Option<*mut u8> {
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
    pub(super) fn push(&mut self, class: usize, block: *mut u8, size: usize) -> bool {
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
pub(super) fn reap_all_if_due() {
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
pub(super) fn thread_cache() -> *mut ThreadCache {
    thread_slot::get()
}

/// The calling thread's [`Attach`] state.
#[inline(always)]
pub(super) fn attach_state() -> &'static Cell<Attach> {
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

/// The thread's [`ThreadCache::refill`], or the slab layer if the thread holds no magazines.
#[cold]
#[inline(never)]
pub(super) fn alloc_refill(class: usize, size: usize) -> *mut u8 {
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

/// The thread's [`ThreadCache::free`] (a fold or a magazine exchange), or straight back to the
/// block's slab if the thread holds no magazines.
#[cold]
#[inline(never)]
pub(super) fn free_slow(class: usize, block: *mut u8, size: usize) {
    if !attached() {
        // SAFETY: the caller frees a live block of this cache.
        return unsafe { free_shared(class, block, size) };
    }
    // SAFETY: a reference that ends here (see `thread_cache`).
    unsafe { &mut *thread_cache() }.free(class, block, size);
}

/// Allocation while the thread holds no magazines: straight from the slab layer.
#[cold]
pub(super) fn alloc_shared(class: usize, size: usize) -> *mut u8 {
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
pub(super) unsafe fn free_shared(class: usize, block: *mut u8, size: usize) {
    // SAFETY: class < NUM_CLASSES; the caller's contract covers the block.
    unsafe { CACHES.get_unchecked(class).0.lock().free_object(block) };
    COUNTERS.record_free(size);
}

/// Counts a resize in place in the calling thread's counters (or the shared ones).
pub(super) fn count_resize(old: usize, new: usize) {
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
