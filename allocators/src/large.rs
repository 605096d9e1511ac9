//! Blocks too big for an allocator's own structures: mapped directly from the kernel, kept in a
//! small cache for reuse when freed (see below), moved with `mremap` (no copy) on realloc. Shared
//! by all four allocators.
//!
//! Layout of one large block:
//!
//! ```text
//! base (REGION_SIZE-aligned)                  ptr (aligned as asked)
//! | ... unused head ... | header (last page) | block bytes ... | unused tail up to a REGION_SIZE multiple |
//! ```
//!
//! The header sits in the page just before the block, so `usable_size(ptr)` and `dealloc(ptr)`
//! need only the pointer. The mapping covers whole [`REGION_SIZE`] windows, which are claimed in the
//! region map as [`Owner::Large`], so a pointer into them is never mistaken for foreign memory or
//! for another allocator's region. Untouched head and tail pages cost address space, not memory.
//!
//! ## The cache of freed mappings
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
//! at the reused block's end. A reused mapping is dirty: [`alloc`] zeroes it when asked to.
//! The cache's lock is taken by a `pthread_atfork` handler across `fork()`, and never held
//! across a system call.

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::hardened;
use crate::os::{self, page_size};
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::GlobalCounters;
use crate::sync::{self, Lock};

const MAGIC: usize = 0x0001_A26E_B10C_u64 as usize;
/// The magic of a freed block's header while its mapping is cached: not [`MAGIC`], so the block
/// reads as dead, yet recognisable, so that a hardened build can name the allocator that freed it
/// when it is freed again.
const CACHED_MAGIC: usize = 0x0001_DEAD_B10C_u64 as usize;

/// The header in the page before each large block.
#[repr(C)]
struct Header {
    /// [`MAGIC`] while the block is live; [`CACHED_MAGIC`] once freed into the cache.
    magic: usize,
    /// Which allocator handed the block out.
    owner: Owner,
    /// The start of the whole mapping.
    base: usize,
    /// The length of the whole mapping (a multiple of `REGION_SIZE`; a slot's length for a block
    /// in a sampled-block slot).
    map_len: usize,
    /// Bytes usable from the block's start (page-rounded size asked for).
    usable: usize,
    /// A block sampled by the heap profiler ([`crate::profile`]): its free tells the profiler.
    sampled: bool,
    /// `1 +` the index of the sampled-block slot holding the block (see [`alloc_slot`]), or 0
    /// for a block in a mapping of its own.
    slot: u32,
}

/// Bytes between the mapping's start and the block for an alignment of `align`.
fn head_for(align: usize) -> usize {
    let page = page_size();
    if align <= page {
        page
    } else if align < REGION_SIZE {
        align
    } else {
        REGION_SIZE
    }
}

/// [`alloc`] of `layout`'s size and alignment: the large-block path of every allocator's
/// `alloc` and `alloc_zeroed`.
pub fn alloc_layout(
    layout: core::alloc::Layout,
    zeroed: bool,
    owner: Owner,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    alloc(layout.size(), layout.align(), zeroed, owner, counters)
}

/// A block of `size` bytes aligned to `align` for `owner`, counting the pages and the allocation
/// of `size` requested bytes in `counters`: a cached mapping if one fits, else a fresh one.
/// With `zeroed` the block reads as zeros (a fresh mapping is zero already; a reused one is
/// cleared here); without it a reused block holds old bytes. Null if the kernel refuses or the
/// size overflows.
pub fn alloc(
    size: usize,
    align: usize,
    zeroed: bool,
    owner: Owner,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    let page = page_size();
    let head = head_for(align);
    let Some(usable) = os::align_up(size.max(1), page) else {
        return ptr::null_mut();
    };
    let Some(map_len) = usable
        .checked_add(head + GUARD_PAGES * page)
        .and_then(|n| os::align_up(n, REGION_SIZE))
    else {
        return ptr::null_mut();
    };
    if map_len > isize::MAX as usize {
        return ptr::null_mut();
    }
    sync::register_atfork(&ATFORK, atfork_prepare, atfork_release);
    if let Some(e) = take_cached(map_len, align) {
        let block = e.block + head;
        // SAFETY: a mapping taken out of the cache is ours alone, mapped read-write (guard lifted)
        // over base..base + map_len, with its windows claimed as Large.
        unsafe {
            write_header(block, owner, e.block, e.map_len, usable);
            if zeroed {
                ptr::write_bytes(block as *mut u8, 0, usable);
            }
            set_guard(block, usable, true);
        }
        counters.add_mapped(usable + page);
        counters.record_alloc(size);
        return block as *mut u8;
    }
    // The block must be aligned to `align`; the mapping to REGION_SIZE. For align >= REGION_SIZE
    // the block is at base + REGION_SIZE, so the mapping must be aligned to `align` shifted back.
    let base = if align >= REGION_SIZE {
        let Some(over) = map_len.checked_add(align) else {
            return ptr::null_mut();
        };
        let raw = os::map(over);
        if raw.is_null() {
            return raw;
        }
        let raw_addr = raw as usize;
        let block = (raw_addr + head + align - 1) & !(align - 1);
        let base = block - head;
        // SAFETY: the trimmed head and tail lie inside the mapping just made.
        unsafe {
            os::unmap(raw, base - raw_addr);
            os::unmap(
                (base + map_len) as *mut u8,
                raw_addr + over - base - map_len,
            );
        }
        base
    } else {
        let raw = os::map_aligned(map_len, REGION_SIZE);
        if raw.is_null() {
            return raw;
        }
        raw as usize
    };
    if !region_map::claim(base, map_len, Owner::Large) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap(base as *mut u8, map_len) };
        return ptr::null_mut();
    }
    let block = base + head;
    // SAFETY: the header page lies inside the fresh mapping and is ours alone; the guard page
    // after the block lies inside the mapping (GUARD_PAGES counted above).
    unsafe {
        write_header(block, owner, base, map_len, usable);
        set_guard(block, usable, true);
    }
    counters.add_mapped(usable + page);
    counters.record_alloc(size);
    block as *mut u8
}

