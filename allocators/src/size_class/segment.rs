//! Segments: 4 MiB ([`REGION_SIZE`]) aligned mappings claimed as [`Owner::SizeClass`], each owned
//! by one heap and cut into pages of one geometry ([`Kind`]). The segment header and its page
//! descriptors sit at the segment start, so any block reaches them with one mask:
//! `segment = addr & !(SEGMENT_SIZE - 1)`, `page = segment.pages[(addr - segment) >> page_shift]`.
//!
//! This file is the page heap: it hands pages to a heap's class queues, takes empty pages back,
//! gives dirty free pages back to the kernel (`os::discard`) after a decay in milliseconds of a
//! coarse clock (only while the heap holds more than [`DIRTY_LIMIT`] of them), and gives back
//! segments once all their pages are free and have sat through the same decay (keeping one per
//! heap cached and a few process-wide spares, [`SPARE`], unmapping the rest). A program that frees a large set and allocates it again soon after (a phase, a
//! request) so reuses its pages instead of discarding and faulting them in again.

use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};

use super::classes::{class_size, kind_of, Kind};
use super::heap::{Heap, COUNTERS};
use super::page::Page;
use crate::os;
use crate::region_map::{self, Owner, REGION_SIZE};

/// Bytes of a segment (one region-map window).
pub const SEGMENT_SIZE: usize = REGION_SIZE;
/// Bytes at the segment start reserved for the header (page areas start after it).
pub const HEADER_RESERVE: usize = 64 * 1024;
/// Page descriptors per segment (small pages: 64 KiB each).
const MAX_PAGES: usize = SEGMENT_SIZE >> 16;
/// Dirty free bytes a heap keeps before it starts discarding old ones.
pub const DIRTY_LIMIT: usize = 1 << 20;
/// Dirty bytes a spare segment (see [`SPARE`]) may keep.
const SPARE_DIRTY_LIMIT: usize = 1 << 20;
/// A dirty free page (or an empty segment) is given back once it has been free this many
/// milliseconds (mimalloc's purge delay is 10 ms; the coarse clock ticks every few ms).
pub const DECAY_MS: u64 = 20;
/// Above this many dirty bytes a heap discards at once, whatever their age (a bound on the memory
/// the decay may keep). The decay only runs when the heap's own thread frees a page, so this is
/// also what a live thread may keep once it goes idle after a burst of frees. Not lower: a
/// workload whose live set swings by more than the limit (the harness's fragmentation and
/// phase) then discards everything and faults it in again at every swing; at 8 MiB SizeClass
/// ran fragmentation at 0.23x mimalloc's throughput instead of about 1x.
pub(super) const DIRTY_HARD_LIMIT: usize = 32 << 20;

/// The header at the start of every segment.
#[repr(C)]
pub struct Segment {
    /// The owning heap (fixed while any page is in use; compared by `dealloc` to tell local
    /// frees from remote ones).
    pub heap: AtomicPtr<Heap>,
    /// log2 of the page size.
    pub page_shift: u32,
    /// Pages in this segment (including a header-only slot of zero length).
    pub page_count: u32,
    /// Pages in use.
    pub used_pages: u32,
    /// The geometry.
    pub kind: Kind,
    /// On the heap's list of segments with free pages.
    pub in_avail: bool,
    /// Links in the heap's `avail` list for this kind.
    pub next: *mut Segment,
    /// Links in the heap's `avail` list for this kind.
    pub prev: *mut Segment,
    /// Bytes of pages currently discarded (not counted as mapped).
    pub discarded_bytes: usize,
    /// Clock (`os::coarse_millis`) when `used_pages` last fell to 0.
    pub emptied_at: u64,
    /// The page descriptors.
    pub pages: [Page; MAX_PAGES],
}

const _: () = assert!(core::mem::size_of::<Segment>() <= HEADER_RESERVE);

/// The segment holding `addr`.
#[inline(always)]
pub fn segment_of(addr: usize) -> *mut Segment {
    (addr & !(SEGMENT_SIZE - 1)) as *mut Segment
}

