//! A buddy arena: the free lists of its regions, splitting on allocation and coalescing on free.
//!
//! One doubly linked free list per order threads through the free blocks themselves (a 16 B block
//! has room for both links), so a buddy found by address (`addr ^ size`) leaves its list in O(1).
//! Whether a block is free, and its order, is in the region's tag bytes (see [`super::region`]),
//! never in the block, so coalescing reads no header inside neighbouring memory.
//!
//! Policy: allocation takes the smallest free block that fits and splits it down, putting the
//! upper halves on their lists; free merges with the buddy while the buddy is free and of the same
//! order. A region that becomes wholly free is kept if it is the arena's only empty region and
//! returned to the kernel otherwise, so an alternating allocate/free of a large block does not
//! thrash `mmap`.
//!
//! Returning memory inside regions: free blocks of [`PURGE_MIN_ORDER`] (256 KiB) and up that hold
//! written ("dirty") pages are counted; when they exceed [`PURGE_THRESHOLD`] the arena discards
//! their pages (`MADV_DONTNEED`) and marks them clean. A budget rather than purging at once keeps a
//! program that frees and reallocates one large block from paying page faults every time.
//! `mapped_bytes` counts, per region, the metadata plus every block that is not clean.
//!
//! Hardened builds encode the links with the per-process key and check them before following
//! them (see [`super::hardening`]).
//!
//! An arena is not thread-safe by itself; the allocator keeps each behind a `sync::Lock`.

use core::ptr;

use super::hardening;
use super::region::{
    self, get_tag, set_tag, RegionHeader, CAPACITY, MAX_ORDER, META_SIZE, MIN_ORDER, NUM_ORDERS,
    TAG_CLEAN, TAG_FREE, TAG_USED,
};
use crate::os;
use crate::region_map::REGION_SIZE;
use crate::stats::GlobalCounters;

/// The smallest order whose free blocks are discarded when the dirty budget is exceeded.
pub const PURGE_MIN_ORDER: u32 = 18;
/// Bytes of dirty free blocks of [`PURGE_MIN_ORDER`] and up an arena keeps before discarding them.
pub const PURGE_THRESHOLD: usize = 8 << 20;

/// Where a free block keeps its link to the next block of its list (an offset in the block).
const NEXT: usize = 0;
/// Where a free block keeps its link to the previous block of its list.
const PREV: usize = core::mem::size_of::<usize>();

/// Reads the link at offset `field` of the free block `node` (0 for none), decoded with `key`
/// ([`Arena::key`]) in hardened builds but not checked
/// (see [`hardening::check_link`]).
///
/// # Safety
/// `node` must be a free block (at least 16 bytes) in a live region.
#[inline(always)]
unsafe fn load_link(node: usize, field: usize, key: usize) -> usize {
    let slot = node + field;
    // SAFETY: the link words lie inside the free block (caller).
    hardening::decode_link(unsafe { (slot as *const usize).read() }, slot, key)
}

/// Writes the link at offset `field` of the free block `node` (encoded with `key` in hardened
/// builds).
///
/// # Safety
/// `node` must be a block (at least 16 bytes) in a live region that nobody else uses.
#[inline(always)]
unsafe fn store_link(node: usize, field: usize, link: usize, key: usize) {
    let slot = node + field;
    // SAFETY: the link words lie inside the block (caller).
    unsafe { (slot as *mut usize).write(hardening::encode_link(link, slot, key)) }
}

/// Zeroes the links of `node`, a block leaving the free lists for a user (hardened builds): they
/// are encoded with the link key, which a user reading them could recover.
///
/// # Safety
/// `node` must be a block (at least 16 bytes) in a live region, owned by the caller.
#[inline(always)]
unsafe fn forget_links(node: usize) {
    if crate::hardened::ENABLED {
        // SAFETY: the link words lie inside the block (caller).
        unsafe {
            ((node + NEXT) as *mut usize).write(0);
            ((node + PREV) as *mut usize).write(0);
        }
    }
}

