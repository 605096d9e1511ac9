//! The lock used inside the allocators: a futex mutex (the classic three states of Drepper's
//! "Futexes are tricky": 0 unlocked, 1 locked, 2 locked with sleepers) that spins briefly before
//! it sleeps.
//!
//! The uncontended paths cost what a spin lock's do: one compare-and-swap to lock, one swap to
//! unlock (whose old value says whether a sleeper must be woken). Critical sections inside the
//! allocators are short (list splices), so a contended thread first spins [`SPINS`] times; if the
//! lock is still held it sleeps in `FUTEX_WAIT` instead of burning a core (issue 23 item 3: the
//! lock used to yield forever, which on a loaded machine, or with a holder descheduled, kept every
//! waiter running).
//!
//! It never allocates, has a `const` constructor, and exposes raw `force_lock`/`force_unlock` so
//! that a `pthread_atfork` handler can take every allocator lock before `fork()` and release it in
//! both parent and child (a lock held by another thread at fork would otherwise stay locked in the
//! child forever; in the child the unlock's wake finds no sleeper and does nothing).

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

/// Spins of a contended [`Lock::lock`] before it sleeps (a few microseconds).
pub const SPINS: u32 = 100;

/// [`Lock`] state: free.
const UNLOCKED: u32 = 0;
/// [`Lock`] state: held, nobody asleep on it.
const LOCKED: u32 = 1;
/// [`Lock`] state: held, and some thread may be asleep on it (the unlock must wake one).
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock around a `T`; see the module docs.
pub struct Lock<T> {
    /// [`UNLOCKED`], [`LOCKED`] or [`CONTENDED`]; the futex word.
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `state` (acquire on lock, release on unlock).
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the value; no thread-affine state inside.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    /// A new unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        Lock {
            state: AtomicU32::new(UNLOCKED),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning briefly and then sleeping while another thread holds it.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T> {
        if self
            .state
            .compare_exchange_weak(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        LockGuard { lock: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| LockGuard { lock: self })
    }

    #[cold]
    fn lock_contended(&self) {
        // Spin while the holder may be about to release it and nobody sleeps yet.
        for _ in 0..SPINS {
            match self.state.load(Ordering::Relaxed) {
                UNLOCKED => {
                    if self
                        .state
                        .compare_exchange_weak(
                            UNLOCKED,
                            LOCKED,
                            Ordering::Acquire,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        return;
                    }
                }
                CONTENDED => break,
                _ => core::hint::spin_loop(),
            }
        }
        // Sleep. Taking the lock as CONTENDED (not knowing whether others sleep) makes our own
        // unlock wake one, at worst needlessly.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }

    /// Releases the lock, waking one sleeper if there may be any.
    #[inline]
    fn unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake_one(&self.state);
        }
    }

    /// Takes the lock without producing a guard (for `pthread_atfork`'s prepare handler).
    pub fn force_lock(&self) {
        core::mem::forget(self.lock());
    }

    /// Releases a lock taken by [`Lock::force_lock`].
    ///
    /// # Safety
    /// The lock must be held, by a forgotten guard, and no guard of it may be alive.
    pub unsafe fn force_unlock(&self) {
        self.unlock();
    }

    /// A raw pointer to the value, for callers that serialise access some other way.
    pub fn as_ptr(&self) -> *mut T {
        self.value.get()
    }
}

/// Proof that a [`Lock`] is held; releases it when dropped.
pub struct LockGuard<'a, T> {
    lock: &'a Lock<T>,
}

impl<T> Deref for LockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard's existence means this thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard's existence means this thread holds the lock exclusively.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for LockGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.unlock();
    }
}

/// Sleeps while `word` holds `expected` (returns at once if it does not; may return spuriously).
fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: FUTEX_WAIT reads the aligned u32 behind `word`, valid for the call; a null timeout
    // waits without limit. Errors (EAGAIN: the value changed; EINTR) just return to the caller's
    // loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes one thread sleeping on `word`, if any.
fn futex_wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key; it reads and writes no memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// The kernel thread id of the thread registering fork handlers now, or 0 (see
/// [`register_once`]).
static REGISTERING: AtomicI32 = AtomicI32::new(0);

/// Runs `register` once per `registered` flag (the mechanism of `crate::fork::register`).
///
/// `registered` becomes true only once `register` has returned, and a thread that finds a
/// registration under way waits for it: so whoever returns from here (and goes on to take the
/// allocator's locks) knows the handlers are in place for any later `fork()` (issue 23 item 5:
/// the flag used to be set first, letting a second thread through before the handlers existed).
/// Registrations are serialised by one process-wide owner word holding the registering thread's
/// id. Safe to call from inside an allocator: if libc allocates while registering and that
/// allocation comes back here, the inner call (same thread) returns at once. A registration left
/// unfinished by a thread that is gone (in a child forked meanwhile) is taken over.
#[cold]
pub(crate) fn register_once(registered: &AtomicBool, register: impl FnOnce()) {
    register_with(&REGISTERING, registered, register);
}

