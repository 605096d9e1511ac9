//! Slots for sampled blocks.
//!
//! The heap profiler gives each sampled block a page of its own with a header before it (see
//! `crate::profile`), once per sample. A mapping of its own per sample cost an `mmap`, page
//! faults and an `munmap` whenever the cache of freed mappings could not serve it (programs
//! that keep sampled blocks live). So sampled blocks of up to [`SLOT_BLOCK_BYTES`] are served
//! from slots carved out of [`REGION_SIZE`] windows claimed as Large, reused through a
//! lock-free free list and never unmapped: no system call and, once a slot has been used, no
//! page fault. A slot is its header page followed by its block's pages; the header names the
//! slot, so `dealloc` and `realloc` (through the same Large paths as every large block) hand it
//! back. Hardened builds use no slots (their large blocks need guard pages).

use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::header::{write_header, Header};
use super::{alloc, unmap_block};
use crate::hardened;
use crate::os::{self, page_size};
use crate::region_map::{self, Owner, REGION_SIZE};
use crate::stats::GlobalCounters;

/// Resizes the block at `ptr`, held in a sampled-block slot: in the slot if the new size fits,
/// else moved to a mapping of its own (and the slot freed). Null with the block untouched if
/// no mapping can be had.
///
/// # Safety
/// `header` must be the live header of the block at `ptr`, which lies in slot `(*header).slot - 1`.
pub(super) unsafe fn realloc_slot(
    ptr: *mut u8,
    header: *mut Header,
    new_size: usize,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    let page = page_size();
    // SAFETY: the caller's contract: a live header.
    let (usable, owner) = unsafe { ((*header).usable, (*header).owner) };
    if let Some(new_usable) = os::align_up(new_size.max(1), page) {
        if new_usable <= slot_block_bytes() {
            counters.add_mapped(new_usable);
            counters.sub_mapped(usable);
            // SAFETY: a live header, ours to write.
            unsafe { (*header).usable = new_usable };
            return ptr;
        }
    }
    let q = alloc(new_size, page, false, owner, counters);
    if q.is_null() {
        return q;
    }
    // `alloc` counted an allocation of `new_size`; the caller counts the move itself.
    counters.record_free(new_size);
    // SAFETY: both blocks are live and distinct; the old one holds `usable` bytes, the new one
    // at least `new_size`; the old block is dead after the copy and freed to its slot.
    unsafe {
        ptr::copy_nonoverlapping(ptr, q, usable.min(new_size));
        unmap_block(ptr, counters);
    }
    q
}

/// Block bytes one slot holds at most (at least one page): 16 KiB, the largest requests
/// most workloads make; a larger sampled block gets a mapping of its own.
pub const SLOT_BLOCK_BYTES: usize = 16 << 10;
/// Windows of slots at most (64 windows of 4 MiB: some 13,000 slots of 20 KiB with 4 KiB pages).
const SLOT_WINDOWS: usize = 64;

/// The bases of the slot windows mapped so far (the first `SLOT_WINDOWS_USED`).
static SLOT_WINDOW_BASES: [AtomicUsize; SLOT_WINDOWS] =
    [const { AtomicUsize::new(0) }; SLOT_WINDOWS];
/// Slot windows mapped so far.
pub(super) static SLOT_WINDOWS_USED: AtomicUsize = AtomicUsize::new(0);
/// Slots handed out at least once (slots `0..SLOT_FRESH`); the next never-used slot.
static SLOT_FRESH: AtomicUsize = AtomicUsize::new(0);
/// The free list of slots: `(tag << 32) | (index + 1)` of the first free slot (0: empty). The
/// tag grows with every change, so a pop that raced with a pop and a push fails its exchange.
static SLOT_HEAD: AtomicU64 = AtomicU64::new(0);
/// Set while a thread maps a new window (others then fall back to a mapping of their own). A
/// child forked while another thread held it keeps it set: its sampled blocks then come from the
/// slots mapped before the fork, and from mappings of their own once those are used.
static SLOT_GROWING: AtomicBool = AtomicBool::new(false);
/// Where in a slot's header page its free-list link lives (past the [`Header`]).
const SLOT_LINK_OFFSET: usize = 256;

/// Bytes of block in a slot.
pub(super) fn slot_block_bytes() -> usize {
    SLOT_BLOCK_BYTES.max(page_size())
}

/// Bytes of one slot: its header page and its block.
fn slot_len() -> usize {
    page_size() + slot_block_bytes()
}

fn slots_per_window() -> usize {
    REGION_SIZE / slot_len()
}

