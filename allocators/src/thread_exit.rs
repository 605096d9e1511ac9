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
//!
//! Hooks run with every signal blocked (see [`ExitHook`]), so a signal handler that allocates
//! never finds a lock held by the hook it interrupted.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Where a thread stands with its allocator's exit hook (Bump, Slab and Buddy keep one in their
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

/// What an allocator does when a thread exits: the body of its [`ExitHook`].
pub(crate) trait OnThreadExit {
    /// Hands back what the exiting thread holds. Runs with every signal blocked (see
    /// [`ExitHook`]), so it may take the allocator's locks.
    ///
    /// # Safety
    /// Called once per thread that armed the hook, by its key destructor, outside the allocator,
    /// with the non-null `value` it armed the hook with. Must not panic.
    unsafe fn on_thread_exit(value: *mut c_void);
}

/// One hook: the key (plus one; 0 until created) whose destructor runs `H`'s
/// [`OnThreadExit::on_thread_exit`].
///
/// The destructor blocks every signal around the hook and restores the thread's mask after it
/// (two `pthread_sigmask` calls per thread exit). Hooks take allocator locks, and a thread in
/// its key destructors is outside any allocator call as far as a signal handler can tell: a
/// handler that allocates, run while the hook holds a lock, would wait on that lock forever
/// (seen with Buddy and SizeClass). Blocked, the signal is delivered when the hook is done.
pub(crate) struct ExitHook<H> {
    key_plus_one: AtomicUsize,
    hook: PhantomData<fn() -> H>,
}

/// The key destructor of an [`ExitHook<H>`]: `H`'s hook with every signal blocked.
///
/// # Safety
/// As for [`OnThreadExit::on_thread_exit`].
unsafe extern "C" fn run_hook<H: OnThreadExit>(value: *mut c_void) {
    let old = block_all_signals();
    // SAFETY: forwarded contract (a key destructor, with the value the thread armed).
    unsafe { H::on_thread_exit(value) };
    restore_signals(&old);
}

/// Blocks every signal the thread can block; returns the mask it had.
fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data (all-zero is a valid empty value before sigfillset).
    let mut all: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: as above.
    let mut old: libc::sigset_t = unsafe { core::mem::zeroed() };
    // SAFETY: both sets are valid and writable; neither call allocates (glibc leaves out the two
    // signals it reserves for itself).
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    old
}

/// Puts back the mask [`block_all_signals`] returned; a signal that came meanwhile is
/// delivered now.
fn restore_signals(old: &libc::sigset_t) {
    // SAFETY: a valid mask read from this thread.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, old, core::ptr::null_mut()) };
}

impl<H: OnThreadExit> ExitHook<H> {
    /// A hook that runs `H`'s hook when a thread that [`ExitHook::arm`]ed it with a non-null
    /// `value` exits.
    pub(crate) const fn new() -> Self {
        ExitHook {
            key_plus_one: AtomicUsize::new(0),
            hook: PhantomData,
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
        // SAFETY: `key` is writable; `run_hook::<H>` is a valid destructor for the values we set
        // (the caller's contract in `arm`). pthread_key_create does not allocate in glibc.
        if unsafe { libc::pthread_key_create(&mut key, Some(run_hook::<H>)) } != 0 {
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

    /// Arms the hook for the calling thread: `H`'s hook runs with `value` when it exits (also if it
    /// exits from inside other key destructors, up to glibc's rounds). `false` if it could not
    /// be armed (no key, or no memory for glibc's key table).
    ///
    /// # Safety
    /// `value` must be non-null and stay valid for the hook until the thread exits.
    pub(crate) unsafe fn arm(&self, value: *mut c_void) -> bool {
        let Some(key) = self.key() else {
            return false;
        };
        // SAFETY: a key of ours; setting a value is allowed at any time, also in a destructor.
        unsafe { libc::pthread_setspecific(key, value) == 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Set by [`MaskProbe`]: whether the hook ran, and with which signals blocked.
    static RAN: AtomicBool = AtomicBool::new(false);
    static BLOCKED_DURING: AtomicUsize = AtomicUsize::new(0);

    /// The signals probed, and a bit each in [`BLOCKED_DURING`].
    const PROBED: [libc::c_int; 5] = [
        libc::SIGALRM,
        libc::SIGUSR1,
        libc::SIGINT,
        libc::SIGTERM,
        libc::SIGCHLD,
    ];

    /// Which of [`PROBED`] the calling thread blocks, one bit each.
    fn blocked_now() -> usize {
        // SAFETY: sigset_t is plain data; SIG_BLOCK with a null set only reads the mask.
        unsafe {
            let mut cur: libc::sigset_t = core::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, core::ptr::null(), &mut cur);
            PROBED
                .iter()
                .enumerate()
                .filter(|&(_, &s)| libc::sigismember(&cur, s) == 1)
                .fold(0, |bits, (i, _)| bits | 1 << i)
        }
    }

    struct MaskProbe;

    impl OnThreadExit for MaskProbe {
        unsafe fn on_thread_exit(_: *mut c_void) {
            BLOCKED_DURING.store(blocked_now(), Ordering::SeqCst);
            RAN.store(true, Ordering::SeqCst);
        }
    }

    static PROBE: ExitHook<MaskProbe> = ExitHook::new();

    /// A hook that does nothing (for the restore test, which must not touch [`RAN`]).
    struct Quiet;

    impl OnThreadExit for Quiet {
        unsafe fn on_thread_exit(_: *mut c_void) {}
    }

    /// The hook of an exiting thread runs with every signal blocked (an allocating signal
    /// handler must not run while the hook holds an allocator lock).
    #[test]
    fn hooks_run_with_every_signal_blocked() {
        std::thread::spawn(|| {
            assert_eq!(
                blocked_now(),
                0,
                "the test thread starts with signals blocked"
            );
            // SAFETY: a non-null value the probe never reads.
            assert!(unsafe { PROBE.arm(core::ptr::NonNull::<u8>::dangling().as_ptr().cast()) });
        })
        .join()
        .unwrap();
        assert!(RAN.load(Ordering::SeqCst), "the hook did not run");
        assert_eq!(
            BLOCKED_DURING.load(Ordering::SeqCst),
            (1 << PROBED.len()) - 1,
            "signals left unblocked during the hook"
        );
    }

    /// The thread's own mask is back once the hook is done.
    #[test]
    fn the_mask_is_restored_after_the_hook() {
        std::thread::spawn(|| {
            // SAFETY: sigset_t is plain data; SIGUSR1 is blocked here, for the thread only.
            unsafe {
                let mut one: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &one, core::ptr::null_mut());
            }
            let before = blocked_now();
            assert_eq!(before, 0b10);
            // SAFETY: called outside any allocator with a non-null value, as a destructor would.
            unsafe { run_hook::<Quiet>(core::ptr::NonNull::<u8>::dangling().as_ptr().cast()) };
            assert_eq!(blocked_now(), before);
        })
        .join()
        .unwrap();
    }
}
