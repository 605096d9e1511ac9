//! The C allocation functions with glibc's semantics, written once over any allocator of the
//! suite (`A: Introspect`). The exported `extern "C"` symbols in each `lib<name>_preload.so` are
//! one-line forwards to these (see [`crate::export_c_allocator!`]).
//!
//! How C's pointer-only interface maps onto `GlobalAlloc`'s layouts:
//!
//! - Every block is requested with an alignment of at least [`MALLOC_ALIGN`] (glibc's guarantee on
//!   64-bit targets) and a size of at least 1 (`GlobalAlloc` forbids size 0; `malloc(0)` thus
//!   returns a unique pointer, as glibc does).
//! - `free` is given no size: it calls [`Introspect::free_unsized`], which finds the block from
//!   its address (one lookup in the allocators of the suite). Every request is padded as
//!   [`UnsizedPad::unsized_request`](allocators::hardened::UnsizedPad::unsized_request) says (not at all unless the allocator's hardened canaries
//!   need room).
//! - `realloc` is given no size either: [`block_layout`] rebuilds a layout from the allocator's
//!   [`Introspect::usable_size`] and an alignment *hint* ([`allocators::layout_hint`]):
//!   [`MALLOC_ALIGN`] for a block in the allocator's own regions, [`LARGE_ALIGN_HINT`] for a
//!   directly mapped large block ([`allocators::Owner::Large`] in the region map). This is not
//!   the layout the block was allocated with, so it relies on each allocator's `realloc` being
//!   correct for it. They are (checked in the code of all four): Bump and Buddy route by the
//!   region map; Slab's size class of a usable size (a class size, a multiple of 16) at
//!   alignment 16 is the block's own class; SizeClass and Slab send any layout aligned above
//!   their small-block limit to `large`, which finds the block from its header. The pointer's
//!   own alignment is *not* a usable hint: a 32-byte block at a page-aligned address would claim
//!   a 4 KiB class (Slab) or order (Buddy).
//! - A pointer the allocator does not recognise ([`Introspect::usable_size`] is `None`: memory
//!   handed out before the library was loaded, e.g. by the dynamic loader's own minimal malloc) is
//!   ignored by `free` (`free_unsized` leaves it alone), reported as 0 bytes by
//!   `malloc_usable_size`, and moved by `realloc` with [`crate::foreign::copy_readable`] (its size
//!   is unknown; see there).
//!
//! Nothing here allocates through the global allocator (which in a preloaded library is the libc
//! `malloc` this module replaces) and nothing can panic: all arithmetic is checked or provably in
//! range, and failures return null with `errno` set to `ENOMEM`, like glibc.

use core::alloc::Layout;
use core::ffi::{c_int, c_void};
use core::ptr;

use allocators::{os, Introspect};

use crate::{bootstrap, foreign, reentry};

/// The alignment of every block `malloc`, `calloc` and `realloc` return: glibc's
/// `MALLOC_ALIGNMENT` on 64-bit targets (`2 * sizeof(size_t)`), which C programs rely on for SSE
/// types and `long double`.
pub const MALLOC_ALIGN: usize = allocators::HINT_ALIGN;

/// Sets the calling thread's `errno`.
#[inline]
fn set_errno(code: c_int) {
    // SAFETY: __errno_location returns the calling thread's errno slot, valid for the thread's
    // life; it does not allocate.
    unsafe { *libc::__errno_location() = code };
}

/// Allocates `size` bytes aligned to `align` (a power of two), zeroed if asked; null with
/// `errno = ENOMEM` on failure.
#[inline]
fn alloc_block<A: Introspect>(a: &A, size: usize, align: usize, zeroed: bool) -> *mut c_void {
    let Some(size) = A::unsized_request(size.max(1)) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(size, align.max(MALLOC_ALIGN)) else {
        set_errno(libc::ENOMEM);
        return ptr::null_mut();
    };
    // SAFETY: the layout has a non-zero size, as GlobalAlloc requires.
    let op = || unsafe {
        if zeroed {
            a.alloc_zeroed(layout)
        } else {
            a.alloc(layout)
        }
    };
    let p = if A::SERVES_REENTRY {
        op()
    } else {
        reentry::guarded(op, || bootstrap::alloc(layout))
    };
    if p.is_null() {
        set_errno(libc::ENOMEM);
    }
    p.cast()
}

/// The alignment [`block_layout`] claims for a directly mapped large block: above every
/// allocator's small-block alignment limit, so allocators that choose between their own blocks
/// and `large` by the layout send the block to `large`.
pub const LARGE_ALIGN_HINT: usize = allocators::HINT_LARGE_ALIGN;

/// Below this many bytes, `realloc` of a large block moves it into the allocator's own blocks
/// (malloc, copy, free) instead of asking the allocator, which would keep it large (the
/// [`LARGE_ALIGN_HINT`] makes the new block look over-aligned).
pub const LARGE_MOVE_BELOW: usize = 64 * 1024;

