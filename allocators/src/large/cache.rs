//! The cache of freed mappings.
//!
//! A program that frees and allocates blocks of many MiB again and again (issue 21: 5-25 MiB
//! blocks, each filled with `memset`) paid, with an `mmap` and `munmap` per block, a page fault
//! for every page of every block, where glibc (whose mmap threshold adapts) writes into pages
//! already resident. So a freed mapping is kept, pages resident, in a small process-wide cache
//! ([`CACHE_SLOTS`] mappings and [`CACHE_MAX_BYTES`] at most), still counted as mapped in the
//! stats of the allocator that freed it; a request whose mapping fits one (best fit, at most
//! twice the length needed) takes it and has any excess beyond a quarter of its length
//! unmapped. A cached mapping unused for [`CACHE_DECAY_MS`] is unmapped by the next large
//! operation (alloc or free) of any thread, or by [`trim_cache`]; when the cache is full the
//! oldest mapping makes room. While cached, a mapping's windows stay [`Owner::Large`] and its
//! header reads as dead (magic cleared), so a double free or a `usable_size` of it reads as
//! "not a live block"; in hardened builds its guard page is lifted while cached and set again
//! at the reused block's end. A reused mapping is dirty: [`alloc`](super::alloc) zeroes it when
//! asked to. The cache's lock is taken by its fork hooks across `fork()` (slot
//! `Slot::Large`), and never held across a system call.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use super::resize::relocate;
use crate::fork::{self, Slot};
use crate::hardened;
use crate::os;
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::GlobalCounters;
use crate::sync::Lock;

/// Mappings kept at most in the cache. Eight: the issue-21 program keeps 20 blocks live and
/// replaces one at a time, so a handful of recently freed lengths covers most requests.
pub const CACHE_SLOTS: usize = 8;
/// Resident bytes (usable bytes plus the header page) the cache keeps at most, over all its
/// mappings; a block larger than this is unmapped at once. 128 MiB: room for several blocks of
/// tens of MiB, a bound on what an idle program holds for up to [`CACHE_DECAY_MS`].
pub const CACHE_MAX_BYTES: usize = 128 << 20;
/// Milliseconds a mapping stays cached unused before a later large operation unmaps it: about
/// one second, so that an idle program gives the memory back (`CLOCK_MONOTONIC_COARSE`, a few
/// milliseconds of resolution, is plenty).
pub const CACHE_DECAY_MS: u64 = 1000;

/// One cached mapping (a free slot has `block == 0`).
#[derive(Clone, Copy)]
pub(super) struct Cached {
    /// The start of the mapping (REGION_SIZE-aligned); 0 for a free slot.
    pub(super) block: usize,
    /// Its length (a multiple of REGION_SIZE).
    pub(super) map_len: usize,
    /// The bytes counted as mapped for it in `counters` (its last block's usable bytes plus the
    /// header page).
    resident: usize,
    /// The counters of the allocator that freed it, which count `resident` while it is cached.
    counters: *const GlobalCounters,
    /// `os::coarse_millis()` when it was freed.
    freed_at: u64,
}

const EMPTY: Cached = Cached {
    block: 0,
    map_len: 0,
    resident: 0,
    counters: ptr::null(),
    freed_at: 0,
};

/// Invariants: every entry with a non-zero `block` is a whole mapping of this module, windows
/// claimed as Large, header dead, guard lifted, used by nobody, its `resident` bytes counted in
/// `*counters` (a `'static`); `bytes` is the sum of their `resident`, at most
/// [`CACHE_MAX_BYTES`].
struct Cache {
    entries: [Cached; CACHE_SLOTS],
    bytes: usize,
}

// SAFETY: the entries name mappings owned by the cache and 'static counters, reached only under
// its lock.
unsafe impl Send for Cache {}

static CACHE: Lock<Cache> = Lock::new(Cache {
    entries: [EMPTY; CACHE_SLOTS],
    bytes: 0,
});

/// A copy of the cache's `bytes`, readable without its lock (see [`expire_cache`]).
static CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);
/// When [`expire_cache`] may look at the cache next (`os::coarse_millis`).
static NEXT_EXPIRE_MS: AtomicU64 = AtomicU64::new(0);
/// Milliseconds between two looks of [`expire_cache`].
const EXPIRE_EVERY_MS: u64 = 100;

impl Cache {
    /// Removes entry `i`, uncounting its bytes from its allocator's counters, and returns it.
    fn remove(&mut self, i: usize) -> Cached {
        let e = core::mem::replace(&mut self.entries[i], EMPTY);
        self.bytes -= e.resident;
        CACHED_BYTES.store(self.bytes, Ordering::Relaxed);
        // SAFETY: a cached entry's counters are 'static (invariant of Cache).
        unsafe { (*e.counters).sub_mapped(e.resident) };
        e
    }