/// The page descriptor for `addr`, an address inside a live segment.
///
/// # Safety
/// `addr` must lie inside a segment of this allocator (mapped, header initialised).
#[inline(always)]
pub unsafe fn page_of(addr: usize) -> *mut Page {
    let seg = segment_of(addr);
    // SAFETY: the segment header is initialised; the index is below page_count because pages
    // tile the segment.
    unsafe {
        let idx = (addr - seg as usize) >> (*seg).page_shift;
        debug_assert!(idx < (*seg).page_count as usize);
        ptr::addr_of_mut!((*seg).pages).cast::<Page>().add(idx)
    }
}

/// Maps and initialises a fresh segment of `kind` for `heap`. Null if the kernel refuses.
fn map_segment(heap: *mut Heap, kind: Kind) -> *mut Segment {
    // A page's `thread_free` word keeps a count above bit 48 (`page::COUNT_SHIFT`): its blocks
    // must lie below. The region map covers only the addresses below 2^ADDRESS_BITS, and refuses
    // a claim above, so a claimed segment does.
    const { assert!(region_map::ADDRESS_BITS <= super::page::COUNT_SHIFT) };
    let base = region_map::map_claimed(SEGMENT_SIZE, Owner::SizeClass);
    if base.is_null() {
        return ptr::null_mut();
    }
    COUNTERS.add_mapped(SEGMENT_SIZE);
    let seg = base as *mut Segment;
    let shift = kind.page_shift();
    let count = SEGMENT_SIZE >> shift;
    // SAFETY: the mapping is fresh (all zero, which is a valid empty header and descriptors) and
    // ours alone; we fill in the non-zero fields.
    unsafe {
        (*seg).heap = AtomicPtr::new(heap);
        (*seg).page_shift = shift;
        (*seg).page_count = count as u32;
        (*seg).kind = kind;
        for i in 0..count {
            let p = ptr::addr_of_mut!((*seg).pages).cast::<Page>().add(i);
            let lo = (base as usize + (i << shift)).max(base as usize + HEADER_RESERVE);
            let hi = base as usize + ((i + 1) << shift);
            (*p).start = lo;
            (*p).area_len = hi.saturating_sub(lo);
            (*p).is_zero = true;
        }
    }
    seg
}

/// Unmaps an empty segment.
///
/// # Safety
/// `seg` has no page in use, is on no list, and no block of it is referenced.
unsafe fn unmap_segment(seg: *mut Segment) {
    // SAFETY: the segment is dead (caller's contract).
    unsafe {
        COUNTERS.sub_mapped(SEGMENT_SIZE - (*seg).discarded_bytes);
        region_map::release(seg as usize, SEGMENT_SIZE);
        os::unmap(seg.cast(), SEGMENT_SIZE);
    }
}

unsafe fn avail_push(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: the caller owns heap and seg; list links are only touched by the owner.
    unsafe {
        let k = (*seg).kind as usize;
        let head = (*heap).avail[k];
        (*seg).prev = ptr::null_mut();
        (*seg).next = head;
        if !head.is_null() {
            (*head).prev = seg;
        }
        (*heap).avail[k] = seg;
        (*seg).in_avail = true;
    }
}

unsafe fn avail_remove(heap: *mut Heap, seg: *mut Segment) {
    // SAFETY: as in avail_push; seg is on the list for its kind.
    unsafe {
        let k = (*seg).kind as usize;
        if (*seg).prev.is_null() {
            (*heap).avail[k] = (*seg).next;
        } else {
            (*(*seg).prev).next = (*seg).next;
        }
        if !(*seg).next.is_null() {
            (*(*seg).next).prev = (*seg).prev;
        }
        (*seg).next = ptr::null_mut();
        (*seg).prev = ptr::null_mut();
        (*seg).in_avail = false;
    }
}

/// Dirty bytes of the free pages of `seg`.
unsafe fn dirty_bytes_of(seg: *mut Segment) -> usize {
    let mut n = 0;
    // SAFETY: the caller owns the live segment.
    unsafe {
        for i in 0..(*seg).page_count as usize {
            let p = ptr::addr_of!((*seg).pages).cast::<Page>().add(i);
            if !(*p).in_use && !(*p).is_zero {
                n += (*p).dirty_len;
            }
        }
    }
    n
}

