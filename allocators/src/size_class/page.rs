//! A page: a run of memory carved into blocks of one size class, with its free list sharded by
//! who frees (after mimalloc, Leijen et al. 2019):
//!
//! - `free`: the owner thread's list; allocation pops from it and the owner's frees push onto it
//!   (LIFO, so a block freed and soon reallocated is still in cache, as in jemalloc's tcache).
//!   mimalloc keeps the owner's frees on a separate `local_free` list to force a periodic slow
//!   path; measured here (mixed-size batches, 1 thread) LIFO reuse was faster, and the periodic
//!   collection is not needed because remote frees are collected whenever `free` runs dry;
//! - `thread_free`: blocks freed by other threads, pushed with one CAS and taken in batches by the
//!   owner with one swap. Its low bit [`FULL`] says the owner has parked the page on its full list:
//!   the first remote free that clears the bit also hands the page to the owner's `rescued` list,
//!   so full pages come back without the owner ever scanning them. After its push (and its last
//!   touch of the page) a remote free adds one to `remote_frees`, which the owner takes out of
//!   `used` with one swap: the owner never walks the blocks other threads freed to count them
//!   (each would be a cache miss), and a page whose blocks all came back is found empty without
//!   touching its blocks (as when a thread exits and its heap is tidied).
//!
//! Blocks are carved lazily ([`extend`]) a few KiB at a time, so an untouched page costs no RSS.
//! Every list link is written by [`set_link`] and read by [`link_of`]: plain pointers normally,
//! encoded and checked (same page, block boundary) with the `hardened` feature (see `checks`).
//! All functions take raw `*mut Page` so that a remote thread's access to `thread_free` never
//! overlaps a `&mut Page` held by the owner.

use core::ptr;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use super::checks;
use crate::hardened;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    /// The next free block, or null (encoded in hardened builds: use [`set_link`], [`link_of`]).
    next: *mut Block,
}

/// Links free block `block` to `next` (encoded with the block's address and `key`, from
/// `checks::key`, in hardened builds).
///
/// # Safety
/// `block` is a dead block owned by the caller (its first word is the allocator's).
#[inline(always)]
unsafe fn set_link(block: *mut Block, next: *mut Block, key: usize) {
    let stored = if hardened::ENABLED {
        hardened::encode_link_keyed(next as usize, block as usize, key) as *mut Block
    } else {
        next
    };
    // SAFETY: caller's contract.
    unsafe { (*block).next = stored };
}

/// The block after `block` on a free list of `page` (decoded and checked in hardened builds:
/// a link that leaves the page aborts with a corrupted free list).
///
/// # Safety
/// `block` is on a free list of `page`, which the caller owns (or walks as its owner).
#[inline(always)]
unsafe fn link_of(page: *const Page, block: *mut Block, key: usize) -> *mut Block {
    // SAFETY: caller's contract.
    unsafe {
        let stored = (*block).next;
        if hardened::ENABLED {
            checks::decode_next(page, block, stored, key)
        } else {
            stored
        }
    }
}

/// Set in `thread_free` while the owner keeps the page on its full list.
pub const FULL: usize = 1;

/// Bytes carved per [`extend`] call (at least one block).
const EXTEND_BYTES: usize = 4096;

