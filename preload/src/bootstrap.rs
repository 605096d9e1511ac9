//! Memory for the rare allocations that reach the C interface from inside the allocator itself
//! (see [`crate::reentry`]): glibc's list node for a thread-exit destructor, its `pthread_atfork`
//! table.
//!
//! A bump pointer through a static buffer, then through mappings that are deliberately not claimed
//! in the region map: the blocks read as foreign memory, so `free` ignores them and `realloc`
//! copies them out. Nothing is reused, so every block is zero (calloc needs nothing more). The
//! cost is a leak of one small node per thread ever created, about 40 bytes.

use core::alloc::Layout;
use core::ptr;

use allocators::os;
use allocators::sync::Lock;

/// Bytes of the static buffer used first.
const STATIC_BYTES: usize = 64 * 1024;
/// Bytes mapped at a time once the static buffer is used up.
const MAP_BYTES: usize = 256 * 1024;

/// The static buffer: 4096-aligned so page-aligned requests fit without waste.
#[repr(C, align(4096))]
struct Buffer([u8; STATIC_BYTES]);

/// The static buffer; only ever touched through [`alloc`]'s cursor, under [`CURSOR`]'s lock.
static mut BUFFER: Buffer = Buffer([0; STATIC_BYTES]);

/// The free range `start..end` of the current buffer (both 0 before first use).
struct Cursor {
    start: usize,
    end: usize,
}

static CURSOR: Lock<Cursor> = Lock::new(Cursor { start: 0, end: 0 });

/// A zeroed block for `layout` (any alignment up to the page size), or null if the kernel refuses
/// memory or the alignment is larger.
pub fn alloc(layout: Layout) -> *mut u8 {
    let page = os::page_size();
    if layout.align() > page {
        return ptr::null_mut();
    }
    let mut cur = CURSOR.lock();
    if cur.end == 0 {
        let base = (&raw mut BUFFER) as usize;
        cur.start = base;
        cur.end = base + STATIC_BYTES;
    }
    if let Some(block) = carve(&mut cur, layout) {
        return block as *mut u8;
    }
    // Out of room: map a fresh buffer big enough for this request (the old tail is dropped).
    let Some(len) = layout
        .size()
        .checked_add(page)
        .and_then(|n| os::align_up(n.max(MAP_BYTES), page))
    else {
        return ptr::null_mut();
    };
    let fresh = os::map(len);
    if fresh.is_null() {
        return fresh;
    }
    cur.start = fresh as usize;
    cur.end = fresh as usize + len;
    carve(&mut cur, layout).map_or(ptr::null_mut(), |b| b as *mut u8)
}

/// Takes `layout` from the front of `cur`, if it fits.
fn carve(cur: &mut Cursor, layout: Layout) -> Option<usize> {
    let block = os::align_up(cur.start, layout.align())?;
    let end = block.checked_add(layout.size())?;
    if end > cur.end {
        return None;
    }
    cur.start = end;
    Some(block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use allocators::region_map::{owner_of, Owner};

    #[test]
    fn blocks_are_zeroed_aligned_and_foreign() {
        let mut last = 0usize;
        for i in 0..2000usize {
            let align = 1 << (i % 13);
            let size = 1 + (i * 37) % 700;
            let layout = Layout::from_size_align(size, align).unwrap();
            let p = alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            assert_eq!(owner_of(p), Owner::Foreign);
            // SAFETY: p is a fresh block of `size` bytes that nobody else holds.
            unsafe {
                assert!((0..size).all(|k| *p.add(k) == 0));
                p.write_bytes(0xAB, size);
            }
            assert_ne!(p as usize, last);
            last = p as usize;
        }
    }
}
