//! Byte patterns that tie a block's contents to its id, and a tiny deterministic random source.
//!
//! Every suite fills the blocks it owns with [`pattern_byte`]`(id, offset)` and checks them later:
//! two blocks with different ids that overlap, or a block whose bytes were moved wrongly, show up
//! as a mismatch at a precise offset.

/// The byte expected at `offset` of the block with `id`.
#[inline(always)]
pub fn pattern_byte(id: u64, offset: usize) -> u8 {
    let h = mix(id);
    (h >> ((offset & 7) * 8)) as u8 ^ (offset >> 3) as u8
}

/// A 64-bit mixing function (SplitMix64's finaliser).
#[inline(always)]
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Fills `range` of the block at `ptr` with the pattern of `id`.
///
/// # Safety
/// `ptr + range` must be writable memory owned by the caller.
pub unsafe fn fill(ptr: *mut u8, range: core::ops::Range<usize>, id: u64) {
    for off in range {
        // SAFETY: the caller owns ptr + range.
        unsafe { ptr.add(off).write(pattern_byte(id, off)) };
    }
}

/// Checks `range` of the block at `ptr` against the pattern of `id`; the first wrong offset on
/// a mismatch.
///
/// # Safety
/// `ptr + range` must be readable memory owned by the caller.
pub unsafe fn verify(ptr: *const u8, range: core::ops::Range<usize>, id: u64) -> Result<(), usize> {
    for off in range {
        // SAFETY: the caller owns ptr + range.
        if unsafe { ptr.add(off).read() } != pattern_byte(id, off) {
            return Err(off);
        }
    }
    Ok(())
}

/// Bytes at each end of a block that the "touch only a few pages" checks fill and verify.
pub const EDGE: usize = 16 * 1024;

/// The parts of a block of `size` bytes that sparse checks touch: its first and last [`EDGE`]
/// bytes (the whole block if it is small).
pub fn edges(size: usize) -> [core::ops::Range<usize>; 2] {
    if size <= 2 * EDGE {
        [0..size, size..size]
    } else {
        [0..EDGE, size - EDGE..size]
    }
}

/// Fills the [`edges`] of a block.
///
/// # Safety
/// As [`fill`], for `ptr..ptr + size`.
pub unsafe fn fill_edges(ptr: *mut u8, size: usize, id: u64) {
    for r in edges(size) {
        // SAFETY: forwarded from the caller.
        unsafe { fill(ptr, r, id) };
    }
}

/// Verifies the [`edges`] of a block.
///
/// # Safety
/// As [`verify`], for `ptr..ptr + size`.
pub unsafe fn verify_edges(ptr: *const u8, size: usize, id: u64) -> Result<(), usize> {
    for r in edges(size) {
        // SAFETY: forwarded from the caller.
        unsafe { verify(ptr, r, id)? };
    }
    Ok(())
}

/// A small, fast, deterministic random source (SplitMix64) for stress loops.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// A number in `0..n` (`n > 0`).
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A size biased to small: mostly 1..=256, sometimes up to 4 KiB, rarely up to `max`.
    pub fn small_biased_size(&mut self, max: usize) -> usize {
        match self.below(100) {
            0..=79 => 1 + self.below(256),
            80..=97 => 1 + self.below(4096),
            _ => 1 + self.below(max),
        }
    }
}
