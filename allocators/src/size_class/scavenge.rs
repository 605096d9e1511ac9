//! Scavenging: gives back to the kernel the memory of partly used pages that no live block
//! touches, without waiting for the page to empty.
//!
//! Why: a page goes back to its segment (and, after the decay, to the kernel) only when its last
//! block is freed. A long-running cache that deletes random keys while its size mix shifts (the
//! harness's `server`) leaves most pages of the sizes it no longer allocates partly used, and
//! none ever empties: measured on one 256 MiB shard of `server`, 169 MiB of free blocks sat in
//! in-use pages at the end of the large-value phase, 37 MiB of them in whole OS pages holding no
//! live block (75 MiB one phase later, 116 MiB two phases later), while not one page emptied.
//!
//! How: a page is cut into spans, [`SPANS`] at most, each a whole number of OS pages
//! ([`span_shift`]). When a span holds no live block (every block overlapping it is free), its
//! memory is discarded (`MADV_DONTNEED`) and its bit set in the page's `parked` map; the free
//! blocks that *start* in it are unlinked from the `free` list first (their link words are about
//! to read as zero), while a free block that starts in a kept span stays listed (its link word
//! survives; its discarded tail reads as zeros, which a free block may). Allocation uses the
//! listed blocks first, so memory stays given back as long as the page has other free blocks;
//! when the list runs dry the slow path carves fresh blocks ([`super::page::extend`]) and then
//! [`unpark`]s one span at a time.
//!
//! When: from the allocation slow path, when the footprint grew [`SCAVENGE_EVERY`] bytes past
//! its level at the heap's last pass (its memory is growing: give back what can be given
//! first). The level only rises: a churn that refills discarded spans below it runs no pass
//! (see `heap::note_growth`: `malloc-churn` faulted 72,000 pages with a pass per MiB carved,
//! 10,500 with this rule, 9,600 with no scavenger). A pass
//! looks at each page of the heap's class queues and scavenges only those whose free bytes grew
//! by at least [`MIN_NEW_FREE`] since they were last scavenged, so a pass over pages that did not
//! change costs a read of their descriptors. The fast paths are untouched.
//!
//! Hardened builds never scavenge: their free blocks carry a state word and a canary that a
//! discard would clear.

use core::ptr;

use super::classes::NUM_CLASSES;
use super::hardening as checks;
use super::heap::{queue_remove, Heap, COUNTERS};
use super::page::{self, link_of, set_link, Block, Page};
use super::segment::{self, segment_of};
use crate::{hardened, os};

/// Spans per page at most: the bits of `Page::parked`.
pub const SPANS: usize = 128;
/// Footprint growth between two scavenging passes of a heap (1 MiB). A pass reads every
/// queued page's descriptor (about 5,000 for a 256 MiB heap of small pages) and walks the free
/// lists of the pages that changed. Measured on one 256 MiB `server` shard: every 1 MiB with
/// [`MIN_NEW_FREE`] at 4 KiB, the peak was 438 MiB mapped in 3.2 s; every 256 KiB, scanning
/// every page that changed at all, 432 MiB but 14.8 s; every 4 MiB at 16 KiB, 455 MiB.
pub const SCAVENGE_EVERY: usize = 1 << 20;
/// A page is scavenged again once its free bytes grew by this much since its last scavenge, or
/// by an eighth of its area if that is more ([`rescan_after`]): a scavenge walks the page's whole
/// free list, a cache miss per block, and at 4 KiB for every page those walks were two thirds of
/// the scavenger's time in `server` (`perf annotate`), which cost the workload 40-60% of its
/// throughput. Measured on `server` (harness, 3 reps, 2 threads): a quarter, ratio 1.79; an
/// eighth, 1.74 at unchanged throughput; a sixteenth, 1.74 with throughput down about 20%.
pub const MIN_NEW_FREE: usize = 4 << 10;
/// Descriptors a pass reads per KiB of growth at most: the pass after one over `n` queued pages
/// waits for `n` KiB of growth if that is more than [`SCAVENGE_EVERY`], so the sweep costs a
/// bounded share of the time spent filling memory whatever the heap's size.
pub const PAGES_PER_KIB: usize = 1;

/// Growth of a page's free bytes since its last scavenge that makes it worth another.
///
/// # Safety
/// `page` is a descriptor of the caller's.
#[inline]
unsafe fn rescan_after(page: *const Page) -> usize {
    // SAFETY: caller's contract.
    MIN_NEW_FREE.max(unsafe { (*page).area_len } / 8)
}

