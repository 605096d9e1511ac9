//! The header in the page before each large block, the hardened guard page after it, and the
//! lookups that read a block's header from a bare pointer.

use crate::hardened;
use crate::os::{self, page_size};
use crate::region_map::{self, Owner};

pub(super) const MAGIC: usize = 0x0001_A26E_B10C_u64 as usize;
/// The magic of a freed block's header while its mapping is cached: not [`MAGIC`], so the block
/// reads as dead, yet recognisable, so that a hardened build can name the allocator that freed it
/// when it is freed again.
pub(super) const CACHED_MAGIC: usize = 0x0001_DEAD_B10C_u64 as usize;

/// The header in the page before each large block.
#[repr(C)]
pub(super) struct Header {
    /// [`MAGIC`] while the block is live; [`CACHED_MAGIC`] once freed into the cache.
    pub(super) magic: usize,
    /// Which allocator handed the block out.
    pub(super) owner: Owner,
    /// The start of the whole mapping.
    pub(super) base: usize,
    /// The length of the whole mapping (a multiple of `REGION_SIZE`; a slot's length for a block
    /// in a sampled-block slot).
    pub(super) map_len: usize,
    /// Bytes usable from the block's start (page-rounded size asked for).
    pub(super) usable: usize,
    /// A block sampled by the heap profiler ([`crate::profile`]): its free tells the profiler.
    pub(super) sampled: bool,
    /// `1 +` the index of the sampled-block slot holding the block (see [`alloc_slot`](super::alloc_slot)), or 0
    /// for a block in a mapping of its own.
    pub(super) slot: u32,
}

/// Writes the live header of the block at `block`.
///
/// # Safety
/// The page before `block` must lie in the mapping `base..base + map_len`, which is ours alone.
pub(super) unsafe fn write_header(
    block: usize,
    owner: Owner,
    base: usize,
    map_len: usize,
    usable: usize,
) {
    let header = (block - page_size()) as *mut Header;
    // SAFETY: the caller's contract; the page is page-aligned, so aligned for a Header.
    unsafe {
        header.write(Header {
            magic: MAGIC,
            owner,
            base,
            map_len,
            usable,
            sampled: false,
            slot: 0,
        });
    }
}

/// Extra pages mapped after each large block: one `PROT_NONE` guard page in hardened builds, so a
/// write past the block's end faults at once.
pub(super) const GUARD_PAGES: usize = if hardened::ENABLED { 1 } else { 0 };

/// Protects (or unprotects) the guard page after the `usable` bytes of `block` (hardened only).
///
/// # Safety
/// In hardened builds the page after the block must be part of the block's mapping.
pub(super) unsafe fn set_guard(block: usize, usable: usize, on: bool) {
    if GUARD_PAGES == 0 {
        return;
    }
    let prot = if on {
        libc::PROT_NONE
    } else {
        libc::PROT_READ | libc::PROT_WRITE
    };
    // SAFETY: the caller guarantees the page is ours; mprotect does not move or free it.
    unsafe { libc::mprotect((block + usable) as *mut libc::c_void, page_size(), prot) };
}

/// The header of the large block at `ptr`, if `ptr` is the start of a live large block.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub(super) unsafe fn header_of(ptr: *const u8) -> Option<*mut Header> {
    // SAFETY: forwarded contract.
    unsafe { header_with(ptr, MAGIC) }
}

/// The header before `ptr` if it carries `magic` and names a mapping around `ptr`.
///
/// # Safety
/// As for [`header_of`].
unsafe fn header_with(ptr: *const u8, magic: usize) -> Option<*mut Header> {
    let page = page_size();
    let addr = ptr as usize;
    if !addr.is_multiple_of(page)
        || addr < page
        || region_map::owner_of((addr - page) as *const u8) != Owner::Large
    {
        return None;
    }
    let header = (addr - page) as *mut Header;
    // In hardened builds a Large window also holds each block's guard page (PROT_NONE): a wild
    // pointer just past one would fault here instead of being reported (issue 23 item 7), so
    // the kernel is asked first whether the header can be read.
    if hardened::ENABLED && !os::readable(header as usize, core::mem::size_of::<Header>()) {
        return None;
    }
    // SAFETY: the page before `addr` lies in a Large window, and Large windows are wholly mapped
    // by this module (readable but for hardened guard pages, excluded above); a pointer that is
    // not a block start reads some other mapped page and fails the magic check.
    let h = unsafe { &*header };
    let plausible = h.magic == magic && h.base < addr && addr < h.base + h.map_len;
    plausible.then_some(header)
}

/// The name hardened reports give the allocator that freed the cached block at `ptr`, or
/// `"large"` for a pointer that starts no block that was freed into the cache.
///
/// # Safety
/// As for [`header_of`].
pub(super) unsafe fn freed_by(ptr: *const u8) -> &'static str {
    // SAFETY: forwarded contract; a header with the cached magic keeps its owner.
    match unsafe { header_with(ptr, CACHED_MAGIC).map(|h| (*h).owner) } {
        Some(Owner::Bump) => "bump",
        Some(Owner::Slab) => "slab",
        Some(Owner::Buddy) => "buddy",
        Some(Owner::SizeClass) => "sizeclass",
        _ => "large",
    }
}

/// Marks (or unmarks) the live large block at `ptr` as sampled by the heap profiler, whose free
/// and resize then tell [`crate::profile`].
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn set_sampled(ptr: *mut u8, on: bool) {
    // SAFETY: forwarded contract; the header of a live block is ours to write.
    unsafe {
        if let Some(h) = header_of(ptr) {
            (*h).sampled = on;
        }
    }
}

/// Whether the large block starting at `ptr` is marked as sampled (`false` if `ptr` starts no
/// live large block).
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub unsafe fn is_sampled(ptr: *const u8) -> bool {
    // SAFETY: forwarded contract; the header is valid while the magic is set.
    unsafe { header_of(ptr).is_some_and(|h| (*h).sampled) }
}

/// The owner of the large block starting at `ptr`, or `None` if `ptr` does not start one.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub unsafe fn owner(ptr: *const u8) -> Option<Owner> {
    // SAFETY: forwarded contract; the header is valid while the magic is set.
    unsafe { header_of(ptr).map(|h| (*h).owner) }
}

/// Bytes usable at `ptr` (the requested size rounded up to whole pages).
///
/// # Safety
/// `ptr` must be the start of a live large block.
pub unsafe fn usable_size(ptr: *const u8) -> usize {
    // SAFETY: forwarded contract.
    match unsafe { header_of(ptr) } {
        // SAFETY: a header that passed the magic check is a live header.
        Some(h) => unsafe { (*h).usable },
        None => 0,
    }
}

/// Bytes usable at `ptr` if it starts a live large block handed out by `owner`, else `None`: the
/// `Owner::Large` arm of every allocator's `Introspect::usable_size`.
///
/// # Safety
/// `ptr` must lie in a window that the region map says is [`Owner::Large`].
pub unsafe fn usable_size_if_owned(ptr: *const u8, owner: Owner) -> Option<usize> {
    // SAFETY: forwarded contract.
    match unsafe { header_of(ptr) } {
        // SAFETY: a header that passed the magic check is a live header.
        Some(h) if unsafe { (*h).owner } == owner => Some(unsafe { (*h).usable }),
        _ => None,
    }
}
