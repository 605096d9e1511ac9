//! The slab allocator: Bonwick's object caches (1994, as in Linux SLUB) with per-thread
//! magazines (Bonwick & Adams 2001). This file holds the type, `GlobalAlloc` and the fast paths.
//!
//! - **Thread layer** ([`thread`]): a loaded and a previous magazine per thread and cache; the
//!   fast path is one pop or push on the loaded one ([`alloc_small`], [`free_small`]).
//! - **Depot and slab layer** ([`cache`], [`depot`]): one cache per object size ([`classes`]),
//!   under one lock each: full and empty magazines, then slabs on partial, full and empty lists.
//! - **Page layer** ([`region`]): 4 MiB regions claimed as [`Owner::Slab`], a descriptor per
//!   64 KiB unit at their start, so a pointer finds its slab with one mask and two loads.
//!
//! Requests above 64 KiB (plus the canary when hardened) or aligned above 64 KiB go to
//! [`crate::large`], a few freed ones of up to 1 MiB kept by [`large_cache`]. `dealloc` finds the
//! cache from the `Layout`, exactly as `alloc` chose it. Every lock is taken across `fork()` by
//! the hooks here ([`crate::fork`]). With the `hardened` feature, frees are checked
//! ([`hardening`]).

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
mod thread;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::AtomicBool;

use self::cache::Cache;
use self::classes::{class_for, small_class, NUM_CLASSES};
use self::magazine::MAG_KINDS;
use self::thread::{alloc_refill, count_resize, free_slow, thread_cache};
use crate::fork::{self, Slot};
use crate::hardened;
use crate::large;
use crate::region_map::{self, Owner};
use crate::stats::{GlobalCounters, Stats};
use crate::sync::Lock;
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

/// The fast path of `dealloc` for a small block: one push onto the thread's loaded magazine.
#[inline(always)]
fn free_small(class: usize, block: *mut u8, size: usize) {
    // SAFETY: a reference that ends here (see `thread_cache`).
    if !unsafe { &mut *thread_cache() }.push(class, block, size) {
        free_slow(class, block, size);
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

// No padding: C blocks need none to have their canaries checked (see `UnsizedPad`).
impl hardened::UnsizedPad for Slab {}

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
        // A sampled block is never cached: its free must reach `large`, which tells the profiler.
        // SAFETY: the caller passes a live block of ours; in a Large window it is a large block,
        // which the cache keeps or which is unmapped here.
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
        return large::alloc_layout(layout, zeroed, Owner::Slab, &COUNTERS);
    }
    if zeroed {
        // SAFETY: a cached block handed to us, with at least layout.size() usable bytes.
        unsafe { ptr::write_bytes(p, 0, layout.size()) };
    }
    p
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
