//! The slab allocator's page layer: 4 MiB regions carved into 64 KiB units, slabs of one unit
//! (objects up to 8 KiB) or of an aligned group of four (larger objects), and the descriptors
//! that let a bare pointer find its slab with one mask and two loads.
//!
//! ```text
//! region (REGION_SIZE-aligned, claimed as Owner::Slab)
//! | unit 0: RegionHeader + SlabDesc[64] | unit 1 | unit 2 | unit 3 | unit 4 ... unit 7 | ... | unit 63 |
//!                                         one-unit slabs            a four-unit slab
//! ```
//!
//! A pointer's unit descriptor is `region.units[(addr - region) / UNIT_SIZE]` with
//! `region = addr & !(REGION_SIZE - 1)`, and its `head` names the slab's descriptor (the first
//! unit's): no per-object header, no lock. Unit 0 holds only the header (its first pages are
//! touched; the rest is address space). Slabs are handed to the object caches under the
//! [`PAGES`] lock; a slab handed back is discarded (`MADV_DONTNEED`, its pages go back to the
//! kernel) and a region whose units are all free is unmapped, except one kept spare to avoid
//! mapping churn (it holds no memory besides its header pages).

use core::mem::size_of;
use core::ptr::{self, addr_of_mut};

use super::COUNTERS;
use crate::os;
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::sync::Lock;

/// Bytes in one unit: a run of pages (16 of 4 KiB). A slab is one unit or an aligned group of
/// [`GROUP_UNITS`].
pub const UNIT_SIZE: usize = 64 * 1024;
const UNIT_SHIFT: u32 = 16;
/// Units per region, counting the header unit 0.
pub const UNITS_PER_REGION: usize = REGION_SIZE / UNIT_SIZE;
/// Units of a slab for objects above 8 KiB (aligned to its own size in the region).
pub const GROUP_UNITS: usize = 4;
/// Bits of the units that can hold objects (all but unit 0).
const ALL_UNITS_FREE: u64 = !1u64;
/// One bit at the start of every aligned group of four units.
const GROUP_STARTS: u64 = 0x1111_1111_1111_1111;

/// Which list of its cache a slab is on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum SlabList {
    /// Not owned by a cache (free in the page layer).
    None = 0,
    /// Some objects out, some free.
    Partial = 1,
    /// Every object out.
    Full = 2,
    /// No object out.
    Empty = 3,
}

/// A free object inside a slab: the slab's free list is threaded through the objects themselves.
pub struct FreeObject {
    /// The next free object of the same slab, as stored by `hardening::encode_free_link` (the
    /// address itself without the `hardened` feature).
    pub next: usize,
}

/// The descriptor of one slab, kept in its region's header.
///
/// Only the descriptor of a slab's first unit (its head) is used as the slab's; every unit of
/// the slab names it in `head`. Invariants of a head while owned by a cache (`size != 0`):
/// `base..base + units * UNIT_SIZE` is the slab; objects are `base + i * size` for
/// `i < capacity`; the objects below `carve` that are not out
/// are exactly those on `free`; objects at `carve..carve_end` have never been handed out;
/// `in_use` counts objects out (with users or in magazines).
#[repr(C)]
pub struct SlabDesc {
    /// Neighbours on the cache's list named by `list`.
    pub next: *mut SlabDesc,
    /// See `next`.
    pub prev: *mut SlabDesc,
    /// Free objects handed back to this slab.
    pub free: *mut FreeObject,
    /// The next never-used object.
    pub carve: usize,
    /// The end of the last whole object.
    pub carve_end: usize,
    /// The first byte of the slab.
    pub base: usize,
    /// The descriptor of the slab this unit belongs to (null for a unit never used).
    pub head: *mut SlabDesc,
    /// Units in the slab (1 or [`GROUP_UNITS`]).
    pub units: u32,
    /// Objects currently out of the slab.
    pub in_use: u32,
    /// The object size of the owning cache (0 when free).
    pub size: u32,
    /// The owning cache's index (meaningful while `list != None`).
    pub cache: u8,
    /// The list the slab is on.
    pub list: SlabList,
}

/// The header at the start of every region.
#[repr(C)]
struct RegionHeader {
    /// Neighbours on the list of regions with free slabs.
    next: *mut RegionHeader,
    prev: *mut RegionHeader,
    /// Bit `i` set: unit `i` is free.
    free_bits: u64,
    /// Whether the region is on the `avail` list.
    listed: bool,
    units: [SlabDesc; UNITS_PER_REGION],
}

