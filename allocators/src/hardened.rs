//! Support for the `hardened` feature: stopping a program at a heap bug with a message.
//!
//! With the feature on, the allocators check frees (double free, a pointer that does not start a
//! live block), canary words after small blocks (heap overflow), and free-list links encoded with a
//! per-process random key (so a use-after-free write cannot steer the allocator to an address of
//! the attacker's choosing). On misuse they call [`misuse`], which writes one line to stderr
//! without allocating and aborts, as glibc does with "free(): double free detected".
//!
//! With the feature off, [`ENABLED`] is `false` and every check compiles away: the normal build's
//! code paths are unchanged.
//!
//! What each allocator catches (each case is a child-process test in `allocators/tests/hardened.rs`):
//!
//! | misuse | Bump | Slab | Buddy | SizeClass |
//! |---|---|---|---|---|
//! | double free of a small block | yes (freed bit in the size word) | yes (keyed tag in the first word while cached; freed tag in the last word once back in its slab) | yes (order tag; cached blocks carry a keyed tag in the first word) | yes (freed tag in word 1) |
//! | free of an interior pointer | yes (address-keyed tag) | yes | yes (tag) | yes (block boundary) |
//! | free of memory not ours | yes (region map) | yes | yes | yes |
//! | overflow past a small block | yes (canary) | yes (canary in the last word) | yes (canary in the last word, when the request leaves 8 bytes of slack in its block: all but requests within 8 bytes of a power of two; C blocks always do, their requests being rounded up to leave it) | yes (canary in the last word, when the request leaves 8 bytes of slack in its block; C blocks always do) |
//! | overflow past a large block | yes (guard page, SIGSEGV) | yes | yes | yes |
//! | double free of a large block | yes (reported as invalid free) | yes | yes | yes |
//! | write after free steering a free list | n/a (no free lists) | yes (keyed links; keyed tag of cached objects checked on reuse) | yes (keyed links on the arena lists, checked before use; a cached block is in an array of addresses, which a write cannot steer: its keyed tag is checked only when it goes back to the arena) | yes (keyed links) |
//!
//! Not caught anywhere: a stale pointer freed after its block was handed out again (it is a live
//! block by then), and reads of freed memory.
//!
//! What the checks cost differs by design, because a check on a free reads the block (its canary,
//! its state tag) and not every plain free does. SizeClass's plain free writes its free-list
//! link into the block, so its checks add instructions but few cache misses. Slab's magazines
//! and Buddy's thread caches hold addresses, and Bump frees nothing but its latest block: their
//! plain frees never touch the block, so where a program frees objects long after writing them
//! (the `phase` and `fragmentation` workloads) or on another thread (`xmalloc`), each hardened
//! free pays a cache miss, or a line moved between cores, that the plain free avoids. The cost of
//! each, beside mimalloc's secure mode, is measured in `results/REPORT.md` ("Cost of the hardened
//! mode").
//!
//! Two per-process random keys: the link [`key`] encodes free-list links, which every allocator
//! clears before a block is handed out, so no user can read a word derived from it (checked by
//! `handed_out_blocks_do_not_reveal_the_key` in the hardened tests); the [`tag_key`] makes
//! canaries and state tags, which a later user of a block may see (an exact fit owns the word
//! where an earlier user's canary was). Learning the tag key lets a program forge a canary or a
//! tag; it tells nothing about the link key, so links still cannot be steered. What is not
//! scrubbed (as in mimalloc): links an earlier use of the memory left elsewhere in it, in a slab
//! or page since given to another size, or inside buddies merged into a larger block.

use core::sync::atomic::{AtomicUsize, Ordering};

/// Whether the `hardened` feature is on.
pub const ENABLED: bool = cfg!(feature = "hardened");

/// Whether freed memory is filled with [`FREED_BYTE`] (hardened debug builds only).
pub const FILL_FREED: bool = ENABLED && cfg!(debug_assertions);

/// The byte freed memory is filled with when [`FILL_FREED`] is on.
pub const FREED_BYTE: u8 = 0xDF;

/// The kinds of heap misuse the allocators detect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// A block freed twice.
    DoubleFree,
    /// A pointer freed (or resized) that is not the start of a live block of this allocator.
    InvalidFree,
    /// The canary after a block was overwritten: something wrote past the block's end.
    HeapOverflow,
    /// A free-list link failed its check: freed memory was written after the free.
    CorruptFreeList,
}

