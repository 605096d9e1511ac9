//! The `hardened` feature's checks for the size-class allocator (see [`crate::hardened`]). Every
//! caller reaches them through an `if hardened::ENABLED` branch, so without the feature none of
//! this code is reached and the fast paths are those of the normal build.
//!
//! Block layout in hardened builds. A request picks its class by its own size, as in the normal
//! build, except that blocks are at least 16 bytes (a free block needs two words). A block has
//! *slack* for a request when it holds at least 8 bytes more than the request
//! ([`hardened::CANARY_BYTES`]): the canary fits after the request's bytes.
//!
//! - word 0 holds the free-list link while the block is free, encoded with
//!   [`hardened::encode_link`];
//! - the last word (`block + block_size - 8`) holds the *canary* [`hardened::canary_for`] of the
//!   block whenever the block is free: written when the block is carved, and again by a free
//!   whose request had no slack (that user owned the last word, so the free does not check it
//!   and re-writes it blindly). A free whose request had slack checks it: anything else there is
//!   a heap overflow. A block handed out to a request with slack thus always finds its canary in
//!   place; a `realloc` that keeps the block and leaves slack re-writes it (the block may come
//!   from a request without). `alloc_zeroed` and a `realloc` that shrinks by moving take a block
//!   with slack (the C API pads its requests so that `free` can check the canary, and those two
//!   write every byte of the padded request);
//! - word 1 (`block + 8`) is the *state word*: the freed tag (the canary's complement) while the
//!   block is free (written when it is carved and on every free), cleared when it is handed out.
//!   A free that finds the freed tag there is a double free. It is checked on every free, with
//!   or without slack, so a double free of a block its user filled to the end is caught too.
//!
//! In 16-byte blocks word 1 is the last word: it holds the canary while the block is handed out
//! (written on allocation) and the freed tag while it is free (a free without slack writes the
//! canary there and then the freed tag over it). A request of up to 8 bytes has slack there,
//! one of 9 to 16 bytes has not.
//!
//! Why not one state word at the block's end, flipped between canary and freed tag: that wrote
//! the block's last cache line on every allocation and free, a line the user of a big block
//! rarely touches (a cache miss each way) and, on a free from another thread, one more line
//! taken from the thread that allocates there. Word 1 shares the line of the link, which every
//! free and allocation touches anyway; the canary line is only touched by a free (read, and
//! stored to unconditionally, with the value it holds when the request had slack: no branch on
//! the slack). The price: word 1 is user data while the block is handed out, so a live block
//! whose word 1 holds the keyed freed tag (chance 2^-64 unless the key leaks) is taken for a
//! double free, and a double free that follows a write after free overwriting word 1 is not
//! caught on the spot.
//!
//! The state lives in the block, not in shared metadata, so a remote free needs no atomic
//! operation beyond its push: the freeing thread owns the block until the push publishes it.
//! Two threads freeing the same block at the very same instant may both see it live (a race
//! a bitmap would need an atomic read-modify-write on every free to close); any later free of it
//! is caught.
//!
//! ## What is checked
//!
//! Every request is padded by 8 bytes for its class (blocks are at least 16 bytes), so every block
//! carries a canary in its last word after its request, checked on free (this module still handles
//! a request that fills its block, which only a caller passing a smaller layout than it allocated
//! with could make; `usable_size` is the class size minus 8, so a C block, freed by `free_unsized`
//! as that many bytes, has its canary checked too), and keeps a state word in its second word while
//! free (the layout above), and:
//! - every free-list link (the owner's `free` list, extended runs, and the atomic `thread_free`
//!   list, encoded before the CAS push) is stored encoded with the per-process key and the slot's
//!   address, and decoded on use; a link that is not null or inside the same page aborts with
//!   "corrupted free list" (a write after free);
//! - `dealloc` and `realloc` check the pointer: a Foreign window, a free page, a header slot or an
//!   address off a block boundary is an invalid free; a state word holding the freed tag (the
//!   canary's complement) a double free, and, when the layout leaves slack, a last word that is
//!   not the block's canary a heap overflow (bytes written past the request); a large block must
//!   start a live large mapping of ours (which has a guard page after it);
//! - a freed block gets the freed tag, and in debug builds its usable bytes are filled with
//!   [`crate::hardened::FREED_BYTE`];
//! - a list of remote frees taken over by the owner is walked once: more blocks than the page
//!   has carved (a cycle) aborts too.
//!
//! Not caught: a stale pointer freed again after its block was handed out anew (it is live then),
//! and two threads freeing one block at the very same instant (both may see the canary).

