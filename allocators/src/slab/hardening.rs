//! The slab allocator's checks under the `hardened` feature (compiled away without it).
//!
//! - **Invalid free**: the pointer must start an object of the cache its `Layout` names (right
//!   slab owner, right object size, on an object boundary); a pointer in no region of ours is
//!   foreign. Both abort with "invalid free".
//! - **Double free**: a freed object carries a keyed tag in its last word (the key is the
//!   process's random [`hardened::key`], mixed with the object's address); freeing an object that
//!   still carries its tag aborts with "double free detected". Allocation clears the tag. This
//!   catches a second free while the object sits in a magazine or the depot (where freed objects
//!   spend their first while); in the slab layer of the 8-byte cache the tag word is the free
//!   list's link, so a double free there goes unnoticed.
//!
//! Not covered: canaries after objects (heap overflow) and encoded free-list links.

use super::region;
use super::size_classes::SIZES;
use crate::hardened::{self, Misuse};

const NAME: &str = "slab";
const FREED: usize = 0x5ab_f4ee_d00d_u64 as usize;

fn tag_slot(block: *mut u8, class: usize) -> *mut usize {
    // Object sizes are multiples of 8, so the last word is aligned.
    block
        .wrapping_add(SIZES[class] - core::mem::size_of::<usize>())
        .cast()
}

fn tag(block: *mut u8) -> usize {
    hardened::key() ^ FREED ^ block as usize
}

/// Clears the freed tag of a block just handed out.
///
/// # Safety
/// `block` must be an object of cache `class`, owned by the caller.
#[inline]
pub unsafe fn on_alloc(block: *mut u8, class: usize) {
    if hardened::ENABLED && !block.is_null() {
        // SAFETY: the last word of the caller's object.
        unsafe { tag_slot(block, class).write(0) };
    }
}

/// Checks a free of `block` as an object of cache `class` and tags it freed; aborts on misuse.
///
/// # Safety
/// `block` must lie in a region the region map names [`crate::Owner::Slab`].
#[inline]
pub unsafe fn on_free(block: *mut u8, class: usize) {
    if !hardened::ENABLED {
        return;
    }
    let addr = block as usize;
    // SAFETY: the caller's contract: the region header is mapped.
    let slab = unsafe { region::slab_of(addr) };
    let valid = !slab.is_null() && {
        // SAFETY: a non-null head names a descriptor in the same header; only fields fixed while
        // the slab is owned are read.
        let s = unsafe { &*slab };
        s.size as usize == SIZES[class]
            && s.cache as usize == class
            && addr >= s.base
            && addr < s.carve_end
            && (addr - s.base).is_multiple_of(s.size as usize)
    };
    if !valid {
        hardened::misuse(NAME, Misuse::InvalidFree, block);
    }
    let slot = tag_slot(block, class);
    // SAFETY: `block` starts an object of this cache (checked), so its last word is ours to read
    // and, since the caller frees it, to write.
    unsafe {
        if slot.read() == tag(block) {
            hardened::misuse(NAME, Misuse::DoubleFree, block);
        }
        slot.write(tag(block));
    }
}

/// Reports a free of a pointer that is in no slab of ours and no large block (hardened only).
#[inline]
pub fn on_foreign_free(block: *mut u8) {
    if hardened::ENABLED {
        hardened::misuse(NAME, Misuse::InvalidFree, block);
    }
}
