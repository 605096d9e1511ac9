//! The slab allocator's object sizes (one cache per size) and the lookup from a request to its
//! cache: policy only, no memory is touched here.
//!
//! Four sizes per doubling above 64 bytes (steps of 12.5-25%, mean about 19%, as Bonwick's caches
//! were spaced), every multiple of 8 below, up to [`MAX_SMALL`] (64 KiB; 128 bytes more when
//! hardened, for the canary of a 64 KiB request). Every size is a multiple of 8 and every power of
//! two up to 64 KiB is a size (up to 32 KiB when hardened), so a power-of-two size is always
//! served by an exact cache and (since slabs are aligned to their own size: one 64 KiB unit up to
//! 8 KiB objects, four units above) aligned to itself.
//!
//! The sizes above 32 KiB (four to six objects per 256 KiB slab) exist so that programs freeing
//! and reallocating blocks of 32-64 KiB (power-of-two workloads, I/O buffers) reuse cached
//! objects instead of paying an `mmap`/`munmap` pair per block in [`crate::large`].

/// The object size of each cache, ascending.
pub const SIZES: [usize; NUM_CLASSES] = [
    8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640,
    768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192, 10240,
    12288, 14336, 16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, TOP,
];
/// The largest size: 64 KiB, and 128 bytes more when hardened (a multiple of every alignment up to
/// 128), so that a 64 KiB request (a common buffer size) with its canary still fits a slab object
/// (three to a 256 KiB slab instead of four) rather than paying a mapping, a guard page and a
/// `munmap` per block in [`crate::large`] (measured with two threads of the power-of-two workload:
/// about 2,900 `mmap` and 5,700 `munmap` calls in 1.5 s, against 38 and 16 in the plain build).
const TOP: usize = 64 * 1024 + if crate::hardened::ENABLED { 128 } else { 0 };
/// The number of object caches serving user requests.
pub const NUM_CLASSES: usize = 48;
/// The largest request served from slabs (64 KiB, plus the canary's room when hardened); larger
/// ones go to [`crate::large`].
pub const MAX_SMALL: usize = TOP;
/// Objects above this size live in slabs of [`GROUP_UNITS`] units, smaller ones in one unit.
const ONE_UNIT_MAX: usize = 8192;
/// The most rounds a magazine holds (see `magazine::MAG_CAPS`).
pub const MAG_MAX: usize = 512;

/// Index `(size + 7) / 8` for sizes up to 1024.
const SMALL_LOOKUP: [u8; 129] = build_lookup::<129>(8);
/// Index `(size + 127) / 128` for sizes up to [`MAX_SMALL`].
const BIG_LOOKUP: [u8; MAX_SMALL.div_ceil(128) + 1] =
    build_lookup::<{ MAX_SMALL.div_ceil(128) + 1 }>(128);

/// The table mapping `i * step` to the smallest size that holds it; 0 maps to the 16-byte size, so
/// that a zero-size request (which `GlobalAlloc` forbids, but which C's `malloc(0)` may become)
/// is aligned for any alignment up to 16 too.
const fn build_lookup<const N: usize>(step: usize) -> [u8; N] {
    let mut table = [0u8; N];
    let mut i = 0;
    while i < N {
        let size = if i == 0 { 16 } else { i * step };
        let mut c = 0;
        while c < NUM_CLASSES - 1 && SIZES[c] < size {
            c += 1;
        }
        table[i] = c as u8;
        i += 1;
    }
    table
}

/// The cache for a request of `size` bytes with alignment at most 8, or `None` if it is too big.
#[inline(always)]
pub fn class_of(size: usize) -> Option<usize> {
    if size <= 1024 {
        // SAFETY: size <= 1024.
        Some(unsafe { small_class(size) })
    } else if size <= MAX_SMALL {
        // SAFETY: (size + 127) >> 7 <= MAX_SMALL.div_ceil(128) < BIG_LOOKUP.len().
        Some(unsafe { *BIG_LOOKUP.get_unchecked((size + 127) >> 7) } as usize)
    } else {
        None
    }
}