/// Writes the live header of the block at `block`.
///
/// # Safety
/// The page before `block` must lie in the mapping `base..base + map_len`, which is ours alone.
unsafe fn write_header(block: usize, owner: Owner, base: usize, map_len: usize, usable: usize) {
    let header = (block - page_size()) as *mut Header;
    // SAFETY: the caller's contract; the page is page-aligned, so aligned for a Header.
    unsafe {
        header.write(Header {
            magic: MAGIC,
            owner,
            base,
            map_len,
            usable,
            sampled: false,
            slot: 0,
        });
    }
}

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
struct Cached {
    /// The start of the mapping (REGION_SIZE-aligned); 0 for a free slot.
    block: usize,
    /// Its length (a multiple of REGION_SIZE).
    map_len: usize,
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

static ATFORK: AtomicBool = AtomicBool::new(false);

/// `pthread_atfork` prepare handler: takes the cache's lock so no other thread holds it across
/// `fork()`.
///
/// # Safety
/// Called by libc before `fork()`, paired with [`atfork_release`].
unsafe extern "C" fn atfork_prepare() {
    CACHE.force_lock();
}

/// `pthread_atfork` parent and child handler: releases the lock taken by [`atfork_prepare`].
///
/// # Safety
/// Called by libc after `fork()`, in the thread that ran [`atfork_prepare`].
unsafe extern "C" fn atfork_release() {
    // SAFETY: atfork_prepare took the lock in this thread, with no guard.
    unsafe { CACHE.force_unlock() };
}

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
fn take_cached(need: usize, align: usize) -> Option<Cached> {
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
        let place = os::map_aligned(need, REGION_SIZE) as usize;
        if place != 0 {
            if region_map::claim(place, need, Owner::Large) {
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
            }
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
unsafe fn put_cached(
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

/// Extra pages mapped after each large block: one `PROT_NONE` guard page in hardened builds, so a
/// write past the block's end faults at once.
const GUARD_PAGES: usize = if hardened::ENABLED { 1 } else { 0 };

/// Protects (or unprotects) the guard page after the `usable` bytes of `block` (hardened only).
///
/// # Safety
/// In hardened builds the page after the block must be part of the block's mapping.
unsafe fn set_guard(block: usize, usable: usize, on: bool) {
    if GUARD_PAGES == 0 {
        return;
    }
    let prot = if on {
        libc::PROT_NONE
    } else {
        libc::PROT_READ | libc::PROT_WRITE
    };
    // SAFETY: the caller guarantees the page is ours; mprotect does not move or free it.
    unsafe { libc::mprotect((block + usable) as *mut libc::c_void, page_size(), prot) };
}

/// The header of the large block at `ptr`, if `ptr` is the start of a live large block.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
unsafe fn header_of(ptr: *const u8) -> Option<*mut Header> {
    // SAFETY: forwarded contract.
    unsafe { header_with(ptr, MAGIC) }
}

/// The header before `ptr` if it carries `magic` and names a mapping around `ptr`.
///
/// # Safety
/// As for [`header_of`].
unsafe fn header_with(ptr: *const u8, magic: usize) -> Option<*mut Header> {
    let page = page_size();
    let addr = ptr as usize;
    if !addr.is_multiple_of(page)
        || addr < page
        || region_map::owner_of((addr - page) as *const u8) != Owner::Large
    {
        return None;
    }
    let header = (addr - page) as *mut Header;
    // In hardened builds a Large window also holds each block's guard page (PROT_NONE): a wild
    // pointer just past one would fault here instead of being reported (issue 23 item 7), so
    // the kernel is asked first whether the header can be read.
    if hardened::ENABLED && !os::readable(header as usize, core::mem::size_of::<Header>()) {
        return None;
    }
    // SAFETY: the page before `addr` lies in a Large window, and Large windows are wholly mapped
    // by this module (readable but for hardened guard pages, excluded above); a pointer that is
    // not a block start reads some other mapped page and fails the magic check.
    let h = unsafe { &*header };
    let plausible = h.magic == magic && h.base < addr && addr < h.base + h.map_len;
    plausible.then_some(header)
}

/// The name hardened reports give the allocator that freed the cached block at `ptr`, or
/// `"large"` for a pointer that starts no block that was freed into the cache.
///
/// # Safety
/// As for [`header_of`].
unsafe fn freed_by(ptr: *const u8) -> &'static str {
    // SAFETY: forwarded contract; a header with the cached magic keeps its owner.
    match unsafe { header_with(ptr, CACHED_MAGIC).map(|h| (*h).owner) } {
        Some(Owner::Bump) => "bump",
        Some(Owner::Slab) => "slab",
        Some(Owner::Buddy) => "buddy",
        Some(Owner::SizeClass) => "sizeclass",
        _ => "large",
    }
}

/// Marks (or unmarks) the live large block at `ptr` as sampled by the heap profiler, whose free
/// and resize then tell [`crate::profile`].
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn set_sampled(ptr: *mut u8, on: bool) {
    // SAFETY: forwarded contract; the header of a live block is ours to write.
    unsafe {
        if let Some(h) = header_of(ptr) {
            (*h).sampled = on;
        }
    }
}

/// Whether the large block starting at `ptr` is marked as sampled (`false` if `ptr` starts no
/// live large block).
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub unsafe fn is_sampled(ptr: *const u8) -> bool {
    // SAFETY: forwarded contract; the header is valid while the magic is set.
    unsafe { header_of(ptr).is_some_and(|h| (*h).sampled) }
}

/// The owner of the large block starting at `ptr`, or `None` if `ptr` does not start one.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub unsafe fn owner(ptr: *const u8) -> Option<Owner> {
    // SAFETY: forwarded contract; the header is valid while the magic is set.
    unsafe { header_of(ptr).map(|h| (*h).owner) }
}

/// Bytes usable at `ptr` (the requested size rounded up to whole pages).
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: forwarded contract.
    match unsafe { header_of(ptr) } {
        // SAFETY: a header that passed the magic check is a live header.
        Some(h) => unsafe { (*h).usable },
        None => 0,
    }
}

/// Bytes usable at `ptr` if it starts a live large block handed out by `owner`, else `None`: the
/// `Owner::Large` arm of every allocator's `Introspect::usable_size`.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub unsafe fn usable_size_if_owned(ptr: *const u8, owner: Owner) -> Option<usize> {
    // SAFETY: forwarded contract.
    match unsafe { header_of(ptr) } {
        // SAFETY: a header that passed the magic check is a live header.
        Some(h) if unsafe { (*h).owner } == owner => Some(unsafe { (*h).usable }),
        _ => None,
    }
}

