//! The `hardened` feature's checks for the buddy allocator (see [`crate::hardened`]), beyond the
//! order tags that catch double and invalid frees (in `mod.rs`). Every function here is behind
//! `if hardened::ENABLED`: without the feature the links are stored as they are, no canary or
//! cache tag is written, and the fast paths are those of the normal build.
//!
//! Block layout in hardened builds:
//!
//! - **Canary**: a handed-out block whose order leaves at least 8 bytes of slack after the
//!   requested ones (all but requests within 8 bytes of a power of two) holds
//!   [`hardened::canary_keyed`] of its address in its last word (`addr + 2^order - 8`) and carries
//!   [`TAG_CANARY`] in its tag; the canary is written on allocation (and in-place realloc) and
//!   checked on free and realloc; a mismatch is a heap overflow. Its usable size is then
//!   `2^order - 8`. Blocks are never grown to make room (a 64-byte request stays a 64-byte block,
//!   without canary): growing it would double the memory of power-of-two workloads.
//! - **Cached tag**: a block in a thread cache holds [`cached_tag`] in its first word, written when
//!   it enters the cache, cleared when the cache hands it out again, and checked when the cache
//!   gives it back to the arena; a mismatch there means the block was written after it was freed.
//!   A free of a block whose order tag says used but whose first word is the cached tag is a
//!   double free ([`is_cached`]). The order tag itself is not rewritten on the way into and out of
//!   a cache (tags of neighbouring blocks share cache lines, which threads would take from each
//!   other); a double free that follows a write clobbering the cached tag goes unnoticed on the
//!   spot, and is caught as a corrupted free list when the cache gives the block back. (A write into a cached block cannot steer the
//!   allocator: the cache is an array of addresses and never reads the block. Checking the tag
//!   when the cache hands the block out again would load a cold block on every allocation.)
//! - **Free-list links**: the arena's links in the first two words of a free block are encoded
//!   with [`hardened::encode_link`] and, when followed, decoded and checked: a link must be null or
//!   a free block of the same order in a buddy region (region map and tag); anything else is
//!   reported as a corrupted free list and never followed. (The neighbours' back links are not
//!   read, as glibc's safe unlinking does: two more cold loads per unlink.)

use super::region::{self, get_tag, set_tag, META_SIZE, TAG_CANARY, TAG_CLEAN, TAG_FREE, TAG_USED};
use crate::hardened::{self, Misuse};
use crate::region_map::{self, Owner};

/// The name the misuse reports carry.
const NAME: &str = "buddy";

/// Bytes at the end of a block kept for the canary (0 without the feature).
pub const CANARY_BYTES: usize = hardened::CANARY_BYTES;
/// The canary's size, feature or not.
const WORD: usize = core::mem::size_of::<usize>();

/// Bytes the canary takes from a block with tag `tag`: [`CANARY_BYTES`] if it carries
/// [`TAG_CANARY`] in a hardened build, else 0.
#[inline(always)]
pub fn canary_bytes(tag: u8) -> usize {
    if hardened::ENABLED && tag & (TAG_USED | TAG_CANARY) == TAG_USED | TAG_CANARY {
        CANARY_BYTES
    } else {
        0
    }
}

/// The address of the canary word of the block at `addr` of `order`.
#[inline(always)]
fn canary_slot(addr: usize, order: u32) -> *mut usize {
    (addr + (1usize << order) - WORD) as *mut usize
}