/// The free lists and regions of one arena.
///
/// `free[k]` is the address of the first block of list `k` (0 for an empty list); each free block
/// links to its neighbours at offsets [`NEXT`] and [`PREV`].
///
/// Invariants: every block on `free[k]` is tagged `TAG_FREE | (MIN_ORDER + k)` (plus `TAG_CLEAN`
/// if it was never written since it was mapped or discarded) and lies in a region of this arena;
/// every block tagged free is on exactly one list; no free block has a free buddy of the same
/// order (free blocks are fully coalesced); `empty_regions` counts this arena's regions whose
/// `free_bytes == CAPACITY`; `dirty_large` is the sum of the sizes of the free blocks of order
/// [`PURGE_MIN_ORDER`] and up that are not clean.
pub struct Arena {
    index: usize,
    free: [usize; NUM_ORDERS],
    regions: *mut RegionHeader,
    empty_regions: usize,
    dirty_large: usize,
    /// The key the links are encoded with ([`crate::hardened::key`]), copied here by
    /// [`Arena::add_region`] before the first link is written, so that list operations read it
    /// from the arena they already hold instead of from the global behind its initialisation
    /// check (see [`Arena::key`]).
    #[cfg(feature = "hardened")]
    key: usize,
}

// SAFETY: the raw pointers refer to region memory owned by the arena; the allocator only touches
// an arena under its lock.
unsafe impl Send for Arena {}

impl Arena {
    /// An arena with no regions; `index` is what its regions record as their owner.
    pub const fn new(index: usize) -> Self {
        Arena {
            index,
            free: [0; NUM_ORDERS],
            regions: ptr::null_mut(),
            empty_regions: 0,
            dirty_large: 0,
            #[cfg(feature = "hardened")]
            key: 0,
        }
    }

    /// The key the links of this arena are encoded with (0 without the `hardened` feature).
    /// Every block on its lists lies in a region it mapped, and [`Arena::add_region`] sets the
    /// key before pushing a region's first blocks, so it is set whenever a link is read or
    /// written.
    #[inline(always)]
    fn key(&self) -> usize {
        #[cfg(feature = "hardened")]
        {
            self.key
        }
        #[cfg(not(feature = "hardened"))]
        {
            0
        }
    }

    /// Puts the block at `addr` of `order` on its free list and tags it free (and clean if
    /// `clean`: never written since mapped, apart from the links about to be written).
    ///
    /// # Safety
    /// The block must lie in a region of this arena and be owned by nobody.
    #[inline]
    unsafe fn push(&mut self, addr: usize, order: u32, clean: bool) {
        let slot = (order - MIN_ORDER) as usize;
        debug_assert!(slot < NUM_ORDERS);
        let key = self.key();
        // SAFETY: slot < NUM_ORDERS (orders are validated by callers).
        let head = unsafe { self.free.get_unchecked_mut(slot) };
        // SAFETY: the block is at least 16 B, 16-aligned and unused; the old head is a live node.
        unsafe {
            store_link(addr, NEXT, *head, key);
            store_link(addr, PREV, 0, key);
            if *head != 0 {
                store_link(*head, PREV, addr, key);
            }
            set_tag(
                addr,
                TAG_FREE | order as u8 | if clean { TAG_CLEAN } else { 0 },
            );
        }
        *head = addr;
        if !clean && order >= PURGE_MIN_ORDER {
            self.dirty_large += 1 << order;
        }
    }

    /// Takes the block at `addr` of `order` off its free list (the tag is left to the caller);
    /// returns whether it was clean.
    ///
    /// # Safety
    /// The block must be on this arena's list for `order`.
    // Hardened builds inline it too (as plain builds do on their own): its checks made it big
    // enough to stay a call, which cost about 16 instructions per unlink.
    #[cfg_attr(feature = "hardened", inline(always))]
    #[cfg_attr(not(feature = "hardened"), inline)]
    unsafe fn unlink(&mut self, addr: usize, order: u32) -> bool {
        let slot = (order - MIN_ORDER) as usize;
        // SAFETY: the block is on our list, so its tag is live.
        let clean = unsafe { get_tag(addr) } & TAG_CLEAN != 0;
        if !clean && order >= PURGE_MIN_ORDER {
            self.dirty_large -= 1 << order;
        }
        let key = self.key();
        // SAFETY: the block is on the list, so it is a live node; so are its neighbours, which
        // hardened builds check before writing through the links.
        unsafe {
            let next = load_link(addr, NEXT, key);
            let prev = load_link(addr, PREV, key);
            self.check_unlink(addr, order, next, prev);
            if prev == 0 {
                *self.free.get_unchecked_mut(slot) = next;
            } else {
                store_link(prev, NEXT, next, key);
            }
            if next != 0 {
                store_link(next, PREV, prev, key);
            }
        }
        clean
    }

