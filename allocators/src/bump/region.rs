//! Bump's chunks: 4 MiB mappings, each one region-map window claimed as [`Owner::Bump`], and
//! the shared list of chunk tails that exited threads left (the next thread that needs a chunk
//! takes one with room before mapping a fresh one).

use core::ptr;

use super::{atfork_prepare, atfork_release, Arena, ATFORK, CHUNK_SIZE, COUNTERS};
use crate::fork::{self, Slot};
use crate::region_map::{self, Owner};
use crate::sync::Lock;

/// The start of a chunk tail on the spare list: written into the tail itself.
pub(super) struct SpareTail {
    pub(super) next: *mut SpareTail,
    pub(super) end: usize,
    /// Bytes from here on have never been written (still zero from the kernel).
    pub(super) clean_from: usize,
}

/// What [`SHARED`] guards.
pub(super) struct Shared {
    pub(super) spare: *mut SpareTail,
    pub(super) arena: Arena,
}

// SAFETY: the raw pointers refer to chunk memory owned by the allocator, only touched under the lock.
unsafe impl Send for Shared {}

/// Chunk tails left by exited threads, and the arena used by code running after a thread's
/// cache was destroyed.
pub(super) static SHARED: Lock<Shared> = Lock::new(Shared {
    spare: ptr::null_mut(),
    arena: Arena::empty(),
});

/// How many spare tails `take_chunk` looks at for one with room before mapping a fresh chunk.
const SPARE_SCAN: usize = 8;

/// Gives `arena` a spare tail with at least `need` bytes if one is near the front of the list,
/// else a fresh chunk. `false` if the kernel refuses.
pub(super) fn take_chunk(arena: &mut Arena, need: usize) -> bool {
    fork::register(&ATFORK, Slot::Bump, atfork_prepare, atfork_release);
    {
        let mut shared = SHARED.lock();
        let mut link: *mut *mut SpareTail = &mut shared.spare;
        for _ in 0..SPARE_SCAN {
            // SAFETY: `link` points at the list head or at the `next` field of a listed tail, all
            // owned by the list and only touched under the lock we hold.
            let tail = unsafe { *link };
            if tail.is_null() {
                break;
            }
            // SAFETY: list entries are valid tails owned by the list.
            let t = unsafe { tail.read() };
            if t.end - tail as usize >= need {
                // SAFETY: as above; unlinking `tail`, which now belongs to `arena`.
                unsafe { *link = t.next };
                arena.cursor = tail as usize;
                arena.end = t.end;
                arena.clean_from = t.clean_from;
                return true;
            }
            // SAFETY: `tail` is a valid listed tail.
            link = unsafe { &raw mut (*tail).next };
        }
    }
    let chunk = region_map::map_claimed(CHUNK_SIZE, Owner::Bump);
    if chunk.is_null() {
        return false;
    }
    COUNTERS.add_mapped(CHUNK_SIZE);
    arena.cursor = chunk as usize;
    arena.end = chunk as usize + CHUNK_SIZE;
    arena.clean_from = chunk as usize;
    true
}
