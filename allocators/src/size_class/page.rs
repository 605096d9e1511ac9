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
//!   so full pages come back without the owner ever scanning them. The word's top 16 bits count
//!   the blocks on the list (see [`COUNT_SHIFT`]): the same CAS that pushes a block counts it,
//!   and the owner takes list and count with one swap and subtracts the count from `used`, never
//!   walking the blocks (each would be a cache miss). The CAS is a remote free's last touch of
//!   the page (unless it cleared [`FULL`]: the page then stays on the owner's full list, never
//!   collected nor given back, until the owner drains `rescued`). An earlier version counted in a
//!   separate `remote_frees` word, a second locked instruction per remote free: about 40% of
//!   `free_remote`'s samples in a `perf` profile of xmalloc (one producer, one consumer);
//!   walking the list instead (as mimalloc does) moved most of that time into the producer's
//!   `alloc_slow` (11% of the samples).
//!
//! Blocks are carved lazily ([`extend`]) a few KiB at a time, so an untouched page costs no RSS.
//! Every list link is written by [`set_link`] and read by [`link_of`]: plain pointers normally,
//! encoded and checked (same page, block boundary) with the `hardened` feature (see `hardening`).
//! All functions take raw `*mut Page` so that a remote thread's access to `thread_free` never
//! overlaps a `&mut Page` held by the owner.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

use super::hardening;
use crate::hardened;

/// A free block: its first word links to the next free block.
#[repr(C)]
pub struct Block {
    /// The next free block, or null (encoded in hardened builds: use [`set_link`], [`link_of`]).
    next: *mut Block,
}

/// Links free block `block` to `next` (encoded with the block's address and `key`, from
/// `hardening::page_key`, in hardened builds).
///
/// # Safety
/// `block` is a dead block owned by the caller (its first word is the allocator's).
#[inline(always)]
pub(super) unsafe fn set_link(block: *mut Block, next: *mut Block, key: usize) {
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
pub(super) unsafe fn link_of(page: *const Page, block: *mut Block, key: usize) -> *mut Block {
    // SAFETY: caller's contract.
    unsafe {
        let stored = (*block).next;
        if hardened::ENABLED {
            hardening::decode_next(page, block, stored, key)
        } else {
            stored
        }
    }
}

/// Set in `thread_free` while the owner keeps the page on its full list.
pub const FULL: usize = 1;
/// `thread_free` holds the number of blocks on its list from this bit up; the list's head is the
/// address in the bits below (blocks lie below 2^48: `segment::map_segment` refuses memory
/// above) and a page holds fewer than 2^16 blocks (8192 at most: 64 KiB pages of 8-byte blocks).
pub const COUNT_SHIFT: u32 = 48;
/// One block in `thread_free`'s count.
const COUNT_ONE: usize = 1 << COUNT_SHIFT;
/// The head address bits of `thread_free`.
const HEAD_MASK: usize = (COUNT_ONE - 1) & !FULL;

/// Bytes carved per [`extend`] call (at least one block).
pub const EXTEND_BYTES: usize = 4096;

/// A page descriptor, kept in its segment's header.
///
/// Invariants: while `in_use`, every block of the page is exactly one of: handed out, on `free`,
/// on `thread_free`, or not yet carved (index >= `capacity`); `used` counts the handed-out
/// blocks plus those on `thread_free` (its count). So `used == 0` means no block is handed out
/// and no other thread will touch the page again (a remote free's CAS is its last touch of a
/// page not marked [`FULL`]). `in_full` (owner's view) means the page is on the heap's full
/// list, not in its class queue. `is_zero` means every block on `free` is zero except
/// its link word. Free pages (`!in_use`) are fresh (`is_zero`), dirty (`!is_zero`), or discarded
/// (`discarded`, and reads as zero).
///
/// Layout: the fields the owner's fast paths write (`free`, `used`, `is_zero`) fill the first
/// cache line, the ones other threads write (`thread_free`, `rescue_next`) start
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
    /// Link in the owner's `rescued` list.
    pub rescue_next: *mut Page,
    /// Links in the owner's class queue or full list.
    pub prev: *mut Page,
    /// Clock (`os::coarse_millis`) when this page was last freed (for the discard decay).
    pub freed_at: u64,
    /// While free and dirty: the bytes of the page touched since it was last fresh (whole OS
    /// pages), counted in the heap's `dirty_bytes`; 0 once discarded.
    pub dirty_len: usize,
    /// While in use: the spans (see `scavenge`) given back to the kernel while the page was
    /// partly used; the free blocks that start in them are on no list until `scavenge::unpark`
    /// links them again. Bit `i` of word `i / 64`. Zero in hardened builds (never scavenged).
    pub parked: [u64; 2],
    /// While in use: the page's free bytes (`(capacity - used) * block_size`) when it was last
    /// scavenged, or the lowest since; `scavenge` looks at the page again only once its free
    /// bytes have grown well past this.
    pub scavenge_mark: u32,
    /// Hardened builds only: what the free checks read, in a cache line of their own (see
    /// `hardening::PageChecks`).
    #[cfg(feature = "hardened")]
    pub checks: super::hardening::PageChecks,
}