use super::classes::{class_size_const, NUM_CLASSES};
use super::page::{Block, Page};
use crate::hardened::{self, Misuse};
use crate::large;
use crate::region_map::{self, Owner};

/// The name the misuse reports carry.
const NAME: &str = "sizeclass";

/// `u64::MAX / d + 1` for each class size `d`: `n` (< 2^32) is a multiple of `d` exactly when
/// `n * magic` (mod 2^64) is below `magic` (Lemire, Kaser and Kurz, "Faster remainder by direct
/// computation", 2019), a multiplication instead of a division.
static DIVISIBILITY_MAGIC: [u64; NUM_CLASSES] = build_magic();

const fn build_magic() -> [u64; NUM_CLASSES] {
    let mut t = [0u64; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        t[i] = u64::MAX / class_size_const(i) as u64 + 1;
        i += 1;
    }
    t
}

/// Whether `off` (below 2^32) is a multiple of the block size of `class`.
#[cfg(test)]
fn is_multiple_of_class(off: usize, class: usize) -> bool {
    is_multiple(off, DIVISIBILITY_MAGIC[class])
}

/// Whether `off` (below 2^32) is a multiple of the divisor whose magic is `magic`.
#[inline(always)]
fn is_multiple(off: usize, magic: u64) -> bool {
    debug_assert!(off < 1 << 32);
    (off as u64).wrapping_mul(magic) < magic
}

/// The fields of a page descriptor that a free's checks read (hardened builds only), copies of
/// the page's geometry kept in a cache line of their own. The descriptor's first line holds the
/// owner's `free` and `used`, written on every allocation: a free from another thread that read
/// `start`, `capacity` and `block_size` there took that line away from the owner on every remote
/// free (the plain build's remote free touches only the second line). These are written only
/// when the page is given a class, carved further, or freed.
#[cfg(feature = "hardened")]
#[repr(C, align(64))]
pub struct PageChecks {
    /// The divisibility magic of the block size (see [`DIVISIBILITY_MAGIC`]).
    div_magic: u64,
    /// The page's `start`.
    start: usize,
    /// The page's `block_size`.
    block_size: usize,
    /// Bytes carved (`capacity * block_size`), 0 while the page is free. Atomic (relaxed: it
    /// only grows while the page serves a class) because freeing threads read it while the
    /// owner carves.
    carved: core::sync::atomic::AtomicUsize,
    /// The per-process keys ([`hardened::key`] for links, [`hardened::tag_key`] for canaries
    /// and tags; set before the page's first block was carved): read here by frees (on the line
    /// they read anyway) and allocations, they cost neither a load through the global's address
    /// nor a branch to the keys' first-use path.
    key: usize,
    tag_key: usize,
}

#[cfg(feature = "hardened")]
impl PageChecks {
    /// The fields of a descriptor that serves no class.
    pub const fn new() -> Self {
        PageChecks {
            div_magic: 0,
            start: 0,
            block_size: 0,
            carved: core::sync::atomic::AtomicUsize::new(0),
            key: 0,
            tag_key: 0,
        }
    }
}

/// Sets up the hardened fields of `page`, just given class `class` (called by
/// `segment::alloc_page` in hardened builds, after setting its block size).
///
/// # Safety
/// The caller owns `page`; `class < NUM_CLASSES`.
#[inline]
pub unsafe fn init_page(page: *mut Page, class: usize) {
    debug_assert!(class < NUM_CLASSES);
    #[cfg(feature = "hardened")]
    // SAFETY: caller's contract.
    unsafe {
        let c = &mut (*page).checks;
        c.div_magic = *DIVISIBILITY_MAGIC.get_unchecked(class);
        c.start = (*page).start;
        c.block_size = (*page).block_size;
        *c.carved.get_mut() = (*page).capacity as usize * (*page).block_size;
        c.key = hardened::key();
        c.tag_key = hardened::tag_key();
    }
    let _ = (page, class);
}

/// Records that the owner carved more blocks of `page` (called by `page::extend` in hardened
/// builds, after it linked them and raised `capacity`) and writes each new block's canary and
/// freed tag (see the module docs).
///
/// # Safety
/// The caller owns `page`, which is in use; the blocks between the carved bytes recorded so far
/// and `capacity * block_size` are new, free and the caller's.
#[inline]
pub unsafe fn carved(page: *mut Page) {
    #[cfg(feature = "hardened")]
    // SAFETY: caller's contract: the new blocks lie in the page's area and are the caller's;
    // `carved` is atomic (only the owner stores it).
    unsafe {
        let c = &(*page).checks;
        let bsize = c.block_size;
        let old = c.carved.load(core::sync::atomic::Ordering::Relaxed);
        let new = (*page).capacity as usize * bsize;
        let key = c.tag_key;
        let mut b = c.start + old;
        while b < c.start + new {
            let canary = hardened::canary_keyed(b, key);
            ((b + bsize - hardened::CANARY_BYTES) as *mut usize).write(canary);
            ((b + STATE) as *mut usize).write(!canary);
            b += bsize;
        }
        c.carved.store(new, core::sync::atomic::Ordering::Relaxed);
    }
    let _ = page;
}