/// The layout `free`/`realloc` hand to the allocator for the block at `ptr`: its usable size, and
/// [`LARGE_ALIGN_HINT`] for a large block or [`MALLOC_ALIGN`] for any other (see the module
/// docs). `None` if the allocator does not recognise `ptr` (foreign memory).
///
/// # Safety
/// `ptr` must be non-null and either a live block of `a` or memory `a` never mapped.
#[inline]
pub unsafe fn block_layout<A: Introspect>(a: &A, ptr: *const c_void) -> Option<Layout> {
    // SAFETY: forwarded contract.
    unsafe { allocators::layout_hint(a, ptr.cast()) }
}

/// `malloc(size)`: a block of at least `size` bytes (a unique pointer for 0), aligned to
/// [`MALLOC_ALIGN`]; null with `errno = ENOMEM` on failure.
#[inline(always)]
pub fn malloc<A: Introspect>(a: &A, size: usize) -> *mut c_void {
    // The common case in line: an allocator that needs no guard, through its own C entry.
    if A::SERVES_REENTRY {
        let p = a.alloc_unsized(size);
        if p.is_null() {
            set_errno(libc::ENOMEM);
        }
        return p.cast();
    }
    alloc_block(a, size, MALLOC_ALIGN, false)
}

/// `free(ptr)`: nothing for null or a pointer the allocator does not recognise.
///
/// # Safety
/// `ptr` must be null, a live block returned by these functions for `a`, or memory `a` never
/// mapped (which is left alone).
#[inline(always)]
pub unsafe fn free<A: Introspect>(a: &A, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: forwarded contract: a live block of `a` or memory it never mapped, which
    // free_unsized leaves alone.
    let op = || unsafe { a.free_unsized(ptr.cast()) };
    if A::SERVES_REENTRY {
        op();
    } else {
        // A free from inside the allocator (never seen in glibc): leak rather than re-enter.
        reentry::guarded(op, || {});
    }
}

/// `calloc(n, size)`: `n * size` zeroed bytes; null with `errno = ENOMEM` if the product
/// overflows or memory runs out.
#[inline]
pub fn calloc<A: Introspect>(a: &A, n: usize, size: usize) -> *mut c_void {
    match n.checked_mul(size) {
        Some(total) => alloc_block(a, total, MALLOC_ALIGN, true),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `realloc(ptr, size)`: `malloc(size)` for a null `ptr`; for `size == 0` frees `ptr` and returns
/// null (glibc's choice); otherwise a block of `size` bytes holding the old contents up to the
/// smaller size, possibly at the same address. On failure null with `errno = ENOMEM`, the old
/// block untouched.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn realloc<A: Introspect>(a: &A, ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc(a, size);
    }
    if size == 0 {
        // SAFETY: forwarded contract.
        unsafe { free(a, ptr) };
        return ptr::null_mut();
    }
    // SAFETY: forwarded contract.
    let Some(old) = (unsafe { block_layout(a, ptr) }) else {
        // SAFETY: `a` does not know `ptr`, so by the contract it is readable foreign memory.
        return unsafe { realloc_foreign(a, ptr, size) };
    };
    if old.align() == LARGE_ALIGN_HINT && size < LARGE_MOVE_BELOW {
        // SAFETY: forwarded contract; `old.size()` bytes are usable at `ptr`.
        return unsafe { move_block(a, ptr, old.size(), size) };
    }
    // Padded as `malloc` pads: `free` will not know the size (see `hardened::UnsizedPad::unsized_request`).
    let padded = match A::unsized_request(size) {
        Some(padded) if Layout::from_size_align(padded, old.align()).is_ok() => padded,
        _ => {
            set_errno(libc::ENOMEM);
            return ptr::null_mut();
        }
    };
    // SAFETY: a live block of `a`, described by the layout hint its realloc is correct for
    // (module docs); the new size is non-zero and fits isize at that alignment (checked).
    let op = || unsafe { a.realloc(ptr.cast(), old, padded) };
    let q = if A::SERVES_REENTRY {
        op()
    } else {
        reentry::guarded(
            op,
            // From inside the allocator: a bootstrap copy, the old block leaked.
            // SAFETY: a live block of `a` holds `old.size()` readable bytes.
            || unsafe { copy_to_new(a, ptr, old.size().min(size), size) },
        )
    };
    if q.is_null() {
        set_errno(libc::ENOMEM);
    }
    q.cast()
}

/// `realloc` by hand: a new block of `size` bytes from `malloc`, the first `min(usable, size)`
/// bytes copied over, the old block freed. Null with `errno = ENOMEM` (old block untouched) if
/// memory runs out.
///
/// # Safety
/// `ptr` must be a live block of `a` with `usable` bytes usable.
#[cold]
unsafe fn move_block<A: Introspect>(
    a: &A,
    ptr: *mut c_void,
    usable: usize,
    size: usize,
) -> *mut c_void {
    let q = malloc(a, size);
    if !q.is_null() {
        // SAFETY: both blocks are live, distinct, and at least min(usable, size) bytes long.
        unsafe {
            ptr::copy_nonoverlapping(ptr.cast::<u8>(), q.cast::<u8>(), usable.min(size));
            free(a, ptr);
        }
    }
    q
}