const _: () = assert!(core::mem::offset_of!(Page, thread_free) == 64);
// Two cache lines in plain builds: the scavenger's fields fit in the second one.
#[cfg(not(feature = "hardened"))]
const _: () = assert!(core::mem::size_of::<Page>() == 128);

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
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            rescue_next: ptr::null_mut(),
            freed_at: 0,
            dirty_len: 0,
            parked: [0; 2],
            scavenge_mark: 0,
            #[cfg(feature = "hardened")]
            checks: super::hardening::PageChecks::new(),
        }
    }
}

/// Takes the blocks other threads freed (`thread_free`) with one swap and counts them out of
/// `used`; they become the `free` list when it is empty (without walking them; hardened builds
/// walk them to check their links and that there are no more than the page has carved), else
/// they are walked and put in front of it (rare: `tidy` collects pages it does not pop, and
/// `alloc_slow` pages past the queue's head).
///
/// # Safety
/// The caller owns `page` (its heap is the caller's), the page is in use and not on the full list.
#[inline]
pub unsafe fn collect(page: *mut Page) {
    // SAFETY: forwarded contract.
    unsafe { collect_inner(page, false) }
}

/// [`collect`] for a page that is given back if it is empty: when the remote frees make it empty
/// their list is not linked in front of `free` (a walk of every block for nothing).
///
/// # Safety
/// As for [`collect`]; if `used` ends at 0 the caller frees the page (its lists are stale).
#[inline]
pub unsafe fn collect_unless_empty(page: *mut Page) {
    // SAFETY: forwarded contract.
    unsafe { collect_inner(page, true) }
}

/// For a heap being tidied (its thread left): takes the page's remote frees only when they are
/// all of its live blocks, so that the caller can give the page back; otherwise leaves them on
/// `thread_free` for the next owner, which takes them when the page's own list runs dry (with no
/// walk then). Merging them here walked every remote-freed block to find the list's tail: 95% of
/// `park_tidy`'s samples, which were a third of all cycles of a larson-shaped C program (`perf`).
///
/// # Safety
/// As for [`collect_unless_empty`].
#[inline]
pub unsafe fn collect_if_emptied(page: *mut Page) {
    // SAFETY: forwarded contract; `thread_free` is read atomically (its count only grows, and
    // never above `used`, until the owner takes the list).
    unsafe {
        let word = (*page).thread_free.load(Ordering::Relaxed);
        if (word >> COUNT_SHIFT) as u32 == (*page).used {
            collect_inner(page, true);
        }
    }
}

/// See [`collect`] and [`collect_unless_empty`].
#[inline(always)]
unsafe fn collect_inner(page: *mut Page, unless_empty: bool) {
    // SAFETY: the caller owns the page; only `thread_free` is shared, and it is touched
    // atomically. The Acquire pairs with the remote frees' Release: their links are visible.
    unsafe {
        if (*page).thread_free.load(Ordering::Relaxed) & !FULL == 0 {
            return;
        }
        let word = (*page).thread_free.swap(0, Ordering::Acquire);
        let head = (word & HEAD_MASK) as *mut Block;
        if head.is_null() {
            return;
        }
        let n = (word >> COUNT_SHIFT) as u32;
        if hardened::ENABLED {
            check_list(page, head);
        }
        debug_assert!((*page).used >= n);
        (*page).used -= n;
        (*page).is_zero = false;
        if unless_empty && (*page).used == 0 {
            return;
        }
        if !(*page).free.is_null() {
            let key = hardening::page_key(page);
            let mut tail = head;
            loop {
                let next = link_of(page, tail, key);
                if next.is_null() {
                    break;
                }
                tail = next;
            }
            set_link(tail, (*page).free, key);
        }
        (*page).free = head;
    }
}