/// Marks `page`, just freed, as holding no block (`capacity` and the carved bytes 0), so no
/// pointer into it passes [`check_small`] (called by `segment::free_page` in hardened builds).
///
/// # Safety
/// The caller owns `page`, which holds no live block.
#[inline]
pub unsafe fn free_page(page: *mut Page) {
    // SAFETY: caller's contract.
    unsafe {
        (*page).capacity = 0;
        #[cfg(feature = "hardened")]
        (*page)
            .checks
            .carved
            .store(0, core::sync::atomic::Ordering::Relaxed);
    }
}

/// The divisibility magic, start, carved bytes and block size of `page`, as a free checks them.
///
/// # Safety
/// `page` is a valid descriptor.
#[inline(always)]
unsafe fn geometry(page: *const Page) -> (u64, usize, usize, usize) {
    #[cfg(feature = "hardened")]
    // SAFETY: caller's contract.
    return unsafe {
        let c = &(*page).checks;
        let carved = c.carved.load(core::sync::atomic::Ordering::Relaxed);
        (c.div_magic, c.start, carved, c.block_size)
    };
    #[cfg(not(feature = "hardened"))]
    // SAFETY: caller's contract; the class of a descriptor is below NUM_CLASSES.
    return unsafe {
        (
            *DIVISIBILITY_MAGIC.get_unchecked((*page).class as usize),
            (*page).start,
            (*page).capacity as usize * (*page).block_size,
            (*page).block_size,
        )
    };
}

/// Where the state word lies in a block (word 1; see the module docs).
const STATE: usize = core::mem::size_of::<usize>();

/// The link key of a page serving a class, as [`hardened::key`] answers (hardened: a copy in
/// the page's [`PageChecks`], set before its first block was carved), or 0 without the feature
/// (then unused). Every link of the allocator is encoded and decoded with it.
///
/// # Safety
/// `page` is a valid descriptor of a page serving a class (or one that did: its key stays).
#[inline(always)]
pub unsafe fn page_key(page: *const Page) -> usize {
    #[cfg(feature = "hardened")]
    // SAFETY: caller's contract.
    return unsafe { (*page).checks.key };
    #[cfg(not(feature = "hardened"))]
    {
        let _ = page;
        0
    }
}

/// The tag key of a page serving a class (a copy of [`hardened::tag_key`] in the page's
/// [`PageChecks`]), or 0 without the feature (then unused).
///
/// # Safety
/// As for [`page_key`].
#[inline(always)]
pub unsafe fn page_tag_key(page: *const Page) -> usize {
    #[cfg(feature = "hardened")]
    // SAFETY: caller's contract.
    return unsafe { (*page).checks.tag_key };
    #[cfg(not(feature = "hardened"))]
    {
        let _ = page;
        0
    }
}

/// Decodes the link `stored` read from free block `block` of `page` and checks that it is null or
/// inside the same page's area; reports a corrupted free list otherwise. Like mimalloc's secure
/// mode, the check is against the page only (a subtraction and a compare), not each block
/// boundary (a multiplication more on every pop): a forged link must already get past the keyed
/// encoding, and frees still check block boundaries.
///
/// # Safety
/// `page` is a valid descriptor owned by the caller or being walked by its owner.
#[inline(always)]
pub unsafe fn decode_next(
    page: *const Page,
    block: *mut Block,
    stored: *mut Block,
    key: usize,
) -> *mut Block {
    let next = hardened::decode_link_keyed(stored as usize, block as usize, key);
    // SAFETY: caller's contract.
    if next != 0 && next.wrapping_sub(unsafe { (*page).start }) >= unsafe { (*page).area_len } {
        hardened::misuse(NAME, Misuse::CorruptFreeList, block as *const u8);
    }
    next as *mut Block
}

