//! Pages from the kernel: `mmap`, `munmap`, `madvise`, `mremap`, and the page size read at run time.
//!
//! Every allocator in this crate gets its memory from the functions here (the Linux kernel through
//! `libc`); no other module makes these calls, so a later `no_std` build that hands the allocators
//! a fixed region instead changes this file only.
//!
//! Nothing here allocates through the global allocator, and no function here panics: failures come
//! back as null pointers or `false`.

use core::ptr;
use core::sync::atomic::{AtomicUsize, Ordering};

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The system page size, read once with `sysconf` and cached (never assumed to be 4 KiB).
#[inline]
pub fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    page_size_slow()
}

#[cold]
fn page_size_slow() -> usize {
    // SAFETY: sysconf has no preconditions and does not allocate.
    let raw = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let size = if raw > 0 && (raw as usize).is_power_of_two() {
        raw as usize
    } else {
        4096
    };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Milliseconds of a monotonic clock with a resolution of a few milliseconds
/// (`CLOCK_MONOTONIC_COARSE`, read from the vDSO without a system call): cheap enough for an
/// allocator's slow paths to pace work such as returning cached memory. 0 if unavailable.
pub fn coarse_millis() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; clock_gettime neither allocates nor blocks.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .wrapping_mul(1000)
        .wrapping_add(ts.tv_nsec as u64 / 1_000_000)
}

/// Whether the `len` bytes at `addr` (at most 64) can be read without a fault, asked of the
/// kernel (`process_vm_readv` on this process, which fails with `EFAULT` where a load would
/// fault: an unmapped or `PROT_NONE` page). For checks on addresses that may be wild, off the
/// fast paths (a system call each). If the kernel cannot answer (the call is refused or missing),
/// says `true`, as a plain load would assume; see [`surely_readable`] for the opposite default.
pub fn readable(addr: usize, len: usize) -> bool {
    probe(addr, len).unwrap_or(true)
}

/// Like [`readable`], but `false` when the kernel cannot answer (a sandbox refusing
/// `process_vm_readv`): for readers that can stop instead of guessing, such as the stack walker.
pub fn surely_readable(addr: usize, len: usize) -> bool {
    probe(addr, len) == Some(true)
}

/// The kernel's answer to [`readable`]'s question, `None` if it gave none.
fn probe(addr: usize, len: usize) -> Option<bool> {
    let mut buf = [0u8; 64];
    let len = len.min(buf.len());
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: the kernel writes at most `len` bytes into `buf` and reads `addr` on our behalf,
    // reporting a fault as EFAULT instead of raising it; neither call allocates.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n >= 0 {
        return Some(n as usize == len);
    }
    // SAFETY: __errno_location returns this thread's errno slot.
    let errno = unsafe { *libc::__errno_location() };
    (errno == libc::EFAULT).then_some(false)
}

/// Rounds `n` up to a multiple of `align` (a power of two); `None` on overflow.
#[inline]
pub const fn align_up(n: usize, align: usize) -> Option<usize> {
    match n.checked_add(align - 1) {
        Some(v) => Some(v & !(align - 1)),
        None => None,
    }
}

/// Maps `size` fresh zeroed bytes (rounded up to whole pages); null on failure.
pub fn map(size: usize) -> *mut u8 {
    let Some(size) = align_up(size, page_size()) else {
        return ptr::null_mut();
    };
    if size == 0 || size > isize::MAX as usize {
        return ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping with a null hint touches no existing memory.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        p.cast()
    }
}