const _: () = assert!(size_of::<RegionHeader>() <= UNIT_SIZE);
const _: () = assert!(UNITS_PER_REGION == 64 && 1 << UNIT_SHIFT == UNIT_SIZE);

/// Regions that have free units, and a spare wholly free region.
struct PageHeap {
    avail: *mut RegionHeader,
    spare: *mut RegionHeader,
}

// SAFETY: the raw pointers name regions owned by the allocator, touched only under the lock.
unsafe impl Send for PageHeap {}

static PAGES: Lock<PageHeap> = Lock::new(PageHeap {
    avail: ptr::null_mut(),
    spare: ptr::null_mut(),
});

/// Bytes of a region's header that count as mapped (the pages it touches).
fn header_bytes() -> usize {
    os::align_up(size_of::<RegionHeader>(), os::page_size()).unwrap_or(UNIT_SIZE)
}

/// The descriptor of the unit holding `addr`.
///
/// # Safety
/// `addr` must lie in a region that the region map says is [`Owner::Slab`] (so its header is
/// mapped and initialised).
#[inline(always)]
pub unsafe fn unit_of(addr: usize) -> *mut SlabDesc {
    let region = (addr & !(REGION_SIZE - 1)) as *mut RegionHeader;
    let index = (addr & (REGION_SIZE - 1)) >> UNIT_SHIFT;
    // SAFETY: index < UNITS_PER_REGION and the caller guarantees the header is mapped.
    unsafe { addr_of_mut!((*region).units).cast::<SlabDesc>().add(index) }
}

/// The descriptor of the slab holding `addr`, or null if its unit was never part of a slab.
///
/// # Safety
/// As for [`unit_of`].
#[inline(always)]
pub unsafe fn slab_of(addr: usize) -> *mut SlabDesc {
    // SAFETY: forwarded contract; `head` is written before any object of the slab exists.
    unsafe { (*unit_of(addr)).head }
}

/// The lowest free run of `units` (1 or [`GROUP_UNITS`], aligned) in a free-unit bitmap.
fn free_run(bits: u64, units: usize) -> Option<usize> {
    let starts = if units == 1 {
        bits
    } else {
        bits & (bits >> 1) & (bits >> 2) & (bits >> 3) & GROUP_STARTS
    };
    (starts != 0).then(|| starts.trailing_zeros() as usize)
}

/// Hands a slab of `units` units (1 or [`GROUP_UNITS`]) to cache `cache`, with objects of
/// `size` bytes; null if the kernel refuses memory. The slab's pages are zero (fresh or
/// discarded). Takes the [`PAGES`] lock.
pub fn take_slab(cache: u8, size: usize, units: usize) -> *mut SlabDesc {
    debug_assert!(units == 1 || units == GROUP_UNITS);
    let mut heap = PAGES.lock();
    // The first region with a free run (one-unit slabs take the head of the list at once).
    let mut region = heap.avail;
    let mut index = None;
    while !region.is_null() {
        // SAFETY: regions on `avail` are live and initialised; the lock guards their headers.
        index = free_run(unsafe { (*region).free_bits }, units);
        if index.is_some() {
            break;
        }
        // SAFETY: as above.
        region = unsafe { (*region).next };
    }
    let index = match index {
        Some(i) => i,
        None => {
            region = if heap.spare.is_null() {
                new_region()
            } else {
                core::mem::replace(&mut heap.spare, ptr::null_mut())
            };
            if region.is_null() {
                return ptr::null_mut();
            }
            // SAFETY: a region with every unit free, owned by the page heap.
            unsafe { push_avail(&mut heap, region) };
            match free_run(ALL_UNITS_FREE, units) {
                Some(i) => i,
                None => return ptr::null_mut(),
            }
        }
    };
    // SAFETY: `region` is live and on `avail`, and units index..index + units are free in it.
    unsafe {
        let run = ((1u64 << units) - 1) << index;
        (*region).free_bits &= !run;
        if (*region).free_bits == 0 {
            unlink_avail(&mut heap, region);
        }
        drop(heap);
        COUNTERS.add_mapped(units * UNIT_SIZE);
        let first = addr_of_mut!((*region).units).cast::<SlabDesc>();
        let desc = first.add(index);
        let base = region as usize + index * UNIT_SIZE;
        let capacity = units * UNIT_SIZE / size;
        desc.write(SlabDesc {
            next: ptr::null_mut(),
            prev: ptr::null_mut(),
            free: ptr::null_mut(),
            carve: base,
            carve_end: base + capacity * size,
            base,
            head: desc,
            units: units as u32,
            in_use: 0,
            size: size as u32,
            cache,
            list: SlabList::None,
        });
        for u in 1..units {
            (*first.add(index + u)).head = desc;
        }
        desc
    }
}

