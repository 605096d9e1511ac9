//! Blocks too big for an allocator's own structures: mapped directly from the kernel, unmapped on
//! free, moved with `mremap` (no copy) on realloc. Shared by all four allocators.
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

use core::ptr;

use crate::hardened;
use crate::os::{self, page_size};
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::GlobalCounters;

const MAGIC: usize = 0x0001_A26E_B10C_u64 as usize;

/// The header in the page before each large block.
#[repr(C)]
struct Header {
    /// [`MAGIC`] while the block is live; cleared on free.
    magic: usize,
    /// Which allocator handed the block out.
    owner: Owner,
    /// The start of the whole mapping.
    base: usize,
    /// The length of the whole mapping (a multiple of `REGION_SIZE`).
    map_len: usize,
    /// Bytes usable from the block's start (page-rounded size asked for).
    usable: usize,
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

/// Maps a block of `size` bytes aligned to `align` for `owner`, counting the pages and the
/// allocation of `size` requested bytes in `counters`.
/// The block is zero-filled (fresh pages). Null if the kernel refuses or the size overflows.
pub fn alloc(size: usize, align: usize, owner: Owner, counters: &GlobalCounters) -> *mut u8 {
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
    let header = (block - page) as *mut Header;
    // SAFETY: the header page lies inside the fresh mapping, is page-aligned, and is ours alone.
    unsafe {
        header.write(Header {
            magic: MAGIC,
            owner,
            base,
            map_len,
            usable,
        });
    }
    counters.add_mapped(usable + page);
    counters.record_alloc(size);
    // SAFETY: the guard page after the block lies inside the mapping (GUARD_PAGES counted above).
    unsafe { set_guard(block, usable, true) };
    block as *mut u8
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
    let page = page_size();
    let addr = ptr as usize;
    if !addr.is_multiple_of(page)
        || addr < page
        || region_map::owner_of((addr - page) as *const u8) != Owner::Large
    {
        return None;
    }
    let header = (addr - page) as *mut Header;
    // SAFETY: the page before `addr` lies in a Large window, and Large windows are wholly mapped
    // by this module; a pointer that is not a block start reads some other mapped page and fails
    // the magic check.
    let h = unsafe { &*header };
    let plausible = h.magic == MAGIC && h.base < addr && addr < h.base + h.map_len;
    plausible.then_some(header)
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
pub unsafe fn free_unsized(ptr: *mut u8, owner: Owner, counters: &GlobalCounters) {
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
    counters: &GlobalCounters,
) -> *mut u8 {
    // SAFETY: forwarded contract.
    let q = unsafe { realloc(ptr, new_size, counters) };
    if !q.is_null() {
        counters.record_free(old_size);
        counters.record_alloc(new_size);
    }
    q
}

/// Unmaps the large block at `ptr`, counting the free of `size` requested bytes in `counters`.
///
/// # Safety
/// `ptr` must be the start of a live large block, not used afterwards.
pub unsafe fn dealloc(ptr: *mut u8, size: usize, counters: &GlobalCounters) {
    // SAFETY: forwarded contract.
    if unsafe { unmap_block(ptr, counters) } {
        counters.record_free(size);
    }
}

/// Unmaps the large block at `ptr` without counting a free of requested bytes (only the pages
/// go from `counters`): for a caller that kept the block in a cache of its own after counting
/// its free. Returns whether `ptr` started a live block (hardened builds abort if not).
///
/// # Safety
/// `ptr` must be the start of a live large block, not used afterwards.
pub unsafe fn unmap_block(ptr: *mut u8, counters: &GlobalCounters) -> bool {
    // SAFETY: forwarded contract.
    let Some(header) = (unsafe { header_of(ptr) }) else {
        if hardened::ENABLED {
            hardened::misuse("large", hardened::Misuse::InvalidFree, ptr);
        }
        return false;
    };
    // SAFETY: the header is live (magic checked); we read it before unmapping.
    let (base, map_len, usable) = unsafe {
        let h = &mut *header;
        h.magic = 0;
        (h.base, h.map_len, h.usable)
    };
    region_map::release(base, map_len);
    counters.sub_mapped(usable + page_size());
    // SAFETY: the whole mapping belongs to this block, which the caller says is dead.
    unsafe { os::unmap(base as *mut u8, map_len) };
    true
}

/// Resizes the large block at `ptr` to `new_size` bytes, keeping its contents and alignment.
/// Grows in place when the address space after it is free, otherwise moves the pages with
/// `mremap` (no byte copy). Returns the block's (possibly new) address, or null with the old block
/// untouched.
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn realloc(ptr: *mut u8, new_size: usize, counters: &GlobalCounters) -> *mut u8 {
    let page = page_size();
    // SAFETY: forwarded contract.
    let Some(header) = (unsafe { header_of(ptr) }) else {
        return ptr::null_mut();
    };
    // SAFETY: the header is live.
    let (base, map_len, usable) = unsafe { ((*header).base, (*header).map_len, (*header).usable) };
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
    if !unsafe { os::remap_to(base as *mut u8, map_len, place as *mut u8, new_len) } {
        region_map::release(place, new_len);
        // SAFETY: the placeholder was never published.
        unsafe { os::unmap(place as *mut u8, new_len) };
        return ptr::null_mut();
    }
    region_map::release(base, map_len);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_usable_free() {
        let c = GlobalCounters::new();
        for align in [1usize, 4096, 1 << 16, REGION_SIZE, 1 << 26] {
            let p = alloc(100_000, align, Owner::SizeClass, &c);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            assert_eq!(region_map::owner_of(p), Owner::Large);
            // SAFETY: p is a live large block.
            unsafe {
                assert_eq!(owner(p), Some(Owner::SizeClass));
                assert!(usable_size(p) >= 100_000);
                p.write_bytes(1, 100_000);
                dealloc(p, 100_000, &c);
            }
            // (Whether the window reads Foreign now is racy: a test running in parallel may map
            // the same addresses at once, so only the counters are checked.)
        }
        assert_eq!(c.snapshot().mapped_bytes, 0);
    }

    #[test]
    fn realloc_keeps_contents_and_alignment() {
        let c = GlobalCounters::new();
        for align in [8usize, 1 << 16, 1 << 23] {
            let p = alloc(1 << 20, align, Owner::Bump, &c);
            assert!(!p.is_null());
            // SAFETY: p is live with 1 MiB usable; q likewise after each realloc.
            unsafe {
                for i in 0..(1 << 20) {
                    *p.add(i) = (i % 251) as u8;
                }
                let q = realloc(p, 40 << 20, &c);
                assert!(!q.is_null());
                assert_eq!(q as usize % align, 0);
                for i in (0..(1 << 20)).step_by(997) {
                    assert_eq!(*q.add(i), (i % 251) as u8);
                }
                *q.add((40 << 20) - 1) = 9;
                let r = realloc(q, 8192, &c);
                assert_eq!(r, q);
                assert_eq!(*r.add(8191), (8191 % 251) as u8);
                dealloc(r, 8192, &c);
            }
        }
        assert_eq!(c.snapshot().mapped_bytes, 0);
    }

    #[test]
    fn not_a_block_start() {
        let c = GlobalCounters::new();
        let p = alloc(3 * page_size(), 1, Owner::Slab, &c);
        // SAFETY: p + page is inside a live Large mapping.
        unsafe {
            assert_eq!(owner(p.add(page_size())), None);
            assert_eq!(owner(p.add(3)), None);
            dealloc(p, 3 * page_size(), &c);
        }
    }
}