/// The cache for `size` bytes, `1..=1024` (the first branch of [`class_of`]).
///
/// # Safety
/// `size <= 1024`.
#[inline(always)]
pub unsafe fn small_class(size: usize) -> usize {
    debug_assert!(size <= 1024);
    // SAFETY: (size + 7) >> 3 <= 128 < SMALL_LOOKUP.len() for size <= 1024 (caller).
    unsafe { *SMALL_LOOKUP.get_unchecked((size + 7) >> 3) as usize }
}

/// The cache for `size` bytes aligned to `align` (a power of two): the smallest size that holds
/// `size` and is a multiple of `align`, so every object of it is aligned (slabs start on a
/// boundary of its own size, at least 64 KiB). `None` if the request must go to [`crate::large`].
///
/// Alignments up to 16 (`malloc`'s, so the common ones in Rust programs too) need no search: the
/// smallest size holding `size` rounded up to the alignment is itself a multiple of it, since
/// every multiple of 8 up to 64 is a size and every size from 64 on is a multiple of 16 (checked
/// by a test). `size + align - 1` cannot overflow: a `Layout`'s size rounded up to its alignment
/// fits in an `isize`.
#[inline(always)]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        return class_of((size + align - 1) & !(align - 1));
    }
    class_for_aligned(size, align)
}

#[inline(never)]
fn class_for_aligned(size: usize, align: usize) -> Option<usize> {
    if align > MAX_SMALL {
        return None;
    }
    let mut c = class_of(size.max(align))?;
    while c < NUM_CLASSES {
        // SAFETY: c < NUM_CLASSES.
        let s = unsafe { *SIZES.get_unchecked(c) };
        if s % align == 0 {
            return Some(c);
        }
        c += 1;
    }
    None
}

/// Units in a slab of cache `class`: one up to 8 KiB objects (at least 8 per slab), else
/// [`GROUP_UNITS`] (at least 8 objects of up to 32 KiB, at least 4 of up to 64 KiB).
#[inline]
pub const fn slab_units(class: usize) -> usize {
    if SIZES[class] <= ONE_UNIT_MAX {
        1
    } else {
        GROUP_UNITS
    }
}

/// Bytes of objects a full magazine holds (at least 4 rounds, at most [`MAG_MAX`]): 16 KiB. Every
/// thread's magazines of every cache hold freed objects, so this bounds the memory they keep:
/// at 64 KiB, C programs with mixed sizes across two threads (rptest, producer-consumer shapes)
/// peaked at 8.0 and 10.2 MiB against 5.1 and 6.8 MiB at 16 KiB (mimalloc: 3.8 and 5.0), for
/// about 1.5% more instructions (callgrind, malloc-thread and malloc-simple shapes, one thread).
pub const MAG_BYTES: usize = 16 * 1024;

/// How many rounds a magazine of cache `class` holds: [`MAG_BYTES`] of objects, 4 to
/// [`MAG_MAX`] of them (512 rounds up to 32-byte objects, 64 at 256 bytes).
#[inline]
pub const fn magazine_rounds(class: usize) -> u32 {
    let n = MAG_BYTES / SIZES[class];
    if n < 4 {
        4
    } else if n > MAG_MAX {
        MAG_MAX as u32
    } else {
        n as u32
    }
}

/// The magazine size (in rounds) a thread starts each cache with: small, so that a short-lived
/// thread fills and hands back only a few objects per cache.
pub const MAG_START: u32 = 16;

/// A thread's next magazine size for cache `class` after a depot trip with size `current` (0:
/// first use): [`MAG_START`], then doubling up to [`magazine_rounds`] (Bonwick 2001 §3.6 grows
/// the magazine size under depot traffic; a thread that keeps allocating in a cache reaches the
/// full size after five trips, one that only passes through stays small).
#[inline]
pub const fn grown_rounds(current: u32, class: usize) -> u32 {
    let max = magazine_rounds(class);
    let next = if current == 0 {
        MAG_START
    } else {
        current.saturating_mul(2)
    };
    if next > max {
        max
    } else {
        next
    }
}

