//! Magazines (Bonwick & Adams 2001): a small stack of free objects of one cache. Each thread
//! holds a loaded and a previous magazine per cache; full and empty ones are exchanged with the
//! cache's depot. Magazines themselves are objects of an internal cache ([`MAGAZINE_CACHE`]),
//! taken straight from its slab layer, so they never come from the global allocator and their
//! slabs go back to the kernel like any other.

use core::mem::size_of;
use core::ptr;

use super::size_classes::{MAG_MAX, NUM_CLASSES};
use super::CACHES;

/// The index of the internal cache magazines are carved from (after the user caches).
pub const MAGAZINE_CACHE: usize = NUM_CLASSES;
/// The object size of [`MAGAZINE_CACHE`]: whole cache lines, so that two threads' magazines
/// (which sit side by side in one slab) never share a line.
pub const MAGAZINE_SIZE: usize = size_of::<Magazine>().next_multiple_of(64);

/// A stack of free objects of one cache. While a thread holds the magazine, the thread's cache
/// counts its rounds (as Bonwick's per-CPU `cc_rounds`), keeping the fast path to one line of
/// thread-local memory; `count` is meaningful only while the magazine sits in a depot (full:
/// `count == magazine_rounds(class)`; empty: 0) or is being flushed. Invariant: `rounds[..count]`
/// (or the thread's count) are free objects of that cache, out of their slabs.
#[repr(C)]
pub struct Magazine {
    /// Rounds held (see above).
    pub count: u32,
    /// The next magazine on a depot list.
    pub next: *mut Magazine,
    /// The objects; only `..count` are meaningful.
    pub rounds: [*mut u8; MAG_MAX],
}

/// A new empty magazine; null if the kernel refuses memory.
pub fn new_magazine() -> *mut Magazine {
    let mut out = [ptr::null_mut::<u8>(); 1];
    let got = {
        // SAFETY: MAGAZINE_CACHE < CACHES.len().
        let cache = unsafe { CACHES.get_unchecked(MAGAZINE_CACHE) };
        cache
            .0
            .lock()
            .alloc_objects(MAGAZINE_CACHE as u8, MAGAZINE_SIZE, 1, &mut out)
    };
    if got == 0 {
        return ptr::null_mut();
    }
    let m = out[0].cast::<Magazine>();
    // SAFETY: a fresh object of MAGAZINE_SIZE bytes, 8-aligned, ours alone.
    unsafe {
        (*m).count = 0;
        (*m).next = ptr::null_mut();
    }
    m
}

/// Frees every magazine on the chain starting at `m` (linked through `next`).
///
/// # Safety
/// The magazines must be live, empty and held by nobody else.
pub unsafe fn free_magazines(mut m: *mut Magazine) {
    if m.is_null() {
        return;
    }
    // SAFETY: MAGAZINE_CACHE < CACHES.len().
    let mut cache = unsafe { CACHES.get_unchecked(MAGAZINE_CACHE) }.0.lock();
    while !m.is_null() {
        // SAFETY: the caller's contract: a dead magazine, an object of the magazine cache.
        unsafe {
            let next = (*m).next;
            cache.free_object(m.cast());
            m = next;
        }
    }
}