/// Maps `size` bytes whose start is aligned to `align` (a power of two, possibly far above the
/// page size): over-maps by `align` and trims the unaligned head and the tail. Null on failure.
pub fn map_aligned(size: usize, align: usize) -> *mut u8 {
    let page = page_size();
    let Some(size) = align_up(size, page) else {
        return ptr::null_mut();
    };
    if align <= page {
        return map(size);
    }
    let Some(over) = size.checked_add(align) else {
        return ptr::null_mut();
    };
    let raw = map(over);
    if raw.is_null() {
        return raw;
    }
    let raw_addr = raw as usize;
    let start = (raw_addr + align - 1) & !(align - 1);
    let head = start - raw_addr;
    let tail = over - head - size;
    // SAFETY: head and tail lie inside the mapping just made and nobody else knows of them.
    unsafe {
        if head > 0 {
            libc::munmap(raw.cast(), head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
    }
    start as *mut u8
}

/// Unmaps a range obtained from [`map`] or [`map_aligned`] (or part of one).
///
/// # Safety
/// The range must be mapped by this module and no longer used.
pub unsafe fn unmap(addr: *mut u8, size: usize) {
    if size == 0 {
        return;
    }
    // SAFETY: the caller guarantees the range is ours and dead. munmap failing leaves it mapped,
    // which leaks address space but never corrupts.
    unsafe {
        libc::munmap(addr.cast(), size);
    }
}

/// Returns the physical pages behind `addr..addr + size` to the kernel; the range stays mapped
/// and reads as zeros afterwards. `addr` and `size` must be page multiples.
///
/// # Safety
/// The range must be mapped by this module and hold nothing the caller still needs.
pub unsafe fn discard(addr: *mut u8, size: usize) {
    if size == 0 {
        return;
    }
    // SAFETY: the caller guarantees the range is ours and its contents are dead; DONTNEED keeps
    // the mapping valid.
    unsafe {
        libc::madvise(addr.cast(), size, libc::MADV_DONTNEED);
    }
}

/// Tries to resize the mapping at `addr` from `old_size` to `new_size` bytes without moving it.
/// Returns `true` on success. Both sizes are rounded to pages.
///
/// # Safety
/// `addr..addr + old_size` must be a mapping made by this module.
pub unsafe fn remap_in_place(addr: *mut u8, old_size: usize, new_size: usize) -> bool {
    // SAFETY: without MREMAP_MAYMOVE the kernel either resizes in place or fails; it never
    // touches another mapping.
    let p = unsafe { libc::mremap(addr.cast(), old_size, new_size, 0) };
    p != libc::MAP_FAILED
}

/// Moves the pages of the mapping `old..old + old_size` to `new..new + new_size` (a range this
/// module mapped as a placeholder), without copying bytes. Returns `true` on success; on failure
/// both mappings are as they were.
///
/// # Safety
/// Both ranges must be mappings made by this module; the placeholder's contents are discarded.
pub unsafe fn remap_to(old: *mut u8, old_size: usize, new: *mut u8, new_size: usize) -> bool {
    // SAFETY: MREMAP_FIXED replaces the placeholder at `new`, which the caller owns.
    let p = unsafe {
        libc::mremap(
            old.cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            new.cast::<libc::c_void>(),
        )
    };
    p != libc::MAP_FAILED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_a_power_of_two() {
        assert!(page_size().is_power_of_two());
        assert!(page_size() >= 4096);
    }

    #[test]
    fn aligned_mapping_is_aligned_and_writable() {
        for shift in [12usize, 16, 22, 26] {
            let align = 1usize << shift;
            let p = map_aligned(3 * page_size(), align);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0);
            // SAFETY: p is a fresh mapping of 3 pages.
            unsafe {
                assert_eq!(*p, 0);
                p.write_bytes(0xAB, 3 * page_size());
                unmap(p, 3 * page_size());
            }
        }
    }

    #[test]
    fn impossible_sizes_fail_cleanly() {
        assert!(map(usize::MAX).is_null());
        assert!(map_aligned(usize::MAX - 10, 1 << 20).is_null());
        assert!(map(1 << 62).is_null());
    }

    #[test]
    fn readable_tells_mapped_from_protected_pages() {
        let page = page_size();
        let p = map(2 * page);
        assert!(!p.is_null());
        // SAFETY: p is two fresh pages that we own; the second is protected, then unmapped.
        unsafe {
            assert!(readable(p as usize, 16));
            libc::mprotect(p.add(page).cast(), page, libc::PROT_NONE);
            assert!(!readable(p as usize + page, 16));
            assert!(readable(p as usize + page - 8, 8));
            unmap(p, 2 * page);
        }
        assert!(!readable(0, 8));
    }

    #[test]
    fn discard_zeroes() {
        let p = map(page_size());
        // SAFETY: p is one fresh page that we own.
        unsafe {
            p.write_bytes(7, page_size());
            discard(p, page_size());
            assert_eq!(*p, 0);
            unmap(p, page_size());
        }
    }
}