/// Takes a free page of the kind serving `class` and initialises it for `class`. Null if the
/// kernel refuses a new segment.
///
/// # Safety
/// The calling thread owns `heap`.
pub unsafe fn alloc_page(heap: *mut Heap, class: usize) -> *mut Page {
    let kind = kind_of(class);
    // SAFETY: the caller owns the heap and its segments.
    unsafe {
        let mut seg = (*heap).avail[kind as usize];
        if seg.is_null() {
            seg = take_segment(heap, kind);
            if seg.is_null() {
                return ptr::null_mut();
            }
            avail_push(heap, seg);
        }
        let pages = ptr::addr_of_mut!((*seg).pages).cast::<Page>();
        // A dirty page first (already resident: no page faults), else the first free one.
        let mut page = ptr::null_mut();
        for i in 0..(*seg).page_count as usize {
            let p = pages.add(i);
            if !(*p).in_use && (*p).area_len != 0 {
                if !(*p).is_zero {
                    page = p;
                    break;
                }
                if page.is_null() {
                    page = p;
                }
            }
        }
        debug_assert!(!page.is_null(), "avail segment without a free page");
        if page.is_null() {
            return page;
        }
        if (*page).discarded {
            (*page).discarded = false;
            (*page).is_zero = true;
            (*seg).discarded_bytes -= (*page).area_len;
            COUNTERS.add_mapped((*page).area_len);
        } else if !(*page).is_zero {
            (*heap).dirty_bytes -= (*page).dirty_len;
        }
        (*seg).used_pages += 1;
        if (*seg).used_pages as usize == usable_pages(seg) {
            avail_remove(heap, seg);
        }
        let bsize = class_size(class);
        (*page).in_use = true;
        (*page).in_full = false;
        (*page).class = class as u32;
        (*page).block_size = bsize;
        (*page).reserved = ((*page).area_len / bsize) as u32;
        (*page).capacity = 0;
        (*page).used = 0;
        (*page).free = ptr::null_mut();
        (*page).thread_free.store(0, Ordering::Relaxed);
        (*page).next = ptr::null_mut();
        (*page).prev = ptr::null_mut();
        (*page).rescue_next = ptr::null_mut();
        (*page).parked = [0, 0];
        (*page).scavenge_mark = 0;
        if crate::hardened::ENABLED {
            super::hardening::init_page(page, class);
        }
        page
    }
}

fn usable_pages(seg: *mut Segment) -> usize {
    // SAFETY: reading the geometry of a live segment.
    let kind = unsafe { (*seg).kind };
    match kind {
        Kind::Small => MAX_PAGES - 1,
        Kind::Medium => 8,
        Kind::Large => 1,
    }
}

/// A segment of `kind` for `heap`: the heap's cached one if it has that kind, else the spare
/// one (see [`SPARE`]) if it has that kind, else a fresh one.
unsafe fn take_segment(heap: *mut Heap, kind: Kind) -> *mut Segment {
    // SAFETY: the caller owns the heap; the cached segment is empty and owned by it; a segment
    // swapped out of SPARE is empty and now ours alone.
    unsafe {
        let cached = (*heap).cached_segment;
        if !cached.is_null() {
            (*heap).cached_segment = ptr::null_mut();
            if (*cached).kind == kind {
                (*heap).dirty_bytes += dirty_bytes_of(cached);
                return cached;
            }
            unmap_segment(cached);
        }
        // Each segment a heap takes pays for tidying one parked heap, so memory freed into
        // heaps nobody adopts still goes back.
        super::thread::reclaim_one_abandoned();
        for slot in &SPARE {
            let spare = slot.swap(ptr::null_mut(), Ordering::Acquire);
            if spare.is_null() {
                continue;
            }
            if (*spare).kind == kind {
                (*spare).heap.store(heap, Ordering::Relaxed);
                (*heap).dirty_bytes += dirty_bytes_of(spare);
                return spare;
            }
            stash_spare(spare);
        }
        map_segment(heap, kind)
    }
}

/// Empty segments handed back by heaps, kept mapped (each with at most [`SPARE_DIRTY_LIMIT`]
/// of dirty pages) for the next heap that needs a segment of their kind: a thread that exits and
/// a new one that starts (a pool recycling threads, a server spawning one per request) then
/// reuse their pages instead of unmapping a segment and faulting in a fresh one each time. Four
/// slots, because a new thread often starts before the one it replaces has parked its heap and
/// a heap may need segments of several kinds; the slots bound what is kept to four segments
/// (and 4 MiB of dirty pages) for the whole process. A slot is taken with a swap, so whoever
/// takes a segment owns it alone.
static SPARE: [AtomicPtr<Segment>; 4] = [const { AtomicPtr::new(ptr::null_mut()) }; 4];

