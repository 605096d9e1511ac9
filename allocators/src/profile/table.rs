//! The sampled-block table: which sampled blocks are live, and what every distinct call stack has
//! allocated. Lives in memory mapped from the kernel (never in an allocator being measured),
//! reached only on the slow paths (a sampled allocation, the free of a sampled block, a
//! snapshot), under one lock.
//!
//! Two open-addressing hash tables with linear probing:
//! - stacks: each distinct stack once, with its totals scaled up from the samples (allocated
//!   objects and bytes since start; live objects and bytes now);
//! - blocks: each live sampled block, keyed by address, naming its stack and its scaled weight.
//!   Removal shifts the following entries back (no tombstones), so lookups stay short.
//!
//! When a table is full, new samples are dropped (counted in [`Tables::dropped`]).

use core::ptr;
use core::sync::atomic::AtomicBool;

use super::stack::MAX_FRAMES;
use crate::os;
use crate::sync::Lock;

/// Distinct stacks kept at most (a power of two).
pub const STACK_SLOTS: usize = 1 << 13;
/// Live sampled blocks kept at most (a power of two): 2^16 samples at the default 512 KiB rate
/// stand for 32 GiB live.
pub const BLOCK_SLOTS: usize = 1 << 16;

/// One distinct call stack and what it allocated (counts and bytes scaled up from the samples).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackEntry {
    /// Hash of the frames; 0 marks a free slot.
    pub hash: u64,
    /// Frames used in `frames`.
    pub depth: usize,
    /// Return addresses, innermost first.
    pub frames: [usize; MAX_FRAMES],
    /// Objects allocated from this stack since start (scaled).
    pub alloc_objects: f64,
    /// Bytes allocated from this stack since start (scaled).
    pub alloc_bytes: f64,
    /// Objects from this stack live now (scaled).
    pub inuse_objects: f64,
    /// Bytes from this stack live now (scaled).
    pub inuse_bytes: f64,
}

/// One live sampled block.
#[repr(C)]
#[derive(Clone, Copy)]
struct BlockEntry {
    /// The block's address; 0 marks a free slot.
    addr: usize,
    /// Index of its stack in the stack table.
    stack: u32,
    /// Objects it stands for (scaled).
    objects: f64,
    /// Bytes it stands for (scaled).
    bytes: f64,
}

/// Both tables (null until first used).
pub struct Tables {
    stacks: *mut StackEntry,
    blocks: *mut BlockEntry,
    /// Samples dropped because a table was full or could not be mapped.
    pub dropped: u64,
    /// Live sampled blocks.
    pub live: usize,
}

// SAFETY: the tables are only touched under `TABLES`' lock.
unsafe impl Send for Tables {}

/// The process-wide tables.
pub static TABLES: Lock<Tables> = Lock::new(Tables {
    stacks: ptr::null_mut(),
    blocks: ptr::null_mut(),
    dropped: 0,
    live: 0,
});

static ATFORK: AtomicBool = AtomicBool::new(false);

/// `pthread_atfork` prepare handler: takes the tables' lock across `fork()`.
///
/// # Safety
/// Called by libc before `fork()`, paired with [`atfork_release`].
unsafe extern "C" fn atfork_prepare() {
    TABLES.force_lock();
}

/// `pthread_atfork` parent and child handler: releases what [`atfork_prepare`] took.
///
/// # Safety
/// Called by libc after `fork()`, in the thread that ran [`atfork_prepare`].
unsafe extern "C" fn atfork_release() {
    // SAFETY: atfork_prepare took the lock in this thread, with no guard.
    unsafe { TABLES.force_unlock() };
}

/// Registers the fork handlers (once); call holding no lock.
pub fn register_atfork() {
    crate::fork::register(
        &ATFORK,
        crate::fork::Slot::Profile,
        atfork_prepare,
        atfork_release,
    );
}