impl Misuse {
    fn describe(self) -> &'static str {
        match self {
            Misuse::DoubleFree => "double free detected",
            Misuse::InvalidFree => "free of a pointer that is not a live block (invalid free)",
            Misuse::HeapOverflow => "heap overflow detected (canary after the block overwritten)",
            Misuse::CorruptFreeList => "corrupted free list (write after free)",
        }
    }
}

/// Reports `kind` of misuse at `addr` in `allocator` on stderr and aborts the process.
/// Allocates nothing: the message is built in a stack buffer and written with `write(2)`.
#[cold]
#[inline(never)]
pub fn misuse(allocator: &str, kind: Misuse, addr: *const u8) -> ! {
    let mut buf = [0u8; 256];
    let mut len = 0;
    for part in ["allocators: ", allocator, ": ", kind.describe(), " at 0x"] {
        len += copy_into(&mut buf[len..], part.as_bytes());
    }
    len += write_hex(&mut buf[len..], addr as usize);
    len += copy_into(&mut buf[len..], b"; aborting\n");
    // SAFETY: buf[..len] is initialised; write(2) on fd 2 has no other preconditions.
    unsafe {
        libc::write(2, buf.as_ptr().cast(), len);
        libc::abort();
    }
}

fn copy_into(dst: &mut [u8], src: &[u8]) -> usize {
    let n = src.len().min(dst.len());
    dst[..n].copy_from_slice(&src[..n]);
    n
}

