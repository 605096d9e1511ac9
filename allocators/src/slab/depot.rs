//! A cache's depot (Bonwick & Adams 2001): the full and empty magazines not held by any thread,
//! and the working-set bookkeeping that decides when they are no longer needed.
//!
//! Every magazine exchange of a thread goes through the depot, under the cache's lock. The
//! depot remembers the fewest full (and empty) magazines it held since the last reap: those
//! magazines sat unused for the whole interval, so at the next reap (every [`REAP_INTERVAL_MS`])
//! that many are released ([`super::cache::Cache::reap`]). A burst of frees therefore stays
//! cached while the program keeps reusing it, and drains back to the slabs (and their pages to
//! the kernel) once it does not.

use core::ptr;

use super::hardening;
use super::magazine::Magazine;

/// Milliseconds between two working-set reaps of one depot.
pub const REAP_INTERVAL_MS: u64 = 100;

/// Full and empty magazines. Invariants: `full_count`/`empty_count` count the chains (linked
/// through `Magazine::next`, encoded by `hardening::encode_magazine_link`); "full" magazines hold
/// `1..=magazine_rounds(class)` rounds, their `count` (a thread's magazine ran full at its own
/// magazine size, or an exiting thread handed it back part-filled), empty ones 0;
/// `full_low <= full_count` and `empty_low <= empty_count` are the minima since the last reap.
pub struct Depot {
    full: *mut Magazine,
    full_count: u32,
    empty: *mut Magazine,
    empty_count: u32,
    full_low: u32,
    empty_low: u32,
}

impl Depot {
    /// An empty depot.
    pub const fn new() -> Self {
        Depot {
            full: ptr::null_mut(),
            full_count: 0,
            empty: ptr::null_mut(),
            empty_count: 0,
            full_low: 0,
            empty_low: 0,
        }
    }

    /// Full magazines held.
    pub fn full_count(&self) -> u32 {
        self.full_count
    }

    /// Empty magazines held.
    pub fn empty_count(&self) -> u32 {
        self.empty_count
    }

    /// Takes a full magazine, if there is one.
    pub fn pop_full(&mut self) -> *mut Magazine {
        let m = self.full;
        if !m.is_null() {
            // SAFETY: depot magazines are live and ours (invariant).
            self.full = hardening::decode_magazine_link(unsafe { (*m).next }, m);
            self.full_count -= 1;
            self.full_low = self.full_low.min(self.full_count);
        }
        m
    }

    /// Takes an empty magazine, if there is one.
    pub fn pop_empty(&mut self) -> *mut Magazine {
        let m = self.empty;
        if !m.is_null() {
            // SAFETY: depot magazines are live and ours (invariant).
            self.empty = hardening::decode_magazine_link(unsafe { (*m).next }, m);
            self.empty_count -= 1;
            self.empty_low = self.empty_low.min(self.empty_count);
        }
        m
    }

    /// Adds a magazine with rounds.
    ///
    /// # Safety
    /// `mag` must be a live magazine of this depot's cache holding `count > 0` rounds (set),
    /// held by nobody.
    pub unsafe fn push_full(&mut self, mag: *mut Magazine) {
        // SAFETY: the caller hands the magazine over.
        unsafe { (*mag).next = hardening::encode_magazine_link(self.full, mag) };
        self.full = mag;
        self.full_count += 1;
    }

    /// Adds an empty magazine.
    ///
    /// # Safety
    /// `mag` must be a live magazine held by nobody, with no rounds.
    pub unsafe fn push_empty(&mut self, mag: *mut Magazine) {
        // SAFETY: the caller hands the magazine over.
        unsafe {
            (*mag).count = 0;
            (*mag).next = hardening::encode_magazine_link(self.empty, mag);
        }
        self.empty = mag;
        self.empty_count += 1;
    }

    /// Starts a new reap interval and returns how many (full, empty) magazines went unused
    /// through the last one.
    pub fn take_unused(&mut self) -> (u32, u32) {
        let unused = (self.full_low, self.empty_low);
        self.reset_lows();
        unused
    }

    /// Starts the minima afresh from the current counts.
    pub fn reset_lows(&mut self) {
        self.full_low = self.full_count;
        self.empty_low = self.empty_count;
    }
}
