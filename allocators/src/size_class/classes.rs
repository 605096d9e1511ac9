//! The size-class table: which block size serves a request, and how the classes map onto pages.
//!
//! Classes are the word multiples 8..=64, then four per doubling: for sizes in `(2^e, 2^(e+1)]`
//! the classes are `5, 6, 7, 8 × 2^(e-2)` (80, 96, 112, 128, 160, 192, 224, 256, 320, ...),
//! up to [`MAX_SMALL_SIZE`] = 512 KiB: 60 classes in all.
//!
//! Worst-case rounding waste (checked by a test over every size): above 64 bytes a block is at
//! most 19.4% bigger than needed as a share of the block (`(class - size) / class < 0.2`, the worst
//! being 129 B in a 160 B block); at or below 64 bytes the waste is under one word (7 bytes).
//!
//! Lookup is branch-light: sizes up to [`DIRECT_MAX`] index a 129-entry table by `(size + 7) / 8`
//! (the thread heap keeps a page pointer per slot of that table, so the common allocation needs no
//! class lookup at all); larger sizes take a leading-zero count and two shifts.

/// Number of size classes.
pub const NUM_CLASSES: usize = 60;
/// The largest size served from size-class pages; bigger requests go to [`crate::large`].
pub const MAX_SMALL_SIZE: usize = 512 * 1024;
/// The largest alignment served from size-class pages (every page area starts on this boundary).
pub const MAX_SMALL_ALIGN: usize = 64 * 1024;
/// Sizes up to this are looked up through the direct table.
pub const DIRECT_MAX: usize = 1024;
/// The largest alignment served through the direct table: a size rounded up to a multiple of
/// it (at most 16) lands in a class that is a multiple of it too (8..=64 by words, then every
/// class is a multiple of 16), so `DIRECT_CLASS[(round_up(size, align) + 7) / 8]` is the class
/// [`class_for`] would pick. This matters: `malloc`-style callers ask for 16-byte alignment.
pub const DIRECT_ALIGN: usize = 16;
/// Slots of the direct table: `(size + 7) / 8` for `size <= DIRECT_MAX`.
pub const DIRECT_SLOTS: usize = DIRECT_MAX / 8 + 1;
/// The last class reachable through the direct table (its size is `DIRECT_MAX`).
pub const LAST_DIRECT_CLASS: usize = 23;
/// The smallest class requests map to: 0 (8 bytes), or 1 (16 bytes) in hardened builds, whose
/// free blocks need two words (link and state word; see `hardening`). Mapping small sizes to it
/// here, in the tables, keeps a `max(size, 16)` off the allocation fast path.
pub const MIN_CLASS: usize = if crate::hardened::ENABLED { 1 } else { 0 };

/// The block size of class `i`, computed (used to build the tables at compile time).
pub const fn class_size_const(i: usize) -> usize {
    if i < 8 {
        (i + 1) * 8
    } else {
        let j = i - 8;
        let e = 6 + j / 4;
        (5 + j % 4) << (e - 2)
    }
}

/// The class of `size` (1..=MAX_SMALL_SIZE) by arithmetic (before the [`MIN_CLASS`] floor:
/// [`class_for`] only asks it about sizes above [`DIRECT_MAX`]).
#[inline(always)]
pub const fn class_of_arith(size: usize) -> usize {
    if size <= 64 {
        let s = if size == 0 { 1 } else { size };
        s.div_ceil(8) - 1
    } else {
        let s = size - 1;
        let e = (usize::BITS - 1 - s.leading_zeros()) as usize;
        let q = (s >> (e - 2)) & 3;
        8 + (e - 6) * 4 + q
    }
}

const fn build_sizes() -> [u32; NUM_CLASSES] {
    let mut t = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        t[i] = class_size_const(i) as u32;
        i += 1;
    }
    t
}

/// `class`, or [`MIN_CLASS`] if it is smaller.
const fn at_least_min(class: usize) -> usize {
    if class > MIN_CLASS {
        class
    } else {
        MIN_CLASS
    }
}

const fn build_direct() -> [u8; DIRECT_SLOTS] {
    let mut t = [0u8; DIRECT_SLOTS];
    let mut s = 0;
    while s < DIRECT_SLOTS {
        t[s] = at_least_min(class_of_arith(s * 8)) as u8;
        s += 1;
    }
    t
}

/// Block size of each class.
pub static CLASS_SIZE: [u32; NUM_CLASSES] = build_sizes();
/// Class of each direct slot `(size + 7) / 8`.
pub static DIRECT_CLASS: [u8; DIRECT_SLOTS] = build_direct();

const _: () = assert!(class_size_const(NUM_CLASSES - 1) == MAX_SMALL_SIZE);
const _: () = assert!(class_size_const(LAST_DIRECT_CLASS) == DIRECT_MAX);

