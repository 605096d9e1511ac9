//! Bump's hardened checks: the size word in front of every block carries, in hardened builds, a
//! freed flag and a tag keyed from the block's address, and a canary follows the block; in plain
//! builds the word is the size alone and the checks compile to nothing.

use core::ptr;

use super::{CHUNK_SIZE, HEADER};
use crate::hardened::{self, Misuse};

/// In hardened builds the size word carries, above the size's 32 bits, a freed flag and a tag
/// derived from the block's address and the process key, so a free of a pointer that does not
/// start a block (tag mismatch) or of a freed block (flag set) is caught.
const SIZE_MASK: usize = if hardened::ENABLED {
    0xFFFF_FFFF
} else {
    usize::MAX
};
const FREED_BIT: usize = 1 << 32;
const TAG_MASK: usize = !(SIZE_MASK | FREED_BIT);

/// Writes the size word in front of `block` (and, hardened, the canary after its `size` bytes,
/// keyed with `key`, the process tag key).
///
/// # Safety
/// The word before `block` and, hardened, `CANARY_BYTES` after `block + size` belong to the block.
#[inline(always)]
pub(super) unsafe fn write_size_word(block: usize, size: usize, key: usize) {
    if hardened::ENABLED {
        // One keyed hash serves as both the size word's tag and the canary.
        let canary = hardened::canary_keyed(block, key);
        // SAFETY: the caller guarantees both words belong to the block.
        unsafe {
            ((block - HEADER) as *mut usize).write(size | (canary & TAG_MASK));
            ((block + size) as *mut usize).write_unaligned(canary);
        }
    } else {
        // SAFETY: the caller guarantees the word belongs to the block.
        unsafe { ((block - HEADER) as *mut usize).write(size) };
    }
}

/// The size recorded in front of `block`.
///
/// # Safety
/// `block - HEADER` must be a readable word of a Bump chunk.
#[inline(always)]
pub(super) unsafe fn read_size(block: usize) -> usize {
    // SAFETY: forwarded contract.
    unsafe { ((block - HEADER) as *const usize).read() & SIZE_MASK }
}

/// Hardened check of a block about to be freed (`free`) or resized: stops the program on an
/// invalid pointer, a double free or an overwritten canary; marks the block freed if `free`.
///
/// # Safety
/// `block` must lie in a mapped Bump chunk.
#[inline]
pub(super) unsafe fn check_live(block: usize, free: bool) {
    let chunk = block & !(CHUNK_SIZE - 1);
    if !block.is_multiple_of(HEADER) || block < chunk + HEADER {
        hardened::misuse("bump", Misuse::InvalidFree, block as *const u8);
    }
    let word_ptr = (block - HEADER) as *mut usize;
    // SAFETY: a word inside the caller's mapped chunk.
    let word = unsafe { word_ptr.read() };
    let canary = hardened::canary_for(block);
    if word & TAG_MASK != canary & TAG_MASK {
        hardened::misuse("bump", Misuse::InvalidFree, block as *const u8);
    }
    if word & FREED_BIT != 0 {
        hardened::misuse("bump", Misuse::DoubleFree, block as *const u8);
    }
    let size = word & SIZE_MASK;
    // SAFETY: a live block's canary follows its size bytes inside the chunk.
    if unsafe { ((block + size) as *const usize).read_unaligned() } != canary {
        hardened::misuse("bump", Misuse::HeapOverflow, block as *const u8);
    }
    if free {
        // SAFETY: the block's own size word and bytes, which the caller is giving up.
        unsafe {
            word_ptr.write(word | FREED_BIT);
            if hardened::FILL_FREED {
                ptr::write_bytes(block as *mut u8, hardened::FREED_BYTE, size);
            }
        }
    }
}