    /// In hardened builds, checks the links `next` and `prev` read from the free block `addr` of
    /// `order` before they are written through: each must be null or a free block of `order`
    /// ([`hardening::check_link`]), and a block without `prev` must head its list. Aborts with a
    /// corrupted free list report otherwise. Nothing without the feature.
    #[inline(always)]
    fn check_unlink(&self, addr: usize, order: u32, next: usize, prev: usize) {
        if !crate::hardened::ENABLED {
            return;
        }
        hardening::check_link(next, addr, order);
        // A null `prev` is checked against the head, which it must be (no region lookup).
        if prev == 0 {
            // SAFETY: orders of list blocks are validated by callers, so the index is in bounds.
            if unsafe { *self.free.get_unchecked((order - MIN_ORDER) as usize) } != addr {
                hardening::corrupt(addr);
            }
        } else {
            hardening::check_link(prev, addr, order);
        }
    }

    /// Allocates a block of `order` (`MIN_ORDER..=MAX_ORDER`), mapping a region if no free block
    /// is large enough. Null if the kernel refuses memory.
    #[inline]
    pub fn alloc_block(&mut self, order: u32, counters: &GlobalCounters) -> *mut u8 {
        self.alloc_block_clean(order, counters).0
    }

    /// As [`Arena::alloc_block`], also telling whether the block is clean: all zero except its
    /// first 16 bytes (where the free-list links were), because it was never written since the
    /// kernel mapped it.
    pub fn alloc_block_clean(&mut self, order: u32, counters: &GlobalCounters) -> (*mut u8, bool) {
        debug_assert!((MIN_ORDER..=MAX_ORDER).contains(&order));
        let mut k = order;
        while k <= MAX_ORDER && self.free[(k - MIN_ORDER) as usize] == 0 {
            k += 1;
        }
        if k > MAX_ORDER {
            if !self.add_region(counters) {
                return (ptr::null_mut(), false);
            }
            k = MAX_ORDER;
        }
        let addr = self.free[(k - MIN_ORDER) as usize];
        // SAFETY: addr heads list k, so it is a free block of order k in one of our regions; its
        // upper halves split off below lie inside it and are owned by nobody.
        let clean = unsafe {
            let clean = self.unlink(addr, k);
            forget_links(addr);
            while k > order {
                k -= 1;
                self.push(addr + (1 << k), k, clean);
            }
            set_tag(addr, TAG_USED | order as u8);
            let header = region::header_of(addr);
            if (*header).free_bytes == CAPACITY {
                self.empty_regions -= 1;
            }
            (*header).free_bytes -= 1 << order;
            clean
        };
        if clean {
            // The block's bytes are about to be written: count them as mapped from now on.
            counters.add_mapped(1 << order);
        }
        (addr as *mut u8, clean)
    }

    /// Frees the block at `addr` of `order`, coalescing it with its buddies while they are free.
    ///
    /// # Safety
    /// `addr` must be a block of `order` allocated from this arena (tagged used) and dead.
    pub unsafe fn free_block(&mut self, addr: usize, order: u32, counters: &GlobalCounters) {
        // SAFETY: the block is ours (caller), so its region and tags are live.
        unsafe {
            debug_assert_eq!(get_tag(addr), TAG_USED | order as u8);
            let header = region::header_of(addr);
            debug_assert_eq!((*header).arena, self.index);
            (*header).free_bytes += 1 << order;
            let (mut a, mut k) = (addr, order);
            while k < MAX_ORDER {
                let buddy = a ^ (1 << k);
                if get_tag(buddy) & !TAG_CLEAN != TAG_FREE | k as u8 {
                    break;
                }
                if self.unlink(buddy, k) {
                    // The merged block is dirty as a whole: count the clean part.
                    counters.add_mapped(1 << k);
                }
                set_tag(a.max(buddy), 0);
                a = a.min(buddy);
                k += 1;
            }
            self.push(a, k, false);
            if (*header).free_bytes == CAPACITY {
                if self.empty_regions > 0 {
                    self.release_region(header, counters);
                } else {
                    self.empty_regions += 1;
                }
            }
        }
        if self.dirty_large > PURGE_THRESHOLD {
            self.purge(counters);
        }
    }

    /// Discards the pages of every dirty free block of [`PURGE_MIN_ORDER`] and up and marks it
    /// clean.
    #[cold]
    fn purge(&mut self, counters: &GlobalCounters) {
        for order in PURGE_MIN_ORDER..=MAX_ORDER {
            let mut node = self.free[(order - MIN_ORDER) as usize];
            let key = self.key();
            while node != 0 {
                let addr = node;
                // SAFETY: a node of our list; its link is read (and in hardened builds checked)
                // before the block is discarded, and blocks re-pushed at the head are never
                // visited again.
                unsafe {
                    node = load_link(addr, NEXT, key);
                    hardening::check_link(node, addr, order);
                    if get_tag(addr) & TAG_CLEAN == 0 {
                        self.unlink(addr, order);
                        os::discard(addr as *mut u8, 1 << order);
                        self.push(addr, order, true);
                        counters.sub_mapped(1 << order);
                    }
                }
            }
        }
        debug_assert_eq!(self.dirty_large, 0);
    }