    /// Moves the entries older than [`CACHE_DECAY_MS`] into `dead`.
    fn expire(&mut self, now: u64, dead: &mut Dead) {
        for i in 0..CACHE_SLOTS {
            let e = self.entries[i];
            if e.block != 0 && now.wrapping_sub(e.freed_at) > CACHE_DECAY_MS {
                dead.push(self.remove(i));
            }
        }
    }
}

/// Mappings removed from the cache under its lock, unmapped after it is released.
struct Dead {
    list: [Cached; CACHE_SLOTS],
    len: usize,
}

impl Dead {
    const fn new() -> Self {
        Dead {
            list: [EMPTY; CACHE_SLOTS],
            len: 0,
        }
    }

    fn push(&mut self, e: Cached) {
        // At most CACHE_SLOTS entries ever leave the cache under one hold of its lock.
        if self.len < CACHE_SLOTS {
            self.list[self.len] = e;
            self.len += 1;
        }
    }

    /// Unmaps every mapping collected (their bytes were uncounted on removal).
    fn unmap_all(&self) {
        for e in &self.list[..self.len] {
            region_map::release(e.block, e.map_len);
            // SAFETY: removed from the cache, so ours alone and unused; windows released first.
            unsafe { os::unmap(e.block as *mut u8, e.map_len) };
        }
    }
}

/// A cached mapping of at least `need` bytes whose block for `align` stays aligned: the best fit
/// (trimmed to at most a quarter more than `need`), else the longest shorter one grown to `need`
/// (see [`grow`]); `None` if the cache is empty or growing fails. Stale entries are unmapped on
/// the way. The mapping's old bytes are no longer counted anywhere.
pub(super) fn take_cached(need: usize, align: usize) -> Option<Cached> {
    let mut dead = Dead::new();
    let taken = {
        let mut cache = CACHE.lock();
        if cache.bytes == 0 {
            return None;
        }
        cache.expire(os::coarse_millis(), &mut dead);
        // Best fit among the mappings long enough (and not more than twice too long); failing
        // that, the longest shorter one, to be grown (its resident pages kept).
        let mut best: Option<usize> = None;
        let mut shorter: Option<usize> = None;
        for (i, e) in cache.entries.iter().enumerate() {
            if e.block == 0 {
                continue;
            }
            let fits = e.map_len >= need
                && e.map_len - need <= need.max(REGION_SIZE)
                && (align < REGION_SIZE || (e.block + REGION_SIZE).is_multiple_of(align));
            if fits && best.is_none_or(|b| e.map_len < cache.entries[b].map_len) {
                best = Some(i);
            }
            if e.map_len < need
                && align < REGION_SIZE
                && shorter.is_none_or(|s| e.map_len > cache.entries[s].map_len)
            {
                shorter = Some(i);
            }
        }
        best.or(shorter).map(|i| cache.remove(i))
    };
    dead.unmap_all();
    let mut e = taken?;
    if e.map_len < need {
        return grow(e, need);
    }
    let keep = os::align_up(need + need / 4, REGION_SIZE).unwrap_or(need);
    if e.map_len > keep {
        region_map::release(e.block + keep, e.map_len - keep);
        // SAFETY: the tail windows of a mapping taken out of the cache: ours, unused, released.
        unsafe { os::unmap((e.block + keep) as *mut u8, e.map_len - keep) };
        e.map_len = keep;
    }
    Some(e)
}

/// Grows the mapping `e` taken out of the cache to `need` bytes, keeping its resident pages: in
/// place if the address space after it is free, else moved (page tables only) with `mremap` to
/// a fresh placeholder. `None` if the kernel refuses, with the old mapping unmapped.
fn grow(e: Cached, need: usize) -> Option<Cached> {
    let grown = |block| Cached {
        block,
        map_len: need,
        ..e
    };
    // SAFETY: e.block..e.block + e.map_len is a whole mapping of ours that nobody uses.
    if unsafe { os::remap_in_place(e.block as *mut u8, e.map_len, need) } {
        if region_map::claim(e.block + e.map_len, need - e.map_len, Owner::Large) {
            return Some(grown(e.block));
        }
        // SAFETY: shrinking back to the original length, which is still ours.
        unsafe { os::remap_in_place(e.block as *mut u8, need, e.map_len) };
    } else {
        let place = region_map::map_claimed(need, Owner::Large) as usize;
        if place != 0 {
            // SAFETY: both ranges are whole mappings of ours that nobody uses.
            let moved = unsafe {
                relocate(e.block, e.map_len, place, || {
                    os::remap_to(e.block as *mut u8, e.map_len, place as *mut u8, need)
                })
            };
            if moved {
                return Some(grown(place));
            }
            region_map::release(place, need);
            // SAFETY: the placeholder was never published.
            unsafe { os::unmap(place as *mut u8, need) };
        }
    }
    region_map::release(e.block, e.map_len);
    // SAFETY: the mapping is ours and unused; its windows are released.
    unsafe { os::unmap(e.block as *mut u8, e.map_len) };
    None
}

