//! Which allocator owns an address: one byte per [`REGION_SIZE`] window of the address space.
//!
//! Every allocator in this crate takes its memory from the kernel in windows aligned to
//! [`REGION_SIZE`] and whole multiples of it, so a window belongs to one owner at most. Finding the
//! owner of a bare pointer (C's `free`, `usable_size`, a remote free, hardened checks) is one shift
//! and one byte load, with no lock; a pointer in a window nobody here mapped reads
//! [`Owner::Foreign`], which is how the allocators tell apart memory that is not theirs without
//! touching it.
//!
//! The table covers the 47-bit user address space of x86-64 and AArch64 Linux (2^25 windows, one
//! byte each: a 32 MiB zero-initialised static, so address space only: the kernel backs a page of
//! it on the first write, reads of untouched pages see the shared zero page, and only the pages
//! covering windows in use are ever written, typically one or two). A static rather than a table
//! mapped on first use: C's `free` then reads the byte at a fixed address, without loading and
//! null-testing a pointer first (7 instructions fewer per `free` in callgrind).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU8, Ordering};

/// log2 of [`REGION_SIZE`].
pub const REGION_SHIFT: u32 = 22;
/// The granule of ownership: 4 MiB. Allocators map memory in aligned multiples of this.
pub const REGION_SIZE: usize = 1 << REGION_SHIFT;
/// The highest address bit the table covers (exclusive).
pub(crate) const ADDRESS_BITS: u32 = 47;
const ENTRIES: usize = 1 << (ADDRESS_BITS - REGION_SHIFT);

/// The owner of a window of address space.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// Not mapped by any allocator of this crate.
    Foreign = 0,
    /// A directly mapped large block (see `large`); its header names the allocator.
    Large = 1,
    /// A chunk of [`crate::Bump`].
    Bump = 2,
    /// A region of [`crate::Slab`].
    Slab = 3,
    /// A region of [`crate::Buddy`].
    Buddy = 4,
    /// A region of [`crate::SizeClass`].
    SizeClass = 5,
}

impl Owner {
    #[inline(always)]
    fn from_u8(v: u8) -> Owner {
        if v > Owner::SizeClass as u8 {
            return Owner::Foreign;
        }
        const _: () = assert!(Owner::Foreign as u8 == 0 && Owner::SizeClass as u8 == 5);
        // SAFETY: `Owner` is `repr(u8)` with the discriminants 0..=5 (contiguous, checked above
        // at its ends, declared in order), and `v` is one of them.
        // (A match on each value cost free's fast path three more compares.)
        unsafe { core::mem::transmute::<u8, Owner>(v) }
    }
}

/// The table: one owner byte per window, all [`Owner::Foreign`] (0) at start.
struct Table(UnsafeCell<[u8; ENTRIES]>);
// SAFETY: every byte is only ever accessed through `AtomicU8` (see `entry`).
unsafe impl Sync for Table {}
static TABLE: Table = Table(UnsafeCell::new([0; ENTRIES]));

/// The entry of window `i`.
///
/// # Safety
/// `i < ENTRIES`.
#[inline(always)]
unsafe fn entry(i: usize) -> &'static AtomicU8 {
    // SAFETY: i < ENTRIES (caller), so the byte lies in the static table, which lives for the
    // whole process; every access to it is atomic.
    unsafe { AtomicU8::from_ptr(TABLE.0.get().cast::<u8>().add(i)) }
}

#[inline]
fn index(addr: usize) -> Option<usize> {
    let i = addr >> REGION_SHIFT;
    (i < ENTRIES).then_some(i)
}

/// Marks the windows of `addr..addr + len` (aligned to [`REGION_SIZE`]) as owned by `owner`.
/// Returns `false` (and marks nothing) if the range is outside the table.
#[must_use]
pub fn claim(addr: usize, len: usize, owner: Owner) -> bool {
    debug_assert_eq!(addr % REGION_SIZE, 0);
    debug_assert_eq!(len % REGION_SIZE, 0);
    let (Some(first), Some(last)) = (index(addr), index(addr + len - 1)) else {
        return false;
    };
    for i in first..=last {
        // SAFETY: i <= last < ENTRIES.
        unsafe { entry(i) }.store(owner as u8, Ordering::Release);
    }
    true
}