fn write_hex(dst: &mut [u8], value: usize) -> usize {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut tmp = [0u8; 16];
    let mut n = 0;
    let mut v = value;
    loop {
        tmp[n] = DIGITS[v & 15];
        n += 1;
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    let mut written = 0;
    for i in (0..n).rev() {
        if written < dst.len() {
            dst[written] = tmp[i];
            written += 1;
        }
    }
    written
}

static KEY: AtomicUsize = AtomicUsize::new(0);
static TAG_KEY: AtomicUsize = AtomicUsize::new(0);

/// The per-process random key that encodes free-list links (never 0), read once from the
/// kernel's `getrandom` (falling back to the address of a stack variable mixed with the time).
/// Nothing a user can read is derived from it: links are cleared before a block is handed out.
#[inline]
pub fn key() -> usize {
    load_key(&KEY)
}

/// The per-process random key of canaries and state tags ([`canary_keyed`]), drawn
/// independently of [`key`]. A canary can be seen by a later user of its block (an exact fit
/// that owns the word, or an old canary left in a block): that tells the user this key, which
/// lets a program forge canaries, never the link key.
#[inline]
pub fn tag_key() -> usize {
    load_key(&TAG_KEY)
}

/// The [`tag_key`] for a fast path that holds a block marked with it, so it has been drawn: a
/// plain load, without the draw-on-first-use branch (and the call behind it, which would make the
/// fast path save registers). Were it not yet drawn, the 0 read makes every check fail, and the
/// caller's slow path (which uses [`tag_key`]) sorts the case out.
#[inline(always)]
pub fn tag_key_drawn() -> usize {
    TAG_KEY.load(Ordering::Relaxed)
}

/// The key in `slot`, drawn on first use.
#[inline(always)]
fn load_key(slot: &AtomicUsize) -> usize {
    let k = slot.load(Ordering::Relaxed);
    if k != 0 {
        return k;
    }
    init_key(slot)
}

#[cold]
fn init_key(slot: &AtomicUsize) -> usize {
    let mut k: usize = 0;
    // SAFETY: getrandom writes at most size_of::<usize>() bytes into `k`.
    let got = unsafe {
        libc::getrandom(
            (&mut k as *mut usize).cast(),
            core::mem::size_of::<usize>(),
            libc::GRND_NONBLOCK,
        )
    };
    if got != core::mem::size_of::<usize>() as isize {
        let stack = &k as *const usize as usize;
        let own = slot as *const AtomicUsize as usize;
        // SAFETY: time(NULL) has no preconditions.
        let now = unsafe { libc::time(core::ptr::null_mut()) } as usize;
        k = stack.rotate_left(29) ^ now.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ own.rotate_left(41);
    }
    k |= 1;
    match slot.compare_exchange(0, k, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => k,
        Err(existing) => existing,
    }
}

/// Encodes a free-list link `next` stored at address `slot` (so the stored word depends on the
/// key and on where it lives: copying an encoded word elsewhere does not decode to the same link).
#[inline(always)]
pub fn encode_link(next: usize, slot: usize) -> usize {
    encode_link_keyed(next, slot, key())
}

/// Inverse of [`encode_link`].
#[inline(always)]
pub fn decode_link(stored: usize, slot: usize) -> usize {
    decode_link_keyed(stored, slot, key())
}

/// The canary word for the block at `block` (placed right after the block's requested bytes).
#[inline(always)]
pub fn canary_for(block: usize) -> usize {
    canary_keyed(block, tag_key())
}

/// [`encode_link`] with the [`key`] passed in, for callers that use it several times per call.
#[inline(always)]
pub fn encode_link_keyed(next: usize, slot: usize, key: usize) -> usize {
    (next ^ key).rotate_left(23) ^ slot
}

/// [`decode_link`] with the [`key`] passed in.
#[inline(always)]
pub fn decode_link_keyed(stored: usize, slot: usize, key: usize) -> usize {
    (stored ^ slot).rotate_right(23) ^ key
}

/// [`canary_for`] with the [`tag_key`] passed in (never the link [`key`]: a canary may be seen).
#[inline(always)]
pub fn canary_keyed(block: usize, key: usize) -> usize {
    (block ^ key).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

/// Writes the canary after the `size` requested bytes of `block` (unaligned store).
///
/// # Safety
/// `block + size .. block + size + size_of::<usize>()` must be writable and owned by the block.
#[inline(always)]
pub unsafe fn write_canary(block: *mut u8, size: usize) {
    // SAFETY: the caller reserved the canary's bytes after the block.
    unsafe {
        (block.add(size) as *mut usize).write_unaligned(canary_for(block as usize));
    }
}

/// Checks the canary after the `size` requested bytes of `block`.
///
/// # Safety
/// As for [`write_canary`]: the canary's bytes must be readable and belong to the block.
#[inline(always)]
pub unsafe fn canary_intact(block: *const u8, size: usize) -> bool {
    // SAFETY: the caller reserved the canary's bytes after the block.
    unsafe { (block.add(size) as *const usize).read_unaligned() == canary_for(block as usize) }
}

/// Bytes an allocator adds after each small block for the canary (0 when the feature is off).
pub const CANARY_BYTES: usize = if ENABLED {
    core::mem::size_of::<usize>()
} else {
    0
};

/// How C's `malloc` pads a request so that C's `free`, which has no size, can still check a
/// hardened block's canary. Every [`Introspect`](crate::Introspect) allocator implements it; the
/// defaults (no padding) fit all but Buddy, whose hardened canary needs slack in the block.
pub trait UnsizedPad {
    /// The canary's bytes, which a block requested through [`UnsizedPad::unsized_request`]
    /// keeps from its user: 0 except in `hardened` builds of an allocator that keeps a canary
    /// only where the request leaves room for one. Its sized `dealloc` learns from the `Layout`
    /// whether a block has room; an unsized free cannot, so it relies on every such block having
    /// been requested with room, and checks the canary. `Introspect::usable_size` leaves the
    /// canary out, so it may answer this much less than a request made some other way.
    const UNSIZED_PAD: usize = 0;

    /// The size to request for `size` bytes whose block will be freed with
    /// `Introspect::free_unsized` (C's `malloc` and `realloc` do): at least `size`, with room for
    /// the canary; by default `size` plus [`UnsizedPad::UNSIZED_PAD`]. `None` if it would
    /// overflow.
    #[inline]
    fn unsized_request(size: usize) -> Option<usize> {
        size.checked_add(Self::UNSIZED_PAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_depend_on_slot() {
        for (next, slot) in [(0usize, 8usize), (0x7fff_0000_1000, 0x7fff_0000_2000)] {
            let e = encode_link(next, slot);
            assert_eq!(decode_link(e, slot), next);
            assert_ne!(decode_link(e, slot + 16), next);
        }
    }

    #[test]
    fn hex_formatting() {
        let mut b = [0u8; 20];
        let n = write_hex(&mut b, 0xdead_beef);
        assert_eq!(&b[..n], b"deadbeef");
        let n = write_hex(&mut b, 0);
        assert_eq!(&b[..n], b"0");
    }

    #[test]
    fn canary_detects_overwrite() {
        let mut buf = [0u8; 32];
        let p = buf.as_mut_ptr();
        // SAFETY: 8 + 8 bytes inside buf.
        unsafe {
            write_canary(p, 8);
            assert!(canary_intact(p, 8));
            *p.add(9) ^= 1;
            assert!(!canary_intact(p, 8));
        }
    }
}
