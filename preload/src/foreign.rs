//! Reading memory of unknown extent without faulting: used by `realloc` on a block that some other
//! allocator handed out (the dynamic loader's minimal malloc runs before a preloaded library is
//! in place), whose size nobody can tell us.
//!
//! The copy goes through the kernel (`process_vm_readv` on our own process), which stops at the
//! first page that is not readable instead of raising `SIGSEGV`. Copying past the end of the old
//! block into its neighbours is harmless: `realloc` leaves the bytes past the old size
//! unspecified, and the reads happen in the kernel, not as Rust memory accesses.

use core::ffi::c_void;

/// Copies up to `len` bytes from `src` to `dst`, stopping at the first unreadable page of the
/// source. Returns the number of bytes copied (0 if none could be read, including when the
/// system call is unavailable, e.g. forbidden by a seccomp filter).
///
/// # Safety
/// `dst` must be valid for writing `len` bytes and must not overlap `src..src + len`.
pub unsafe fn copy_readable(dst: *mut u8, src: *const u8, len: usize) -> usize {
    let local = libc::iovec {
        iov_base: dst.cast::<c_void>(),
        iov_len: len,
    };
    let remote = libc::iovec {
        iov_base: src.cast_mut().cast::<c_void>(),
        iov_len: len,
    };
    // SAFETY: both iovecs live on the stack for the call; the kernel writes only `dst..dst + len`,
    // which the caller guarantees writable, and validates every source page itself. Reading our
    // own process needs no ptrace permission (same thread group). getpid does not allocate.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_a_whole_readable_range() {
        let src: Vec<u8> = (0..200u8).collect();
        let mut dst = vec![0u8; 200];
        // SAFETY: dst is 200 writable bytes, disjoint from src.
        let n = unsafe { copy_readable(dst.as_mut_ptr(), src.as_ptr(), 200) };
        assert_eq!(n, 200);
        assert_eq!(dst, src);
    }

    #[test]
    fn stops_at_an_unreadable_page() {
        let page = allocators::os::page_size();
        let two = allocators::os::map(2 * page);
        assert!(!two.is_null());
        // SAFETY: the first page of the fresh mapping is written, the second made unreadable.
        unsafe {
            two.write_bytes(7, page);
            assert_eq!(
                libc::mprotect(two.add(page).cast(), page, libc::PROT_NONE),
                0
            );
        }
        let mut dst = vec![0u8; 2 * page];
        // SAFETY: dst holds 2 pages, disjoint from the mapping.
        let n = unsafe { copy_readable(dst.as_mut_ptr(), two, 2 * page) };
        assert_eq!(n, page);
        assert!(dst[..page].iter().all(|&b| b == 7));
        // SAFETY: as above; the source page is unreadable.
        assert_eq!(
            unsafe { copy_readable(dst.as_mut_ptr(), two.add(page), 16) },
            0
        );
        // SAFETY: the mapping is ours and no longer used.
        unsafe { allocators::os::unmap(two, 2 * page) };
    }
}