/// Puts the empty segment `seg` in a free [`SPARE`] slot (its dirty pages discarded first if
/// they exceed [`SPARE_DIRTY_LIMIT`]), or unmaps it if all are taken.
///
/// # Safety
/// `seg` has no page in use, is on no list, and belongs to the caller alone.
unsafe fn stash_spare(seg: *mut Segment) {
    // SAFETY: caller's contract.
    unsafe {
        let discard_dirty = dirty_bytes_of(seg) > SPARE_DIRTY_LIMIT;
        let pages = ptr::addr_of_mut!((*seg).pages).cast::<Page>();
        for i in 0..(*seg).page_count as usize {
            let p = pages.add(i);
            if discard_dirty {
                discard_page(seg, p);
            }
            uncount_untouched(seg, p);
        }
        (*seg).heap.store(ptr::null_mut(), Ordering::Relaxed);
        for slot in &SPARE {
            if slot
                .compare_exchange(ptr::null_mut(), seg, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        unmap_segment(seg);
    }
}

/// Counts free page `p` of `seg` as discarded if it was never touched (no system call: it is
/// not resident), so that a segment kept for later counts in `mapped_bytes` only for the memory
/// it may hold.
///
/// # Safety
/// The caller owns `seg`; `p` is one of its descriptors.
unsafe fn uncount_untouched(seg: *mut Segment, p: *mut Page) {
    // SAFETY: caller's contract.
    unsafe {
        if !(*p).in_use && (*p).is_zero && !(*p).discarded && (*p).area_len != 0 {
            (*p).discarded = true;
            (*seg).discarded_bytes += (*p).area_len;
            COUNTERS.sub_mapped((*p).area_len);
        }
    }
}

/// Readies the segments of a heap being parked for the next thread that adopts it: empty
/// segments of small pages stay (threads re-created in a loop reuse their dirty pages instead of
/// faulting in fresh ones), other empty ones go to the spares (or are unmapped), and untouched
/// free pages stop counting as mapped.
///
/// # Safety
/// The calling thread owns `heap`.
pub unsafe fn keep_for_next_thread(heap: *mut Heap) {
    // SAFETY: the caller owns the heap and its segments; an empty segment holds no live block.
    unsafe {
        for k in 0..3 {
            let mut seg = (*heap).avail[k];
            while !seg.is_null() {
                let next = (*seg).next;
                if (*seg).used_pages == 0 && (*seg).kind != Kind::Small {
                    avail_remove(heap, seg);
                    (*heap).dirty_bytes -= dirty_bytes_of(seg);
                    stash_spare(seg);
                } else {
                    let pages = ptr::addr_of_mut!((*seg).pages).cast::<Page>();
                    for i in 0..(*seg).page_count as usize {
                        uncount_untouched(seg, pages.add(i));
                    }
                }
                seg = next;
            }
        }
    }
}

/// Gives the heap's cached empty segment (if any) to a [`SPARE`] slot, or unmaps it.
///
/// # Safety
/// The calling thread owns `heap`.
pub unsafe fn release_cached(heap: *mut Heap) {
    // SAFETY: the cached segment is empty, owned by the heap, on no list.
    unsafe {
        let cached = (*heap).cached_segment;
        if !cached.is_null() {
            (*heap).cached_segment = ptr::null_mut();
            stash_spare(cached);
        }
    }
}

/// Discards free page `p` of `seg` if it is dirty (and its bounds are whole OS pages); returns
/// the dirty bytes it had (0 if it was not discarded).
///
/// # Safety
/// The caller owns `seg`; `p` is one of its descriptors.
unsafe fn discard_page(seg: *mut Segment, p: *mut Page) -> usize {
    let page_size = os::page_size();
    // SAFETY: caller's contract; a free page holds no live block.
    unsafe {
        let dirty = !(*p).in_use && !(*p).is_zero && (*p).area_len != 0;
        let len = (*p).area_len;
        if !dirty || !(*p).start.is_multiple_of(page_size) || !len.is_multiple_of(page_size) {
            return 0;
        }
        os::discard((*p).start as *mut u8, len);
        (*p).discarded = true;
        (*p).is_zero = true;
        (*seg).discarded_bytes += len;
        COUNTERS.sub_mapped(len);
        core::mem::take(&mut (*p).dirty_len)
    }
}

/// Returns an empty page to its segment; frees the segment when it has no page in use.
///
/// # Safety
/// The calling thread owns `heap` and `page` (in use, `used == 0`, on no list).
pub unsafe fn free_page(heap: *mut Heap, page: *mut Page) {
    // SAFETY: the caller owns the page and its segment.
    unsafe {
        debug_assert_eq!((*page).used, 0);
        let seg = segment_of(page as usize);
        super::scavenge::forget_parked(page);
        (*page).in_use = false;
        (*page).in_full = false;
        (*page).is_zero = false;
        (*page).free = ptr::null_mut();
        // The bytes this page ever touched since it was last fresh (carved blocks, whole OS
        // pages): its share of the RSS the heap keeps.
        let touched = ((*page).capacity as usize * (*page).block_size)
            .next_multiple_of(os::page_size())
            .min((*page).area_len);
        (*page).dirty_len = (*page).dirty_len.max(touched);
        if crate::hardened::ENABLED {
            // No block of a free page passes `hardening::check_small`.
            super::hardening::free_page(page);
        }
        let now = os::coarse_millis();
        (*page).freed_at = now;
        (*heap).dirty_bytes += (*page).dirty_len;
        (*seg).used_pages -= 1;
        if (*seg).used_pages == 0 {
            // Kept (in `avail`) for reuse until the decay gives it back.
            (*seg).emptied_at = now;
        }
        if !(*seg).in_avail {
            avail_push(heap, seg);
        }
        let dirty = (*heap).dirty_bytes;
        if dirty > DIRTY_HARD_LIMIT {
            decay(heap, 0, 0);
        } else if dirty > DIRTY_LIMIT && now >= (*heap).next_sweep {
            decay(heap, DECAY_MS, DECAY_MS);
        }
    }
}

/// Discards every dirty free page of the heap freed at least `page_age` milliseconds ago, and
/// takes out of `avail` every segment empty for at least `segment_age`: the first becomes the
/// heap's cached segment (if it has none), the others go to the spare slots (or are unmapped).
/// `u64::MAX` spares them all.
///
/// # Safety
/// The calling thread owns `heap`.
pub unsafe fn decay(heap: *mut Heap, page_age: u64, segment_age: u64) {
    let now = os::coarse_millis();
    // SAFETY: the caller owns the heap and its segments; discarded pages hold no live block; an
    // empty segment holds no live block either.
    unsafe {
        (*heap).next_sweep = now + DECAY_MS / 2;
        for k in 0..3 {
            let mut seg = (*heap).avail[k];
            while !seg.is_null() {
                let next = (*seg).next;
                let pages = ptr::addr_of_mut!((*seg).pages).cast::<Page>();
                for i in 0..(*seg).page_count as usize {
                    let p = pages.add(i);
                    if (*p).freed_at.saturating_add(page_age) <= now {
                        (*heap).dirty_bytes -= discard_page(seg, p);
                    }
                }
                if (*seg).used_pages == 0 && (*seg).emptied_at.saturating_add(segment_age) <= now {
                    avail_remove(heap, seg);
                    (*heap).dirty_bytes -= dirty_bytes_of(seg);
                    if (*heap).cached_segment.is_null() {
                        (*heap).cached_segment = seg;
                    } else {
                        stash_spare(seg);
                    }
                }
                seg = next;
            }
        }
    }
}

/// Unmaps the heap's cached empty segment, if any.
///
/// # Safety
/// The calling thread owns `heap`.
pub unsafe fn drop_cached(heap: *mut Heap) {
    // SAFETY: the cached segment is empty, owned by the heap, on no list.
    unsafe {
        let cached = (*heap).cached_segment;
        if !cached.is_null() {
            (*heap).cached_segment = ptr::null_mut();
            unmap_segment(cached);
        }
    }
}
