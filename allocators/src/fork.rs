//! One `pthread_atfork` registration for the allocators: each allocator hands the registry its
//! hooks (`prepare` takes its locks, `release` gives them back) for its fixed [`Slot`], and the
//! registry's own handlers run every registered hook in slot order, so the order in which locks
//! are taken across `fork()` no longer depends on which allocator happened to register first.
//!
//! `prepare` hooks run in slot order before `fork()`; `release` hooks run in the reverse order
//! after it, in the parent and in the child (a lock held by another thread at fork would
//! otherwise stay locked in the child forever). An allocator's locks come before [`Slot::Large`]
//! and [`Slot::Profile`], the shared pieces an allocator may call while holding its own locks.
//!
//! Registration goes through [`sync`](crate::sync)'s once-per-flag mechanism, so it is safe from
//! inside an allocator (a nested call while libc allocates returns at once) and whoever returns
//! from [`register`] knows its hooks run at any later `fork()`. Every piece that takes locks
//! registers here: the four allocators, the shared large-block cache, the heap profiler and its
//! stack walker.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use crate::sync;

/// Where an allocator's hooks run in the registry's order (prepare in this order, release in
/// the reverse order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// `Bump`'s shared chunk list.
    Bump,
    /// `Slab`'s caches, its large-block cache and its page layer.
    Slab,
    /// `Buddy`'s arenas.
    Buddy,
    /// `SizeClass`'s orphan heap and heap pool.
    SizeClass,
    /// The shared large-block cache ([`crate::large`]).
    Large,
    /// The heap profiler's tables ([`crate::profile`]).
    Profile,
    /// The stack walker's lock for describing a new return address (a leaf: held only while
    /// reading unwind information, never while taking another allocator lock).
    Unwind,
    /// This module's own test, so that it replaces no real slot's hooks.
    #[cfg(test)]
    Test,
}

/// The number of [`Slot`]s.
const SLOTS: usize = if cfg!(test) { 8 } else { 7 };

/// A hook: a function that takes or gives back some locks across `fork()`.
pub type Hook = unsafe extern "C" fn();

/// Each slot's `prepare` hook as an address, 0 while the slot has none. Written once, before the
/// slot's owner learns its registration is done; read by [`prepare_all`].
static PREPARE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Each slot's `release` hook as an address, stored before its `prepare` hook.
static RELEASE: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// The slots whose `prepare` hook ran in the fork under way (bit `i` for slot `i`), so the
/// release hooks match them even if a slot is registered meanwhile.
static PREPARED: AtomicU32 = AtomicU32::new(0);
/// Whether the registry's own handlers have been given to `pthread_atfork` (only read and
/// written inside [`sync::register_once`], which serialises registrations).
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Registers `prepare` and `release` as `slot`'s hooks, once per `registered` flag (the caller's
/// own, so the check that it is done costs one load where the caller inlines it). Call it
/// holding none of the allocator's locks.
#[inline]
pub fn register(registered: &AtomicBool, slot: Slot, prepare: Hook, release: Hook) {
    if registered.load(Ordering::Acquire) {
        return;
    }
    register_slow(registered, slot, prepare, release);
}

#[cold]
#[inline(never)]
fn register_slow(registered: &AtomicBool, slot: Slot, prepare: Hook, release: Hook) {
    sync::register_once(registered, || {
        if !INSTALLED.load(Ordering::Relaxed) {
            // SAFETY: the handlers only run the registered hooks, which only take and give
            // back locks.
            unsafe {
                libc::pthread_atfork(Some(prepare_all), Some(release_all), Some(release_all));
            }
            INSTALLED.store(true, Ordering::Relaxed);
        }
        let i = slot as usize;
        RELEASE[i].store(release as usize, Ordering::Release);
        PREPARE[i].store(prepare as usize, Ordering::Release);
    });
}

/// The hook stored as `addr` (non-zero).
///
/// # Safety
/// `addr` must have been stored from a [`Hook`] by [`register_slow`].
unsafe fn hook(addr: usize) -> Hook {
    // SAFETY: the caller's contract: `addr` is a `Hook` converted to an address, and function
    // pointers and `usize` have the same size on every target this crate builds for.
    unsafe { core::mem::transmute::<usize, Hook>(addr) }
}

/// The registry's `pthread_atfork` prepare handler: every registered slot's `prepare` hook, in
/// slot order.
///
/// # Safety
/// Called by libc before `fork()`, paired with [`release_all`].
unsafe extern "C" fn prepare_all() {
    let mut ran = 0u32;
    for (i, p) in PREPARE.iter().enumerate() {
        let addr = p.load(Ordering::Acquire);
        if addr != 0 {
            // SAFETY: a non-zero slot holds a registered hook; libc calls us before fork, as
            // the hook expects.
            unsafe { hook(addr)() };
            ran |= 1 << i;
        }
    }
    PREPARED.store(ran, Ordering::Relaxed);
}

/// The registry's `pthread_atfork` parent and child handler: the `release` hook of every slot
/// whose `prepare` hook [`prepare_all`] ran, in reverse slot order.
///
/// # Safety
/// Called by libc after `fork()`, in the thread that ran [`prepare_all`].
unsafe extern "C" fn release_all() {
    let ran = PREPARED.load(Ordering::Relaxed);
    for i in (0..SLOTS).rev() {
        if ran & (1 << i) != 0 {
            let addr = RELEASE[i].load(Ordering::Acquire);
            // SAFETY: the slot's release hook was stored before its prepare hook, which ran in
            // this thread before fork; it gives back what that prepare hook took.
            unsafe { hook(addr)() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static LOG: AtomicU32 = AtomicU32::new(0);

    unsafe extern "C" fn prep() {
        LOG.fetch_add(1, Ordering::SeqCst);
    }
    unsafe extern "C" fn rel() {
        LOG.fetch_add(100, Ordering::SeqCst);
    }

    /// A forked child sees its hooks run: prepare once before, release once in each process.
    #[test]
    fn hooks_run_around_fork() {
        static FLAG: AtomicBool = AtomicBool::new(false);
        register(&FLAG, Slot::Test, prep, rel);
        assert!(FLAG.load(Ordering::SeqCst));
        let before = LOG.load(Ordering::SeqCst);
        // SAFETY: the child only reads an atomic and exits with `_exit`.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let ok = LOG.load(Ordering::SeqCst) >= before + 101;
            // SAFETY: ends the child without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // Other tests may fork meanwhile: at least this fork's hooks ran.
        assert!(LOG.load(Ordering::SeqCst) >= before + 101);
    }
}
