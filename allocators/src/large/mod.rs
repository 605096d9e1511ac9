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
//! A freed mapping is kept for reuse in a small decaying cache (`cache.rs`); sampled blocks of
//! the heap profiler come from recycled slots (`slots.rs`).
//!
//! One concern per file: `header.rs` (the header, the guard page, lookups from a pointer),
//! `cache.rs` (the cache of freed mappings), `resize.rs` (realloc: in place or moved),
//! `slots.rs` (slots for sampled blocks), `tests.rs`.

mod cache;
mod header;
mod resize;
mod slots;
#[cfg(test)]
mod tests;

pub use cache::{expire_cache, trim_cache, CACHE_DECAY_MS, CACHE_MAX_BYTES, CACHE_SLOTS};
pub use header::{is_sampled, owner, set_sampled, usable_size, usable_size_if_owned};
pub use resize::realloc;
pub use slots::{alloc_slot, SLOT_BLOCK_BYTES};

use core::ptr;

use crate::hardened;
use crate::os::{self, page_size};
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::GlobalCounters;
use cache::{put_cached, take_cached};
use header::{freed_by, header_of, set_guard, write_header, CACHED_MAGIC, GUARD_PAGES};
use slots::push_slot;

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

/// For a block of `size` bytes starting `head` bytes into its mapping: its usable bytes (whole
/// pages) and the length of the mapping (head, block and guard pages, whole regions). `None` if
/// either overflows or exceeds `isize::MAX`.
pub(crate) fn block_sizes(head: usize, size: usize) -> Option<(usize, usize)> {
    let page = page_size();
    let usable = os::align_up(size.max(1), page)?;
    let map_len = usable
        .checked_add(head + GUARD_PAGES * page)
        .and_then(|n| os::align_up(n, REGION_SIZE))?;
    (map_len <= isize::MAX as usize).then_some((usable, map_len))
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
    let Some((usable, map_len)) = block_sizes(head, size) else {
        return ptr::null_mut();
    };
    cache::register_fork_hooks();
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
    let base = map_window(map_len, head, align);
    if base == 0 {
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

/// A fresh mapping of `len` bytes (a multiple of [`REGION_SIZE`]) claimed as Large, whose
/// address plus `head` is aligned to `align`; 0 if the kernel refuses or the sizes overflow. The
/// mapping is REGION_SIZE-aligned; for `align >= REGION_SIZE` (then `head` is REGION_SIZE) it is
/// aligned to `align` shifted back by `head`, carved out of a larger mapping.
fn map_window(len: usize, head: usize, align: usize) -> usize {
    if align < REGION_SIZE {
        return region_map::map_claimed(len, Owner::Large) as usize;
    }
    let Some(over) = len.checked_add(align) else {
        return 0;
    };
    let raw = os::map(over);
    if raw.is_null() {
        return 0;
    }
    let raw_addr = raw as usize;
    let block = (raw_addr + head + align - 1) & !(align - 1);
    let base = block - head;
    // SAFETY: the trimmed head and tail lie inside the mapping just made.
    unsafe {
        os::unmap(raw, base - raw_addr);
        os::unmap((base + len) as *mut u8, raw_addr + over - base - len);
    }
    if !region_map::claim(base, len, Owner::Large) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap(base as *mut u8, len) };
        return 0;
    }
    base
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