/// Whether a page with `free` free bytes is likely to have a span with no live block: with its
/// live blocks placed at random, a span of `k` blocks is all free with probability `f^k` (`f`
/// the page's free share); the walk of its free list (a cache miss per block, 89% of the
/// scavenger's samples in `server`) is skipped when fewer than half a span is expected.
///
/// # Safety
/// `page` is an in-use descriptor of the caller's.
unsafe fn worth_a_walk(page: *mut Page, free: usize) -> bool {
    // SAFETY: caller's contract.
    unsafe {
        let carved = (*page).capacity as usize * (*page).block_size;
        let span = 1usize << span_shift(page);
        if carved < span {
            return false;
        }
        // Fixed point, 16 fraction bits.
        let f = ((free << 16) / carved) as u64;
        let k = span.div_ceil((*page).block_size);
        let mut prob: u64 = 1 << 16;
        for _ in 0..k {
            prob = (prob * f) >> 16;
            if prob == 0 {
                break;
            }
        }
        prob * (carved / span) as u64 * 2 >= 1 << 16
    }
}

/// The most blocks a page holds (64 KiB pages of 8-byte blocks; medium and large pages hold
/// fewer): the size of the scavenger's free-block bitmap, on the stack.
const MAX_BLOCKS: usize = 8192;

/// log2 of the span size of `page`: the OS page, or a 128th of the page if that is bigger.
///
/// # Safety
/// `page` is a descriptor in a live segment.
unsafe fn span_shift(page: *const Page) -> u32 {
    let os_shift = os::page_size().trailing_zeros();
    // SAFETY: caller's contract: the segment header is initialised.
    let page_shift = unsafe { (*segment_of(page as usize)).page_shift };
    os_shift.max(page_shift.saturating_sub(SPANS.trailing_zeros()))
}

#[inline]
fn bit(map: &[u64; 2], i: usize) -> bool {
    map[i / 64] >> (i % 64) & 1 != 0
}

#[inline]
fn set_bit(map: &mut [u64; 2], i: usize) {
    map[i / 64] |= 1 << (i % 64);
}

/// The blocks of `page` (block size `bsize`, `cap` carved) whose start lies in span `s` of
/// `1 << shift` bytes: indexes `first..end`.
fn starts_in(s: usize, shift: u32, bsize: usize, cap: usize) -> (usize, usize) {
    let lo = s << shift;
    let hi = (s + 1) << shift;
    (lo.div_ceil(bsize).min(cap), hi.div_ceil(bsize).min(cap))
}

/// One pass over the heap's queued pages but their queues' heads (see the module docs). Pages
/// found empty (their remote frees collected) go back to their segment.
///
/// # Safety
/// The calling thread owns `heap` (not a sentinel).
///
/// Returns the growth (bytes) to wait for before the next pass (see [`PAGES_PER_KIB`]).
pub unsafe fn scavenge_heap(heap: *mut Heap) -> usize {
    if hardened::ENABLED {
        return usize::MAX;
    }
    let mut visited = 0usize;
    // SAFETY: the caller owns the heap and every page in its queues.
    unsafe {
        for class in 0..NUM_CLASSES {
            let q = &raw mut (*heap).queues[class];
            // The head is the page allocation is using: its free blocks are about to be used.
            let mut p = (*q).head;
            if !p.is_null() {
                p = (*p).next;
            }
            while !p.is_null() {
                let next = (*p).next;
                visited += 1;
                let free = ((*p).capacity - (*p).used) as usize * (*p).block_size;
                let mark = (*p).scavenge_mark as usize;
                if free < mark {
                    (*p).scavenge_mark = free as u32;
                } else if free >= mark + rescan_after(p) && worth_a_walk(p, free) {
                    page::collect_unless_empty(p);
                    if (*p).used == 0 {
                        queue_remove(q, p);
                        segment::free_page(heap, p);
                    } else {
                        scavenge_page(p);
                    }
                }
                p = next;
            }
        }
    }
    SCAVENGE_EVERY.max((visited / PAGES_PER_KIB) << 10)
}

