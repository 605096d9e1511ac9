//! The bump allocator: hands out memory by moving a pointer through 4 MiB chunks.
//!
//! **It never reuses freed memory.** `dealloc` gives back only the most recent block of the
//! calling thread's chunk (the pointer moves back) and large blocks (unmapped at once); everything
//! else stays allocated until the process exits. Memory therefore grows with the total bytes
//! allocated, not with the live bytes: use it for short-lived programs and phase-based work
//! (compilers, command-line tools, request arenas), where that trade buys the cheapest possible
//! allocation.
//!
//! Layout: each thread owns one chunk (a [`REGION_SIZE`]-aligned mapping claimed as
//! [`Owner::Bump`]) and bumps a cursor through it. Each block is preceded by one word holding its
//! size, so [`Introspect::usable_size`] works from the pointer alone. Requests above
//! [`LARGE_THRESHOLD`] or aligned above [`MAX_ALIGN`] go to [`crate::large`].
//!
//! Fast path ([`Arena::alloc`]): one thread-local access, an add, a compare, two stores. No lock, no
//! atomic read-modify-write (the stats counters are thread-local too, folded every few hundred
//! operations). When a thread exits (its exit hook, a `pthread` key destructor: see
//! `crate::thread_exit`), the unused tail of its chunk goes on a shared list and the next thread
//! that needs a chunk takes it, so thousands of short-lived threads do not each strand a chunk,
//! also when a thread first allocates from inside another key destructor.

mod hardening;
mod region;
#[cfg(test)]
mod tests;
mod thread;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr;
use core::sync::atomic::AtomicBool;

use crate::hardened::{self, Misuse};
use crate::large;
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::{GlobalCounters, LocalCounters, Stats};
use crate::Introspect;

use self::hardening::{check_live, read_size, write_size_word};
use self::region::{take_chunk, SpareTail, SHARED};
use self::thread::with_arena;

/// Bytes of each chunk (one region-map window).
const CHUNK_SIZE: usize = REGION_SIZE;
/// Requests larger than this are mapped directly by [`crate::large`].
pub const LARGE_THRESHOLD: usize = CHUNK_SIZE / 4;
/// Alignments above this are served by [`crate::large`].
pub const MAX_ALIGN: usize = 4096;
/// The size word in front of every block.
const HEADER: usize = core::mem::size_of::<usize>();
/// A thread's leftover chunk tail shorter than this is dropped rather than handed on.
const MIN_SPARE: usize = 4096;

static COUNTERS: GlobalCounters = GlobalCounters::new();
static ATFORK: AtomicBool = AtomicBool::new(false);

/// The bump allocator; see the module documentation. A zero-sized handle onto one process-wide
/// heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bump {
    _private: (),
}

impl Bump {
    /// A handle onto the process-wide bump heap. Nothing is mapped until the first allocation.
    pub const fn new() -> Self {
        Bump { _private: () }
    }
}

// SAFETY: blocks are carved from disjoint parts of chunks owned by one arena at a time, aligned as
// asked, and never handed out twice (memory is only reused through `free_last`, which returns the
// latest block's space to the arena that gave it out).
unsafe impl GlobalAlloc for Bump {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| {
            if is_large(&layout) {
                return alloc_large(layout, false);
            }
            with_arena(|a| a.alloc(layout, false))
        };
        crate::profile::alloc_hooked(layout, false, Owner::Bump, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The allocator's ordinary path (also the sampler's fallback).
        let plain = |layout: Layout| {
            if is_large(&layout) {
                return alloc_large(layout, true);
            }
            with_arena(|a| a.alloc(layout, true))
        };
        crate::profile::alloc_hooked(layout, true, Owner::Bump, &COUNTERS, plain)
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match region_map::owner_of(ptr) {
            Owner::Bump => {
                if hardened::ENABLED {
                    // SAFETY: ptr lies in a mapped Bump chunk.
                    unsafe { check_live(ptr as usize, true) };
                }
                // Only the latest block of this thread's chunk can be given back.
                with_arena(|a| {
                    if !a.free_last(ptr as usize, layout.size()) {
                        a.counters.on_free(layout.size(), &COUNTERS);
                    }
                });
            }
            // SAFETY: the caller passes a live block of ours; in a Large window it is a large block.
            Owner::Large => unsafe {
                large::dealloc(ptr, layout.size(), &COUNTERS);
            },
            _ if hardened::ENABLED => hardened::misuse("bump", Misuse::InvalidFree, ptr),
            _ => {}
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = layout.size();
        match region_map::owner_of(ptr) {
            Owner::Bump => {
                if hardened::ENABLED {
                    // SAFETY: ptr lies in a mapped Bump chunk.
                    unsafe { check_live(ptr as usize, false) };
                }
                if new_size <= old {
                    // Shrink in place: the block keeps its start, its size word records the new size.
                    with_arena(|a| {
                        if !a.resize_last(ptr as usize, old, new_size) {
                            // SAFETY: a live block shrinking: the new canary lies inside its old extent.
                            unsafe { write_size_word(ptr as usize, new_size, hardened::tag_key()) };
                        }
                    });
                    return ptr;
                }
                if new_size <= LARGE_THRESHOLD
                    && with_arena(|a| a.resize_last(ptr as usize, old, new_size))
                {
                    return ptr;
                }
            }
            Owner::Large if new_size > LARGE_THRESHOLD => {
                // SAFETY: a live large block of ours.
                return unsafe { large::realloc_counted(ptr, old, new_size, &COUNTERS) };
            }
            _ => {}
        }
        // SAFETY: the caller's guarantees, forwarded.
        unsafe { crate::realloc_by_moving(self, ptr, layout, new_size) }
    }
}