/// Frees the large block at `ptr` if it starts a live block handed out by `owner`, counting the
/// free of its usable bytes in `counters` (the requested size is not known); does nothing
/// otherwise. The `Owner::Large` arm of `Introspect::free_unsized` for the allocators that keep no
/// large blocks of their own.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`]; a live block of
/// `owner` starting there is not used afterwards.
pub unsafe fn free_unsized(ptr: *mut u8, owner: Owner, counters: &'static GlobalCounters) {
    // SAFETY: forwarded contract; `dealloc` gets the start of a live block of ours.
    unsafe {
        if let Some(usable) = usable_size_if_owned(ptr, owner) {
            dealloc(ptr, usable, counters);
        }
    }
}

/// [`realloc`], counting the move in `counters` as a free of `old_size` requested bytes and an
/// allocation of `new_size` when it succeeds.
///
/// # Safety
/// As for [`realloc`].
pub unsafe fn realloc_counted(
    ptr: *mut u8,
    old_size: usize,
    new_size: usize,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    let q = unsafe { realloc(ptr, new_size, counters) };
    if !q.is_null() {
        counters.record_free(old_size);
        counters.record_alloc(new_size);
    }
    q
}

/// Frees the large block at `ptr` (into the cache, or unmapped), counting the free of `size`
/// requested bytes in `counters`.
///
/// # Safety
/// `ptr` must be the start of a live large block, not used afterwards.
pub unsafe fn dealloc(ptr: *mut u8, size: usize, counters: &'static GlobalCounters) {
    // SAFETY: forwarded contract.
    if unsafe { unmap_block(ptr, counters) } {
        counters.record_free(size);
    }
}

/// Frees the large block at `ptr` without counting a free of requested bytes (its pages stay
/// counted in `counters` while the mapping is cached, and go from them when it is unmapped or
/// reused): for a caller that kept the block in a cache of its own after counting its free.
/// Returns whether `ptr` started a live block (hardened builds abort if not).
///
/// # Safety
/// `ptr` must be the start of a live large block, not used afterwards.
pub unsafe fn unmap_block(ptr: *mut u8, counters: &'static GlobalCounters) -> bool {
    // SAFETY: forwarded contract.
    let Some(header) = (unsafe { header_of(ptr) }) else {
        if hardened::ENABLED {
            // A block freed twice (its mapping cached) is reported in the name of the allocator
            // that freed it, as it was when the mapping was unmapped at once (then its address
            // was foreign, which each allocator reports itself).
            // SAFETY: forwarded contract.
            let name = unsafe { freed_by(ptr) };
            hardened::misuse(name, hardened::Misuse::InvalidFree, ptr);
        }
        return false;
    };
    // SAFETY: the header is live (magic checked); we read it before caching or unmapping.
    let (base, map_len, usable) = unsafe {
        let h = &mut *header;
        if h.sampled {
            h.sampled = false;
            crate::profile::on_sampled_free(ptr);
        }
        h.magic = CACHED_MAGIC;
        if h.slot != 0 {
            counters.sub_mapped(h.usable + page_size());
            push_slot(h.slot - 1);
            return true;
        }
        (h.base, h.map_len, h.usable)
    };
    // SAFETY: the whole mapping belongs to this block, which the caller says is dead: its guard
    // page (hardened) is lifted for the mapping's next use, and the cache (or the unmap) takes it.
    unsafe {
        set_guard(ptr as usize, usable, false);
        put_cached(base, map_len, usable + page_size(), counters);
    }
    true
}

