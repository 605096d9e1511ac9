//! One buddy region: its layout, its header and the order tags kept outside the blocks.
//!
//! A region is one [`REGION_SIZE`] window (4 MiB), aligned to its own size and claimed in the
//! region map as [`Owner::Buddy`]. Its first [`META_SIZE`] bytes (256 KiB, one sixteenth) are
//! metadata, reached from any block address with one mask:
//!
//! ```text
//! base                                                  base + 256 KiB        base + 4 MiB
//! | tag[0] | ... | RegionHeader @ 64 | ... tag bytes ... | blocks: 256K | 512K | 1M | 2M   |
//! ```
//!
//! `tag[i]` describes the [`GRANULE`] (16 B) at `base + i * 16`: zero if no block starts there,
//! otherwise [`TAG_FREE`] or [`TAG_USED`] ORed with the block's order (and, on a free block never
//! written since the kernel mapped it, [`TAG_CLEAN`]). The granules covering the
//! metadata itself never start a block, so their tag bytes are free to hold the header; `tag[0]`
//! is permanently "used" so the block at 256 KiB never tries to coalesce with the metadata.
//! Only the tag pages for granules actually split off are ever touched, so the metadata costs
//! memory in proportion to how finely the region is carved.

use core::ptr;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::os;
use crate::region_map::{self, Owner, REGION_SHIFT, REGION_SIZE};
use crate::stats::GlobalCounters;

/// log2 of the smallest block (16 B: room for the two free-list links).
pub const MIN_ORDER: u32 = 4;
/// The smallest block, and the unit the tags describe.
pub const GRANULE: usize = 1 << MIN_ORDER;
/// The largest block: half a region (the lower half holds the metadata and smaller blocks).
pub const MAX_ORDER: u32 = REGION_SHIFT - 1;
/// The number of block orders, `MIN_ORDER..=MAX_ORDER`.
pub const NUM_ORDERS: usize = (MAX_ORDER - MIN_ORDER + 1) as usize;
/// Bytes of metadata at the start of each region: one tag byte per granule.
pub const META_SIZE: usize = REGION_SIZE / GRANULE;
/// Bytes of each region available for blocks.
pub const CAPACITY: usize = REGION_SIZE - META_SIZE;
/// Tag bit: a free block (on its arena's free list) starts here.
pub const TAG_FREE: u8 = 0x80;
/// Tag bit: an allocated block (handed out, or in a thread cache) starts here.
pub const TAG_USED: u8 = 0x40;
/// Tag bit on a free block: its bytes have never been written since the kernel mapped them
/// (so `alloc_zeroed` need not clear it).
pub const TAG_CLEAN: u8 = 0x20;
/// Tag bits holding the order.
pub const TAG_ORDER: u8 = 0x1f;
/// Where the header sits: among the tag bytes of granules inside the metadata.
const HEADER_OFFSET: usize = 64;

const _: () = assert!(META_SIZE.is_power_of_two() && META_SIZE < REGION_SIZE / 2);
const _: () = assert!(HEADER_OFFSET + core::mem::size_of::<RegionHeader>() <= META_SIZE / GRANULE);
const _: () = assert!(MAX_ORDER as u8 <= TAG_ORDER);

/// The per-region bookkeeping, at a fixed offset in the region's metadata.
///
/// Invariants (under the owning arena's lock): `free_bytes` is the sum of the sizes of the
/// region's free blocks; `next`/`prev` link the arena's regions (null-terminated).
#[repr(C)]
pub struct RegionHeader {
    /// The index of the arena that owns the region's free lists (fixed for the region's life).
    pub arena: usize,
    /// Bytes of free blocks in the region (`CAPACITY` when the region is wholly free).
    pub free_bytes: usize,
    /// The next region of the same arena.
    pub next: *mut RegionHeader,
    /// The previous region of the same arena.
    pub prev: *mut RegionHeader,
}

/// The start of the region holding `addr`.
#[inline(always)]
pub fn base_of(addr: usize) -> usize {
    addr & !(REGION_SIZE - 1)
}

/// The header of the region holding `addr`.
#[inline(always)]
pub fn header_of(addr: usize) -> *mut RegionHeader {
    (base_of(addr) + HEADER_OFFSET) as *mut RegionHeader
}

/// The tag byte describing the granule at `addr`.
///
/// # Safety
/// `addr` must lie inside a live buddy region (mapped, claimed as [`Owner::Buddy`]).
#[inline(always)]
pub unsafe fn tag(addr: usize) -> &'static AtomicU8 {
    let base = base_of(addr);
    let p = (base + ((addr - base) >> MIN_ORDER)) as *mut u8;
    // SAFETY: p lies in the region's metadata, mapped for the region's life and only accessed
    // atomically (tags are read without the lock by `usable_size`).
    unsafe { AtomicU8::from_ptr(p) }
}

/// Reads the tag at `addr`.
///
/// # Safety
/// As for [`tag`].
#[inline(always)]
pub unsafe fn get_tag(addr: usize) -> u8 {
    // SAFETY: forwarded contract.
    unsafe { tag(addr).load(Ordering::Relaxed) }
}

/// Writes the tag at `addr`.
///
/// # Safety
/// As for [`tag`]; the caller holds the lock of the region's arena (or owns the block).
#[inline(always)]
pub unsafe fn set_tag(addr: usize, value: u8) {
    // SAFETY: forwarded contract.
    unsafe { tag(addr).store(value, Ordering::Relaxed) }
}

/// The order of the first block above the metadata that starts at region offset `offset`
/// (a power of two in `META_SIZE..REGION_SIZE`).
#[inline]
pub fn top_order(offset: usize) -> u32 {
    offset.trailing_zeros()
}

/// Maps a fresh region for arena `arena`, claims it and writes its header. The caller puts the
/// blocks `[META_SIZE << i, 2 * (META_SIZE << i))` on its free lists. Null if the kernel refuses.
///
/// Only the metadata is counted as mapped here: the arena counts block bytes when they stop
/// being clean (see [`TAG_CLEAN`]), so `mapped_bytes` follows the memory actually in use.
pub fn map(arena: usize, counters: &GlobalCounters) -> *mut RegionHeader {
    let base = region_map::map_claimed(REGION_SIZE, Owner::Buddy);
    if base.is_null() {
        return ptr::null_mut();
    }
    counters.add_mapped(META_SIZE);
    let base = base as usize;
    // SAFETY: the region is fresh and ours; tag[0] and the header lie in its metadata.
    unsafe {
        set_tag(base, TAG_USED | top_order(META_SIZE) as u8);
        let header = header_of(base);
        header.write(RegionHeader {
            arena,
            free_bytes: 0,
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
        });
        header
    }
}

/// Returns a wholly free region to the kernel (the caller has uncounted its dirty blocks).
///
/// # Safety
/// The region must be unlinked from every list and hold no block anybody uses.
pub unsafe fn unmap(header: *mut RegionHeader, counters: &GlobalCounters) {
    let base = base_of(header as usize);
    region_map::release(base, REGION_SIZE);
    counters.sub_mapped(META_SIZE);
    // SAFETY: the caller guarantees the region is dead.
    unsafe { os::unmap(base as *mut u8, REGION_SIZE) };
}