/// `realloc` of a block the allocator did not hand out: its size is unknown, so the new block
/// receives the readable bytes from `ptr` up to `size` (more than the old block held, at worst
/// bytes of its neighbours, which realloc leaves unspecified past the old size). The old block is
/// not freed: it belongs to whatever handed it out.
///
/// # Safety
/// `ptr` must not be memory `a` handed out.
#[cold]
unsafe fn realloc_foreign<A: Introspect>(a: &A, ptr: *mut c_void, size: usize) -> *mut c_void {
    // SAFETY: forwarded contract.
    let q = unsafe { copy_to_new(a, ptr, size, size) }.cast::<c_void>();
    if q.is_null() {
        set_errno(libc::ENOMEM);
    }
    q
}

/// A new block of `size` bytes holding the readable bytes of `ptr..ptr + copy` (copied by the
/// kernel, which stops at the first unreadable page); null if none could be read or memory ran
/// out. The old block is left alone.
///
/// # Safety
/// `ptr` must not lie inside a block `a` handed out that is shorter than `copy` bytes.
#[cold]
unsafe fn copy_to_new<A: Introspect>(a: &A, ptr: *mut c_void, copy: usize, size: usize) -> *mut u8 {
    let q = malloc(a, size);
    if q.is_null() {
        return ptr::null_mut();
    }
    // SAFETY: `q` is a fresh block of `size >= copy` writable bytes, disjoint from `ptr`'s block;
    // `ptr` is only read by the kernel.
    if unsafe { foreign::copy_readable(q.cast(), ptr.cast(), copy) } == 0 {
        // Nothing could be read: not a valid block. Fail rather than return garbage.
        // SAFETY: `q` came from `malloc` just above.
        unsafe { free(a, q) };
        return ptr::null_mut();
    }
    q.cast()
}

/// `reallocarray(ptr, n, size)`: `realloc(ptr, n * size)`, or null with `errno = ENOMEM` (and the
/// old block untouched) if the product overflows.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn reallocarray<A: Introspect>(
    a: &A,
    ptr: *mut c_void,
    n: usize,
    size: usize,
) -> *mut c_void {
    match n.checked_mul(size) {
        // SAFETY: forwarded contract.
        Some(total) => unsafe { realloc(a, ptr, total) },
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `posix_memalign(out, align, size)`: 0 and `*out` set to a block aligned to `align`;
/// `EINVAL` if `align` is not a power of two multiple of `sizeof(void *)`; `ENOMEM` if memory runs
/// out. `*out` is untouched on error.
///
/// # Safety
/// `out` must be valid for writing a pointer.
#[inline]
pub unsafe fn posix_memalign<A: Introspect>(
    a: &A,
    out: *mut *mut c_void,
    align: usize,
    size: usize,
) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    let p = alloc_block(a, size, align, false);
    if p.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller guarantees `out` is writable.
    unsafe { out.write(p) };
    0
}

/// `aligned_alloc(align, size)`: a block aligned to `align`; null with `errno = EINVAL` if `align`
/// is not a power of two (C17 and glibc 2.38 onwards; sizes need not be multiples of it).
#[inline]
pub fn aligned_alloc<A: Introspect>(a: &A, align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        set_errno(libc::EINVAL);
        return ptr::null_mut();
    }
    alloc_block(a, size, align, false)
}

/// `memalign(align, size)`: like glibc, an alignment that is not a power of two is rounded up to
/// one, one above `SIZE_MAX / 2 + 1` gives null with `errno = EINVAL`.
#[inline]
pub fn memalign<A: Introspect>(a: &A, align: usize, size: usize) -> *mut c_void {
    match align.checked_next_power_of_two() {
        Some(align) => alloc_block(a, size, align, false),
        None => {
            set_errno(libc::EINVAL);
            ptr::null_mut()
        }
    }
}

/// `valloc(size)`: a page-aligned block.
#[inline]
pub fn valloc<A: Introspect>(a: &A, size: usize) -> *mut c_void {
    alloc_block(a, size, os::page_size(), false)
}

/// `pvalloc(size)`: a page-aligned block of `size` rounded up to whole pages; null with
/// `errno = ENOMEM` if the rounding overflows.
#[inline]
pub fn pvalloc<A: Introspect>(a: &A, size: usize) -> *mut c_void {
    let page = os::page_size();
    match os::align_up(size, page) {
        Some(rounded) => alloc_block(a, rounded, page, false),
        None => {
            set_errno(libc::ENOMEM);
            ptr::null_mut()
        }
    }
}

/// `malloc_usable_size(ptr)`: the bytes usable at `ptr`; 0 for null or a pointer the allocator
/// does not recognise.
///
/// # Safety
/// As for [`free`].
#[inline]
pub unsafe fn malloc_usable_size<A: Introspect>(a: &A, ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        return 0;
    }
    // SAFETY: forwarded contract.
    unsafe { a.usable_size(ptr.cast()) }.unwrap_or(0)
}