/// Resizes the large block at `ptr` to `new_size` bytes, keeping its contents and alignment.
/// Grows in place when the address space after it is free, otherwise moves the pages with
/// `mremap` (no byte copy). Returns the block's (possibly new) address, or null with the old block
/// untouched.
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn realloc(ptr: *mut u8, new_size: usize, counters: &'static GlobalCounters) -> *mut u8 {
    let page = page_size();
    // SAFETY: forwarded contract.
    let Some(header) = (unsafe { header_of(ptr) }) else {
        return ptr::null_mut();
    };
    // SAFETY: the header is live. A sampled block stops being one when resized (the profiler
    // forgets the sample; it stays an ordinary large block).
    let (base, map_len, usable) = unsafe {
        if (*header).sampled {
            (*header).sampled = false;
            crate::profile::on_sampled_free(ptr);
        }
        ((*header).base, (*header).map_len, (*header).usable)
    };
    // SAFETY: the header is live; a slot's block is resized in its slot or moved out of it.
    if unsafe { (*header).slot } != 0 {
        // SAFETY: forwarded contract.
        return unsafe { realloc_slot(ptr, header, new_size, counters) };
    }
    let head = ptr as usize - base;
    let Some(new_usable) = os::align_up(new_size.max(1), page) else {
        return ptr::null_mut();
    };
    let Some(new_len) = new_usable
        .checked_add(head + GUARD_PAGES * page)
        .and_then(|n| os::align_up(n, REGION_SIZE))
    else {
        return ptr::null_mut();
    };
    if new_len > isize::MAX as usize {
        return ptr::null_mut();
    }
    // SAFETY: the old guard page (hardened) is inside the mapping; it is re-protected below at the
    // block's final end, whichever way the resize goes.
    unsafe { set_guard(ptr as usize, usable, false) };
    // SAFETY: as above.
    let q = unsafe {
        resize(
            ptr, header, base, map_len, usable, new_usable, new_len, counters,
        )
    };
    let (end_ptr, end_usable) = if q.is_null() {
        (ptr as usize, usable)
    } else {
        (q as usize, new_usable)
    };
    // SAFETY: the page after the block's (new or old) usable end is inside its mapping.
    unsafe { set_guard(end_ptr, end_usable, true) };
    q
}

/// The mechanism of [`realloc`], with sizes computed and the guard page lifted.
///
/// # Safety
/// `header` must be the live header of the block at `ptr`, whose mapping is `base..base + map_len`.
#[allow(clippy::too_many_arguments)]
unsafe fn resize(
    ptr: *mut u8,
    header: *mut Header,
    base: usize,
    map_len: usize,
    usable: usize,
    new_usable: usize,
    new_len: usize,
    counters: &GlobalCounters,
) -> *mut u8 {
    let page = page_size();
    let head = ptr as usize - base;
    if new_len <= map_len {
        // Shrink (or grow within the mapping): give back whole windows past the new end, and the
        // pages between the new and the old usable end.
        if new_len < map_len {
            region_map::release(base + new_len, map_len - new_len);
            // SAFETY: the tail windows hold only bytes past the block's new end.
            unsafe { os::unmap((base + new_len) as *mut u8, map_len - new_len) };
        }
        if new_usable < usable {
            let keep_end = ptr as usize + new_usable;
            let old_end = (ptr as usize + usable).min(base + new_len);
            if old_end > keep_end {
                // SAFETY: pages past the new usable end are dead.
                unsafe { os::discard(keep_end as *mut u8, old_end - keep_end) };
            }
        }
        counters.add_mapped(new_usable);
        counters.sub_mapped(usable);
        // SAFETY: the header is live and ours.
        unsafe {
            (*header).map_len = new_len;
            (*header).usable = new_usable;
        }
        return ptr;
    }
    // Grow in place if the next windows are free address space.
    // SAFETY: base..base + map_len is this block's mapping.
    if unsafe { os::remap_in_place(base as *mut u8, map_len, new_len) } {
        if region_map::claim(base + map_len, new_len - map_len, Owner::Large) {
            counters.add_mapped(new_usable - usable);
            // SAFETY: the header is live and ours.
            unsafe {
                (*header).map_len = new_len;
                (*header).usable = new_usable;
            }
            return ptr;
        }
        // SAFETY: shrinking back to the original size, which is still ours.
        unsafe { os::remap_in_place(base as *mut u8, new_len, map_len) };
        return ptr::null_mut();
    }
    // Move: reserve an aligned placeholder, then move the pages over it.
    let block_align = (ptr as usize) & (!(ptr as usize)).wrapping_add(1); // lowest set bit
    let place = if head >= REGION_SIZE {
        // Keep the block's alignment (it may exceed REGION_SIZE).
        let Some(over) = new_len.checked_add(block_align) else {
            return ptr::null_mut();
        };
        let raw = os::map(over);
        if raw.is_null() {
            return raw;
        }
        let raw_addr = raw as usize;
        let block = (raw_addr + head + block_align - 1) & !(block_align - 1);
        let nb = block - head;
        // SAFETY: trimming parts of the placeholder just mapped.
        unsafe {
            os::unmap(raw, nb - raw_addr);
            os::unmap((nb + new_len) as *mut u8, raw_addr + over - nb - new_len);
        }
        nb
    } else {
        let raw = os::map_aligned(new_len, REGION_SIZE);
        if raw.is_null() {
            return raw;
        }
        raw as usize
    };
    if !region_map::claim(place, new_len, Owner::Large) {
        // SAFETY: the placeholder was never published.
        unsafe { os::unmap(place as *mut u8, new_len) };
        return ptr::null_mut();
    }
    // SAFETY: both ranges are ours; on success the old range is gone and its pages live at `place`.
    let moved = unsafe {
        relocate(base, map_len, place, || {
            os::remap_to(base as *mut u8, map_len, place as *mut u8, new_len)
        })
    };
    if !moved {
        region_map::release(place, new_len);
        // SAFETY: the placeholder was never published.
        unsafe { os::unmap(place as *mut u8, new_len) };
        return ptr::null_mut();
    }
    let new_ptr = place + head;
    let new_header = (new_ptr - page) as *mut Header;
    // SAFETY: the header moved with the pages; it is live and ours.
    unsafe {
        (*new_header).base = place;
        (*new_header).map_len = new_len;
        (*new_header).usable = new_usable;
    }
    counters.add_mapped(new_usable - usable);
    new_ptr as *mut u8
}

