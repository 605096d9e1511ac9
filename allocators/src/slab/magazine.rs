//! Magazines (Bonwick & Adams 2001): a stack of free objects of one cache. Each thread holds a
//! loaded and a previous magazine per cache; full and empty ones are exchanged with the cache's
//! depot. Magazines themselves are objects of a few internal caches, one per magazine capacity
//! ([`MAG_CAPS`]), taken straight from their slab layer, so they never come from the global
//! allocator and their slabs go back to the kernel like any other.
//!
//! A cache's magazines have room for [`super::classes::MAG_BYTES`] of objects, at most
//! [`MAG_MAX`] rounds (Bonwick 2001 §3.6 sizes them so that depot trips stay rare; a fixed small
//! capacity made a thread cycling through a working set of a thousand small objects trade
//! magazines, and the objects in them, with the other threads through the depot on every tenth
//! operation or so). A thread uses only part of that room at first: its magazine size per cache
//! starts at [`super::classes::MAG_START`] rounds and doubles with each depot trip
//! ([`super::classes::grown_rounds`]), so a short-lived thread fills and hands back a few
//! objects per cache instead of a full magazine.

use core::mem::size_of;
use core::ptr;

use super::classes::{magazine_rounds, MAG_MAX, NUM_CLASSES};
use super::CACHES;

/// The capacities magazines come in; a cache uses the smallest that holds its
/// [`magazine_rounds`].
pub const MAG_CAPS: [usize; MAG_KINDS] = [16, 64, 256, MAG_MAX];
/// The number of magazine capacities (and of internal magazine caches).
pub const MAG_KINDS: usize = 4;
/// The index of the first internal cache magazines are carved from (after the user caches);
/// kind `k` uses cache `MAGAZINE_CACHE + k`.
pub const MAGAZINE_CACHE: usize = NUM_CLASSES;

/// Offset of the rounds array from the magazine's start.
const ROUNDS_OFFSET: usize = size_of::<Magazine>();

/// The object size of magazine kind `kind`: the header and `MAG_CAPS[kind]` rounds, in whole
/// cache lines so that two threads' magazines (side by side in one slab) never share a line.
pub const fn magazine_bytes(kind: usize) -> usize {
    (ROUNDS_OFFSET + MAG_CAPS[kind] * size_of::<*mut u8>()).next_multiple_of(64)
}

/// The magazine kind of user cache `class`.
#[inline]
pub const fn magazine_kind(class: usize) -> usize {
    let need = magazine_rounds(class) as usize;
    let mut k = 0;
    while k < MAG_KINDS - 1 && MAG_CAPS[k] < need {
        k += 1;
    }
    k
}

/// A stack of free objects of one cache, followed in memory by its rounds (as many as its kind's
/// capacity, at least the cache's [`magazine_rounds`]). While a thread holds the magazine, the
/// thread's cache counts its rounds (as Bonwick's per-CPU `cc_rounds`), keeping the fast path to
/// one line of thread-local memory; `count` is meaningful only while the magazine sits in a depot
/// (full: `1..=magazine_rounds(class)`; empty: 0) or is being flushed. Invariant: the first
/// `count` rounds (or the thread's count) are free objects of that cache, out of their slabs.
#[repr(C)]
pub struct Magazine {
    /// Rounds held (see above).
    pub count: u32,
    /// The next magazine on a depot list.
    pub next: *mut Magazine,
}

const _: () = assert!(ROUNDS_OFFSET.is_multiple_of(size_of::<*mut u8>()));

/// The address of round `i` of `mag`.
///
/// # Safety
/// `mag` must be a live magazine and `i` below its kind's capacity.
#[inline(always)]
pub unsafe fn round(mag: *mut Magazine, i: usize) -> *mut *mut u8 {
    // SAFETY: the rounds follow the header inside the magazine's object (caller's contract).
    unsafe { mag.cast::<u8>().add(ROUNDS_OFFSET).cast::<*mut u8>().add(i) }
}

/// The rounds `0..n` of `mag` as a slice.
///
/// # Safety
/// As for [`round`], with `n` at most the capacity; no other reference to the rounds may live.
pub unsafe fn rounds_mut<'a>(mag: *mut Magazine, n: usize) -> &'a mut [*mut u8] {
    // SAFETY: forwarded contract; the rounds are pointer-aligned (ROUNDS_OFFSET checked above).
    unsafe { core::slice::from_raw_parts_mut(round(mag, 0), n) }
}

/// A new empty magazine for user cache `class`; null if the kernel refuses memory.
pub fn new_magazine(class: usize) -> *mut Magazine {
    let kind = magazine_kind(class);
    let index = MAGAZINE_CACHE + kind;
    let mut out = [ptr::null_mut::<u8>(); 1];
    let got = {
        // SAFETY: index < MAGAZINE_CACHE + MAG_KINDS == CACHES.len().
        let cache = unsafe { CACHES.get_unchecked(index) };
        cache
            .0
            .lock()
            .alloc_objects(index as u8, magazine_bytes(kind), 1, &mut out)
    };
    if got == 0 {
        return ptr::null_mut();
    }
    let m = out[0].cast::<Magazine>();
    // SAFETY: a fresh object of magazine_bytes(kind) bytes, 8-aligned, ours alone.
    unsafe {
        (*m).count = 0;
        (*m).next = ptr::null_mut();
    }
    m
}

/// Frees every magazine on the chain starting at `m` (linked through `next`), all of user cache
/// `class`.
///
/// # Safety
/// The magazines must be live, empty, of cache `class` and held by nobody else.
pub unsafe fn free_magazines(mut m: *mut Magazine, class: usize) {
    if m.is_null() {
        return;
    }
    let index = MAGAZINE_CACHE + magazine_kind(class);
    // SAFETY: index < CACHES.len().
    let mut cache = unsafe { CACHES.get_unchecked(index) }.0.lock();
    while !m.is_null() {
        // SAFETY: the caller's contract: a dead magazine, an object of that magazine cache.
        unsafe {
            let next = (*m).next;
            cache.free_object(m.cast());
            m = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cache_has_a_magazine_kind_that_fits() {
        for class in 0..NUM_CLASSES {
            assert!(MAG_CAPS[magazine_kind(class)] >= magazine_rounds(class) as usize);
        }
        assert!((0..MAG_KINDS).all(|k| magazine_bytes(k) <= 8192));
    }
}