/// Arms the block at `addr` of `order`, just allocated (or resized in place) for `size` bytes:
/// if it has room after them, writes the canary into its last word and tags it
/// `TAG_USED | TAG_CANARY | order`; otherwise tags it `TAG_USED | order`. Nothing without the
/// feature.
///
/// # Safety
/// `addr` must be a block of `order` of a live region, owned by the caller, `size <= 2^order`.
#[inline(always)]
pub unsafe fn arm(addr: usize, order: u32, size: usize) {
    if hardened::ENABLED {
        let mut tag = TAG_USED | order as u8;
        if (1usize << order) - size >= WORD {
            tag |= TAG_CANARY;
            // SAFETY: the last word lies inside the caller's block, past its `size` bytes.
            unsafe {
                canary_slot(addr, order).write(hardened::canary_keyed(addr, hardened::tag_key()))
            };
        }
        // The tag usually already says so (a block leaving a thread cache keeps its tag): then
        // it is only read. Tags of neighbouring blocks share cache lines, so writing it on every
        // allocation would bounce the line between threads using nearby blocks.
        // SAFETY: the caller owns the block, whose tag byte lies in its live region.
        unsafe {
            if get_tag(addr) != tag {
                set_tag(addr, tag);
            }
        }
    }
}

/// Checks the canary of the live block at `addr` of `order` with tag `tag`, if it has one;
/// aborts with a heap overflow report if it was overwritten.
///
/// # Safety
/// `addr` must be a live block of `order` (its tag `tag` checked by the caller).
#[inline(always)]
pub unsafe fn check_canary(addr: usize, order: u32, tag: u8) {
    if canary_bytes(tag) != 0 {
        // SAFETY: the last word lies inside the live block.
        let word = unsafe { canary_slot(addr, order).read() };
        if word != hardened::canary_keyed(addr, hardened::tag_key()) {
            hardened::misuse(NAME, Misuse::HeapOverflow, addr as *const u8);
        }
    }
}

/// Clears [`TAG_CANARY`] from the tag of the block at `addr` of `order`, about to go back to its
/// arena (whose free lists expect `TAG_USED | order`). Nothing without the feature.
///
/// # Safety
/// `addr` must be a block of `order` of a live region, given up by the caller, under its arena's
/// lock or otherwise owned by the caller.
#[inline(always)]
pub unsafe fn disarm(addr: usize, order: u32) {
    if hardened::ENABLED {
        // SAFETY: the caller's contract.
        unsafe { set_tag(addr, TAG_USED | order as u8) };
    }
}

/// The first word of a block sitting in a thread cache (never equal to the block's canary).
#[inline(always)]
fn cached_tag(addr: usize, key: usize) -> usize {
    !hardened::canary_keyed(addr, key)
}

/// Tags the block at `addr` entering a thread cache (its first word becomes [`cached_tag`]).
///
/// # Safety
/// `addr` must be a block (at least 16 bytes) owned by the calling thread's cache.
#[inline(always)]
pub unsafe fn tag_cached(addr: usize) {
    if hardened::ENABLED {
        // SAFETY: the block's first word is the cache's.
        unsafe { (addr as *mut usize).write(cached_tag(addr, hardened::tag_key())) };
    }
}

/// Clears the cache tag of the block at `addr`, leaving a thread cache to be handed out (so
/// that freeing it is not mistaken for a double free even if its user never writes it).
///
/// # Safety
/// `addr` must be a block just taken from the calling thread's cache, owned by the caller.
#[inline(always)]
pub unsafe fn untag_cached(addr: usize) {
    if hardened::ENABLED {
        // SAFETY: the block's first word is the caller's.
        unsafe { (addr as *mut usize).write(0) };
    }
}

/// Whether the handed-out-looking block at `addr` (tagged used) carries the cache tag in its
/// first word: it sits in some thread's cache, so freeing it is a double free. A live block's
/// first word is its user's data, which matches the keyed tag only by chance (2^-64) or if the
/// key leaked.
///
/// # Safety
/// `addr` must be a block of a live buddy region tagged used.
#[inline(always)]
pub unsafe fn is_cached(addr: usize) -> bool {
    if !hardened::ENABLED {
        return false;
    }
    // SAFETY: the block's first word lies in the block (at least 16 bytes).
    let word = unsafe { (addr as *const usize).read() };
    word == cached_tag(addr, hardened::tag_key())
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
        if word != cached_tag(addr, hardened::tag_key()) {
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