/// Resizes the block at `ptr`, held in a sampled-block slot: in the slot if the new size fits,
/// else moved to a mapping of its own (and the slot freed). Null with the block untouched if
/// no mapping can be had.
///
/// # Safety
/// `header` must be the live header of the block at `ptr`, which lies in slot `(*header).slot - 1`.
unsafe fn realloc_slot(
    ptr: *mut u8,
    header: *mut Header,
    new_size: usize,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    let page = page_size();
    // SAFETY: the caller's contract: a live header.
    let (usable, owner) = unsafe { ((*header).usable, (*header).owner) };
    if let Some(new_usable) = os::align_up(new_size.max(1), page) {
        if new_usable <= slot_block_bytes() {
            counters.add_mapped(new_usable);
            counters.sub_mapped(usable);
            // SAFETY: a live header, ours to write.
            unsafe { (*header).usable = new_usable };
            return ptr;
        }
    }
    let q = alloc(new_size, page, false, owner, counters);
    if q.is_null() {
        return q;
    }
    // `alloc` counted an allocation of `new_size`; the caller counts the move itself.
    counters.record_free(new_size);
    // SAFETY: both blocks are live and distinct; the old one holds `usable` bytes, the new one
    // at least `new_size`; the old block is dead after the copy and freed to its slot.
    unsafe {
        ptr::copy_nonoverlapping(ptr, q, usable.min(new_size));
        unmap_block(ptr, counters);
    }
    q
}

// ## Slots for sampled blocks
//
// The heap profiler gives each sampled block a page of its own with a header before it (see
// `crate::profile`), once per sample. A mapping of its own per sample cost an `mmap`, page
// faults and an `munmap` whenever the cache of freed mappings could not serve it (programs
// that keep sampled blocks live). So sampled blocks of up to [`SLOT_BLOCK_BYTES`] are served
// from slots carved out of [`REGION_SIZE`] windows claimed as Large, reused through a
// lock-free free list and never unmapped: no system call and, once a slot has been used, no
// page fault. A slot is its header page followed by its block's pages; the header names the
// slot, so `dealloc` and `realloc` (through the same Large paths as every large block) hand it
// back. Hardened builds use no slots (their large blocks need guard pages).

/// Block bytes one slot holds at most (at least one page): 16 KiB, the largest requests
/// most workloads make; a larger sampled block gets a mapping of its own.
pub const SLOT_BLOCK_BYTES: usize = 16 << 10;
/// Windows of slots at most (64 windows of 4 MiB: some 13,000 slots of 20 KiB with 4 KiB pages).
const SLOT_WINDOWS: usize = 64;

/// The bases of the slot windows mapped so far (the first `SLOT_WINDOWS_USED`).
static SLOT_WINDOW_BASES: [AtomicUsize; SLOT_WINDOWS] =
    [const { AtomicUsize::new(0) }; SLOT_WINDOWS];
