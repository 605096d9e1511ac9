//! Frees from a thread that does not own the block's page, batched per page.
//!
//! A remote free used to be one CAS on the page's `thread_free` per block: 30% of the samples of
//! xmalloc's shape (one thread allocates, another frees everything), nearly all of it in that
//! CAS and the miss on the line the owner swaps. Consecutive remote frees mostly hit the same
//! page (blocks allocated together die together), so a thread now chains them in its own heap
//! ([`Pending`]: the page, the chain's head and tail, its length) and pushes the whole chain
//! with one CAS when the next remote free is for another page, when the chain reaches
//! [`CHAIN_MAX`] blocks, and whenever the thread takes its allocation slow path, tidies or
//! exits. Until then the chained blocks still count as used in their page, so the page can
//! neither be given back nor reused: a thread that stops freeing and allocating holds back at
//! most one chain.

use core::ptr;
use core::sync::atomic::Ordering;

use super::heap::Heap;
use super::page::{self, Block, Page};
use super::segment::segment_of;
use super::thread;

/// Blocks a chain holds at most before it is pushed (32: one CAS per 32 frees, and an owner
/// waits for at most 31 blocks of a page per freeing thread).
pub const CHAIN_MAX: u32 = 32;

/// A thread's chain of remote frees into one page (in its heap).
pub struct Pending {
    /// The page the chain's blocks belong to, or null when there is no chain.
    page: *mut Page,
    /// The chain's first block (the last freed).
    head: *mut Block,
    /// The chain's last block (its link is null until the push).
    tail: *mut Block,
    /// Blocks on the chain.
    count: u32,
}

impl Pending {
    /// No chain.
    pub const fn new() -> Pending {
        Pending {
            page: ptr::null_mut(),
            head: ptr::null_mut(),
            tail: ptr::null_mut(),
            count: 0,
        }
    }
}

/// Frees `block` of `page` (owned by another heap) through the chain of `heap`, the calling
/// thread's own heap.
///
/// # Safety
/// The calling thread owns `heap`; `block` is a live block of `page`, not used afterwards.
#[inline]
pub unsafe fn free(heap: *mut Heap, page: *mut Page, block: *mut Block) {
    // SAFETY: the heap is the caller's; a chained block keeps its page in use (see the module
    // docs), so `pending.page` is a live page while the chain is not empty.
    unsafe {
        let pending = &raw mut (*heap).pending;
        if (*pending).page == page {
            page::link_chain(page, block, (*pending).head);
            (*pending).head = block;
            (*pending).count += 1;
            if (*pending).count == CHAIN_MAX {
                flush(heap);
            }
            return;
        }
        flush(heap);
        page::link_chain(page, block, ptr::null_mut());
        *pending = Pending {
            page,
            head: block,
            tail: block,
            count: 1,
        };
    }
}

/// Pushes the chain of `heap` (if any) to its page's `thread_free` with one CAS.
///
/// # Safety
/// The calling thread owns `heap`.
#[inline]
pub unsafe fn flush(heap: *mut Heap) {
    // SAFETY: as in `free`.
    unsafe {
        let pending = &raw mut (*heap).pending;
        let page = (*pending).page;
        if page.is_null() {
            return;
        }
        let Pending {
            head, tail, count, ..
        } = *pending;
        *pending = Pending::new();
        push(page, head, tail, count);
    }
}

/// Frees `block` of `page` straight to its `thread_free` (a thread without a heap of its own).
///
/// # Safety
/// `block` is a live block of `page`, owned by another heap, not used afterwards.
pub unsafe fn free_direct(page: *mut Page, block: *mut Block) {
    // SAFETY: forwarded contract.
    unsafe {
        page::link_chain(page, block, ptr::null_mut());
        push(page, block, block, 1);
    }
}

/// Pushes the chain `head..=tail` of `count` blocks of `page`, hands the page to its owner if the
/// push cleared its full mark, and counts the bytes towards a parked owner's reclaim.
///
/// # Safety
/// The chain's blocks are live blocks of `page`, linked by `page::link_chain`, owned by another
/// heap, not used afterwards.
#[cold]
#[inline(never)]
unsafe fn push(page: *mut Page, head: *mut Block, tail: *mut Block, count: u32) {
    // The chain's blocks keep the page in use until the CAS lands, so its segment header and
    // descriptor are valid to read before; after it, only if the CAS cleared FULL (the page then
    // stays on its owner's full list until the owner drains `rescued`).
    // SAFETY: as above; heaps are never unmapped, so the owner's fields may be read whatever
    // became of the page.
    unsafe {
        let owner = (*segment_of(page as usize)).heap.load(Ordering::Acquire);
        let bytes = (*page).block_size * count as usize;
        if page::push_thread_free(page, head, tail, count) {
            // We cleared FULL: hand the page to its owner, which will not free it until drained.
            let rescued = &(*owner).rescued;
            let mut first = rescued.load(Ordering::Relaxed);
            loop {
                (*page).rescue_next = first;
                match rescued.compare_exchange_weak(
                    first,
                    page,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) => first = now,
                }
            }
        }
        // A parked owner collects nothing until a thread adopts it: memory freed after its
        // thread is gone comes back through `note_parked_free`.
        if (*owner).parked.load(Ordering::Relaxed) {
            thread::note_parked_free(bytes);
        }
    }
}
