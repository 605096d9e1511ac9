//! The `hardened` feature's checks for the buddy allocator (see [`crate::hardened`]), beyond the
//! order tags that catch double and invalid frees (in `mod.rs`). Every function here is behind
//! `if hardened::ENABLED`: without the feature the links are stored as they are, no canary or
//! cache tag is written, and the fast paths are those of the normal build.
//!
//! Block layout in hardened builds:
//!
//! - **Canary**: a handed-out block whose order leaves at least 8 bytes of slack after the
//!   requested ones (all but requests within 8 bytes of a power of two) holds
//!   [`hardened::canary_keyed`] of its address in its last word (`addr + 2^order - 8`); the canary
//!   is written on allocation (and in-place realloc) and checked on free and realloc; a mismatch
//!   is a heap overflow. Whether a block has one follows from its order and the size its `Layout`
//!   gives ([`has_canary`]), so the block's tag does not say: it stays `TAG_USED | order` from the
//!   arena to the free, however often the block passes through a thread cache, and an
//!   allocation never reads it. (A tag bit for the canary changed with the request's slack, so
//!   every allocation read the tag's metadata line and branched on it, a branch mispredicted on
//!   mixed sizes.) A free without a size (C's `free`) cannot tell, so such blocks are requested
//!   through [`crate::hardened::UnsizedPad::unsized_request`] (C's `malloc` is), which asks for the block
//!   that `size + 8` bytes take less its last 8 bytes, and so always have one; their usable size
//!   is `2^order - 8`. Blocks are never grown to make room for a sized request
//!   (a 64-byte request stays a 64-byte block, without canary): growing it would double the
//!   memory of power-of-two workloads. A C request of a power of two is grown by its padding
//!   (`malloc(4096)` takes an 8 KiB block in a hardened build). An allocation's fast path
//!   ([`arm_fresh`]) stores the canary without a branch on the slack: a block without slack gets
//!   it in its first word, dead data to its new user. (With the branch, alloc-test's mixed sizes
//!   mispredicted it on about a quarter of its operations; the free's test of the slack is left a
//!   branch: without it the free measured no faster.)
//! - **Cached tag**: a block in a thread cache holds [`cached_tag`] in its first word, written when
//!   it enters the cache (by [`check_free`] when it is freed, in the same pass that checks it, or
//!   by [`tag_cached`] when a refill takes it from the arena), cleared when the cache hands it out
//!   again, and checked when the cache gives it back to the arena; a mismatch there means the block
//!   was written after it was freed. A free of a block whose order tag says used but whose first
//!   word is the cached tag is a double free ([`check_free`]). The order tag itself is not
//!   rewritten on the way into and out of a cache (tags of neighbouring blocks share cache lines,
//!   which threads would take from each other: rewriting them on every free and allocation ran
//!   Hoard's cache-scratch at a third of the plain build's speed on two threads); a double free
//!   that follows a write clobbering the cached tag goes unnoticed on the spot, and is caught as a
//!   corrupted free list when the cache gives the block back. (A write into a cached block cannot
//!   steer the allocator: the cache is an array of addresses and never reads the block. Checking
//!   the tag when the cache hands the block out again would load a cold block on every allocation.)
//! - **Free-list links**: the arena's links in the first two words of a free block are encoded
//!   with [`hardened::encode_link`] (the arena keeps a copy of the key) and, when followed,
//!   decoded and checked: a link must be null or a free block of the same order in a buddy region
//!   (the region map, unless the link lies in the region of the block it was read from; then its
//!   tag); a null back link must belong to the list's head; anything else is reported as a
//!   corrupted free list and never followed. (The neighbours' back links are not read, as glibc's
//!   safe unlinking does: that would accept any address whose word encodes the right link, where
//!   the tag check accepts only free blocks of the order, even if the key leaked.)

use super::region::{self, get_tag, META_SIZE, TAG_CLEAN, TAG_FREE};
use crate::hardened::{self, Misuse};
use crate::region_map::{self, Owner, REGION_SIZE};

/// The name the misuse reports carry.
const NAME: &str = "buddy";