/// Slot windows mapped so far.
static SLOT_WINDOWS_USED: AtomicUsize = AtomicUsize::new(0);
/// Slots handed out at least once (slots `0..SLOT_FRESH`); the next never-used slot.
static SLOT_FRESH: AtomicUsize = AtomicUsize::new(0);
/// The free list of slots: `(tag << 32) | (index + 1)` of the first free slot (0: empty). The
/// tag grows with every change, so a pop that raced with a pop and a push fails its exchange.
static SLOT_HEAD: AtomicU64 = AtomicU64::new(0);
/// Set while a thread maps a new window (others then fall back to a mapping of their own). A
/// child forked while another thread held it keeps it set: its sampled blocks then come from the
/// slots mapped before the fork, and from mappings of their own once those are used.
static SLOT_GROWING: AtomicBool = AtomicBool::new(false);
/// Where in a slot's header page its free-list link lives (past the [`Header`]).
const SLOT_LINK_OFFSET: usize = 256;

/// Bytes of block in a slot.
fn slot_block_bytes() -> usize {
    SLOT_BLOCK_BYTES.max(page_size())
}

/// Bytes of one slot: its header page and its block.
fn slot_len() -> usize {
    page_size() + slot_block_bytes()
}

fn slots_per_window() -> usize {
    REGION_SIZE / slot_len()
}

/// The start of slot `i` (whose window is mapped).
fn slot_addr(i: u32) -> usize {
    let per = slots_per_window();
    let w = i as usize / per;
    SLOT_WINDOW_BASES[w].load(Ordering::Acquire) + (i as usize % per) * slot_len()
}

/// The free-list link of slot `i`, in its header page (mapped for good once its window is).
fn slot_link(i: u32) -> &'static AtomicU32 {
    // SAFETY: slot windows are never unmapped; the link lies in the slot's header page, past the
    // header, is suitably aligned (page start + 256) and only ever accessed atomically.
    unsafe { &*((slot_addr(i) + SLOT_LINK_OFFSET) as *const AtomicU32) }
}

