//! The slab allocator's checks under the `hardened` feature (each compiles away without it).
//!
//! Each object carries keyed words (the key is the process's random [`hardened::key`], mixed
//! with the object's address, so no value is valid at another address); which word holds what
//! says where the object is:
//!
//! | object | first word | last word |
//! |---|---|---|
//! | with a user | the user's (0 when handed out) | canary |
//! | free outside its slab (magazine, depot) | *loose* tag | canary |
//! | free inside its slab | encoded free-list link | *freed* tag |
//!
//! - The **canary** lies past every requested byte (the caches are chosen for the request plus
//!   [`CANARY`] bytes). It is written when the object leaves its slab ([`on_leave_slab`]) and
//!   stays there while the object cycles between users and magazines, so the common alloc and
//!   free touch the last word only to read it, at the free. (A write after free into a cached
//!   object's last word is therefore reported at the object's next free, as a heap overflow.)
//! - The **loose tag** marks a freed object in a magazine: a free finding it is a double free;
//!   an alloc not finding it ([`on_alloc`], which then clears it) reports a write after free as a
//!   corrupted free list.
//! - Inside its slab, the first word is the free list's link, stored encoded
//!   ([`encode_free_link`]) and checked on use ([`decode_free_link`]: it must name an object of
//!   the same slab), and the last word holds the **freed tag** ([`on_enter_slab`]): a free
//!   finding it is a double free. The depot's magazine links are encoded and checked too.
//!
//! A free ([`free_passes`] on the fast path) first checks by arithmetic alone that the pointer
//! starts an object of the cache its `Layout` names (object offset from the slab's aligned base, a
//! multiplication instead of a division), then that the last word is the canary and the first word
//! not the loose tag. Only when one of these fails is the slab descriptor read ([`free_misuse`]): a
//! pointer not starting an object of that cache (wrong slab owner, wrong size, past the carved
//! objects) aborts with "invalid free", else the words tell a double free from a heap overflow. A
//! pointer that passes the arithmetic in another cache's slab cannot pass the word checks: the
//! canary for its address is never written at the last word of a `size`-byte object there. A
//! pointer in no region of ours is foreign ("invalid free"). The checks are O(1): no list or
//! magazine is scanned. The fast paths call nothing that returns (a failed quick check leaves
//! through a tail call), so they save no registers, and read the tag key without the
//! draw-on-first-use branch ([`hardened::tag_key_drawn`]): a block marked with it proves it drawn.

use super::classes::{slab_units, NUM_CLASSES, SIZES};
use super::magazine::Magazine;
use super::region::{self, FreeObject, SlabDesc, UNIT_SIZE};
use crate::hardened::{self, Misuse};
use crate::region_map::{self, Owner};

const NAME: &str = "slab";
const FREED: usize = 0x5ab_f4ee_d00d_u64 as usize;
const LOOSE: usize = 0x1005_e0b1_ec75_u64 as usize;
const WORD: usize = core::mem::size_of::<usize>();

/// Bytes reserved after each request for the canary (0 without the feature).
pub const CANARY: usize = hardened::CANARY_BYTES;

/// Where a cache's objects lie in their slab, for the arithmetic boundary check.
#[derive(Clone, Copy)]
struct Geometry {
    /// `u64::MAX / size + 1`: an offset `n < 2^32` is a multiple of the size exactly when
    /// `n * c (mod 2^64) < c` (Lemire, Kaser & Kurz 2019), which spares the free path a division.
    c: u64,
    /// Bytes of a slab minus one: a slab is aligned to its own size (one unit, or an aligned
    /// group of units inside an aligned region), so `addr & span_mask` is the offset from its
    /// base.
    span_mask: u32,
    /// The end of the slab's last whole object, as an offset (its `carve_end - base`).
    limit: u32,
}

const GEOMETRY: [Geometry; NUM_CLASSES] = {
    let mut t = [Geometry {
        c: 0,
        span_mask: 0,
        limit: 0,
    }; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        let span = slab_units(i) * UNIT_SIZE;
        t[i] = Geometry {
            c: u64::MAX / SIZES[i] as u64 + 1,
            span_mask: (span - 1) as u32,
            limit: (span / SIZES[i] * SIZES[i]) as u32,
        };
        i += 1;
    }
    t
};

/// The geometry of cache `class`.
#[inline(always)]
fn geometry(class: usize) -> Geometry {
    debug_assert!(class < NUM_CLASSES);
    // SAFETY: every caller passes a class from `class_for`, which is < NUM_CLASSES.
    unsafe { *GEOMETRY.get_unchecked(class) }
}

/// Whether `offset` (below 2^32) is a multiple of cache `class`'s object size.
#[inline(always)]
fn is_object_offset(offset: usize, class: usize) -> bool {
    let c = geometry(class).c;
    (offset as u64).wrapping_mul(c) < c
}