    /// Grows the allocated block at `addr` from `old` to `new` order in place, if the buddies
    /// above it are free. Returns `false` (changing nothing) otherwise.
    ///
    /// # Safety
    /// `addr` must be a live block of order `old` allocated from this arena; `old < new <= MAX_ORDER`.
    pub unsafe fn grow_in_place(
        &mut self,
        addr: usize,
        old: u32,
        new: u32,
        counters: &GlobalCounters,
    ) -> bool {
        if !addr.is_multiple_of(1 << new) {
            return false;
        }
        // SAFETY: the buddies lie inside the same region (new <= MAX_ORDER), whose tags are live.
        unsafe {
            for k in old..new {
                if get_tag(addr + (1 << k)) & !TAG_CLEAN != TAG_FREE | k as u8 {
                    return false;
                }
            }
            for k in old..new {
                let buddy = addr + (1 << k);
                if self.unlink(buddy, k) {
                    counters.add_mapped(1 << k);
                }
                forget_links(buddy);
                set_tag(buddy, 0);
            }
            set_tag(addr, TAG_USED | new as u8);
            let header = region::header_of(addr);
            (*header).free_bytes -= (1 << new) - (1 << old);
        }
        true
    }

    /// Shrinks the allocated block at `addr` from `old` to `new` order, freeing the upper parts.
    ///
    /// # Safety
    /// `addr` must be a live block of order `old` allocated from this arena; `new < old`; the
    /// bytes past `1 << new` are dead.
    pub unsafe fn shrink_in_place(
        &mut self,
        addr: usize,
        old: u32,
        new: u32,
        counters: &GlobalCounters,
    ) {
        // SAFETY: the upper parts lie inside the block (caller), so in its region.
        unsafe {
            set_tag(addr, TAG_USED | new as u8);
            for k in new..old {
                let part = addr + (1 << k);
                set_tag(part, TAG_USED | k as u8);
                self.free_block(part, k, counters);
            }
        }
    }

    /// Maps a region for this arena and puts its blocks on the free lists.
    fn add_region(&mut self, counters: &GlobalCounters) -> bool {
        let header = region::map(self.index, counters);
        if header.is_null() {
            return false;
        }
        #[cfg(feature = "hardened")]
        {
            self.key = crate::hardened::key();
        }
        let base = region::base_of(header as usize);
        // SAFETY: the region is fresh and ours; the top blocks tile META_SIZE..REGION_SIZE.
        unsafe {
            (*header).next = self.regions;
            if !self.regions.is_null() {
                (*self.regions).prev = header;
            }
            self.regions = header;
            let mut offset = META_SIZE;
            while offset < REGION_SIZE {
                self.push(base + offset, region::top_order(offset), true);
                offset *= 2;
            }
            (*header).free_bytes = CAPACITY;
        }
        self.empty_regions += 1;
        true
    }

