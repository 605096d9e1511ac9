//! One object cache (Bonwick 1994/2001): the slab layer (partial, full and empty slabs of one
//! object size, each with its free list inside the slab) and the depot of full and empty
//! magazines above it. A cache is always used under its lock (see `CACHES` in `mod.rs`).
//!
//! Memory policy (Bonwick's working-set reaping, paced like mimalloc's delayed purge):
//! - the depot keeps at most a per-cache limit of full magazines (about
//!   [`super::classes::DEPOT_BYTES`] of objects, see `classes::depot_limit`) and as many empty
//!   ones; beyond that, full magazines are emptied into their slabs and empty ones freed;
//! - a cache keeps empty slabs (ready for reuse, pages resident) up to [`EMPTY_MAX_BYTES`];
//!   beyond that they go back to the page layer at once, which returns their pages to the kernel;
//! - every reap interval ([`super::depot::REAP_INTERVAL_MS`], driven from the slow paths by
//!   `reap_all` in `mod.rs`), [`Cache::reap`] releases the magazines and the empty slabs (beyond
//!   [`EMPTY_RESERVE`]) that went unused through the whole last interval;
//! - while a cache only receives frees (no thread took objects from it for a reap interval: a
//!   mass free, often of blocks whose threads are gone), its depot keeps [`FREE_ONLY_KEEP`] full
//!   magazines and [`EMPTY_RESERVE`] empty slabs, and the rest goes back as the frees arrive;
//! - when a thread exits, the caches it used are trimmed to [`DEPOT_KEEP_AFTER_EXIT`] magazines
//!   of each kind and [`EMPTY_RESERVE`] empty slabs (fewer threads need less cached memory).
//!
//! A burst of frees therefore stays cached while the program keeps reusing it (a phase-based
//! program re-faulting every page each phase would be several times slower) and drains back to
//! the kernel within two intervals once it does not.

use core::ptr;

use super::depot::{Depot, REAP_INTERVAL_MS};
use super::hardening;
use super::magazine::{self, Magazine};
use super::region::{self, FreeObject, SlabDesc, SlabList};
use crate::os;

/// Magazines of each kind a depot keeps after a thread using it exits.
pub const DEPOT_KEEP_AFTER_EXIT: u32 = 2;
/// Empty slabs a cache keeps however long they go unused.
pub const EMPTY_RESERVE: u32 = 2;
/// Full magazines a depot keeps while its cache only receives frees ([`Cache::free_only`]).
pub const FREE_ONLY_KEEP: u32 = 2;
/// Bytes of empty slabs a cache keeps at most; more go back to the kernel at once.
pub const EMPTY_MAX_BYTES: usize = 64 << 20;

/// The state of one object cache. Invariants: every slab on `partial` has objects out and free
/// ones, every slab on `full` has all its objects out, every slab on `empty` none; `empty_slabs`,
/// counts that list.
pub struct Cache {
    partial: *mut SlabDesc,
    full: *mut SlabDesc,
    empty: *mut SlabDesc,
    empty_slabs: u32,
    /// The fewest empty slabs held since the last reap (`<= empty_slabs`).
    empty_low: u32,
    /// The magazines no thread holds.
    pub depot: Depot,
    /// When a thread last took objects from this cache's depot or slabs (a full magazine, or
    /// objects for one), in milliseconds of `os::coarse_millis`; see [`Cache::free_only`].
    last_taken_ms: u64,
}

// SAFETY: the raw pointers name slabs and magazines owned by this cache; the cache is only
// reached under its lock.
unsafe impl Send for Cache {}

impl Cache {
    /// A cache with no slabs and an empty depot.
    pub const fn new() -> Self {
        Cache {
            partial: ptr::null_mut(),
            full: ptr::null_mut(),
            empty: ptr::null_mut(),
            empty_slabs: 0,
            empty_low: 0,
            depot: Depot::new(),
            last_taken_ms: 0,
        }
    }

    fn head(&mut self, list: SlabList) -> &mut *mut SlabDesc {
        match list {
            SlabList::Full => &mut self.full,
            SlabList::Empty => &mut self.empty,
            _ => &mut self.partial,
        }
    }

    /// # Safety
    /// `slab` must belong to this cache and be on no list.
    unsafe fn push(&mut self, slab: *mut SlabDesc, list: SlabList) {
        let head = self.head(list);
        // SAFETY: slabs of this cache, guarded by the cache lock.
        unsafe {
            (*slab).list = list;
            (*slab).prev = ptr::null_mut();
            (*slab).next = *head;
            if !(*head).is_null() {
                (**head).prev = slab;
            }
        }
        *head = slab;
        if list == SlabList::Empty {
            self.empty_slabs += 1;
        }
    }