fn hash_frames(frames: &[usize]) -> u64 {
    // FNV-1a over the words, never 0.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &f in frames {
        h ^= f as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h | 1
}

fn hash_addr(addr: usize) -> usize {
    // Fibonacci hashing; blocks are at least 16-aligned, so the low bits carry nothing.
    ((addr as u64 >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
}

impl Tables {
    /// Maps both tables on first use; false if the kernel refused.
    fn ready(&mut self) -> bool {
        if self.stacks.is_null() {
            let s = os::map(STACK_SLOTS * core::mem::size_of::<StackEntry>());
            if s.is_null() {
                return false;
            }
            self.stacks = s.cast();
        }
        if self.blocks.is_null() {
            let b = os::map(BLOCK_SLOTS * core::mem::size_of::<BlockEntry>());
            if b.is_null() {
                return false;
            }
            self.blocks = b.cast();
        }
        true
    }

    /// Records a live sampled block at `addr` from the stack `frames`, standing for `objects`
    /// objects and `bytes` bytes. False (and nothing recorded) if a table is full.
    pub fn insert(&mut self, addr: usize, frames: &[usize], objects: f64, bytes: f64) -> bool {
        if !self.ready() || self.live >= BLOCK_SLOTS * 3 / 4 {
            self.dropped += 1;
            return false;
        }
        let Some(stack) = self.stack_index(frames) else {
            self.dropped += 1;
            return false;
        };
        // SAFETY: `stack` < STACK_SLOTS in the mapped stack table, only touched under the lock.
        unsafe {
            let s = &mut *self.stacks.add(stack);
            s.alloc_objects += objects;
            s.alloc_bytes += bytes;
            s.inuse_objects += objects;
            s.inuse_bytes += bytes;
        }
        let mut i = hash_addr(addr) & (BLOCK_SLOTS - 1);
        loop {
            // SAFETY: i < BLOCK_SLOTS in the mapped block table; the table is never full (kept
            // under 3/4), so the probe ends.
            let e = unsafe { &mut *self.blocks.add(i) };
            if e.addr == 0 || e.addr == addr {
                if e.addr == 0 {
                    self.live += 1;
                }
                *e = BlockEntry {
                    addr,
                    stack: stack as u32,
                    objects,
                    bytes,
                };
                return true;
            }
            i = (i + 1) & (BLOCK_SLOTS - 1);
        }
    }

    /// The slot of the stack `frames`, added if new; `None` if the table is full.
    fn stack_index(&mut self, frames: &[usize]) -> Option<usize> {
        let h = hash_frames(frames);
        let mut i = h as usize & (STACK_SLOTS - 1);
        for _ in 0..STACK_SLOTS {
            // SAFETY: i < STACK_SLOTS in the mapped stack table.
            let e = unsafe { &mut *self.stacks.add(i) };
            if e.hash == 0 {
                e.hash = h;
                e.depth = frames.len();
                if let Some(dst) = e.frames.get_mut(..frames.len()) {
                    dst.copy_from_slice(frames);
                }
                return Some(i);
            }
            if e.hash == h && e.frames.get(..e.depth) == Some(frames) {
                return Some(i);
            }
            i = (i + 1) & (STACK_SLOTS - 1);
        }
        None
    }

    /// Removes the live sampled block at `addr`, if recorded, from the live totals.
    pub fn remove(&mut self, addr: usize) {
        if self.blocks.is_null() {
            return;
        }
        let mask = BLOCK_SLOTS - 1;
        let mut i = hash_addr(addr) & mask;
        loop {
            // SAFETY: i is masked below BLOCK_SLOTS in the mapped block table.
            let e = unsafe { *self.blocks.add(i) };
            if e.addr == 0 {
                return;
            }
            if e.addr == addr {
                // SAFETY: e.stack was a valid stack slot when recorded; stacks are never removed.
                unsafe {
                    let s = &mut *self.stacks.add(e.stack as usize);
                    s.inuse_objects -= e.objects;
                    s.inuse_bytes -= e.bytes;
                }
                break;
            }
            i = (i + 1) & mask;
        }
        self.live -= 1;
        // Backward-shift deletion: move later entries of the probe run into the hole when their
        // home slot does not lie (cyclically) between the hole and them.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            // SAFETY: j is masked below BLOCK_SLOTS in the mapped block table.
            let e = unsafe { *self.blocks.add(j) };
            if e.addr == 0 {
                break;
            }
            let home = hash_addr(e.addr) & mask;
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                // SAFETY: hole is masked below BLOCK_SLOTS in the mapped block table.
                unsafe { *self.blocks.add(hole) = e };
                hole = j;
            }
            j = (j + 1) & mask;
        }
        // SAFETY: as above.
        unsafe {
            *self.blocks.add(hole) = BlockEntry {
                addr: 0,
                stack: 0,
                objects: 0.0,
                bytes: 0.0,
            }
        };
    }

    /// Copies every stack entry in use into `out` (which has room for [`STACK_SLOTS`]); returns
    /// how many were copied.
    ///
    /// # Safety
    /// `out` must be valid for writing [`STACK_SLOTS`] entries.
    pub unsafe fn copy_stacks(&self, out: *mut StackEntry) -> usize {
        if self.stacks.is_null() {
            return 0;
        }
        let mut n = 0;
        for i in 0..STACK_SLOTS {
            // SAFETY: i < STACK_SLOTS in the mapped table; n <= i < STACK_SLOTS fits `out`.
            unsafe {
                let e = &*self.stacks.add(i);
                if e.hash != 0 {
                    out.add(n).write(*e);
                    n += 1;
                }
            }
        }
        n
    }
}