/// Arms a block being handed out: clears its link (encoded with the link key, which a user
/// reading it could recover) and its state word (zero, as a block of a fresh page must read to
/// `alloc_zeroed`), or in a 16-byte block, where the state word is the last word, writes the
/// canary there. Both words share the line the pop just read.
///
/// # Safety
/// `block` is a block of `page` just taken off a free list, owned by the caller.
#[inline(always)]
pub unsafe fn arm(page: *const Page, block: *mut Block) {
    // SAFETY: the caller's block is at least 16 bytes; its first word is the link, its second
    // the state word.
    unsafe {
        // Branch-free (a mask, not an `if`): whether the block is a 16-byte one follows the
        // request's size, so for mixed sizes a branch here was mispredicted on a good share of
        // allocations (alloc-test: over half its requests get 16-byte blocks; cachegrind's
        // simulation mispredicted it on 46% of them), dearer than a canary computed for nothing.
        let is_16 = ((*page).block_size == 2 * STATE) as usize;
        let word =
            hardened::canary_keyed(block as usize, page_tag_key(page)) & is_16.wrapping_neg();
        (block as *mut usize).write(0);
        ((block as usize + STATE) as *mut usize).write(word);
    }
}

/// Checks that `ptr`, passed to `dealloc` or `realloc` with a large layout, starts a live large
/// block of this allocator; reports an invalid free otherwise.
///
/// # Safety
/// None beyond `ptr` being any address: it is attributed through the region map first.
#[inline(never)]
pub unsafe fn check_large(ptr: *mut u8) {
    // SAFETY: `large::owner` is only asked about pointers in a Large window.
    if region_map::owner_of(ptr) != Owner::Large
        || unsafe { large::owner(ptr) } != Some(Owner::SizeClass)
    {
        hardened::misuse(NAME, Misuse::InvalidFree, ptr);
    }
}

/// Checks that `ptr`, passed to `dealloc` or `realloc` with a small layout of `size` bytes,
/// starts a live block of one of our pages; reports an invalid free, a double free or (when the
/// block has slack for `size`) a heap overflow otherwise. When `freeing` and the block has no
/// slack, re-writes its canary (see the module docs; `realloc` passes `false`: the block is still
/// live and may be copied). Returns the key, the block's canary and its page descriptor, for
/// the rest of the operation.
///
/// A page not in use has no carved bytes in hardened builds ([`free_page`]), so the one bounds
/// test `offset < carved` also rejects free pages and header slots. It reads only the page's
/// [`PageChecks`] line and the block, not the line the owner allocates from.
///
/// Every failing check leaves through one call, to [`report_small`], which finds out which check
/// failed: with a call per check (four of them), the compiler set up a stack frame on every
/// `dealloc` (a push and a pop) for their sake; with one, only the failure path has it.
///
/// # Safety
/// None beyond `ptr` being any address: it is attributed through the region map first. With
/// `freeing`, a block that passes is being freed by the caller.
#[inline(always)]
pub unsafe fn check_small(ptr: *mut u8, size: usize, freeing: bool) -> (usize, usize, *mut Page) {
    // SAFETY: any address may be checked.
    let Ok((page, block_size, canary)) = (unsafe { verdict(ptr, size) }) else {
        report_small(ptr, size)
    };
    // Written whether or not the request had slack (no branch on it, see `verdict`): a block
    // with slack passed the checks with its canary already there, so the store changes nothing.
    if freeing {
        // SAFETY: `ptr` passed the checks: a live block of ours being freed by the caller, whose
        // last word is either the caller's to write (a block without slack keeps no canary
        // while live) or already holds the canary.
        unsafe {
            ((ptr as usize + block_size - hardened::CANARY_BYTES) as *mut usize).write(canary)
        };
    }
    // SAFETY: a page that passed the checks serves a class.
    (unsafe { page_key(page) }, canary, page)
}

/// The checks of [`check_small`], in order: the page and block size of `ptr` and its canary if
/// it passes them all, else the misuse found first.
///
/// # Safety
/// None beyond `ptr` being any address: it is attributed through the region map first.
#[inline(always)]
unsafe fn verdict(ptr: *mut u8, size: usize) -> Result<(*mut Page, usize, usize), Misuse> {
    if region_map::owner_of(ptr) != Owner::SizeClass {
        return Err(Misuse::InvalidFree);
    }
    let addr = ptr as usize;
    // SAFETY: the window is one of our live segments (region map), so its header and page
    // descriptors are valid; a page with carved blocks serves blocks of at least 16 bytes, and
    // a block that passes the boundary test is a block of ours (its last word is in it).
    unsafe {
        let page = super::segment::page_of(addr);
        let (magic, start, carved, block_size) = geometry(page);
        let off = addr.wrapping_sub(start);
        // The carved area is at most a segment (4 MiB), so a passing `off` is below 2^32.
        if off >= carved || !is_multiple(off, magic) {
            return Err(Misuse::InvalidFree);
        }
        let canary = hardened::canary_keyed(addr, page_tag_key(page));
        if ((addr + STATE) as *const usize).read() == !canary {
            return Err(Misuse::DoubleFree);
        }
        let end = (addr + block_size - hardened::CANARY_BYTES) as *const usize;
        // `size <= block_size` for any block this layout got, so no overflow. In a 16-byte
        // block `end` is the state word, just seen not to be the freed tag. Branch-free: whether
        // a request has slack depends on its size against its class, a coin flip per free for
        // mixed sizes (cachegrind's simulation mispredicted it on 46% of alloc-test's frees).
        // `end` is read either way (it lies in the block; a free without slack writes it
        // anyway), and `no_slack` is all ones exactly when the request left no room for the
        // canary.
        let no_slack = opaque(
            ((block_size - hardened::CANARY_BYTES).wrapping_sub(size) as isize >> (usize::BITS - 1))
                as usize,
        );
        if (end.read() ^ canary) & !no_slack != 0 {
            return Err(Misuse::HeapOverflow);
        }
        Ok((page, block_size, canary))
    }
}