/// Bytes at the end of a block kept for the canary (0 without the feature): what a block freed
/// without its size (always padded for a canary) loses of its usable size.
pub const CANARY_BYTES: usize = hardened::CANARY_BYTES;
/// The canary's size, feature or not.
const WORD: usize = core::mem::size_of::<usize>();

/// Whether a block of `order` holding a request of `size` bytes has a canary: in a hardened build,
/// when the request leaves at least a word after it.
#[inline(always)]
pub fn has_canary(order: u32, size: usize) -> bool {
    hardened::ENABLED && (1usize << order) - size >= WORD
}

/// The address of the canary word of the block at `addr` of `order`.
#[inline(always)]
fn canary_slot(addr: usize, order: u32) -> *mut usize {
    (addr + (1usize << order) - WORD) as *mut usize
}

/// Arms the block at `addr` of `order`, just allocated (or resized in place) for `size` bytes:
/// if it has room after them ([`has_canary`]), writes the canary into its last word. Nothing
/// without the feature.
///
/// # Safety
/// `addr` must be a block of `order` of a live region, owned by the caller, `size <= 2^order`.
#[inline(always)]
pub unsafe fn arm(addr: usize, order: u32, size: usize) {
    if has_canary(order, size) {
        let canary = hardened::canary_keyed(addr, hardened::tag_key());
        // SAFETY: the last word lies inside the caller's block, past its `size` bytes.
        unsafe { canary_slot(addr, order).write(canary) };
    }
}

/// [`arm`] for a block just allocated, whose bytes are all the caller's to set: without a branch
/// on the room (which follows the request size, so mixed sizes mispredict it), the canary is
/// stored either in the last word or, if the request leaves no room, in the first word, where
/// it is only dead data for the new user (never the cache tag, so a free before the user writes
/// it is no double free). Not for a block resized in place, whose first word is the user's.
///
/// # Safety
/// As for [`arm`], and the block's contents must be dead (a fresh allocation).
#[inline(always)]
pub unsafe fn arm_fresh(addr: usize, order: u32, size: usize) {
    if hardened::ENABLED {
        let last = canary_slot(addr, order) as usize;
        let slot = if has_canary(order, size) { last } else { addr };
        // SAFETY: either the last word past the request's bytes, or the first word of a block
        // whose contents are dead; both lie in the caller's block.
        unsafe { (slot as *mut usize).write(hardened::canary_keyed(addr, hardened::tag_key())) };
    }
}

/// The first word of a block sitting in a thread cache (never equal to the block's canary).
#[inline(always)]
fn cached_tag(addr: usize, key: usize) -> usize {
    !hardened::canary_keyed(addr, key)
}

/// The tag key [`tag_cached`] and [`check_cached`] take (0 without the feature), read once for a
/// batch of blocks.
#[inline(always)]
pub fn cache_key() -> usize {
    if hardened::ENABLED {
        hardened::tag_key()
    } else {
        0
    }
}