/// Whether `addr` is recorded as a live sampled block (tests).
#[cfg(test)]
pub fn contains(t: &Tables, addr: usize) -> bool {
    if t.blocks.is_null() {
        return false;
    }
    (0..BLOCK_SLOTS).any(|i| {
        // SAFETY: i < BLOCK_SLOTS in the mapped table.
        unsafe { (*t.blocks.add(i)).addr == addr }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh() -> Tables {
        Tables {
            stacks: ptr::null_mut(),
            blocks: ptr::null_mut(),
            dropped: 0,
            live: 0,
        }
    }

    #[test]
    fn insert_remove_keep_totals_and_probe_runs() {
        let mut t = fresh();
        let a = [1usize, 2, 3];
        let b = [4usize, 5];
        // Addresses that collide in the block table (same home slot) and some that do not.
        let addrs: Vec<usize> = (1..200)
            .map(|i| i * 16 * BLOCK_SLOTS)
            .chain((1..50).map(|i| i * 4096))
            .collect();
        for (i, &x) in addrs.iter().enumerate() {
            let frames: &[usize] = if i % 2 == 0 { &a } else { &b };
            assert!(t.insert(x, frames, 2.0, 100.0));
        }
        assert_eq!(t.live, addrs.len());
        // Remove every third; the rest must still be found.
        for &x in addrs.iter().step_by(3) {
            t.remove(x);
        }
        for (i, &x) in addrs.iter().enumerate() {
            assert_eq!(contains(&t, x), i % 3 != 0, "{i}");
        }
        for &x in &addrs {
            t.remove(x);
        }
        assert_eq!(t.live, 0);
        let buf = os::map(STACK_SLOTS * core::mem::size_of::<StackEntry>()).cast::<StackEntry>();
        // SAFETY: buf has room for STACK_SLOTS entries.
        let n = unsafe { t.copy_stacks(buf) };
        assert_eq!(n, 2);
        for i in 0..n {
            // SAFETY: the first n entries were written.
            let e = unsafe { &*buf.add(i) };
            assert!(e.inuse_bytes.abs() < 1e-6 && e.alloc_bytes > 0.0);
            assert_eq!(e.alloc_objects * 50.0, e.alloc_bytes);
        }
    }
}