/// A page descriptor, kept in its segment's header.
///
/// Invariants: while `in_use`, every block of the page is exactly one of: handed out, on `free`,
/// on `thread_free`, or not yet carved (index >= `capacity`); `used` counts the
/// handed-out blocks plus the remote frees the owner has not yet counted (`remote_frees` plus
/// those whose thread has pushed the block but not yet added to `remote_frees`). So `used == 0`
/// means no block is handed out and no other thread will touch the page again. `in_full` (owner's view) means the page is on the
/// heap's full list, not in its class queue. `is_zero` means every block on `free` is zero except
/// its link word. Free pages (`!in_use`) are fresh (`is_zero`), dirty (`!is_zero`), or discarded
/// (`discarded`, and reads as zero).
///
/// Layout: the fields the owner's fast paths write (`free`, `used`, `is_zero`) fill the first
/// cache line, the ones other threads write (`thread_free`, `remote_frees`, `rescue_next`) start
/// the second, and descriptors are cache-line aligned: a remote free then no longer takes away
/// the line the owner pops from (false sharing between owner and freeing thread, and between
/// neighbouring descriptors).
#[repr(C, align(64))]
pub struct Page {
    /// The allocation list.
    pub free: *mut Block,
    /// Blocks handed out (and remote-freed but not yet collected).
    pub used: u32,
    /// On the owner's full list.
    pub in_full: bool,
    /// Serving a class (otherwise free within its segment).
    pub in_use: bool,
    /// Blocks on `free` are zero past their link word (or, when free, the page reads as zero).
    pub is_zero: bool,
    /// The page's memory was given back with `os::discard` (only while free).
    pub discarded: bool,
    /// Blocks carved so far.
    pub capacity: u32,
    /// Blocks that fit in the page.
    pub reserved: u32,
    /// The size class served.
    pub class: u32,
    /// The block size of `class`.
    pub block_size: usize,
    /// Start of the page's memory (MAX_SMALL_ALIGN-aligned).
    pub start: usize,
    /// Bytes of the page's memory (0 for the slot covered by the segment header).
    pub area_len: usize,
    /// Links in the owner's class queue or full list.
    pub next: *mut Page,
    /// Blocks freed by other threads, tagged with [`FULL`] (second cache line: see above).
    pub thread_free: AtomicUsize,
    /// Remote frees finished since the owner last counted them (see the module docs).
    pub remote_frees: AtomicU32,
    /// Link in the owner's `rescued` list.
    pub rescue_next: *mut Page,
    /// Links in the owner's class queue or full list.
    pub prev: *mut Page,
    /// Clock (`os::coarse_millis`) when this page was last freed (for the discard decay).
    pub freed_at: u64,
    /// While free and dirty: the bytes of the page touched since it was last fresh (whole OS
    /// pages), counted in the heap's `dirty_bytes`; 0 once discarded.
    pub dirty_len: usize,
    /// Hardened builds only: what the free checks read, in a cache line of their own (see
    /// `checks::PageChecks`).
    #[cfg(feature = "hardened")]
    pub checks: super::checks::PageChecks,
}

const _: () = assert!(core::mem::offset_of!(Page, thread_free) == 64);

impl Page {
    /// An unused descriptor (the sentinel the empty heap points at).
    pub const fn empty() -> Page {
        Page {
            free: ptr::null_mut(),
            used: 0,
            in_full: false,
            in_use: false,
            is_zero: false,
            discarded: false,
            capacity: 0,
            reserved: 0,
            class: 0,
            block_size: 0,
            start: 0,
            area_len: 0,
            thread_free: AtomicUsize::new(0),
            remote_frees: AtomicU32::new(0),
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            rescue_next: ptr::null_mut(),
            freed_at: 0,
            dirty_len: 0,
            #[cfg(feature = "hardened")]
            checks: super::checks::PageChecks::new(),
        }
    }
}

/// Counts the finished remote frees out of `used` and, when `free` is empty, takes the
/// `thread_free` list as the new `free` list (without walking it; hardened builds walk it to
/// check its links and that it is no longer than the page).
///
/// # Safety
/// The caller owns `page` (its heap is the caller's), the page is in use and not on the full list.
#[inline]
pub unsafe fn collect(page: *mut Page) {
    // SAFETY: the caller owns the page; only `thread_free` and `remote_frees` are shared, and
    // they are touched atomically.
    unsafe {
        count_remote_frees(page);
        if !(*page).free.is_null() || (*page).thread_free.load(Ordering::Relaxed) & !FULL == 0 {
            return;
        }
        let list = (*page).thread_free.swap(0, Ordering::Acquire) & !FULL;
        if list == 0 {
            return;
        }
        if hardened::ENABLED {
            check_list(page, list as *mut Block);
        }
        (*page).free = list as *mut Block;
        (*page).is_zero = false;
    }
}

/// Takes the remote frees finished since the last call out of `used`.
///
/// # Safety
/// The caller owns `page`, which is in use.
#[inline]
pub unsafe fn count_remote_frees(page: *mut Page) {
    // SAFETY: the caller owns the page; `remote_frees` is touched atomically. The Acquire pairs
    // with the Release of `finish_remote_free`: once counted, the freeing thread is done with
    // the page.
    unsafe {
        if (*page).remote_frees.load(Ordering::Relaxed) == 0 {
            return;
        }
        let n = (*page).remote_frees.swap(0, Ordering::Acquire);
        debug_assert!((*page).used >= n);
        (*page).used -= n;
    }
}

/// Hardened builds: walks a list just taken from `thread_free`, checking every link (see
/// [`link_of`]) and that it holds no more blocks than the page has carved (else it has a cycle).
///
/// # Safety
/// The caller owns `page`; `head` heads a list of its dead blocks.
#[cold]
unsafe fn check_list(page: *mut Page, head: *mut Block) {
    let key = checks::key();
    let mut b = head;
    let mut count = 1u32;
    // SAFETY: caller's contract; `link_of` aborts on a link that leaves the page.
    unsafe {
        loop {
            b = link_of(page, b, key);
            if b.is_null() {
                break;
            }
            count += 1;
            if count > (*page).capacity {
                checks::list_too_long(page);
            }
        }
    }
}