fn push_slot(i: u32) {
    let mut head = SLOT_HEAD.load(Ordering::Relaxed);
    loop {
        slot_link(i).store(head as u32, Ordering::Relaxed);
        let new = ((head >> 32).wrapping_add(1) << 32) | (i as u64 + 1);
        match SLOT_HEAD.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// A free slot: a reused one, else a never-used one (mapping a new window if needed); `None`
/// when none can be had without waiting.
fn take_slot() -> Option<u32> {
    let mut head = SLOT_HEAD.load(Ordering::Acquire);
    while head as u32 != 0 {
        let i = head as u32 - 1;
        // A racing pop may have handed slot i out already: the link read is then stale, and the
        // exchange below fails because the tag moved on.
        let next = slot_link(i).load(Ordering::Relaxed);
        let new = ((head >> 32).wrapping_add(1) << 32) | next as u64;
        match SLOT_HEAD.compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return Some(i),
            Err(h) => head = h,
        }
    }
    let per = slots_per_window();
    loop {
        let f = SLOT_FRESH.load(Ordering::Relaxed);
        if f < SLOT_WINDOWS_USED.load(Ordering::Acquire) * per {
            if SLOT_FRESH
                .compare_exchange_weak(f, f + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Some(f as u32);
            }
            continue;
        }
        if !grow_slots() {
            return None;
        }
    }
}

/// Maps and publishes one more slot window; false if another thread is doing it, the windows
/// are all used, or the kernel refuses.
fn grow_slots() -> bool {
    if SLOT_GROWING.swap(true, Ordering::Acquire) {
        return false;
    }
    let w = SLOT_WINDOWS_USED.load(Ordering::Relaxed);
    let mut ok = false;
    if w < SLOT_WINDOWS {
        let base = os::map_aligned(REGION_SIZE, REGION_SIZE) as usize;
        if base != 0 {
            if region_map::claim(base, REGION_SIZE, Owner::Large) {
                SLOT_WINDOW_BASES[w].store(base, Ordering::Release);
                SLOT_WINDOWS_USED.store(w + 1, Ordering::Release);
                ok = true;
            } else {
                // SAFETY: just mapped, never published.
                unsafe { os::unmap(base as *mut u8, REGION_SIZE) };
            }
        }
    }
    SLOT_GROWING.store(false, Ordering::Release);
    ok
}

/// A block of `size` bytes (page-aligned) in a slot for sampled blocks, for `owner`, counted in
/// `counters` like a block of [`alloc`]; freed and resized through [`dealloc`] and [`realloc`]
/// like any large block. Null if `size` exceeds [`SLOT_BLOCK_BYTES`] (or a page), in hardened
/// builds, or when no slot can be had at once: the caller then uses [`alloc`].
pub fn alloc_slot(
    size: usize,
    zeroed: bool,
    owner: Owner,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    let page = page_size();
    if hardened::ENABLED || size > slot_block_bytes() {
        return ptr::null_mut();
    }
    let Some(i) = take_slot() else {
        return ptr::null_mut();
    };
    let base = slot_addr(i);
    let block = base + page;
    let usable = os::align_up(size.max(1), page).unwrap_or(page);
    // SAFETY: slot i is ours alone until pushed back; its header page and block lie in a window
    // mapped read-write for good and claimed as Large.
    unsafe {
        write_header(block, owner, base, slot_len(), usable);
        (*((block - page) as *mut Header)).slot = i + 1;
        if zeroed {
            ptr::write_bytes(block as *mut u8, 0, usable);
        }
    }
    counters.add_mapped(usable + page);
    counters.record_alloc(size);
    block as *mut u8
}

/// Runs `kernel_move`, which moves the mapping `old..old + old_len` to `place` (whose windows
/// the caller has claimed), marking the old windows foreign *before* the kernel call: once the
/// kernel has freed the old range another thread may map it and claim its windows, and a
/// release after the call would overwrite that claim (issue 23, item 4). If the move fails the
/// old range is still ours and its windows are claimed again. Returns whether it moved.
///
/// Between the release and the kernel call the old windows read foreign; only the moving block
/// lies in them, and it is its caller's alone (no other thread may free or measure it then).
///
/// # Safety
/// `old..old + old_len` must be a whole mapping of this module whose windows are claimed as
/// Large and which no other thread uses during the call; `place` must not overlap it.
unsafe fn relocate(
    old: usize,
    old_len: usize,
    place: usize,
    kernel_move: impl FnOnce() -> bool,
) -> bool {
    debug_assert!(place + old_len <= old || old + old_len <= place);
    region_map::release(old, old_len);
    if kernel_move() {
        return true;
    }
    // The old range is still mapped, so nobody else can have claimed its windows: claiming them
    // again cannot fail (the table exists, the range was claimed before).
    let reclaimed = region_map::claim(old, old_len, Owner::Large);
    debug_assert!(reclaimed);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_usable_free() {
        static C: GlobalCounters = GlobalCounters::new();
        let c = &C;
        for align in [1usize, 4096, 1 << 16, REGION_SIZE, 1 << 26] {
            let p = alloc(100_000, align, false, Owner::SizeClass, c);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            assert_eq!(region_map::owner_of(p), Owner::Large);
            // SAFETY: p is a live large block.
            unsafe {
                assert_eq!(owner(p), Some(Owner::SizeClass));
                assert!(usable_size(p) >= 100_000);
                p.write_bytes(1, 100_000);
                dealloc(p, 100_000, c);
            }
            // (Whether the window reads Foreign now is racy: a test running in parallel may map
            // the same addresses at once, so only the counters are checked.)
        }
        trim_cache();
        assert_eq!(c.snapshot().mapped_bytes, 0);
    }

    #[test]
    fn realloc_keeps_contents_and_alignment() {
        static C: GlobalCounters = GlobalCounters::new();
        let c = &C;
        for align in [8usize, 1 << 16, 1 << 23] {
            let p = alloc(1 << 20, align, false, Owner::Bump, c);
            assert!(!p.is_null());
            // SAFETY: p is live with 1 MiB usable; q likewise after each realloc.
            unsafe {
                for i in 0..(1 << 20) {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = realloc(p, 40 << 20, c);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0);
                for i in (0..(1 << 20)).step_by(997) {
                    assert_eq!(*q.add(i), (i % 251) as u8);
                }
                *q.add((40 << 20) - 1) = 9;
                let r = realloc(q, 8192, c);
                assert_eq!(r, q);
                assert_eq!(*r.add(8191), (8191 % 251) as u8);
                dealloc(r, 8192, c);
            }
        }
        trim_cache();
        assert_eq!(c.snapshot().mapped_bytes, 0);
    }

    #[test]
    fn not_a_block_start() {
        static C: GlobalCounters = GlobalCounters::new();
        let p = alloc(3 * page_size(), 1, false, Owner::Slab, &C);
        // SAFETY: p + page is inside a live Large mapping.
        unsafe {
            assert_eq!(owner(p.add(page_size())), None);
            assert_eq!(owner(p.add(3)), None);
            dealloc(p, 3 * page_size(), &C);
        }
    }

    /// Issue 23 item 4: once the kernel has moved a block, another thread may map the old range
    /// and claim its windows before the mover touches the region map; the mover must never mark
    /// them foreign afterwards. The stand-in for the kernel call claims the old windows for
    /// another owner, as that thread would. A failed move leaves the old windows Large.
    #[test]
    fn a_move_never_releases_windows_claimed_after_the_kernel_call() {
        let len = 2 * REGION_SIZE;
        let old = os::map_aligned(len, REGION_SIZE) as usize;
        let place = os::map_aligned(len, REGION_SIZE) as usize;
        assert!(old != 0 && place != 0);
        assert!(region_map::claim(old, len, Owner::Large));
        assert!(region_map::claim(place, len, Owner::Large));
        // SAFETY: both ranges are mappings of ours that nothing else uses; the closures make no
        // kernel call.
        unsafe {
            let moved = relocate(old, len, place, || {
                assert_eq!(region_map::owner_of(old as *const u8), Owner::Foreign);
                region_map::claim(old, len, Owner::Bump)
            });
            assert!(moved);
            for w in [old, old + REGION_SIZE] {
                assert_eq!(region_map::owner_of(w as *const u8), Owner::Bump);
            }
            assert_eq!(region_map::owner_of(place as *const u8), Owner::Large);
            let moved = relocate(old, len, place, || false);
            assert!(!moved);
            for w in [old, old + REGION_SIZE] {
                assert_eq!(region_map::owner_of(w as *const u8), Owner::Large);
            }
            region_map::release(old, len);
            region_map::release(place, len);
            os::unmap(old as *mut u8, len);
            os::unmap(place as *mut u8, len);
        }
    }

    /// A freed mapping is reused (same address, old bytes still there) by the next request of a
    /// fitting size, and comes back zeroed when asked. Other tests share the cache and may take
    /// the mapping first, so reuse is required in some, not all, of several rounds.
    #[test]
    #[cfg(not(feature = "hardened"))] // hardened builds use no slots (see `alloc_slot`)
    fn sampled_block_slots_are_reused_resized_and_read_dead_when_freed() {
        static C: GlobalCounters = GlobalCounters::new();
        let page = page_size();
        assert!(alloc_slot(slot_block_bytes() + 1, false, Owner::Slab, &C).is_null());
        // SAFETY: every pointer used is a live block of ours until freed, then only inspected
        // through its header (Large windows stay mapped).
        unsafe {
            let p = alloc_slot(100, true, Owner::Slab, &C);
            assert!(!p.is_null() && (p as usize).is_multiple_of(page));
            assert_eq!(region_map::owner_of(p), Owner::Large);
            assert_eq!(owner(p), Some(Owner::Slab));
            assert_eq!(usable_size(p), page);
            assert!(core::slice::from_raw_parts(p, page).iter().all(|&b| b == 0));
            p.write_bytes(7, page);
            // Grows within the slot: same address.
            let q = realloc(p, slot_block_bytes(), &C);
            assert_eq!(q, p);
            assert_eq!(usable_size(q), slot_block_bytes());
            // Grows past it: moved to a mapping of its own, contents kept, the slot freed.
            let r = realloc(q, slot_block_bytes() * 4, &C);
            assert!(!r.is_null() && r != q);
            assert!(core::slice::from_raw_parts(r, page).iter().all(|&b| b == 7));
            assert_eq!(owner(q), None);
            dealloc(r, slot_block_bytes() * 4, &C);
            // Many rounds of alloc and free reuse slots: no new window per round.
            let before = SLOT_WINDOWS_USED.load(Ordering::Relaxed);
            for _ in 0..1000 {
                let x = alloc_slot(64, false, Owner::Buddy, &C);
                assert!(!x.is_null());
                x.write(1);
                dealloc(x, 64, &C);
                assert_eq!(owner(x), None, "a freed slot reads dead");
            }
            assert!(SLOT_WINDOWS_USED.load(Ordering::Relaxed) <= before + 1);
        }
    }

    #[test]
    #[cfg(not(feature = "hardened"))] // hardened builds cache nothing (see `put_cached`)
    fn freed_mappings_are_reused_and_zeroed_on_request() {
        static C: GlobalCounters = GlobalCounters::new();
        let size = (9 << 20) + 12345;
        let mut reused = 0;
        for round in 0..10u8 {
            let p = alloc(size, 8, false, Owner::SizeClass, &C);
            assert!(!p.is_null());
            // SAFETY: p is live with `size` bytes; q likewise.
            unsafe {
                p.write_bytes(round | 1, size);
                dealloc(p, size, &C);
                let q = alloc(size, 8, true, Owner::SizeClass, &C);
                assert!(!q.is_null());
                if q == p {
                    reused += 1;
                }
                for i in (0..size).step_by(4093).chain([size - 1]) {
                    assert_eq!(*q.add(i), 0, "byte {i} of a zeroed block");
                }
                q.write_bytes(7, size);
                dealloc(q, size, &C);
                let r = alloc(size, 8, false, Owner::Buddy, &C);
                assert!(!r.is_null());
                if r == q {
                    assert_eq!(*r.add(size / 2), 7, "a reused block is not cleared unasked");
                    reused += 1;
                }
                assert_eq!(owner(r), Some(Owner::Buddy));
                dealloc(r, size, &C);
            }
        }
        assert!(reused > 0, "no freed mapping was reused");
        trim_cache();
        assert_eq!(C.snapshot().mapped_bytes, 0);
    }

    /// A cached mapping unused for longer than the decay is unmapped (and uncounted) by a later
    /// large operation, without `trim_cache`.
    #[test]
    fn cached_mappings_decay() {
        static C: GlobalCounters = GlobalCounters::new();
        static OTHER: GlobalCounters = GlobalCounters::new();
        let p = alloc(5 << 20, 8, false, Owner::Slab, &C);
        assert!(!p.is_null());
        // SAFETY: p is live; freed once.
        unsafe { dealloc(p, 5 << 20, &C) };
        std::thread::sleep(std::time::Duration::from_millis(CACHE_DECAY_MS + 200));
        // A large operation of another size (another test may take the cached mapping first,
        // which uncounts it too).
        let q = alloc(40 << 20, 8, false, Owner::Slab, &OTHER);
        assert!(!q.is_null());
        assert_eq!(C.snapshot().mapped_bytes, 0);
        // SAFETY: q is live; freed once.
        unsafe { dealloc(q, 40 << 20, &OTHER) };
    }
}
