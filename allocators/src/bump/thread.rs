//! Bump's per-thread state: the thread's arena in a static-TLS block, attaching a thread on its
//! first allocation (arming its exit hook, registering the fork hooks), and the shared arena
//! that threads without one of their own use (while they attach, and after their exit hook ran).
//! At exit the unused tail of the thread's chunk goes on the shared spare list.

use core::ffi::c_void;

use super::region::SHARED;
use super::{atfork_prepare, atfork_release, Arena, ATFORK};
use crate::fork::{self, Slot};
use crate::thread_exit::{Attach, ExitHook, OnThreadExit};

/// A thread's arena and where the thread stands with its exit hook.
///
/// Starts as all-zero bytes (see [`thread_slot`]): [`Attach::Fresh`], no chunk, zero counters.
struct ThreadArena {
    /// The arena is used only while `Attached`.
    attach: Attach,
    arena: Arena,
}

crate::thread_word::thread_block!(
    /// The thread's arena (all zero: not attached, no chunk), reached without a call also from
    /// the preloaded library (see [`crate::thread_word`]).
    thread_slot,
    "allocators_bump_thread_arena",
    ThreadArena
);

/// Hands the rest of the thread's chunk on when the thread exits (armed once per thread, in
/// [`attach`]).
static EXIT_HOOK: ExitHook<BumpExit> = ExitHook::new();

/// Bump's exit hook: puts the unused tail of the thread's chunk on the spare list and folds its
/// counters. Operations after it (later key destructors, libc's own teardown) take the shared
/// arena.
struct BumpExit;

impl OnThreadExit for BumpExit {
    unsafe fn on_thread_exit(_: *mut c_void) {
        // SAFETY: the thread's own arena; key destructors run outside the allocator, so no other
        // reference to it is live, and `hand_on` allocates nothing.
        let slot = unsafe { &mut *thread_slot::get() };
        slot.attach = Attach::Exited;
        slot.arena.hand_on();
    }
}

/// Runs `f` on the calling thread's arena, or on the shared arena (under its lock) while the
/// thread has none: while it attaches, and after its exit hook ran.
#[inline(always)]
pub(super) fn with_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    // SAFETY: the arena is only reached through this function, which never re-enters itself on
    // one thread (nothing inside allocates through the global allocator, and the libc calls that
    // may, in `attach`, run with no reference live), so this is the only live reference.
    let slot = unsafe { &mut *thread_slot::get() };
    if slot.attach == Attach::Attached {
        return f(&mut slot.arena);
    }
    with_arena_slow(f)
}

/// [`with_arena`] for a thread that is not attached: attaches a fresh one.
#[cold]
#[inline(never)]
fn with_arena_slow<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    if attach() {
        // SAFETY: as in `with_arena`; `attach` holds no reference any more.
        return f(unsafe { &mut (*thread_slot::get()).arena });
    }
    with_shared_arena(f)
}

/// Attaches a fresh thread (arming its exit hook, registering the fork handlers); whether the
/// thread's arena may be used. Either call may allocate (glibc's key table, `pthread_atfork`'s):
/// such a nested call finds the thread `Attaching` and takes the shared arena.
#[cold]
#[inline(never)]
fn attach() -> bool {
    let slot = thread_slot::get();
    // SAFETY: the thread's own slot with no reference to it live (see `with_arena`); the field is
    // written through the raw pointer only, before and after the calls that may re-enter.
    unsafe {
        if (*slot).attach != Attach::Fresh {
            return false;
        }
        (*slot).attach = Attach::Attaching;
        // `slot` is non-null and outlives the thread's key destructors.
        let ok = EXIT_HOOK.arm(slot.cast());
        fork::register(&ATFORK, Slot::Bump, atfork_prepare, atfork_release);
        (*slot).attach = if ok { Attach::Attached } else { Attach::Exited };
        ok
    }
}

/// Runs `f` on the shared arena: for threads without an arena of their own.
#[cold]
fn with_shared_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
    // The shared arena's refill takes the same lock to reach the spare list, so run it on a copy
    // of the arena state taken out from under the lock.
    let mut arena = core::mem::replace(&mut SHARED.lock().arena, Arena::empty());
    let r = f(&mut arena);
    let mut shared = SHARED.lock();
    if shared.arena.cursor == 0 {
        shared.arena = arena;
    } else {
        // Another thread installed an arena meanwhile; keep theirs, hand ours on.
        drop(shared);
        arena.hand_on();
    }
    r
}
