//! Detects a call into the C allocation interface made from inside another one on the same
//! thread, and sends it to [`crate::bootstrap`] instead of the allocator. Used only for an
//! allocator that does not serve such calls itself (`Introspect::SERVES_REENTRY` is false, the
//! trait's default; none of this crate's four today): Bump, SizeClass, Slab and Buddy mark the
//! thread's own state while they set it up and serve a nested call from a shared path, which
//! spares every call this flag's thread-local access.
//!
//! Why this happens: an allocator that keeps per-thread state in a `thread_local!` with a
//! destructor (as all four once did). The first touch of it on a thread registers the destructor with glibc's
//! `__cxa_thread_atexit_impl`, which `calloc`s a list node; in a preloaded library that `calloc`
//! is ours, so it comes straight back into the allocator while the allocator is still setting up
//! that thread's state (std marks the state alive only after registering), and the process
//! recurses until the stack overflows. `pthread_atfork` (registered lazily by the allocators) may
//! allocate for the same reason. Inside a Rust program this cannot happen, since Rust's global
//! allocator is never reached from those libc paths.
//!
//! The flag lives in a `thread_local!` of a `Cell<bool>`: no destructor, so touching it never
//! registers anything and never allocates.

use core::cell::Cell;

thread_local! {
    /// Set while this thread is inside the allocator.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `op` with the calling thread marked as inside the allocator, or `nested` if it already
/// is (a call from inside the allocator, through libc, back into the C interface).
#[inline(always)]
pub fn guarded<R>(op: impl FnOnce() -> R, nested: impl FnOnce() -> R) -> R {
    let mut op = Some(op);
    let outer = INSIDE.try_with(|inside| {
        if inside.get() {
            return None;
        }
        inside.set(true);
        let r = op.take().map(|f| f());
        inside.set(false);
        r
    });
    match (outer, op) {
        (Ok(Some(r)), _) => r,
        // The flag cannot be destroyed (it has no destructor), but should `try_with` ever fail,
        // run the operation unguarded rather than fail it.
        (Err(_), Some(f)) => f(),
        _ => nested(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_calls_take_the_other_path() {
        let r = guarded(|| guarded(|| 1, || 2) * 10 + guarded(|| 3, || 4), || 5);
        assert_eq!(r, 24);
        assert_eq!(guarded(|| 1, || 2), 1);
    }
}