/// The block size of class `class` (< NUM_CLASSES).
#[inline(always)]
pub fn class_size(class: usize) -> usize {
    debug_assert!(class < NUM_CLASSES);
    // SAFETY: every caller passes a class below NUM_CLASSES (debug-checked above).
    unsafe { *CLASS_SIZE.get_unchecked(class) as usize }
}

/// The class serving `size` bytes at alignment `align` (size <= MAX_SMALL_SIZE,
/// align <= MAX_SMALL_ALIGN, a power of two): the smallest class that fits and whose size is a multiple of
/// `align` (page areas start [`MAX_SMALL_ALIGN`]-aligned, so such blocks are aligned).
#[inline]
pub fn class_for(size: usize, align: usize) -> usize {
    let size = (size + align - 1) & !(align - 1);
    let mut c = if size <= DIRECT_MAX {
        // SAFETY: size <= DIRECT_MAX, so the slot is below DIRECT_SLOTS.
        unsafe { *DIRECT_CLASS.get_unchecked((size + 7) >> 3) as usize }
    } else {
        class_of_arith(size)
    };
    // Never runs past the last class: 512 KiB is a multiple of every align <= MAX_SMALL_ALIGN.
    while c < NUM_CLASSES - 1 && class_size(c) & (align - 1) != 0 {
        c += 1;
    }
    c
}

/// The three page geometries of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// 64 KiB pages, classes up to 8 KiB (at least 8 blocks per page).
    Small = 0,
    /// 512 KiB pages, classes up to 64 KiB.
    Medium = 1,
    /// One page spanning the segment, classes up to 512 KiB.
    Large = 2,
}

impl Kind {
    /// log2 of the page size of this kind.
    #[inline]
    pub const fn page_shift(self) -> u32 {
        match self {
            Kind::Small => 16,
            Kind::Medium => 19,
            Kind::Large => 22,
        }
    }
}

/// The page kind that holds class `class`.
#[inline]
pub fn kind_of(class: usize) -> Kind {
    let size = class_size(class);
    if size <= 8 * 1024 {
        Kind::Small
    } else if size <= 64 * 1024 {
        Kind::Medium
    } else {
        Kind::Large
    }
}

/// The first direct slot served by class `class` (`MIN_CLASS..=LAST_DIRECT_CLASS`; the smallest
/// class also serves the slots below its own); its last slot is `class_size(class) / 8`.
#[inline]
pub fn first_slot(class: usize) -> usize {
    if class == 0 || class == MIN_CLASS {
        0
    } else {
        class_size(class - 1) / 8 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_increasing_and_four_per_doubling() {
        for i in 1..NUM_CLASSES {
            assert!(CLASS_SIZE[i] > CLASS_SIZE[i - 1]);
        }
        assert_eq!(
            &CLASS_SIZE[..16],
            &[8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256]
        );
        assert_eq!(CLASS_SIZE[NUM_CLASSES - 1] as usize, MAX_SMALL_SIZE);
    }

    #[test]
    fn worst_case_waste_is_bounded() {
        let mut worst = 0.0f64;
        for size in 1..=MAX_SMALL_SIZE {
            let c = class_for(size, 1);
            let cs = class_size(c);
            assert!(cs >= size, "size {size} class {cs}");
            assert_eq!(c, at_least_min(class_of_arith(size)));
            if c > MIN_CLASS {
                assert!(
                    class_size(c - 1) < size,
                    "size {size} not in smallest class"
                );
            }
            if size > 64 {
                let waste = (cs - size) as f64 / cs as f64;
                worst = worst.max(waste);
            } else {
                assert!(cs - size < 8 || (c == MIN_CLASS && size <= cs));
            }
        }
        assert!(worst < 0.2, "worst waste {worst}");
        assert!(worst > 0.19);
    }

    #[test]
    fn aligned_classes_are_multiples() {
        for shift in 0..=16 {
            let align = 1usize << shift;
            for size in (1..=MAX_SMALL_SIZE).step_by(97) {
                let c = class_for(size, align);
                assert!(class_size(c) >= size);
                assert_eq!(class_size(c) % align, 0);
            }
        }
    }

    #[test]
    fn direct_lookup_matches_class_for_up_to_direct_align() {
        let mut align = 1;
        while align <= DIRECT_ALIGN {
            for size in 1..=DIRECT_MAX {
                let rounded = (size + align - 1) & !(align - 1);
                let direct = DIRECT_CLASS[(rounded + 7) >> 3] as usize;
                assert_eq!(direct, class_for(size, align), "size {size} align {align}");
            }
            align *= 2;
        }
    }

    #[test]
    fn direct_slots_cover_their_classes() {
        for c in MIN_CLASS..=LAST_DIRECT_CLASS {
            let slots = &DIRECT_CLASS[first_slot(c)..=class_size(c) / 8];
            assert!(slots.iter().all(|&k| k as usize == c));
        }
    }
}