    /// # Safety
    /// `slab` must be on one of this cache's lists.
    unsafe fn unlink(&mut self, slab: *mut SlabDesc) {
        // SAFETY: slabs of this cache, guarded by the cache lock.
        unsafe {
            let list = (*slab).list;
            let (prev, next) = ((*slab).prev, (*slab).next);
            if prev.is_null() {
                *self.head(list) = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            if list == SlabList::Empty {
                self.empty_slabs -= 1;
                self.empty_low = self.empty_low.min(self.empty_slabs);
            }
            (*slab).list = SlabList::None;
        }
    }

    /// Takes up to `out.len()` objects from the slabs (partial ones first, then empty ones, then
    /// new slabs of `units` units from the page layer) into `out`; returns how many. Fewer than
    /// asked only when the kernel refuses memory. `index`, `size` and `units` must be this
    /// cache's.
    pub fn alloc_objects(
        &mut self,
        index: u8,
        size: usize,
        units: usize,
        out: &mut [*mut u8],
    ) -> usize {
        self.last_taken_ms = os::coarse_millis();
        let mut got = 0;
        while got < out.len() {
            let mut slab = self.partial;
            if slab.is_null() {
                slab = self.empty;
                if slab.is_null() {
                    slab = region::take_slab(index, size, units);
                    if slab.is_null() {
                        break;
                    }
                } else {
                    // SAFETY: the head of our empty list.
                    unsafe { self.unlink(slab) };
                }
                // SAFETY: a slab of ours on no list.
                unsafe { self.push(slab, SlabList::Partial) };
            }
            // SAFETY: `slab` is on our partial list, so it has a free or never-used object; the
            // descriptor invariants say which addresses those are.
            unsafe {
                let s = &mut *slab;
                while got < out.len() {
                    let obj = if !s.free.is_null() {
                        let o = s.free;
                        s.free = hardening::decode_free_link((*o).next, o, s);
                        o.cast::<u8>()
                    } else if s.carve < s.carve_end {
                        let o = s.carve;
                        s.carve += size;
                        o as *mut u8
                    } else {
                        break;
                    };
                    hardening::on_leave_slab(obj, size);
                    // `got < out.len()` was checked by the loop condition.
                    *out.get_unchecked_mut(got) = obj;
                    got += 1;
                    s.in_use += 1;
                }
                if s.free.is_null() && s.carve >= s.carve_end {
                    self.unlink(slab);
                    self.push(slab, SlabList::Full);
                }
            }
        }
        got
    }

    /// Gives one object back to its slab; a slab that becomes empty joins the empty list, or goes
    /// back to the page layer if the cache already holds [`EMPTY_MAX_BYTES`] of empty slabs.
    ///
    /// # Safety
    /// `obj` must be an object of this cache that is out of its slab and no longer used.
    pub unsafe fn free_object(&mut self, obj: *mut u8) {
        // SAFETY: obj lies in one of our slabs, so its region is a live Slab region.
        unsafe {
            let slab = region::slab_of(obj as usize);
            let s = &mut *slab;
            debug_assert!(s.list != SlabList::None && s.in_use > 0);
            debug_assert_eq!((obj as usize - s.base) % s.size as usize, 0);
            hardening::on_enter_slab(obj, s.size as usize);
            let o = obj.cast::<FreeObject>();
            (*o).next = hardening::encode_free_link(s.free, o);
            s.free = o;
            s.in_use -= 1;
            if s.in_use == 0 {
                self.unlink(slab);
                let slab_bytes = s.units as usize * region::UNIT_SIZE;
                if (self.empty_slabs as usize + 1) * slab_bytes > EMPTY_MAX_BYTES {
                    region::return_slab(slab);
                } else {
                    self.push(slab, SlabList::Empty);
                }
            } else if s.list == SlabList::Full {
                self.unlink(slab);
                self.push(slab, SlabList::Partial);
            }
        }
    }

    /// Gives every round of `mag` back to the slabs; `mag` is empty afterwards.
    ///
    /// # Safety
    /// `mag` must be a live magazine whose rounds are objects of this cache, out and unused.
    pub unsafe fn flush_magazine(&mut self, mag: *mut Magazine) {
        // SAFETY: the caller's contract; count <= the magazine's capacity by its invariant.
        unsafe {
            let n = (*mag).count as usize;
            for i in 0..n {
                self.free_object(*magazine::round(mag, i));
            }
            (*mag).count = 0;
        }
    }

    /// Puts a magazine with rounds (its `count` set) among the depot's full ones, then trims the depot to `limit`
    /// magazines of each kind ([`Cache::trim`]).
    ///
    /// # Safety
    /// `mag` must be a live magazine of this cache with `count > 0` rounds, that nobody else
    /// holds.
    pub unsafe fn push_full(&mut self, mag: *mut Magazine, limit: u32, spill: &mut *mut Magazine) {
        // SAFETY: forwarded contract.
        unsafe { self.depot.push_full(mag) };
        if self.free_only() {
            self.trim(FREE_ONLY_KEEP, limit, spill);
            self.release_empty_slabs(EMPTY_RESERVE);
        } else {
            self.trim(limit, limit, spill);
        }
    }

    /// Takes a full magazine from the depot, if there is one.
    pub fn pop_full(&mut self) -> *mut Magazine {
        self.last_taken_ms = os::coarse_millis();
        self.depot.pop_full()
    }

    /// Whether no thread has taken objects from this cache for a whole reap interval while
    /// frees keep arriving: a mass free, say of blocks whose threads are gone. Nothing in the
    /// depot or the empty slabs is then being reused, so they are given back as the frees
    /// arrive (the reaper, which runs on later slow paths, would wait for a thread that may
    /// never call the allocator again).
    fn free_only(&self) -> bool {
        os::coarse_millis().wrapping_sub(self.last_taken_ms) >= REAP_INTERVAL_MS
    }

    /// Puts an empty magazine in the depot, or onto `spill` if the depot holds `limit` empty
    /// ones already.
    ///
    /// # Safety
    /// `mag` must be a live magazine that nobody else holds, with no rounds.
    pub unsafe fn push_empty(&mut self, mag: *mut Magazine, limit: u32, spill: &mut *mut Magazine) {
        // SAFETY: forwarded contract; a spilled magazine is the caller's to free.
        unsafe {
            if self.depot.empty_count() >= limit {
                (*mag).next = *spill;
                *spill = mag;
            } else {
                self.depot.push_empty(mag);
            }
        }
    }

    /// Empties full magazines beyond `full_limit` into the slabs (whose empty slabs may then go
    /// back to the kernel) and moves empty magazines beyond `empty_limit` onto `spill`, a chain
    /// the caller frees once the lock is released.
    pub fn trim(&mut self, full_limit: u32, empty_limit: u32, spill: &mut *mut Magazine) {
        while self.depot.full_count() > full_limit {
            let m = self.depot.pop_full();
            // SAFETY: a depot magazine holds rounds of this cache; once flushed it is empty.
            unsafe {
                self.flush_magazine(m);
                self.push_empty(m, empty_limit, spill);
            }
        }
        while self.depot.empty_count() > empty_limit {
            let m = self.depot.pop_empty();
            // SAFETY: a depot magazine, now ours alone.
            unsafe { (*m).next = *spill };
            *spill = m;
        }
    }

    /// Bonwick's working-set reap, run once per reap interval: releases the depot magazines and
    /// the empty slabs (beyond [`EMPTY_RESERVE`]) that stayed unused through the whole last
    /// interval. `limit` is the cache's depot limit.
    pub fn reap(&mut self, limit: u32, spill: &mut *mut Magazine) {
        let (full_unused, empty_unused) = self.depot.take_unused();
        if full_unused > 0 || empty_unused > 0 {
            let full_keep = self.depot.full_count() - full_unused;
            let empty_keep = (self.depot.empty_count() - empty_unused).min(limit);
            self.trim(full_keep, empty_keep, spill);
            self.depot.reset_lows();
        }
        let unused_slabs = self
            .empty_low
            .min(self.empty_slabs.saturating_sub(EMPTY_RESERVE));
        self.release_empty_slabs(self.empty_slabs - unused_slabs);
        self.empty_low = self.empty_slabs;
    }

    /// Gives empty slabs beyond `keep` back to the page layer (and their pages to the kernel).
    pub fn release_empty_slabs(&mut self, keep: u32) {
        while self.empty_slabs > keep {
            let slab = self.empty;
            // SAFETY: the head of our empty list: a slab of ours with no object out.
            unsafe {
                self.unlink(slab);
                region::return_slab(slab);
            }
        }
    }

    /// Counts (partial, full, empty) slabs and (full, empty) depot magazines, checking the list
    /// invariants on the way (for tests).
    #[cfg(test)]
    pub fn check(&self) -> [usize; 5] {
        let mut counts = [0usize; 5];
        for (i, (head, list)) in [
            (self.partial, SlabList::Partial),
            (self.full, SlabList::Full),
            (self.empty, SlabList::Empty),
        ]
        .into_iter()
        .enumerate()
        {
            let mut s = head;
            while !s.is_null() {
                // SAFETY: list members are live descriptors (checked under the cache lock).
                unsafe {
                    assert_eq!((*s).list, list);
                    let cap = ((*s).carve_end - (*s).base) / (*s).size as usize;
                    match list {
                        SlabList::Empty => assert_eq!((*s).in_use, 0),
                        SlabList::Full => assert_eq!((*s).in_use as usize, cap),
                        _ => assert!((*s).in_use > 0 && ((*s).in_use as usize) < cap),
                    }
                    s = (*s).next;
                }
                counts[i] += 1;
            }
        }
        assert_eq!(counts[2], self.empty_slabs as usize);
        counts[3] = self.depot.full_count() as usize;
        counts[4] = self.depot.empty_count() as usize;
        counts
    }
}
