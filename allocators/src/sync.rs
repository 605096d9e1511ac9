//! The lock used inside the allocators: a test-and-test-and-set spin lock that yields to the
//! scheduler when contended.
//!
//! It never allocates, has a `const` constructor, and exposes raw `force_lock`/`force_unlock` so
//! that a `pthread_atfork` handler can take every allocator lock before `fork()` and release it in
//! both parent and child (a lock held by another thread at fork would otherwise stay locked in the
//! child forever). Critical sections inside the allocators are short (list splices), so spinning
//! briefly beats parking.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A mutual-exclusion lock around a `T`; see the module docs.
pub struct Lock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `locked` (acquire on lock, release on unlock).
unsafe impl<T: Send> Sync for Lock<T> {}
// SAFETY: moving the lock moves the value; no thread-affine state inside.
unsafe impl<T: Send> Send for Lock<T> {}

impl<T> Lock<T> {
    /// A new unlocked lock holding `value`.
    pub const fn new(value: T) -> Self {
        Lock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning and then yielding while another thread holds it.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        LockGuard { lock: self }
    }

    /// Takes the lock if it is free.
    #[inline]
    pub fn try_lock(&self) -> Option<LockGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| LockGuard { lock: self })
    }

    #[cold]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < 64 {
                    core::hint::spin_loop();
                    spins += 1;
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
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
        self.locked.store(false, Ordering::Release);
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
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Registers `prepare` and `release` as `pthread_atfork` handlers, once per `registered` flag.
///
/// `prepare` runs in the forking thread before `fork()` and should take the allocator's locks;
/// `release` runs in both parent and child afterwards and should release them, so the child never
/// inherits a lock held by a thread that does not exist there. Safe to call from inside an
/// allocator: the flag is set before `pthread_atfork` runs, so if libc allocates while registering
/// (and that allocation comes back here) the inner call returns at once.
pub fn register_atfork(
    registered: &AtomicBool,
    prepare: unsafe extern "C" fn(),
    release: unsafe extern "C" fn(),
) {
    if registered.load(Ordering::Relaxed) || registered.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the handlers are plain functions that only take and release spin locks.
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(release), Some(release));
    }
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

    #[test]
    fn try_lock_fails_while_held() {
        let lock = Lock::new(());
        let g = lock.lock();
        assert!(lock.try_lock().is_none());
        drop(g);
        assert!(lock.try_lock().is_some());
    }
}