/// Discards the spans of `page` that hold no live block and unlinks the free blocks that start in
/// them (see the module docs). Returns the bytes discarded.
///
/// # Safety
/// The calling thread owns `page`: in use, in its heap's class queue (not on the full list), its
/// remote frees collected, not in a hardened build.
pub unsafe fn scavenge_page(page: *mut Page) -> usize {
    // SAFETY: the caller owns the page; every block walked is on its free list or parked; the
    // ranges discarded hold only free blocks (checked against the bitmap) inside the page's area.
    unsafe {
        let shift = span_shift(page);
        let span = 1usize << shift;
        let start = (*page).start;
        let bsize = (*page).block_size;
        let cap = (*page).capacity as usize;
        (*page).scavenge_mark = ((cap - (*page).used as usize) * bsize) as u32;
        if !start.is_multiple_of(span) || cap > MAX_BLOCKS {
            return 0;
        }
        // Which carved blocks are free: on the list, or parked.
        let mut free = [0u64; MAX_BLOCKS / 64];
        let key = checks::page_key(page);
        let mut b = (*page).free;
        while !b.is_null() {
            let i = (b as usize - start) / bsize;
            free[i / 64] |= 1 << (i % 64);
            b = link_of(page, b, key);
        }
        let spans = (cap * bsize) >> shift; // spans wholly inside the carved blocks
        for s in 0..spans {
            if bit(&(*page).parked, s) {
                let (first, end) = starts_in(s, shift, bsize, cap);
                for i in first..end {
                    free[i / 64] |= 1 << (i % 64);
                }
            }
        }
        // Spans newly free: every block overlapping them is free.
        let mut new = [0u64; 2];
        let mut any = false;
        for s in 0..spans {
            if bit(&(*page).parked, s) {
                continue;
            }
            let first = (s << shift) / bsize;
            let last = (((s + 1) << shift) - 1) / bsize;
            if (first..=last).all(|i| free[i / 64] >> (i % 64) & 1 != 0) {
                set_bit(&mut new, s);
                any = true;
            }
        }
        if !any {
            return 0;
        }
        // Unlink the blocks that start in the new spans while their links can still be read.
        let mut prev: *mut Block = ptr::null_mut();
        let mut b = (*page).free;
        while !b.is_null() {
            let next = link_of(page, b, key);
            if bit(&new, (b as usize - start) >> shift) {
                if prev.is_null() {
                    (*page).free = next;
                } else {
                    set_link(prev, next, key);
                }
            } else {
                prev = b;
            }
            b = next;
        }
        // Discard runs of new spans with one call each.
        let mut bytes = 0;
        let mut s = 0;
        while s < spans {
            if !bit(&new, s) {
                s += 1;
                continue;
            }
            let run = s;
            while s < spans && bit(&new, s) {
                s += 1;
            }
            let len = (s - run) << shift;
            os::discard((start + (run << shift)) as *mut u8, len);
            bytes += len;
        }
        (*page).parked[0] |= new[0];
        (*page).parked[1] |= new[1];
        COUNTERS.sub_mapped(bytes);
        bytes
    }
}

/// Links the free blocks of the first parked span of `page` (and of the parked spans after it
/// that only those blocks cover) back onto its empty `free` list. `false` if no span is parked.
///
/// # Safety
/// The calling thread owns `page` (in use), whose `free` list is empty.
pub unsafe fn unpark(page: *mut Page) -> bool {
    // SAFETY: the caller owns the page; blocks starting in a parked span are free and on no list
    // (see `scavenge_page`), and below `capacity`.
    unsafe {
        let shift = span_shift(page);
        let bsize = (*page).block_size;
        let cap = (*page).capacity as usize;
        let key = checks::page_key(page);
        while (*page).parked != [0, 0] {
            let s = if (*page).parked[0] != 0 {
                (*page).parked[0].trailing_zeros() as usize
            } else {
                64 + (*page).parked[1].trailing_zeros() as usize
            };
            (*page).parked[s / 64] &= !(1 << (s % 64));
            let mut given = 1usize << shift;
            let (first, end) = starts_in(s, shift, bsize, cap);
            // Later parked spans that these blocks cover and where no block starts: nothing to
            // link there, only their memory, now about to be written again, to count.
            let covered_end = end * bsize;
            let mut t = s + 1;
            while t < SPANS && (t << shift) < covered_end {
                let (f, e) = starts_in(t, shift, bsize, cap);
                if f == e && bit(&(*page).parked, t) {
                    (*page).parked[t / 64] &= !(1 << (t % 64));
                    given += 1 << shift;
                }
                t += 1;
            }
            COUNTERS.add_mapped(given);
            if first == end {
                continue;
            }
            for i in (first..end).rev() {
                let b = ((*page).start + i * bsize) as *mut Block;
                set_link(b, (*page).free, key);
                (*page).free = b;
            }
            return true;
        }
        false
    }
}

/// For a page going back to its segment: forgets its parked spans, counting their memory as
/// mapped again (the page heap's accounting counts a free page whole until it discards it).
///
/// # Safety
/// The calling thread owns `page`, which is being freed.
pub unsafe fn forget_parked(page: *mut Page) {
    // SAFETY: caller's contract.
    unsafe {
        let n = ((*page).parked[0].count_ones() + (*page).parked[1].count_ones()) as usize;
        if n != 0 {
            COUNTERS.add_mapped(n << span_shift(page));
            (*page).parked = [0, 0];
        }
        (*page).scavenge_mark = 0;
    }
}