/// Bytes of objects a cache's depot may hold in full magazines (the limit in magazines is
/// derived per cache by [`depot_limit`], at least 16).
pub const DEPOT_BYTES: usize = 8 << 20;

/// Full magazines (and empty ones) a cache's depot keeps: about [`DEPOT_BYTES`] of objects, at
/// least 16 magazines.
pub const fn depot_limit(class: usize) -> u32 {
    let per_mag = magazine_rounds(class) as usize * SIZES[class];
    let n = DEPOT_BYTES / per_mag;
    if n < 16 {
        16
    } else {
        n as u32
    }
}

use super::region::GROUP_UNITS;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_smallest_fitting_size() {
        for size in 1..=MAX_SMALL {
            let c = class_of(size).unwrap();
            assert!(SIZES[c] >= size, "size {size}");
            assert!(c == 0 || SIZES[c - 1] < size, "size {size}");
        }
        assert_eq!(class_of(MAX_SMALL + 1), None);
    }

    #[test]
    fn aligned_lookup_gives_multiples_of_the_alignment() {
        // A hardened build's top size is not a multiple of 64 KiB: such alignments go large.
        let top_shift = if crate::hardened::ENABLED { 15 } else { 16 };
        for shift in 3..=top_shift {
            let align = 1usize << shift;
            for size in (1..=MAX_SMALL).step_by(7) {
                let Some(c) = class_for(size, align) else {
                    // Hardened, the top size is a multiple of 128 only: a more aligned request
                    // that no smaller size holds goes large.
                    let hardened = crate::hardened::ENABLED && align > 128;
                    assert!(hardened, "size {size} align {align}");
                    assert!(SIZES.iter().all(|&s| s < size || !s.is_multiple_of(align)));
                    continue;
                };
                assert!(SIZES[c] >= size && SIZES[c].is_multiple_of(align));
            }
        }
        let top = (!crate::hardened::ENABLED).then_some(NUM_CLASSES - 1);
        assert_eq!(class_for(8, 65536), top);
        assert_eq!(class_for(8, 131072), None);
        assert_eq!(class_for(MAX_SMALL + 1, 8), None);
    }

    #[test]
    fn small_alignment_lookup_matches_the_general_one() {
        for align in [1, 2, 4, 8, 16] {
            assert_eq!(class_for(0, align), Some(1));
            for size in 1..=MAX_SMALL + 1 {
                assert_eq!(
                    class_for(size, align),
                    class_for_aligned(size, align),
                    "size {size} align {align}"
                );
            }
        }
        assert!(SIZES.iter().filter(|&&s| s >= 64).all(|s| s % 16 == 0));
    }

    #[test]
    fn sizes_are_ascending_multiples_of_eight() {
        for w in SIZES.windows(2) {
            assert!(w[0] < w[1]);
            assert!((w[1] - w[0]) * 4 <= w[0].max(32));
        }
        assert!(SIZES.iter().all(|s| s % 8 == 0));
        assert!((0..NUM_CLASSES).all(|c| (4..=MAG_MAX as u32).contains(&magazine_rounds(c))));
        for c in 0..NUM_CLASSES {
            let mut r = grown_rounds(0, c);
            assert!((4..=MAG_START).contains(&r));
            for _ in 0..8 {
                r = grown_rounds(r, c);
            }
            assert_eq!(r, magazine_rounds(c));
        }
        assert!((0..NUM_CLASSES).all(|c| {
            let per_slab = slab_units(c) * super::super::region::UNIT_SIZE / SIZES[c];
            // Hardened, the top size (64 KiB and the canary's room) fits three times.
            let least = if c == NUM_CLASSES - 1 && crate::hardened::ENABLED {
                3
            } else {
                4
            };
            per_slab >= 8 || (SIZES[c] > 32 * 1024 && per_slab >= least)
        }));
    }
}
