//! The slab allocator's checks under the `hardened` feature (each compiles away without it).
//!
//! Every object carries two keyed words (the key is the process's random [`hardened::key`],
//! mixed with the object's address, so no value is valid at another address):
//!
//! - its **last word** holds a canary while the object is live (written by [`on_alloc`]; the
//!   caches are chosen for the request plus [`CANARY`] bytes, so the canary lies past every
//!   requested byte) and a *freed* tag while it is free. A free finding the freed tag there is a
//!   double free; finding anything else but the canary, a heap overflow.
//! - its **first word**, while the object is free outside its slab (in a magazine or a depot),
//!   holds a *loose* tag, checked when the object is handed out: a write after free is reported
//!   as a corrupted free list. Inside its slab the first word is the free list's link, stored
//!   encoded ([`encode_free_link`]) and checked on use ([`decode_free_link`]: it must name an
//!   object of the same slab). The depot's magazine links are encoded and checked the same way.
//!
//! A pointer freed must start an object of the cache its `Layout` names (right slab owner, right
//! object size, on an object boundary, a multiplication instead of a division); a pointer in no
//! region of ours is foreign. Both abort with "invalid free". The checks are O(1): no list or
//! magazine is scanned.

use super::magazine::Magazine;
use super::region::{self, FreeObject, SlabDesc};
use super::size_classes::{NUM_CLASSES, SIZES};
use crate::hardened::{self, Misuse};
use crate::region_map::{self, Owner};

const NAME: &str = "slab";
const FREED: usize = 0x5ab_f4ee_d00d_u64 as usize;
const LOOSE: usize = 0x1005_e0b1_ec75_u64 as usize;
const WORD: usize = core::mem::size_of::<usize>();

/// Bytes reserved after each request for the canary (0 without the feature).
pub const CANARY: usize = hardened::CANARY_BYTES;

/// Per cache, `c = u64::MAX / size + 1`: an offset `n < 2^32` is a multiple of the size exactly
/// when `n * c (mod 2^64) < c` (Lemire, Kaser & Kurz 2019), which spares the free path a
/// division.
const DIVISIBILITY: [u64; NUM_CLASSES] = {
    let mut t = [0u64; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        t[i] = u64::MAX / SIZES[i] as u64 + 1;
        i += 1;
    }
    t
};

/// Whether `offset` (below 2^32) is a multiple of cache `class`'s object size.
#[inline(always)]
fn is_object_offset(offset: usize, class: usize) -> bool {
    debug_assert!(class < NUM_CLASSES);
    // SAFETY: every caller passes a class from `class_for`, which is < NUM_CLASSES.
    let c = unsafe { *DIVISIBILITY.get_unchecked(class) };
    (offset as u64).wrapping_mul(c) < c
}

/// The object size of cache `class`.
#[inline(always)]
fn size_of_class(class: usize) -> usize {
    debug_assert!(class < NUM_CLASSES);
    // SAFETY: as in `is_object_offset`.
    unsafe { *SIZES.get_unchecked(class) }
}

#[inline(always)]
fn last_word(block: *mut u8, size: usize) -> *mut usize {
    // Object sizes are multiples of 8, so the last word is aligned.
    block.wrapping_add(size - WORD).cast()
}

#[inline(always)]
fn freed_tag(block: *mut u8, key: usize) -> usize {
    key ^ FREED ^ block as usize
}

#[inline(always)]
fn loose_tag(block: *mut u8, key: usize) -> usize {
    (key ^ LOOSE ^ block as usize).rotate_left(17)
}

/// Checks the loose tag of a block just taken from a magazine and writes its canary.
///
/// # Safety
/// `block` must be null or an object of cache `class` just handed to the caller.
#[inline(always)]
pub unsafe fn on_alloc(block: *mut u8, class: usize) {
    if !hardened::ENABLED || block.is_null() {
        return;
    }
    let key = hardened::key();
    // SAFETY: the object is ours; its first and last words lie inside it.
    unsafe {
        if block.cast::<usize>().read() != loose_tag(block, key) {
            hardened::misuse(NAME, Misuse::CorruptFreeList, block);
        }
        last_word(block, size_of_class(class)).write(hardened::canary_keyed(block as usize, key));
    }
}

