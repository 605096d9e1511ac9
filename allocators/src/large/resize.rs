//! Resizing a large block: in place when the mapping or the address space after it allows,
//! else moved with `mremap` (page tables only, no byte copy).

use core::ptr;

use super::header::{header_of, set_guard, Header};
use super::slots::realloc_slot;
use crate::os::{self, page_size};
use crate::region_map::{self, Owner};
use crate::stats::GlobalCounters;

/// Resizes the large block at `ptr` to `new_size` bytes, keeping its contents and alignment.
/// Grows in place when the address space after it is free, otherwise moves the pages with
/// `mremap` (no byte copy). Returns the block's (possibly new) address, or null with the old block
/// untouched.
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn realloc(ptr: *mut u8, new_size: usize, counters: &'static GlobalCounters) -> *mut u8 {
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
    let Some((new_usable, new_len)) = super::block_sizes(head, new_size) else {
        return ptr::null_mut();
    };
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
                                                                          // Keeps the block's alignment (above REGION_SIZE only for a block REGION_SIZE into its
                                                                          // mapping: below, the lowest set bit of `base + head` is that of `head`).
    let place = super::map_window(new_len, head, block_align);
    if place == 0 {
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
pub(super) unsafe fn relocate(
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