/// Gives an empty slab back: its pages go to the kernel, and its region too if wholly free.
///
/// # Safety
/// `desc` must be a slab taken with [`take_slab`], off every cache list, with no object out.
pub unsafe fn return_slab(desc: *mut SlabDesc) {
    // SAFETY: the caller gives us the slab; nothing in it is live.
    let (base, units) = unsafe {
        debug_assert_eq!((*desc).in_use, 0);
        (*desc).size = 0;
        (*desc).list = SlabList::None;
        ((*desc).base, (*desc).units as usize)
    };
    let bytes = units * UNIT_SIZE;
    if os::page_size() <= UNIT_SIZE {
        // SAFETY: the slab is dead, page-aligned (UNIT_SIZE is a page multiple) and ours.
        unsafe { os::discard(base as *mut u8, bytes) };
    }
    COUNTERS.sub_mapped(bytes);
    let region = (base & !(REGION_SIZE - 1)) as *mut RegionHeader;
    let index = (base & (REGION_SIZE - 1)) >> UNIT_SHIFT;
    let mut heap = PAGES.lock();
    // SAFETY: the region is live (it holds the slab just returned); header fields are guarded by
    // the PAGES lock.
    unsafe {
        (*region).free_bits |= ((1u64 << units) - 1) << index;
        if !(*region).listed {
            push_avail(&mut heap, region);
        }
        if (*region).free_bits == ALL_UNITS_FREE {
            unlink_avail(&mut heap, region);
            let old_spare = core::mem::replace(&mut heap.spare, region);
            drop(heap);
            if !old_spare.is_null() {
                free_region(old_spare);
            }
        }
    }
}

fn new_region() -> *mut RegionHeader {
    let p = region_map::map_claimed(REGION_SIZE, Owner::Slab);
    if p.is_null() {
        return ptr::null_mut();
    }
    COUNTERS.add_mapped(header_bytes());
    let region = p.cast::<RegionHeader>();
    // SAFETY: a fresh zeroed mapping: every descriptor reads as free (all fields zero, list None).
    unsafe {
        (*region).free_bits = ALL_UNITS_FREE;
    }
    region
}

/// # Safety
/// `region` must be wholly free, on no list, and reachable by nobody else.
unsafe fn free_region(region: *mut RegionHeader) {
    region_map::release(region as usize, REGION_SIZE);
    COUNTERS.sub_mapped(header_bytes());
    // SAFETY: the caller says the region is dead.
    unsafe { os::unmap(region.cast(), REGION_SIZE) };
}

/// # Safety
/// `region` must be live and not on the list; the caller holds the PAGES lock (`heap`).
unsafe fn push_avail(heap: &mut PageHeap, region: *mut RegionHeader) {
    // SAFETY: live headers, guarded by the lock.
    unsafe {
        (*region).prev = ptr::null_mut();
        (*region).next = heap.avail;
        if !heap.avail.is_null() {
            (*heap.avail).prev = region;
        }
        (*region).listed = true;
    }
    heap.avail = region;
}

/// # Safety
/// `region` must be on the list; the caller holds the PAGES lock (`heap`).
unsafe fn unlink_avail(heap: &mut PageHeap, region: *mut RegionHeader) {
    // SAFETY: live headers, guarded by the lock.
    unsafe {
        let (prev, next) = ((*region).prev, (*region).next);
        if prev.is_null() {
            heap.avail = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*region).listed = false;
        (*region).next = ptr::null_mut();
        (*region).prev = ptr::null_mut();
    }
}

/// Takes the page-layer lock (fork preparation).
pub fn lock_for_fork() {
    PAGES.force_lock();
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// [`lock_for_fork`] must have been called by this thread, with no guard alive.
pub unsafe fn unlock_after_fork() {
    // SAFETY: forwarded contract.
    unsafe { PAGES.force_unlock() };
}
