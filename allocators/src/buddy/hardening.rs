//! The `hardened` feature's checks for the buddy allocator (see [`crate::hardened`]), beyond the
//! order tags that catch double and invalid frees (in `mod.rs`). Every function here is behind
//! `if hardened::ENABLED`: without the feature the links are stored as they are, no canary or
//! cache tag is written, and the fast paths are those of the normal build.
//!
//! Block layout in hardened builds:
//!
//! - **Canary**: the last word of every handed-out block (`addr + 2^order - 8`) holds
//!   [`hardened::canary_keyed`] of its address, written on allocation and checked on free (and
//!   realloc); a mismatch is a heap overflow. It sits in the slack a power-of-two block nearly
//!   always has: the order is chosen for `size + 8` bytes ([`super::order_for`]), so only a request
//!   within 8 bytes of a power of two takes the next order. The usable size is `2^order - 8`.
//! - **Cached tag**: a block in a thread cache holds [`cached_tag`] in its first word, written when
//!   it enters the cache and checked when it leaves (handed out again or given back to the arena);
//!   a mismatch means the block was written after it was freed.
//! - **Free-list links**: the arena's links in the first two words of a free block are encoded
//!   with [`hardened::encode_link`] and, when followed, decoded and checked: a link must be null or
//!   a free block of the same order in a buddy region whose own back link points here (glibc's
//!   safe unlinking); anything else is reported as a corrupted free list and never followed.

use super::region::{self, get_tag, META_SIZE, TAG_CLEAN, TAG_FREE};
use crate::hardened::{self, Misuse};
use crate::region_map::{self, Owner};

/// The name the misuse reports carry.
const NAME: &str = "buddy";

/// Bytes at the end of every block kept for the canary (0 without the feature).
pub const CANARY_BYTES: usize = hardened::CANARY_BYTES;

/// The address of the canary word of the block at `addr` of `order`.
#[inline(always)]
fn canary_slot(addr: usize, order: u32) -> *mut usize {
    (addr + (1usize << order) - CANARY_BYTES) as *mut usize
}

/// Writes the canary into the last word of the freshly allocated block at `addr` of `order`.
///
/// # Safety
/// `addr` must be a block of `order` owned by the caller.
#[inline(always)]
pub unsafe fn write_canary(addr: usize, order: u32) {
    if hardened::ENABLED {
        // SAFETY: the last word lies inside the caller's block.
        unsafe { canary_slot(addr, order).write(hardened::canary_keyed(addr, hardened::key())) };
    }
}

/// Checks the canary of the live block at `addr` of `order`; aborts with a heap overflow report
/// if it was overwritten.
///
/// # Safety
/// `addr` must be a live block of `order` (its tag checked by the caller).
#[inline(always)]
pub unsafe fn check_canary(addr: usize, order: u32) {
    if hardened::ENABLED {
        // SAFETY: the last word lies inside the live block.
        let word = unsafe { canary_slot(addr, order).read() };
        if word != hardened::canary_keyed(addr, hardened::key()) {
            hardened::misuse(NAME, Misuse::HeapOverflow, addr as *const u8);
        }
    }
}

/// The first word of a block sitting in a thread cache (never equal to the block's canary).
#[inline(always)]
fn cached_tag(addr: usize, key: usize) -> usize {
    !hardened::canary_keyed(addr, key)
}

/// Tags the block at `addr` entering a thread cache.
///
/// # Safety
/// `addr` must be a block (at least 16 bytes) owned by the calling thread's cache.
#[inline(always)]
pub unsafe fn tag_cached(addr: usize) {
    if hardened::ENABLED {
        // SAFETY: the block's first word is the cache's.
        unsafe { (addr as *mut usize).write(cached_tag(addr, hardened::key())) };
    }
}

/// Checks the tag of the block at `addr` leaving a thread cache; aborts with a corrupted free
/// list report if the block was written while cached.
///
/// # Safety
/// `addr` must be a block the calling thread's cache holds, tagged by [`tag_cached`].
#[inline(always)]
pub unsafe fn check_cached(addr: usize) {
    if hardened::ENABLED {
        // SAFETY: the block's first word is the cache's.
        let word = unsafe { (addr as *const usize).read() };
        if word != cached_tag(addr, hardened::key()) {
            hardened::misuse(NAME, Misuse::CorruptFreeList, addr as *const u8);
        }
    }
}

/// The word stored at `slot` (a link field of a free block) for the link `link`.
#[inline(always)]
pub fn encode_link(link: usize, slot: usize) -> usize {
    if hardened::ENABLED {
        hardened::encode_link(link, slot)
    } else {
        link
    }
}

/// The link stored as `stored` at `slot`, unchecked (see [`check_link`]).
#[inline(always)]
pub fn decode_link(stored: usize, slot: usize) -> usize {
    if hardened::ENABLED {
        hardened::decode_link(stored, slot)
    } else {
        stored
    }
}

/// Whether `link` is null or a free block of `order` in a live buddy region, so that its links
/// may be read.
#[inline]
fn is_free_block_or_null(link: usize, order: u32) -> bool {
    if link == 0 {
        return true;
    }
    if region_map::owner_of(link as *const u8) != Owner::Buddy
        || !link.is_multiple_of(1 << order)
        || link - region::base_of(link) < META_SIZE
    {
        return false;
    }
    // SAFETY: the region map says `link` lies in a live buddy region, so its tag byte is mapped.
    unsafe { get_tag(link) & !TAG_CLEAN == TAG_FREE | order as u8 }
}

/// Checks a link just decoded from the free block `node` of `order` before it is followed;
/// aborts with a corrupted free list report unless it is null or a free block of `order`.
#[inline(always)]
pub fn check_link(link: usize, node: usize, order: u32) {
    if hardened::ENABLED && !is_free_block_or_null(link, order) {
        corrupt(node);
    }
}

/// Reports the free block `node` as holding a corrupted link (hardened builds).
#[cold]
pub fn corrupt(node: usize) -> ! {
    hardened::misuse(NAME, Misuse::CorruptFreeList, node as *const u8)
}
