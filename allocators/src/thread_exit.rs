//! Running an allocator's hook when a thread exits, through a `pthread` key destructor.
//!
//! Why not a `thread_local!` with a destructor: glibc runs those (`__call_tls_dtors`) before the
//! `pthread` key destructors, and never again. A thread whose first allocation happens in a key
//! destructor (C libraries free and allocate there) registered a hook that never ran, so its
//! heap or magazines were never handed back: 0.6-1.3 MB leaked per thread. Key destructors run
//! in rounds: one set during a round (here, by a first allocation inside another key's
//! destructor) runs in the next, up to `PTHREAD_DESTRUCTOR_ITERATIONS` (4) rounds.
//!
//! Setting the key may allocate (glibc `calloc`s a second-level table for keys past the first
//! 32): the caller must be ready to serve such a nested call without the hook.

use core::ffi::c_void;

/// Where a thread stands with its allocator's exit hook (Slab and Buddy keep one in their
/// zero-initialised thread block). Until `Attached`, and after `Exited`, the thread's cache is not
/// used and its operations take the allocator's shared path.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Attach {
    /// The thread has not reached a slow path yet (0: made by the zeroed thread block).
    #[allow(dead_code)]
    Fresh = 0,
    /// Arming the hook and registering the fork handlers (either may allocate: such a nested
    /// call takes the shared path).
    Attaching,
    /// The hook is armed: the thread's cache is in use.
    Attached,
    /// The hook ran (or could not be armed): no cache any more.
    Exited,
}
use core::sync::atomic::{AtomicUsize, Ordering};

/// One hook: the key (plus one; 0 until created) whose destructor runs it.
pub struct ExitHook {
    key_plus_one: AtomicUsize,
    run: unsafe extern "C" fn(*mut c_void),
}

impl ExitHook {
    /// A hook that calls `run(value)` when a thread that [`ExitHook::arm`]ed it with a non-null
    /// `value` exits.
    pub const fn new(run: unsafe extern "C" fn(*mut c_void)) -> Self {
        ExitHook {
            key_plus_one: AtomicUsize::new(0),
            run,
        }
    }

    /// The key, created on first use; `None` if the system has no key left.
    #[inline]
    fn key(&self) -> Option<libc::pthread_key_t> {
        let k = self.key_plus_one.load(Ordering::Acquire);
        if k != 0 {
            return libc::pthread_key_t::try_from(k - 1).ok();
        }
        self.create_key()
    }

    #[cold]
    fn create_key(&self) -> Option<libc::pthread_key_t> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `key` is writable; `run` is a valid destructor for the values we set (the
        // caller's contract in `arm`). pthread_key_create does not allocate in glibc.
        if unsafe { libc::pthread_key_create(&mut key, Some(self.run)) } != 0 {
            return None;
        }
        let mine = key as usize + 1;
        match self
            .key_plus_one
            .compare_exchange(0, mine, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Some(key),
            Err(theirs) => {
                // Another thread created one first: use it, give ours back.
                // SAFETY: our key, never set by anyone.
                unsafe { libc::pthread_key_delete(key) };
                libc::pthread_key_t::try_from(theirs - 1).ok()
            }
        }
    }

    /// Arms the hook for the calling thread: `run(value)` is called when it exits (also if it
    /// exits from inside other key destructors, up to glibc's rounds). `false` if it could not
    /// be armed (no key, or no memory for glibc's key table).
    ///
    /// # Safety
    /// `value` must be non-null and stay valid for `run` until the thread exits; `run` must not
    /// panic.
    pub unsafe fn arm(&self, value: *mut c_void) -> bool {
        let Some(key) = self.key() else {
            return false;
        };
        // SAFETY: a key of ours; setting a value is allowed at any time, also in a destructor.
        unsafe { libc::pthread_setspecific(key, value) == 0 }
    }
}