/// Checks a free of `block` as an object of cache `class` (its slab, boundary, canary and freed
/// tag) and marks it freed and loose; aborts on misuse.
///
/// # Safety
/// `block` must lie in a region the region map names [`Owner::Slab`].
#[inline(always)]
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
        s.cache as usize == class
            && s.size as usize == size_of_class(class)
            && addr >= s.base
            && addr < s.carve_end
            && is_object_offset(addr - s.base, class)
    };
    if !valid {
        hardened::misuse(NAME, Misuse::InvalidFree, block);
    }
    let key = hardened::key();
    let last = last_word(block, size_of_class(class));
    // SAFETY: `block` starts an object of this cache (checked), so its words are ours to read
    // and, since the caller frees it, to write.
    unsafe {
        let word = last.read();
        if word != hardened::canary_keyed(addr, key) {
            let kind = if word == freed_tag(block, key) {
                Misuse::DoubleFree
            } else {
                Misuse::HeapOverflow
            };
            hardened::misuse(NAME, kind, block);
        }
        last.write(freed_tag(block, key));
        block.cast::<usize>().write(loose_tag(block, key));
    }
}

/// Marks an object of `size` bytes leaving its slab for a magazine (or straight for a caller):
/// freed and loose, as [`on_alloc`] expects.
///
/// # Safety
/// `obj` must be a free object of `size` bytes, just taken out of its slab by the caller.
#[inline(always)]
pub unsafe fn on_leave_slab(obj: *mut u8, size: usize) {
    if hardened::ENABLED {
        let key = hardened::key();
        // SAFETY: the caller's contract: the object's words are ours.
        unsafe {
            last_word(obj, size).write(freed_tag(obj, key));
            obj.cast::<usize>().write(loose_tag(obj, key));
        }
    }
}

/// The word stored in the free object `slot` to link it to `next` (encoded with the key when
/// hardened).
#[inline(always)]
pub fn encode_free_link(next: *mut FreeObject, slot: *mut FreeObject) -> usize {
    if hardened::ENABLED {
        hardened::encode_link(next as usize, slot as usize)
    } else {
        next as usize
    }
}

/// The link stored in the free object `slot` of slab `s`; when hardened it must be null or an
/// object of the same slab below its carve point, else the program aborts (corrupted free list).
#[inline(always)]
pub fn decode_free_link(stored: usize, slot: *mut FreeObject, s: &SlabDesc) -> *mut FreeObject {
    if !hardened::ENABLED {
        return stored as *mut FreeObject;
    }
    let next = hardened::decode_link(stored, slot as usize);
    if next != 0
        && (next < s.base || next >= s.carve || !(next - s.base).is_multiple_of(s.size as usize))
    {
        hardened::misuse(NAME, Misuse::CorruptFreeList, slot.cast());
    }
    next as *mut FreeObject
}

/// The word stored in magazine `slot` to link it to `next` on a depot list.
#[inline(always)]
pub fn encode_magazine_link(next: *mut Magazine, slot: *mut Magazine) -> *mut Magazine {
    if hardened::ENABLED {
        hardened::encode_link(next as usize, slot as usize) as *mut Magazine
    } else {
        next
    }
}

/// The depot link stored in magazine `slot`; when hardened it must be null or lie in a slab
/// region, else the program aborts (corrupted free list).
#[inline(always)]
pub fn decode_magazine_link(stored: *mut Magazine, slot: *mut Magazine) -> *mut Magazine {
    if !hardened::ENABLED {
        return stored;
    }
    let next = hardened::decode_link(stored as usize, slot as usize) as *mut Magazine;
    if !next.is_null() && region_map::owner_of(next.cast()) != Owner::Slab {
        hardened::misuse(NAME, Misuse::CorruptFreeList, slot.cast());
    }
    next
}

/// Reports a free of a pointer that is in no slab of ours and no large block (hardened only).
#[inline]
pub fn on_foreign_free(block: *mut u8) {
    if hardened::ENABLED {
        hardened::misuse(NAME, Misuse::InvalidFree, block);
    }
}