    /// Unlinks a wholly free region's blocks and the region, and returns it to the kernel.
    ///
    /// # Safety
    /// `header` must be a region of this arena with `free_bytes == CAPACITY`.
    unsafe fn release_region(&mut self, header: *mut RegionHeader, counters: &GlobalCounters) {
        let base = region::base_of(header as usize);
        // SAFETY: a wholly free, fully coalesced region holds exactly the top blocks, all on our
        // lists; the region list links are valid under our lock.
        unsafe {
            let mut offset = META_SIZE;
            while offset < REGION_SIZE {
                let order = region::top_order(offset);
                debug_assert_eq!(get_tag(base + offset) & !TAG_CLEAN, TAG_FREE | order as u8);
                if !self.unlink(base + offset, order) {
                    counters.sub_mapped(1 << order);
                }
                offset *= 2;
            }
            let RegionHeader { next, prev, .. } = header.read();
            if prev.is_null() {
                self.regions = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            region::unmap(header, counters);
        }
    }

    /// The largest order with a free block, if any (tests only).
    #[cfg(test)]
    pub fn largest_free_order(&self) -> Option<u32> {
        (MIN_ORDER..=MAX_ORDER)
            .rev()
            .find(|&k| self.free[(k - MIN_ORDER) as usize] != 0)
    }

    /// Returns every wholly free region to the kernel, the spare included (tests only).
    #[cfg(test)]
    pub fn release_empty_regions(&mut self, counters: &GlobalCounters) {
        let mut region = self.regions;
        while !region.is_null() {
            // SAFETY: a live region header of this arena, read before it may be unmapped.
            let (next, free) = unsafe { ((*region).next, (*region).free_bytes) };
            if free == CAPACITY {
                // SAFETY: wholly free region of this arena.
                unsafe { self.release_region(region, counters) };
                self.empty_regions -= 1;
            }
            region = next;
        }
    }

    /// Checks every invariant of the arena by walking its regions block by block, and returns a
    /// census. Panics on a violation (tests only).
    #[cfg(test)]
    pub fn check_invariants(&self) -> Census {
        let mut census = Census::default();
        let mut listed = 0usize;
        for (slot, &head) in self.free.iter().enumerate() {
            let order = MIN_ORDER + slot as u32;
            let mut prev = 0;
            let mut node = head;
            while node != 0 {
                let addr = node;
                // SAFETY: list nodes are free blocks in live regions of this arena.
                unsafe {
                    let t = get_tag(addr) & !TAG_CLEAN;
                    assert_eq!(t, TAG_FREE | order as u8, "listed block tag");
                    assert_eq!((*region::header_of(addr)).arena, self.index);
                    let key = self.key();
                    assert_eq!(load_link(addr, PREV, key), prev, "prev link");
                    prev = node;
                    node = load_link(addr, NEXT, key);
                }
                listed += 1;
            }
        }
        let mut dirty_large = 0;
        let mut region = self.regions;
        let mut empty = 0;
        while !region.is_null() {
            census.regions += 1;
            let base = region::base_of(region as usize);
            let mut offset = META_SIZE;
            let mut free_bytes = 0;
            let mut blocks = 0;
            while offset < REGION_SIZE {
                let addr = base + offset;
                // SAFETY: addr lies in a live region of this arena.
                let raw = unsafe { get_tag(addr) };
                let t = raw & !TAG_CLEAN;
                // Allocated blocks are never clean.
                assert!(t & TAG_USED == 0 || raw & TAG_CLEAN == 0);
                let order = (t & region::TAG_ORDER) as u32;
                assert!(t & (TAG_FREE | TAG_USED) != 0, "block start without tag");
                assert!((MIN_ORDER..=MAX_ORDER).contains(&order));
                assert!(addr.is_multiple_of(1 << order), "misaligned block");
                // A block in a thread cache keeps its TAG_USED tag (see `hardening`'s cached
                // tag): handed out as far as the arena is concerned.
                if t & TAG_FREE != 0 && t & TAG_USED == 0 {
                    let clean = raw & TAG_CLEAN != 0;
                    if !clean && order >= PURGE_MIN_ORDER {
                        dirty_large += 1 << order;
                    }
                    free_bytes += 1 << order;
                    census.free_blocks += 1;
                    if order < MAX_ORDER {
                        // SAFETY: the buddy lies in the same region.
                        let buddy = unsafe { get_tag(addr ^ (1 << order)) } & !TAG_CLEAN;
                        assert_ne!(buddy, t, "two free buddies left uncoalesced");
                    }
                } else {
                    census.used_blocks += 1;
                }
                // Tags of granules inside the block must be clear.
                for g in (addr + region::GRANULE..addr + (1 << order)).step_by(region::GRANULE) {
                    // SAFETY: inside the same region.
                    assert_eq!(unsafe { get_tag(g) }, 0, "stale tag inside a block");
                }
                blocks += 1;
                offset += 1 << order;
            }
            assert!(blocks > 0);
            // SAFETY: a live region header of this arena.
            let h = unsafe { &*region };
            assert_eq!(h.free_bytes, free_bytes, "free_bytes");
            if free_bytes == CAPACITY {
                empty += 1;
            }
            census.free_bytes += free_bytes;
            region = h.next;
        }
        assert_eq!(listed, census.free_blocks, "free blocks not on a list");
        assert_eq!(empty, self.empty_regions, "empty region count");
        assert_eq!(dirty_large, self.dirty_large, "dirty large free bytes");
        census
    }
}

/// What [`Arena::check_invariants`] counted.
#[cfg(test)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Regions the arena holds.
    pub regions: usize,
    /// Free blocks on its lists.
    pub free_blocks: usize,
    /// Allocated blocks (handed out or cached by a thread).
    pub used_blocks: usize,
    /// Bytes of free blocks.
    pub free_bytes: usize,
}