/// The mechanism of [`register_once`]: runs `register` once per `registered` flag, serialised
/// by the owner word `registering`.
#[cold]
fn register_with(registering: &AtomicI32, registered: &AtomicBool, register: impl FnOnce()) {
    // SAFETY: gettid has no preconditions and cannot fail.
    let me = unsafe { libc::syscall(libc::SYS_gettid) } as i32;
    let mut holder = 0;
    loop {
        match registering.compare_exchange(holder, me, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => break,
            // Re-entered from inside `register` (libc allocating): the outer call finishes.
            Err(h) if h == me => return,
            Err(h) => {
                if registered.load(Ordering::Acquire) {
                    return;
                }
                // Take over from a holder that is not a thread of this process (it exited, or
                // this is a child forked while it registered); otherwise wait for it.
                // SAFETY: signal 0 only checks that the thread exists; nothing is sent.
                let gone = h != 0
                    && unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), h, 0) } != 0
                    && errno() == libc::ESRCH;
                holder = if gone { h } else { 0 };
                if !gone {
                    std::thread::yield_now();
                }
            }
        }
    }
    if !registered.load(Ordering::Acquire) {
        register();
        registered.store(true, Ordering::Release);
    }
    registering.store(0, Ordering::Release);
}

/// The calling thread's `errno`.
fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, valid for the thread's life.
    unsafe { *libc::__errno_location() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_serialises_increments() {
        let lock = Arc::new(Lock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let lock = Arc::clone(&lock);
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        *lock.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(*lock.lock(), 200_000);
    }

    /// Issue 23 item 3: a thread waiting for a held lock sleeps (state S in /proc) instead of
    /// spinning or yielding (state R), and gets the lock once it is released.
    #[test]
    fn a_waiter_sleeps_until_the_lock_is_free() {
        static LOCK: Lock<u32> = Lock::new(0);
        static TID: AtomicI32 = AtomicI32::new(0);
        let held = LOCK.lock();
        let waiter = std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            TID.store(
                unsafe { libc::syscall(libc::SYS_gettid) } as i32,
                Ordering::SeqCst,
            );
            *LOCK.lock() += 1;
        });
        while TID.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let stat = format!("/proc/self/task/{}/stat", TID.load(Ordering::SeqCst));
        let mut asleep = false;
        for _ in 0..500 {
            let text = std::fs::read_to_string(&stat).unwrap();
            // The state follows the parenthesised command name.
            let state = text.rsplit_once(") ").unwrap().1.chars().next().unwrap();
            if state == 'S' && LOCK.state.load(Ordering::SeqCst) == CONTENDED {
                asleep = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(held);
        waiter.join().unwrap();
        assert!(asleep, "the waiter never slept");
        assert_eq!(*LOCK.lock(), 1);
        assert_eq!(LOCK.state.load(Ordering::SeqCst), UNLOCKED);
    }

    /// Issue 23 item 5: a second caller must not return before the first caller's registration
    /// has run (the flag used to be set before `pthread_atfork`, so it returned at once).
    #[test]
    fn a_second_registrant_waits_for_the_first() {
        use std::sync::atomic::AtomicBool as Flag;
        static OWNER: AtomicI32 = AtomicI32::new(0);
        static REGISTERED: AtomicBool = AtomicBool::new(false);
        static STARTED: Flag = Flag::new(false);
        static DONE: Flag = Flag::new(false);
        let first = std::thread::spawn(|| {
            register_with(&OWNER, &REGISTERED, || {
                STARTED.store(true, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(100));
                DONE.store(true, Ordering::SeqCst);
            })
        });
        while !STARTED.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        register_with(&OWNER, &REGISTERED, || panic!("registered twice"));
        assert!(
            DONE.load(Ordering::SeqCst),
            "returned before the handlers were registered"
        );
        first.join().unwrap();
        assert!(REGISTERED.load(Ordering::SeqCst));
        assert_eq!(OWNER.load(Ordering::SeqCst), 0);
    }

    /// A call from inside the registration (libc allocating) returns at once; a registration
    /// left by a thread that is not ours (a fork child's view) is taken over.
    #[test]
    fn reentry_returns_and_a_gone_holder_is_taken_over() {
        static OWNER: AtomicI32 = AtomicI32::new(0);
        static REENTERED: AtomicBool = AtomicBool::new(false);
        let mut inner_ran = false;
        register_with(&OWNER, &REENTERED, || {
            register_with(&OWNER, &REENTERED, || panic!("inner registration ran"));
            inner_ran = true;
        });
        assert!(inner_ran && REENTERED.load(Ordering::SeqCst));

        static ORPHANED: AtomicBool = AtomicBool::new(false);
        // No thread has this id (above any pid_max Linux allows).
        OWNER.store(i32::MAX, Ordering::SeqCst);
        let mut ran = false;
        register_with(&OWNER, &ORPHANED, || ran = true);
        assert!(ran && ORPHANED.load(Ordering::SeqCst));
        assert_eq!(OWNER.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn try_lock_fails_while_held() {
        let lock = Lock::new(());
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(g);
        assert!(lock.try_lock().is_some());
    }
}