/// Tags the block at `addr` entering a thread cache (its first word becomes [`cached_tag`]);
/// `key` is [`cache_key`].
///
/// # Safety
/// `addr` must be a block (at least 16 bytes) owned by the calling thread's cache.
#[inline(always)]
pub unsafe fn tag_cached(addr: usize, key: usize) {
    if hardened::ENABLED {
        // SAFETY: the block's first word is the cache's.
        unsafe { (addr as *mut usize).write(cached_tag(addr, key)) };
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

/// Checks the block at `addr` of `order`, tagged used (checked by the caller) and holding a request
/// of `size` bytes, as it is freed: if its first word is the cache tag it sits in some thread's
/// cache, so this is a double free; if it has a canary ([`has_canary`]) that was overwritten, a
/// heap overflow. Aborts with the report either way. A live block's first word is its user's
/// data, which matches the keyed tag only by chance (2^-64) or if the key leaked. The tag and the
/// canary are both derived from one keyed hash of the address, computed once; with `cache`, the
/// block passed the checks and is being freed, and its first word becomes the cache tag (one
/// store for the thread cache it goes to; a block that goes to its arena instead has that word
/// overwritten by its free-list link). Nothing without the feature.
///
/// # Safety
/// `addr` must be a block of `order` of a live buddy region tagged used, allocated (or last
/// resized) for `size` bytes; with `cache`, one the caller gives up.
#[inline(always)]
pub unsafe fn check_free(addr: usize, order: u32, size: usize, cache: bool) {
    if hardened::ENABLED {
        let canary = hardened::canary_keyed(addr, hardened::tag_key());
        // SAFETY: the block's first word lies in the block (at least 16 bytes).
        let first = unsafe { (addr as *const usize).read() };
        if first == !canary {
            hardened::misuse(NAME, Misuse::DoubleFree, addr as *const u8);
        }
        if has_canary(order, size) {
            // SAFETY: the last word lies inside the live block.
            let word = unsafe { canary_slot(addr, order).read() };
            if word != canary {
                hardened::misuse(NAME, Misuse::HeapOverflow, addr as *const u8);
            }
        }
        if cache {
            // SAFETY: the block is the caller's, given up; its first word lies in it.
            unsafe { (addr as *mut usize).write(!canary) };
        }
    }
}

/// Checks the tag of the block at `addr` leaving a thread cache; aborts with a corrupted free
/// list report if the block was written while cached. `key` is [`cache_key`].
///
/// # Safety
/// `addr` must be a block the calling thread's cache holds, tagged by [`tag_cached`] (or
/// [`check_free`]).
#[inline(always)]
pub unsafe fn check_cached(addr: usize, key: usize) {
    if hardened::ENABLED {
        // SAFETY: the block's first word is the cache's.
        let word = unsafe { (addr as *const usize).read() };
        if word != cached_tag(addr, key) {
            hardened::misuse(NAME, Misuse::CorruptFreeList, addr as *const u8);
        }
    }
}

/// The word stored at `slot` (a link field of a free block) for the link `link`; `key` is
/// [`hardened::key`] (kept by the arena).
#[inline(always)]
pub fn encode_link(link: usize, slot: usize, key: usize) -> usize {
    if hardened::ENABLED {
        hardened::encode_link_keyed(link, slot, key)
    } else {
        link
    }
}

/// The link stored as `stored` at `slot`, unchecked (see [`check_link`]); `key` is
/// [`hardened::key`] (kept by the arena).
#[inline(always)]
pub fn decode_link(stored: usize, slot: usize, key: usize) -> usize {
    if hardened::ENABLED {
        hardened::decode_link_keyed(stored, slot, key)
    } else {
        stored
    }
}

/// Whether `link`, read from the free block `node`, is null or a free block of `order` in a live
/// buddy region, so that its links may be read and written. `node` lies in a live buddy region,
/// so a link into the same region needs no region map lookup. Only granule alignment is tested:
/// a tag byte is nonzero only where a block starts, and a block of `order` starts on a multiple
/// of `2^order`, so a granule whose tag reads free of `order` is aligned to it (the links
/// accepted are exactly those a test of the full alignment accepts).
#[inline(always)]
fn is_free_block_or_null(link: usize, node: usize, order: u32) -> bool {
    if link == 0 {
        return true;
    }
    if (link ^ node) >= REGION_SIZE && region_map::owner_of(link as *const u8) != Owner::Buddy {
        return false;
    }
    if !link.is_multiple_of(region::GRANULE) || link - region::base_of(link) < META_SIZE {
        return false;
    }
    // SAFETY: `link` lies in `node`'s region or, by the region map, in another live buddy region,
    // so its tag byte is mapped.
    unsafe { get_tag(link) & !TAG_CLEAN == TAG_FREE | order as u8 }
}

/// Checks a link just decoded from the free block `node` of `order` (a free block in a live
/// buddy region) before it is followed; aborts with a corrupted free list report unless it is
/// null or a free block of `order`.
#[inline(always)]
pub fn check_link(link: usize, node: usize, order: u32) {
    if hardened::ENABLED && !is_free_block_or_null(link, node, order) {
        corrupt(node);
    }
}

/// Reports the free block `node` as holding a corrupted link (hardened builds).
#[cold]
pub fn corrupt(node: usize) -> ! {
    hardened::misuse(NAME, Misuse::CorruptFreeList, node as *const u8)
}