/// Maps `len` bytes (a multiple of [`REGION_SIZE`]) aligned to [`REGION_SIZE`] and claims their
/// windows for `owner`: how every allocator takes memory from the kernel. Null if the kernel
/// refuses, or if the mapping lies outside the table (it is unmapped again). The memory is zeroed
/// and the caller's alone until it publishes it.
pub fn map_claimed(len: usize, owner: Owner) -> *mut u8 {
    let base = crate::os::map_aligned(len, REGION_SIZE);
    if base.is_null() {
        return base;
    }
    if !claim(base as usize, len, owner) {
        // SAFETY: just mapped, never published.
        unsafe { crate::os::unmap(base, len) };
        return core::ptr::null_mut();
    }
    base
}

/// Marks the windows of `addr..addr + len` as foreign again, before they are unmapped.
pub fn release(addr: usize, len: usize) {
    if len == 0 {
        return;
    }
    let (Some(first), Some(last)) = (index(addr), index(addr + len - 1)) else {
        return;
    };
    for i in first..=last {
        // SAFETY: i <= last < ENTRIES.
        unsafe { entry(i) }.store(Owner::Foreign as u8, Ordering::Release);
    }
}

/// The owner of the window holding `ptr`; [`Owner::Foreign`] for anything not mapped here.
#[inline]
pub fn owner_of(ptr: *const u8) -> Owner {
    let Some(i) = index(ptr as usize) else {
        return Owner::Foreign;
    };
    // SAFETY: i < ENTRIES.
    Owner::from_u8(unsafe { entry(i) }.load(Ordering::Acquire))
}

/// Whether the window holding `ptr` is `owner`'s: [`owner_of`] as one byte compare, for the
/// fast path of C's `free`.
#[inline(always)]
pub fn is_owned_by(ptr: *const u8, owner: Owner) -> bool {
    match index(ptr as usize) {
        // SAFETY: i < ENTRIES.
        Some(i) => unsafe { entry(i) }.load(Ordering::Acquire) == owner as u8,
        None => false,
    }
}

/// Whether `ptr` lies in an [`Owner::Large`] window, for a pointer known to be in memory this
/// crate mapped: one byte load, without [`owner_of`]'s range check (the sized `dealloc` of
/// SizeClass and Slab, which must find sampled blocks: see `crate::profile`).
///
/// # Safety
/// `ptr` must lie in a window some allocator of this crate claimed (so it is inside the range
/// the table covers), e.g. a live block of one of them.
#[inline(always)]
pub unsafe fn in_large_window(ptr: *const u8) -> bool {
    debug_assert!(index(ptr as usize).is_some());
    // SAFETY: the caller's contract: claimed windows are inside the covered range.
    unsafe { entry(ptr as usize >> REGION_SHIFT) }.load(Ordering::Relaxed) == Owner::Large as u8
}

/// The start of the [`REGION_SIZE`] window holding `ptr`.
#[inline(always)]
pub fn window_base(ptr: *const u8) -> usize {
    ptr as usize & !(REGION_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::os;
    use core::ptr;

    #[test]
    fn claim_then_release() {
        let p = os::map_aligned(2 * REGION_SIZE, REGION_SIZE);
        assert!(!p.is_null());
        let a = p as usize;
        assert_eq!(owner_of(p), Owner::Foreign);
        assert!(claim(a, 2 * REGION_SIZE, Owner::Slab));
        assert_eq!(owner_of(p), Owner::Slab);
        assert_eq!(owner_of((a + REGION_SIZE + 17) as *const u8), Owner::Slab);
        release(a, 2 * REGION_SIZE);
        assert_eq!(owner_of(p), Owner::Foreign);
        // SAFETY: mapped above, unused now.
        unsafe { os::unmap(p, 2 * REGION_SIZE) };
    }

    #[test]
    fn foreign_addresses() {
        let x = 5u64;
        assert_eq!(owner_of(&x as *const u64 as *const u8), Owner::Foreign);
        assert_eq!(owner_of(usize::MAX as *const u8), Owner::Foreign);
        assert_eq!(owner_of(ptr::null()), Owner::Foreign);
    }
}