/// The start of slot `i` (whose window is mapped).
fn slot_addr(i: u32) -> usize {
    let per = slots_per_window();
    let w = i as usize / per;
    SLOT_WINDOW_BASES[w].load(Ordering::Acquire) + (i as usize % per) * slot_len()
}

/// The free-list link of slot `i`, in its header page (mapped for good once its window is).
fn slot_link(i: u32) -> &'static AtomicU32 {
    // SAFETY: slot windows are never unmapped; the link lies in the slot's header page, past the
    // header, is suitably aligned (page start + 256) and only ever accessed atomically.
    unsafe { &*((slot_addr(i) + SLOT_LINK_OFFSET) as *const AtomicU32) }
}

pub(super) fn push_slot(i: u32) {
    let mut head = SLOT_HEAD.load(Ordering::Relaxed);
    loop {
        slot_link(i).store(head as u32, Ordering::Relaxed);
        let new = ((head >> 32).wrapping_add(1) << 32) | (i as u64 + 1);
        match SLOT_HEAD.compare_exchange_weak(head, new, Ordering::Release, Ordering::Relaxed) {
            Ok(_) => return,
            Err(h) => head = h,
        }
    }
}

/// A free slot: a reused one, else a never-used one (mapping a new window if needed); `None`
/// when none can be had without waiting.
fn take_slot() -> Option<u32> {
    let mut head = SLOT_HEAD.load(Ordering::Acquire);
    while head as u32 != 0 {
        let i = head as u32 - 1;
        // A racing pop may have handed slot i out already: the link read is then stale, and the
        // exchange below fails because the tag moved on.
        let next = slot_link(i).load(Ordering::Relaxed);
        let new = ((head >> 32).wrapping_add(1) << 32) | next as u64;
        match SLOT_HEAD.compare_exchange_weak(head, new, Ordering::Acquire, Ordering::Acquire) {
            Ok(_) => return Some(i),
            Err(h) => head = h,
        }
    }
    let per = slots_per_window();
    loop {
        let f = SLOT_FRESH.load(Ordering::Relaxed);
        if f < SLOT_WINDOWS_USED.load(Ordering::Acquire) * per {
            if SLOT_FRESH
                .compare_exchange_weak(f, f + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                return Some(f as u32);
            }
            continue;
        }
        if !grow_slots() {
            return None;
        }
    }
}

/// Maps and publishes one more slot window; false if another thread is doing it, the windows
/// are all used, or the kernel refuses.
fn grow_slots() -> bool {
    if SLOT_GROWING.swap(true, Ordering::Acquire) {
        return false;
    }
    let w = SLOT_WINDOWS_USED.load(Ordering::Relaxed);
    let mut ok = false;
    if w < SLOT_WINDOWS {
        let base = region_map::map_claimed(REGION_SIZE, Owner::Large) as usize;
        if base != 0 {
            SLOT_WINDOW_BASES[w].store(base, Ordering::Release);
            SLOT_WINDOWS_USED.store(w + 1, Ordering::Release);
            ok = true;
        }
    }
    SLOT_GROWING.store(false, Ordering::Release);
    ok
}

/// A block of `size` bytes (page-aligned) in a slot for sampled blocks, for `owner`, counted in
/// `counters` like a block of [`alloc`]; freed and resized through [`dealloc`](super::dealloc) and [`realloc`](super::realloc)
/// like any large block. Null if `size` exceeds [`SLOT_BLOCK_BYTES`] (or a page), in hardened
/// builds, or when no slot can be had at once: the caller then uses [`alloc`].
pub fn alloc_slot(
    size: usize,
    zeroed: bool,
    owner: Owner,
    counters: &'static GlobalCounters,
) -> *mut u8 {
    let page = page_size();
    if hardened::ENABLED || size > slot_block_bytes() {
        return ptr::null_mut();
    }
    let Some(i) = take_slot() else {
        return ptr::null_mut();
    };
    let base = slot_addr(i);
    let block = base + page;
    let usable = os::align_up(size.max(1), page).unwrap_or(page);
    // SAFETY: slot i is ours alone until pushed back; its header page and block lie in a window
    // mapped read-write for good and claimed as Large.
    unsafe {
        write_header(block, owner, base, slot_len(), usable);
        (*((block - page) as *mut Header)).slot = i + 1;
        if zeroed {
            ptr::write_bytes(block as *mut u8, 0, usable);
        }
    }
    counters.add_mapped(usable + page);
    counters.record_alloc(size);
    block as *mut u8
}