/// `x`, which the optimiser cannot see through: without it, LLVM turned the mask in
/// [`verdict`] back into a branch on the slack (an `and` of two conditions becomes two jumps).
#[inline(always)]
fn opaque(mut x: usize) -> usize {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    // SAFETY: an empty template (a comment naming the register): it touches no memory, no flag
    // and no other register, and leaves `x` as it was.
    unsafe {
        core::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
    }
    x
}

/// Reports the misuse [`check_small`] found in freeing (or resizing) `ptr` as `size` bytes: runs
/// its checks again to tell which one failed. Nothing has changed in between unless another
/// thread wrote the block meanwhile (a racing free of the same block, or a write to freed
/// memory): if the checks now pass, `ptr` was not a live block a moment ago, reported as an
/// invalid free.
#[cold]
#[inline(never)]
fn report_small(ptr: *mut u8, size: usize) -> ! {
    // SAFETY: any address may be checked.
    let kind = match unsafe { verdict(ptr, size) } {
        Err(kind) => kind,
        Ok(_) => Misuse::InvalidFree,
    };
    hardened::misuse(NAME, kind, ptr)
}

/// Re-writes the canary of a block that `realloc` keeps for `new_size` bytes, if it has slack
/// for them (the old request may have had none).
///
/// # Safety
/// `block` is a live block of ours of `block_size` bytes, whose canary is `canary`, now holding
/// `new_size <= block_size` bytes.
#[inline(always)]
pub unsafe fn resized(block: *mut u8, block_size: usize, new_size: usize, canary: usize) {
    if new_size + hardened::CANARY_BYTES <= block_size {
        // SAFETY: the last word of the caller's block, past its `new_size` bytes.
        unsafe {
            (block.add(block_size - hardened::CANARY_BYTES) as *mut usize).write(canary);
        }
    }
}

/// Marks a checked live block freed (its state word becomes the freed tag, the complement of its
/// `canary`) and, when [`hardened::FILL_FREED`], first fills its usable bytes with
/// [`hardened::FREED_BYTE`].
///
/// # Safety
/// `block` is a live block of `page` that passed [`check_small`] (which returned `canary`), being
/// freed by the caller.
#[inline(always)]
pub unsafe fn retire(page: *const Page, block: *mut u8, canary: usize) {
    // SAFETY: the block is the caller's until it is pushed on a free list; its state word lies
    // inside it (blocks are at least 16 bytes). The block size is read from the checks' line (see
    // `PageChecks`), which the free has just read.
    unsafe {
        if hardened::FILL_FREED {
            let usable = geometry(page).3 - hardened::CANARY_BYTES;
            core::ptr::write_bytes(block, hardened::FREED_BYTE, usable);
        }
        (block.add(STATE) as *mut usize).write(!canary);
    }
}

/// Reports a free list that holds more blocks than the page has carved (a cycle, left by a
/// double free that raced past [`check_small`]).
#[cold]
pub fn list_too_long(page: *const Page) -> ! {
    hardened::misuse(NAME, Misuse::CorruptFreeList, page.cast())
}

#[cfg(test)]
mod tests {
    use super::super::classes::class_size;
    use super::*;

    #[test]
    fn divisibility_magic_matches_remainder() {
        for class in 0..NUM_CLASSES {
            let d = class_size(class);
            for off in (0..(4 << 20)).step_by(8) {
                assert_eq!(is_multiple_of_class(off, class), off % d == 0, "{off} {d}");
            }
            for off in [(1usize << 32) - 8, (1 << 32) - d] {
                assert_eq!(is_multiple_of_class(off, class), off % d == 0, "{off} {d}");
            }
        }
    }
}