/// Keeps the dead mapping `base..base + map_len` (guard lifted, header dead) in the cache, its
/// `resident` bytes still counted in `counters`; if it does not fit, unmaps it and uncounts them.
///
/// # Safety
/// The mapping must be a whole mapping of this module, windows claimed as Large, used by nobody.
pub(super) unsafe fn put_cached(
    base: usize,
    map_len: usize,
    resident: usize,
    counters: &'static GlobalCounters,
) {
    let mut dead = Dead::new();
    // Hardened builds keep nothing: an unmapped block faults on a use after free, a cached one
    // would take the write silently.
    let kept = !hardened::ENABLED && resident <= CACHE_MAX_BYTES && {
        let now = os::coarse_millis();
        let mut cache = CACHE.lock();
        cache.expire(now, &mut dead);
        // Make room: evict the oldest until the bytes fit and a slot is free.
        loop {
            let free_slot = cache.entries.iter().any(|e| e.block == 0);
            if free_slot && cache.bytes + resident <= CACHE_MAX_BYTES {
                break;
            }
            let mut oldest: Option<usize> = None;
            for (i, e) in cache.entries.iter().enumerate() {
                if e.block != 0
                    && oldest.is_none_or(|o| {
                        now.wrapping_sub(e.freed_at) > now.wrapping_sub(cache.entries[o].freed_at)
                    })
                {
                    oldest = Some(i);
                }
            }
            match oldest {
                Some(i) => {
                    let e = cache.remove(i);
                    dead.push(e);
                }
                None => break,
            }
        }
        match cache.entries.iter().position(|e| e.block == 0) {
            Some(slot) if cache.bytes + resident <= CACHE_MAX_BYTES => {
                cache.entries[slot] = Cached {
                    block: base,
                    map_len,
                    resident,
                    counters,
                    freed_at: now,
                };
                cache.bytes += resident;
                CACHED_BYTES.store(cache.bytes, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    };
    dead.unmap_all();
    if !kept {
        counters.sub_mapped(resident);
        region_map::release(base, map_len);
        // SAFETY: the caller's contract: a whole dead mapping of ours; windows released first.
        unsafe { os::unmap(base as *mut u8, map_len) };
    }
}

/// Unmaps the cached mappings older than [`CACHE_DECAY_MS`]; nothing (one relaxed load) when the
/// cache is empty. The allocators call it from their own slow paths too (page decay, reaping),
/// so a program that stops making large requests still gets that memory back.
pub fn expire_cache() {
    if CACHED_BYTES.load(Ordering::Relaxed) == 0 {
        return;
    }
    // At most ten tries a second: the allocators call this on frequent slow paths, and the
    // cache's lock is shared by every thread.
    let now = os::coarse_millis();
    let next = NEXT_EXPIRE_MS.load(Ordering::Relaxed);
    if now < next
        || NEXT_EXPIRE_MS
            .compare_exchange(
                next,
                now + EXPIRE_EVERY_MS,
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    {
        return;
    }
    let Some(mut cache) = CACHE.try_lock() else {
        return; // someone else is using it (and expires it on the way)
    };
    let mut dead = Dead::new();
    cache.expire(os::coarse_millis(), &mut dead);
    drop(cache);
    dead.unmap_all();
}

/// Unmaps every cached mapping now (instead of after [`CACHE_DECAY_MS`]): for a program that
/// wants its memory back at once, and for tests that count mapped bytes.
pub fn trim_cache() {
    let mut dead = Dead::new();
    {
        let mut cache = CACHE.lock();
        for i in 0..CACHE_SLOTS {
            if cache.entries[i].block != 0 {
                dead.push(cache.remove(i));
            }
        }
    }
    dead.unmap_all();
}

static ATFORK: AtomicBool = AtomicBool::new(false);

/// Registers the cache's fork hooks (once; one load when done). Call holding no lock.
#[inline]
pub(super) fn register_fork_hooks() {
    fork::register(&ATFORK, Slot::Large, atfork_prepare, atfork_release);
}

/// Fork prepare hook: takes the cache's lock so no other thread holds it across
/// `fork()`.
///
/// # Safety
/// Called by libc before `fork()`, paired with [`atfork_release`].
unsafe extern "C" fn atfork_prepare() {
    CACHE.force_lock();
}

/// Fork release hook (parent and child): releases the lock taken by [`atfork_prepare`].
///
/// # Safety
/// Called by libc after `fork()`, in the thread that ran [`atfork_prepare`].
unsafe extern "C" fn atfork_release() {
    // SAFETY: atfork_prepare took the lock in this thread, with no guard.
    unsafe { CACHE.force_unlock() };
}