fn is_large(layout: &Layout) -> bool {
    layout.size() > LARGE_THRESHOLD || layout.align() > MAX_ALIGN
}

/// A cursor through one chunk.
///
/// Invariants: `start <= last_cursor <= cursor <= clean_from <= end` when a chunk is held (all
/// zero otherwise); bytes in `clean_from..end` have never been written since the kernel mapped them;
/// `last_block` is the most recent block handed out from `last_cursor..cursor`, or 0.
struct Arena {
    cursor: usize,
    end: usize,
    clean_from: usize,
    last_block: usize,
    last_cursor: usize,
    /// The process tag key (hardened builds; 0 otherwise), copied here at refill so the fast path
    /// makes no global load for it.
    key: usize,
    counters: LocalCounters,
}

impl Arena {
    const fn empty() -> Self {
        Arena {
            cursor: 0,
            end: 0,
            clean_from: 0,
            last_block: 0,
            last_cursor: 0,
            key: 0,
            counters: LocalCounters::new(),
        }
    }

    /// The fast path: carve `layout` from the current chunk, or refill.
    #[inline(always)]
    fn alloc(&mut self, layout: Layout, zeroed: bool) -> *mut u8 {
        let align = layout.align().max(HEADER);
        let block = (self.cursor + HEADER + align - 1) & !(align - 1);
        let new_cursor = block + layout.size() + hardened::CANARY_BYTES;
        if new_cursor <= self.end && self.cursor != 0 {
            return self.commit(block, new_cursor, layout.size(), zeroed);
        }
        self.alloc_refill(layout, zeroed)
    }

    #[inline(always)]
    fn commit(&mut self, block: usize, new_cursor: usize, size: usize, zeroed: bool) -> *mut u8 {
        if zeroed && block < self.clean_from {
            let dirty_end = (block + size).min(self.clean_from);
            // SAFETY: block..dirty_end is inside the chunk and now belongs to this block.
            unsafe { ptr::write_bytes(block as *mut u8, 0, dirty_end - block) };
        }
        // After the zeroing, which would otherwise wipe the canary (hardened) after the block.
        // SAFETY: block - HEADER >= cursor lies inside the chunk, word-aligned (align >= HEADER),
        // and the canary's bytes (hardened) were counted in new_cursor.
        unsafe { write_size_word(block, size, self.key) };
        self.last_cursor = self.cursor;
        self.last_block = block;
        self.cursor = new_cursor;
        self.clean_from = self.clean_from.max(new_cursor);
        self.counters.on_alloc(size, &COUNTERS);
        block as *mut u8
    }

    #[cold]
    fn alloc_refill(&mut self, layout: Layout, zeroed: bool) -> *mut u8 {
        self.hand_on();
        let align = layout.align().max(HEADER);
        // Worst case: the size word, then padding up to the alignment, then the block.
        let need = layout.size().saturating_add(HEADER + align);
        if !take_chunk(self, need) {
            return ptr::null_mut();
        }
        if hardened::ENABLED {
            self.key = hardened::tag_key();
        }
        let block = (self.cursor + HEADER + align - 1) & !(align - 1);
        let new_cursor = block + layout.size() + hardened::CANARY_BYTES;
        if new_cursor > self.end {
            return ptr::null_mut();
        }
        self.commit(block, new_cursor, layout.size(), zeroed)
    }