/// Hardened builds: walks a list just taken from `thread_free`, checking every link (see
/// [`link_of`]) and that it holds no more blocks than the page has carved (else it has a cycle).
///
/// # Safety
/// The caller owns `page`; `head` heads a list of its dead blocks.
#[cold]
unsafe fn check_list(page: *mut Page, head: *mut Block) {
    let mut b = head;
    let mut count = 1u32;
    // SAFETY: caller's contract; `link_of` aborts on a link that leaves the page.
    unsafe {
        let key = hardening::page_key(page);
        loop {
            b = link_of(page, b, key);
            if b.is_null() {
                break;
            }
            count += 1;
            if count > (*page).capacity {
                hardening::list_too_long(page);
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
        let key = hardening::page_key(page);
        let mut b = first;
        for _ in 1..n {
            set_link(b as *mut Block, (b + bsize) as *mut Block, key);
            b += bsize;
        }
        set_link(b as *mut Block, (*page).free, key);
        (*page).free = first as *mut Block;
        (*page).capacity += n as u32;
        if hardened::ENABLED {
            hardening::carved(page);
        }
    }
    true
}

/// Asks for the line of `block` (the next block `pop` will hand out) with intent to write: a
/// block freed by another thread sits in that thread's cache, and reading its link word on the
/// next pop was 79% of `malloc`'s samples in xmalloc's producer (`perf annotate`). A hint only:
/// it never faults, null included.
#[inline(always)]
fn prefetch_for_write(block: *mut Block) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetchw` is a hint: it reads nothing, writes nothing and cannot fault, whatever
    // the address (CPUs without it run it as a no-op: it is in the `0f 0d` NOP space).
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) block, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = block;
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
        let key = hardening::page_key(page);
        let b = (*page).free;
        let next = link_of(page, b, key);
        (*page).free = next;
        prefetch_for_write(next);
        (*page).used += 1;
        if hardened::ENABLED {
            hardening::arm(page, b);
        }
        b.cast()
    }
}

/// Pushes `block` on the page's `free` list (a free by the page's owner) and counts it out of
/// `used`. `key` is the page's link key, `hardening::page_key` (already read by the caller's checks).
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

/// Links `block` of `page` to `next` on a chain of remote frees (see `remote`).
///
/// # Safety
/// `block` is a live block of `page` given up by the caller; `next` is null or a block of the
/// same chain.
#[inline(always)]
pub unsafe fn link_chain(page: *mut Page, block: *mut Block, next: *mut Block) {
    // SAFETY: caller's contract; the key is read from the live page's descriptor.
    unsafe { set_link(block, next, hardening::page_key(page)) }
}

/// Pushes the chain `head..=tail` of `count` blocks (linked by [`link_chain`]) on the page's
/// `thread_free` list with one CAS (frees from threads that do not own the page). Returns `true`
/// if this push cleared [`FULL`]: the caller must then hand the page to the owner's `rescued`
/// list. Unless it returns `true`, the page may be given back as soon as the CAS lands, so the
/// caller must not touch it again.
///
/// # Safety
/// The chain's blocks are live blocks of `page`, not used afterwards; `tail`'s link is null.
#[inline]
pub unsafe fn push_thread_free(
    page: *mut Page,
    head: *mut Block,
    tail: *mut Block,
    count: u32,
) -> bool {
    // SAFETY: the descriptor lives as long as the page holds a live block (these, until the CAS
    // succeeds); the blocks are ours to link.
    unsafe {
        let tf = &(*page).thread_free;
        let key = hardening::page_key(page);
        let add = COUNT_ONE * count as usize;
        let mut old = tf.load(Ordering::Relaxed);
        loop {
            set_link(tail, (old & HEAD_MASK) as *mut Block, key);
            // The old count plus ours, our chain in front, FULL cleared.
            let new = (old & !(COUNT_ONE - 1)) + add + head as usize;
            match tf.compare_exchange_weak(old, new, Ordering::Release, Ordering::Relaxed) {
                Ok(_) => return old & FULL != 0,
                Err(now) => old = now,
            }
        }
    }
}