/// Carves the next few KiB of never-used blocks onto `free`. `false` if the page is fully carved.
///
/// # Safety
/// The caller owns `page`, which is in use.
#[inline]
pub unsafe fn extend(page: *mut Page) -> bool {
    // SAFETY: the caller owns the page; the carved range lies inside its area (capacity + n <=
    // reserved) and holds no live block.
    unsafe {
        let remaining = ((*page).reserved - (*page).capacity) as usize;
        if remaining == 0 {
            return false;
        }
        let bsize = (*page).block_size;
        let n = (EXTEND_BYTES / bsize).clamp(1, remaining);
        let first = (*page).start + (*page).capacity as usize * bsize;
        let key = checks::key();
        let mut b = first;
        for _ in 1..n {
            set_link(b as *mut Block, (b + bsize) as *mut Block, key);
            b += bsize;
        }
        set_link(b as *mut Block, (*page).free, key);
        (*page).free = first as *mut Block;
        (*page).capacity += n as u32;
        if hardened::ENABLED {
            checks::carved(page);
        }
    }
    true
}

/// Pops the first block of the page's `free` list, counting it in `used` (and, hardened, arming
/// its canary).
///
/// # Safety
/// The caller owns `page`, whose `free` list is non-empty.
#[inline(always)]
pub unsafe fn pop(page: *mut Page) -> *mut u8 {
    // SAFETY: caller's contract: the head is a free block of this page.
    unsafe {
        let key = checks::key();
        let b = (*page).free;
        (*page).free = link_of(page, b, key);
        (*page).used += 1;
        if hardened::ENABLED {
            checks::arm(page, b, key);
        }
        b.cast()
    }
}

/// Pushes `block` on the page's `free` list (a free by the page's owner) and counts it out of
/// `used`. `key` is `checks::key()` (already read by the caller's checks).
///
/// # Safety
/// The caller owns `page`; `block` is a live block of it, not used afterwards.
#[inline(always)]
pub unsafe fn push_local(page: *mut Page, block: *mut Block, key: usize) {
    // SAFETY: caller's contract.
    unsafe {
        set_link(block, (*page).free, key);
        (*page).free = block;
        (*page).is_zero = false;
        (*page).used -= 1;
    }
}

/// Tries to mark the page full (`thread_free` 0 -> FULL). Fails if a remote free arrived.
///
/// # Safety
/// The caller owns `page`, which is in use and in its class queue.
#[inline]
pub unsafe fn try_mark_full(page: *mut Page) -> bool {
    // SAFETY: atomic access to the shared field of a live descriptor.
    unsafe {
        (*page)
            .thread_free
            .compare_exchange(0, FULL, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// Tries to take the page back from the full state (`thread_free` FULL -> 0). Fails if a remote
/// free already cleared the bit, in which case that thread hands the page to `rescued`.
///
/// # Safety
/// The caller owns `page`, which is on its full list.
#[inline]
pub unsafe fn try_unmark_full(page: *mut Page) -> bool {
    // SAFETY: atomic access to the shared field of a live descriptor.
    unsafe {
        (*page)
            .thread_free
            .compare_exchange(FULL, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// Pushes `block` on the page's `thread_free` list (a free from a thread that does not own the
/// page). Returns `true` if this free cleared [`FULL`]: the caller must then hand the page to the
/// owner's `rescued` list. The caller ends the free with [`finish_remote_free`].
///
/// # Safety
/// `block` is a live block of `page`, not used afterwards.
#[inline]
pub unsafe fn push_thread_free(page: *mut Page, block: *mut Block) -> bool {
    // SAFETY: the descriptor lives as long as the page holds a live block (this one, until the CAS
    // succeeds); the block is ours to link.
    unsafe {
        let tf = &(*page).thread_free;
        let key = checks::key();
        let mut old = tf.load(Ordering::Relaxed);
        loop {
            set_link(block, (old & !FULL) as *mut Block, key);
            match tf.compare_exchange_weak(
                old,
                block as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return old & FULL != 0,
                Err(now) => old = now,
            }
        }
    }
}

/// Ends a remote free begun by [`push_thread_free`]: counts it in `remote_frees`. The page may
/// be given back (and its segment unmapped) as soon as the owner sees the count, so this is the
/// freeing thread's last access to the page.
///
/// # Safety
/// The calling thread pushed a block of `page` with [`push_thread_free`] and has not finished
/// that free yet.
#[inline]
pub unsafe fn finish_remote_free(page: *mut Page) {
    // SAFETY: our pushed block is still counted in `used`, so the page is in use and its
    // descriptor valid until this add is seen.
    unsafe { (*page).remote_frees.fetch_add(1, Ordering::Release) };
}