/// The object size of cache `class`.
#[inline(always)]
fn size_of_class(class: usize) -> usize {
    debug_assert!(class < NUM_CLASSES);
    // SAFETY: as in `geometry`.
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

/// Checks the loose tag of a block just taken from a magazine and clears it (the canary is in
/// place since the object left its slab).
///
/// # Safety
/// `block` must be an object of cache `class` just handed to the caller (not null).
#[inline(always)]
pub unsafe fn on_alloc(block: *mut u8, class: usize) {
    if !hardened::ENABLED {
        return;
    }
    // A user object holds a request of at least 1 byte and the canary: two words or more, so
    // clearing the first word leaves the canary.
    debug_assert!(!block.is_null() && size_of_class(class) > WORD);
    let first = block.cast::<usize>();
    // The object left its slab marked with the tag key, so the key is drawn.
    let key = hardened::tag_key_drawn();
    // SAFETY: the object is ours; its first word lies inside it.
    unsafe {
        if first.read() != loose_tag(block, key) {
            hardened::misuse(NAME, Misuse::CorruptFreeList, block);
        }
        // Cleared rather than left: the tag would tell the user the key.
        first.write(0);
    }
}

/// The quick check of a free of `block` as an object of cache `class`: by arithmetic, a start
/// of an object of that cache, whose last word is the canary and whose first word is not the
/// loose tag. If it passes, marks the block loose and returns true; if not, the caller must
/// call [`free_misuse`] (kept out of line so that the fast path calls nothing that returns).
///
/// # Safety
/// `block` must lie in a region the region map names [`Owner::Slab`].
#[inline(always)]
pub unsafe fn free_passes(block: *mut u8, class: usize) -> bool {
    if !hardened::ENABLED {
        return true;
    }
    let addr = block as usize;
    let g = geometry(class);
    let offset = addr & g.span_mask as usize;
    if offset < g.limit as usize && is_object_offset(offset, class) {
        // A live object of this cache left its slab marked with the tag key, so the key is
        // drawn; if it is not, the canary check fails and `free_misuse` sorts the case out.
        let key = hardened::tag_key_drawn();
        let first = block.cast::<usize>();
        let last = last_word(block, size_of_class(class));
        let loose = loose_tag(block, key);
        // If the pointer is no object of this cache the two words are someone else's, only
        // read here: the checks fail and `free_misuse` takes over.
        // SAFETY: an object offset below the slab's last whole object: both words lie, aligned,
        // in the slab's span of this Slab region (mapped: the caller's contract).
        unsafe {
            if last.read() == hardened::canary_keyed(addr, key) && first.read() != loose {
                // A live object of this cache: its words are the caller's to give up.
                first.write(loose);
                return true;
            }
        }
    }
    false
}

/// The free of `block` as an object of cache `class` failed a quick check: reads its slab
/// descriptor and aborts with the kind of misuse (invalid free, double free or heap overflow).
/// Marks the block loose and returns if it proves to be a live object after all.
///
/// # Safety
/// As for [`free_passes`].
#[cold]
#[inline(never)]
pub unsafe fn free_misuse(block: *mut u8, class: usize) {
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
    let key = hardened::tag_key();
    let first = block.cast::<usize>();
    let last = last_word(block, size_of_class(class));
    // SAFETY: `block` starts an object of this cache (checked), so its words are ours to read.
    let (first_word, last_word) = unsafe { (first.read(), last.read()) };
    if last_word == freed_tag(block, key) || first_word == loose_tag(block, key) {
        hardened::misuse(NAME, Misuse::DoubleFree, block);
    }
    if last_word != hardened::canary_keyed(addr, key) {
        hardened::misuse(NAME, Misuse::HeapOverflow, block);
    }
    // SAFETY: a live object of this cache, given up by the caller.
    unsafe { first.write(loose_tag(block, key)) };
}

/// Marks an object of `size` bytes leaving its slab for a magazine (or straight for a caller):
/// canary in its last word, loose tag in its first, as [`on_alloc`] expects.
///
/// # Safety
/// `obj` must be a free object of `size` bytes, just taken out of its slab by the caller.
#[inline(always)]
pub unsafe fn on_leave_slab(obj: *mut u8, size: usize) {
    if hardened::ENABLED {
        let key = hardened::tag_key();
        // SAFETY: the caller's contract: the object's words are ours.
        unsafe {
            last_word(obj, size).write(hardened::canary_keyed(obj as usize, key));
            obj.cast::<usize>().write(loose_tag(obj, key));
        }
    }
}

/// Marks an object of `size` bytes going back into its slab: the freed tag replaces the canary,
/// so a later free of it is a double free (its first word becomes the free-list link).
///
/// # Safety
/// `obj` must be an object of `size` bytes that is out of its slab and no longer used.
#[inline(always)]
pub unsafe fn on_enter_slab(obj: *mut u8, size: usize) {
    if hardened::ENABLED {
        // SAFETY: the caller's contract: the object's words are ours.
        unsafe { last_word(obj, size).write(freed_tag(obj, hardened::tag_key())) };
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
