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

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use core::ptr;
use core::sync::atomic::AtomicBool;

use crate::fork::{self, Slot};
use crate::hardened::{self, Misuse};
use crate::large;
use crate::os;
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::{GlobalCounters, LocalCounters, Stats};
use crate::sync::Lock;
use crate::thread_exit::{Attach, ExitHook, OnThreadExit};
use crate::Introspect;

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
/// Chunk tails left by exited threads, and the arena used by code running after a thread's
/// cache was destroyed.
static SHARED: Lock<Shared> = Lock::new(Shared {
    spare: ptr::null_mut(),
    arena: Arena::empty(),
});
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

/// The start of a chunk tail on the spare list: written into the tail itself.
struct SpareTail {
    next: *mut SpareTail,
    end: usize,
    /// Bytes from here on have never been written (still zero from the kernel).
    clean_from: usize,
}

struct Shared {
    spare: *mut SpareTail,
    arena: Arena,
}

// SAFETY: the raw pointers refer to chunk memory owned by the allocator, only touched under the lock.
unsafe impl Send for Shared {}

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

/// How many spare tails `take_chunk` looks at for one with room before mapping a fresh chunk.
const SPARE_SCAN: usize = 8;

/// Gives `arena` a spare tail with at least `need` bytes if one is near the front of the list,
/// else a fresh chunk. `false` if the kernel refuses.
fn take_chunk(arena: &mut Arena, need: usize) -> bool {
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
    let chunk = os::map_aligned(CHUNK_SIZE, REGION_SIZE);
    if chunk.is_null() {
        return false;
    }
    if !region_map::claim(chunk as usize, CHUNK_SIZE, Owner::Bump) {
        // SAFETY: just mapped, never published.
        unsafe { os::unmap(chunk, CHUNK_SIZE) };
        return false;
    }
    COUNTERS.add_mapped(CHUNK_SIZE);
    arena.cursor = chunk as usize;
    arena.end = chunk as usize + CHUNK_SIZE;
    arena.clean_from = chunk as usize;
    true
}

unsafe extern "C" fn atfork_prepare() {
    SHARED.force_lock();
}

unsafe extern "C" fn atfork_release() {
    // SAFETY: called after atfork_prepare took the lock in this thread.
    unsafe { SHARED.force_unlock() };
}

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
fn with_arena<R>(f: impl FnOnce(&mut Arena) -> R) -> R {
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

/// In hardened builds the size word carries, above the size's 32 bits, a freed flag and a tag
/// derived from the block's address and the process key, so a free of a pointer that does not
/// start a block (tag mismatch) or of a freed block (flag set) is caught.
const SIZE_MASK: usize = if hardened::ENABLED {
    0xFFFF_FFFF
} else {
    usize::MAX
};
const FREED_BIT: usize = 1 << 32;
const TAG_MASK: usize = !(SIZE_MASK | FREED_BIT);

/// Writes the size word in front of `block` (and, hardened, the canary after its `size` bytes,
/// keyed with `key`, the process tag key).
///
/// # Safety
/// The word before `block` and, hardened, `CANARY_BYTES` after `block + size` belong to the block.
#[inline(always)]
unsafe fn write_size_word(block: usize, size: usize, key: usize) {
    if hardened::ENABLED {
        // One keyed hash serves as both the size word's tag and the canary.
        let canary = hardened::canary_keyed(block, key);
        // SAFETY: the caller guarantees both words belong to the block.
        unsafe {
            ((block - HEADER) as *mut usize).write(size | (canary & TAG_MASK));
            ((block + size) as *mut usize).write_unaligned(canary);
        }
    } else {
        // SAFETY: the caller guarantees the word belongs to the block.
        unsafe { ((block - HEADER) as *mut usize).write(size) };
    }
}

/// The size recorded in front of `block`.
///
/// # Safety
/// `block - HEADER` must be a readable word of a Bump chunk.
#[inline(always)]
unsafe fn read_size(block: usize) -> usize {
    // SAFETY: forwarded contract.
    unsafe { ((block - HEADER) as *const usize).read() & SIZE_MASK }
}

/// Hardened check of a block about to be freed (`free`) or resized: stops the program on an
/// invalid pointer, a double free or an overwritten canary; marks the block freed if `free`.
///
/// # Safety
/// `block` must lie in a mapped Bump chunk.
#[inline]
unsafe fn check_live(block: usize, free: bool) {
    let chunk = block & !(CHUNK_SIZE - 1);
    if !block.is_multiple_of(HEADER) || block < chunk + HEADER {
        hardened::misuse("bump", Misuse::InvalidFree, block as *const u8);
    }
    let word_ptr = (block - HEADER) as *mut usize;
    // SAFETY: a word inside the caller's mapped chunk.
    let word = unsafe { word_ptr.read() };
    let canary = hardened::canary_for(block);
    if word & TAG_MASK != canary & TAG_MASK {
        hardened::misuse("bump", Misuse::InvalidFree, block as *const u8);
    }
    if word & FREED_BIT != 0 {
        hardened::misuse("bump", Misuse::DoubleFree, block as *const u8);
    }
    let size = word & SIZE_MASK;
    // SAFETY: a live block's canary follows its size bytes inside the chunk.
    if unsafe { ((block + size) as *const usize).read_unaligned() } != canary {
        hardened::misuse("bump", Misuse::HeapOverflow, block as *const u8);
    }
    if free {
        // SAFETY: the block's own size word and bytes, which the caller is giving up.
        unsafe {
            word_ptr.write(word | FREED_BIT);
            if hardened::FILL_FREED {
                ptr::write_bytes(block as *mut u8, hardened::FREED_BYTE, size);
            }
        }
    }
}

fn is_large(layout: &Layout) -> bool {
    layout.size() > LARGE_THRESHOLD || layout.align() > MAX_ALIGN
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

/// A large block, zeroed if asked (a reused mapping is dirty).
#[cold]
fn alloc_large(layout: Layout, zeroed: bool) -> *mut u8 {
    large::alloc(
        layout.size(),
        layout.align(),
        zeroed,
        Owner::Bump,
        &COUNTERS,
    )
}

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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request that does not fit the rest of the chunk, when that rest is long enough to go on
    /// the spare list, must get a fresh chunk (it once got its own too-short tail back, and null).
    #[test]
    fn refill_skips_spare_tails_too_short_for_the_request() {
        std::thread::spawn(|| {
            let bump = Bump::new();
            let small = Layout::from_size_align(16, 16).unwrap();
            // SAFETY: valid layouts; the blocks are never used after the thread ends.
            unsafe {
                let first = bump.alloc(small);
                assert!(!first.is_null());
                let chunk_end = region_map::window_base(first) + CHUNK_SIZE;
                // Fill the chunk until between 5 KiB and 6 KiB are left.
                loop {
                    let cursor = bump.alloc(small) as usize + 16;
                    let left = chunk_end - cursor;
                    if left < 6 * 1024 {
                        assert!(left >= 5 * 1024, "step overshot: {left}");
                        break;
                    }
                    let step = (left - 5 * 1024 - 2 * HEADER - 32).min(LARGE_THRESHOLD);
                    assert!(!bump
                        .alloc(Layout::from_size_align(step, 16).unwrap())
                        .is_null());
                }
                let big = bump.alloc(Layout::from_size_align(8192, 16).unwrap());
                assert!(!big.is_null());
                big.write_bytes(1, 8192);
            }
        })
        .join()
        .unwrap();
    }
}
