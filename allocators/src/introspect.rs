//! The [`Introspect`] trait (what every allocator answers besides `GlobalAlloc`) and the helpers
//! built on it: rebuilding a layout from a bare pointer ([`layout_hint`]), C's `malloc` through
//! a layout ([`alloc_unsized_by_layout`]), and realloc by moving, which every allocator falls
//! back to when a block cannot be resized in place.

use crate::hardened::UnsizedPad;
use crate::region_map::{self, Owner};
use crate::stats::Stats;
use core::alloc::{GlobalAlloc, Layout};

/// What every allocator of this crate answers besides `GlobalAlloc`: its counters, and a block's
/// size from its address alone.
pub trait Introspect: GlobalAlloc + Sync + UnsizedPad {
    /// A short lower-case name (`"bump"`, `"slab"`, `"buddy"`, `"sizeclass"`).
    const NAME: &'static str;

    /// A snapshot of the allocator's counters (see [`stats`](crate::stats) for how fresh they are).
    fn stats(&self) -> Stats;

    /// The number of bytes usable at `ptr` (at least the size it was allocated with, less a
    /// hardened build's padding, see [`UnsizedPad`]), or `None`
    /// if `ptr` is not the start of a block this allocator handed out, as far as its metadata can
    /// tell (memory it never mapped is always recognised as foreign).
    ///
    /// # Safety
    /// If `ptr` points into this allocator's memory, it must be a block that has not been freed,
    /// or a pointer that was never a block start; a freed pointer may give any answer.
    unsafe fn usable_size(&self, ptr: *const u8) -> Option<usize>;

    /// Whether the allocator itself serves a call that re-enters it from inside its own
    /// per-thread set-up (glibc `calloc`s while registering a thread-exit hook, and
    /// `pthread_atfork` allocates; in a preloaded library those calls are ours). When `true` the
    /// C interface calls the allocator directly; when `false` it keeps a per-thread flag around
    /// every call and sends a nested one to a bootstrap area.
    const SERVES_REENTRY: bool = false;

    /// C's `malloc`: a block of at least `size` bytes (0 included) aligned to [`HINT_ALIGN`], to
    /// be freed with [`Introspect::free_unsized`]; null if memory runs out or `size` is too
    /// large. The default requests [`UnsizedPad::unsized_request`]`(size.max(1))` bytes through
    /// `alloc`; an allocator may override it with a shorter path for small sizes.
    #[inline]
    fn alloc_unsized(&self, size: usize) -> *mut u8
    where
        Self: Sized,
    {
        alloc_unsized_by_layout(self, size)
    }

    /// Frees the block at `ptr` without its `Layout`, as C's `free` must: the allocator finds the
    /// block from the address alone. Memory this allocator never mapped (say, a block the dynamic
    /// loader handed out before the allocator was loaded) is left alone: not freed and not
    /// reported, even in `hardened` builds. The block's free is counted in [`Introspect::stats`]
    /// as one of [`Introspect::usable_size`] bytes (the requested size is not known).
    ///
    /// The default implementation rebuilds a layout with [`layout_hint`] (two lookups of the
    /// block) and calls `dealloc`; the allocators of this crate override it with one lookup.
    ///
    /// # Safety
    /// `ptr` must be non-null and either a live block of this allocator, requested with the size
    /// [`UnsizedPad::unsized_request`] gives (or resized to it) and not used afterwards, or
    /// memory this allocator never mapped. Anything else (a block already freed, a pointer into
    /// the middle of a block) is undefined behaviour, as for `dealloc`; `hardened` builds abort
    /// with a report on the cases their checks catch, as `dealloc` does.
    unsafe fn free_unsized(&self, ptr: *mut u8) {
        // SAFETY: forwarded contract: a live block of ours, or memory we never mapped (for which
        // `layout_hint` is `None`).
        unsafe {
            if let Some(layout) = layout_hint(self, ptr) {
                self.dealloc(ptr, layout);
            }
        }
    }
}

/// [`Introspect::alloc_unsized`]'s default: `alloc` with a layout of
/// [`UnsizedPad::unsized_request`]`(size.max(1))` bytes at [`HINT_ALIGN`]; null if that
/// overflows.
#[inline]
pub fn alloc_unsized_by_layout<A: Introspect>(a: &A, size: usize) -> *mut u8 {
    let Some(request) = A::unsized_request(size.max(1)) else {
        return core::ptr::null_mut();
    };
    match Layout::from_size_align(request, HINT_ALIGN) {
        // SAFETY: the layout has a non-zero size.
        Ok(layout) => unsafe { a.alloc(layout) },
        Err(_) => core::ptr::null_mut(),
    }
}

/// The alignment [`layout_hint`] gives a block in the allocator's own regions (also the
/// alignment of every block the C interface hands out: glibc's `MALLOC_ALIGNMENT`).
pub const HINT_ALIGN: usize = 16;

/// The alignment [`layout_hint`] gives a directly mapped large block ([`Owner::Large`]): above
/// every allocator's small-block alignment limit, so an allocator that chooses between its own
/// blocks and [`large`](crate::large) by the layout sends the block to `large`.
pub const HINT_LARGE_ALIGN: usize = region_map::REGION_SIZE;

/// A layout that `a`'s `dealloc` and `realloc` accept for the live block at `ptr`, rebuilt from
/// the address alone: [`Introspect::usable_size`] bytes, aligned to [`HINT_LARGE_ALIGN`] for a
/// large block or [`HINT_ALIGN`] for any other. It is not the layout the block was allocated
/// with; every allocator of this crate handles it correctly (Bump and Buddy route by the region
/// map; Slab's class of a usable size at alignment 16 is the block's own; SizeClass and Slab send
/// a layout aligned above their small-block limit to `large`). `None` if `a` does not recognise
/// `ptr` (memory it never mapped).
///
/// # Safety
/// `ptr` must be either a live block of `a` or memory `a` never mapped.
#[inline]
pub unsafe fn layout_hint<A: Introspect + ?Sized>(a: &A, ptr: *const u8) -> Option<Layout> {
    // SAFETY: forwarded contract.
    let usable = unsafe { a.usable_size(ptr) }?;
    let align = if region_map::owner_of(ptr) == Owner::Large {
        HINT_LARGE_ALIGN
    } else {
        HINT_ALIGN
    };
    Layout::from_size_align(usable.max(1), align).ok()
}

/// Realloc by moving: allocates `new_size` bytes with `layout`'s alignment, copies the bytes both
/// blocks hold, and frees the old block; on failure returns null and leaves the old block as it
/// was. The path every allocator takes when a block cannot be resized in place.
///
/// # Safety
/// As for [`GlobalAlloc::realloc`]: `ptr` is a live block of `a` allocated with `layout`, and
/// `new_size` rounded up to `layout.align()` does not overflow `isize`.
pub(crate) unsafe fn realloc_by_moving<A: GlobalAlloc + ?Sized>(
    a: &A,
    ptr: *mut u8,
    layout: core::alloc::Layout,
    new_size: usize,
) -> *mut u8 {
    // SAFETY: a valid layout: the caller guarantees new_size rounded to align fits isize.
    let new_layout =
        unsafe { core::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
    // SAFETY: the caller's guarantees; the old block is freed only once the copy is done.
    unsafe {
        let q = a.alloc(new_layout);
        if !q.is_null() {
            core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
            a.dealloc(ptr, layout);
        }
        q
    }
}