    /// Frees `block` if it is the most recent one: the cursor moves back.
    #[inline]
    fn free_last(&mut self, block: usize, size: usize) -> bool {
        if block != self.last_block || block == 0 {
            return false;
        }
        self.cursor = self.last_cursor;
        self.last_block = 0;
        self.counters.on_free(size, &COUNTERS);
        true
    }

    /// Resizes `block` in place if it is the most recent one and the chunk has room.
    #[inline]
    fn resize_last(&mut self, block: usize, old: usize, new: usize) -> bool {
        if block != self.last_block || block == 0 || block + new + hardened::CANARY_BYTES > self.end
        {
            return false;
        }
        self.cursor = block + new + hardened::CANARY_BYTES;
        self.clean_from = self.clean_from.max(self.cursor);
        // SAFETY: the size word of a live block of this chunk, with room for its canary.
        unsafe { write_size_word(block, new, self.key) };
        self.counters.on_free(old, &COUNTERS);
        self.counters.on_alloc(new, &COUNTERS);
        true
    }

    /// Puts the rest of the current chunk on the shared spare list (or drops a short tail).
    fn hand_on(&mut self) {
        self.counters.flush(&COUNTERS);
        let start = (self.cursor + 15) & !15;
        if self.cursor != 0 && start + MIN_SPARE <= self.end {
            let tail = start as *mut SpareTail;
            // SAFETY: start..end is unused chunk memory owned by this arena, 16-aligned.
            unsafe {
                tail.write(SpareTail {
                    next: ptr::null_mut(),
                    end: self.end,
                    clean_from: self
                        .clean_from
                        .max(start + core::mem::size_of::<SpareTail>()),
                })
            };
            let mut shared = SHARED.lock();
            // SAFETY: tail was just written and is owned by the list from now on.
            unsafe { (*tail).next = shared.spare };
            shared.spare = tail;
        }
        self.cursor = 0;
        self.end = 0;
        self.clean_from = 0;
        self.last_block = 0;
        self.last_cursor = 0;
    }
}

// No padding: C blocks need none to have their canaries checked (see `UnsizedPad`).
impl hardened::UnsizedPad for Bump {}

impl Introspect for Bump {
    const NAME: &'static str = "bump";

    /// A nested call finds the thread attaching and takes the shared arena (see `attach`).
    const SERVES_REENTRY: bool = true;

    fn stats(&self) -> Stats {
        COUNTERS.snapshot()
    }

    unsafe fn usable_size(&self, ptr: *const u8) -> Option<usize> {
        match region_map::owner_of(ptr) {
            Owner::Bump => {
                let addr = ptr as usize;
                let chunk = region_map::window_base(ptr);
                if !addr.is_multiple_of(HEADER) || addr < chunk + HEADER {
                    return None;
                }
                // SAFETY: a word inside a mapped Bump chunk; for a live block it is its size word.
                Some(unsafe { read_size(addr) })
            }
            // SAFETY: the pointer lies in a Large window.
            Owner::Large => unsafe { large::usable_size_if_owned(ptr, Owner::Bump) },
            _ => None,
        }
    }

    /// One lookup: the block's size is in the word before it.
    unsafe fn free_unsized(&self, ptr: *mut u8) {
        match region_map::owner_of(ptr) {
            Owner::Bump => {
                let addr = ptr as usize;
                if hardened::ENABLED {
                    // SAFETY: ptr lies in a mapped Bump chunk.
                    unsafe { check_live(addr, true) };
                }
                // SAFETY: a live block of a mapped chunk (the caller's contract, checked above in
                // hardened builds): the word before it is its size word.
                let size = unsafe { read_size(addr) };
                with_arena(|a| {
                    if !a.free_last(addr, size) {
                        a.counters.on_free(size, &COUNTERS);
                    }
                });
            }
            // SAFETY: the pointer lies in a Large window; a live block of ours is given up.
            Owner::Large => unsafe { large::free_unsized(ptr, Owner::Bump, &COUNTERS) },
            _ => {}
        }
    }
}

/// A large block, zeroed if asked (a reused mapping is dirty).
#[cold]
fn alloc_large(layout: Layout, zeroed: bool) -> *mut u8 {
    large::alloc_layout(layout, zeroed, Owner::Bump, &COUNTERS)
}

unsafe extern "C" fn atfork_prepare() {
    SHARED.force_lock();
}

unsafe extern "C" fn atfork_release() {
    // SAFETY: called after atfork_prepare took the lock in this thread.
    unsafe { SHARED.force_unlock() };
}
