//! The sampled heap profiler shared by all four allocators: which code holds the memory.
//!
//! Off by default (see [`rate`] for why). When on, one allocation per [`rate`] bytes allocated
//! is sampled on average ([`DEFAULT_RATE`], 512 KiB, when a profile file is named; intervals are drawn from a geometric distribution, as tcmalloc and
//! jemalloc do, so that sizes are not biased). The decision costs each allocation one
//! subtraction from a per-thread countdown and one branch that is rarely taken ([`sample`]).
//!
//! A sampled allocation is served by [`crate::large`] as a large block whose header is marked
//! as sampled (tcmalloc gives sampled objects a span of their own for the same reason): the free
//! paths of all four allocators already tell large blocks from their own by the region map or
//! the layout, so freeing an ordinary block pays nothing, and only the free of a large block
//! looks at the mark. Blocks of up to [`large::SLOT_BLOCK_BYTES`] come from recycled slots
//! ([`large::alloc_slot`]: no system call, no page fault once a slot has been used), larger ones
//! from a mapping of their own. The sample's call stack ([`stack`]), scaled-up weight and
//! address go to tables mapped from the kernel ([`table`]). Measured per sample (2-core EPYC VM,
//! `examples/sample_cost.rs` and `perf` on the harness): the stack walk 50-190 ns for 10-34
//! frames (about 5 ns a frame with [`unwind`]'s cached rules; 100-120 ns a frame with libgcc's
//! unwinder, its fallback), the slot 60-80 ns (a mapping of its own: 11 us when the large cache
//! missed), the table 25 ns.
//!
//! Reading: [`snapshot`] hands out each distinct call stack with what it allocated since start
//! and what it holds now, scaled up from the samples (the `heap-profile` crate writes them as a
//! pprof profile). Setting: [`set_rate`] from Rust, or the environment variable
//! `ALLOCATORS_PROFILE_RATE` (bytes; `0` turns sampling off), read on the first sample.

pub mod stack;
pub mod table;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
pub mod unwind;

pub(crate) mod sample;

use core::alloc::Layout;
use core::sync::atomic::Ordering;

use crate::region_map::Owner;
use crate::stats::GlobalCounters;
use crate::{large, os};

/// The rate when `ALLOCATORS_PROFILE` names a profile file and neither [`set_rate`] nor
/// `ALLOCATORS_PROFILE_RATE` says otherwise: one sample per 512 KiB allocated on average.
pub const DEFAULT_RATE: usize = 512 * 1024;

/// The lowest rate at which sampled blocks come from [`large::alloc_slot`]'s slots: 128 KiB.
/// Slots are never given back to the kernel, so a program keeps up to a slot (8 KiB resident for
/// a small block: header page and block page) per sampled block it once held live, about one
/// per `rate` bytes of its peak live memory: at most 6% of that peak at 128 KiB, 1.6% at the
/// default rate. Below it (rates for tests and close looks) each sample gets a mapping of its
/// own, returned when freed.
pub const SLOT_MIN_RATE: usize = 128 * 1024;

/// The environment variable read for the rate (bytes between samples on average; `0` = off).
pub const RATE_ENV: &str = "ALLOCATORS_PROFILE_RATE";

/// Sets the mean number of bytes between samples; `0` turns sampling off. The calling thread
/// uses the new rate from its next allocation; other threads when their current interval ends
/// (at most 64 MiB of their allocations after turning on).
pub fn set_rate(bytes: usize) {
    sample::RATE.store(bytes.min(sample::UNSET - 1), Ordering::Relaxed);
    sample::restart_interval();
}

/// The mean number of bytes between samples (0: off). The first call reads
/// `ALLOCATORS_PROFILE_RATE` from the environment (without allocating).
pub fn rate() -> usize {
    let r = sample::RATE.load(Ordering::Relaxed);
    if r != sample::UNSET {
        return r;
    }
    // Off unless asked for: by a rate, or by a file to write the profile to (then at
    // DEFAULT_RATE). Always on, a sample (stack walk ~5 ns a frame with `unwind`, so 50-190 ns,
    // plus slot and table, ~100 ns) still costs more than the 1% aimed for in the busiest
    // workloads: the harness's take 600 to 160,000 samples a second at 512 KiB (rptest 90,000,
    // realloc-growth 160,000), which leaves 60-110 ns a sample for 1%. Measured with
    // `bench-harness run --sampling-cost` before `unwind` (~1 us a sample); see README.
    let asked = !cfg!(test) && env_is_set(c"ALLOCATORS_PROFILE");
    let r = rate_from_env().unwrap_or(if asked { DEFAULT_RATE } else { 0 });
    // A racing `set_rate` wins.
    let _ = sample::RATE.compare_exchange(sample::UNSET, r, Ordering::Relaxed, Ordering::Relaxed);
    sample::RATE.load(Ordering::Relaxed)
}

/// `ALLOCATORS_PROFILE_RATE` parsed as a decimal number of bytes, if set and valid.
/// Whether the environment variable `name` is set (to anything non-empty).
fn env_is_set(name: &core::ffi::CStr) -> bool {
    // SAFETY: a NUL-terminated name; getenv returns null or a NUL-terminated string owned by the
    // environment (it does not allocate).
    let v = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: a non-null result points at a NUL-terminated string.
    !v.is_null() && unsafe { *v } != 0
}

fn rate_from_env() -> Option<usize> {
    // SAFETY: a NUL-terminated name; getenv returns null or a NUL-terminated string owned by the
    // environment, read here before anything else could change it (it does not allocate).
    let v = unsafe { libc::getenv(c"ALLOCATORS_PROFILE_RATE".as_ptr()) };
    if v.is_null() {
        return None;
    }
    let mut n: usize = 0;
    let mut i = 0;
    loop {
        // SAFETY: i stays within the string: we stop at its NUL.
        let c = unsafe { *v.add(i) } as u8;
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add((c - b'0') as usize)?;
        i += 1;
    }
    (i > 0).then_some(n)
}

/// The allocation hook, first thing in every allocator's `alloc` and `alloc_zeroed`: counts
/// `size` bytes against the thread's countdown; `true` (rarely) when the caller should try
/// [`alloc_sampled`].
#[inline(always)]
pub(crate) fn hit(size: usize) -> bool {
    sample::hit(size)
}

/// An allocator's `alloc` through the sampler: [`hit`], and on a hit [`alloc_sampled`], else
/// `plain(layout)`, the allocator's ordinary path. The one hook every allocator calls.
#[inline(always)]
pub(crate) fn alloc_hooked<F: FnOnce(Layout) -> *mut u8>(
    layout: Layout,
    zeroed: bool,
    owner: Owner,
    counters: &'static GlobalCounters,
    plain: F,
) -> *mut u8 {
    if hit(layout.size()) {
        return alloc_sampled(layout, zeroed, owner, counters, plain);
    }
    plain(layout)
}

/// The slow path after [`hit`]: decides whether to sample, and if so allocates the block from
/// [`large`] (for `owner`, counted in `counters`) and records it. When this allocation is not
/// sampled after all (sampling off, the thread inside the profiler, an alignment above the page
/// size, or no memory), it is served by `plain`, the allocator's ordinary path.
///
/// Taking the ordinary path as an argument makes this a tail call from `alloc`, so the fast path
/// keeps no registers across it and needs no stack frame.
#[cold]
#[inline(never)]
pub(crate) fn alloc_sampled<F: FnOnce(Layout) -> *mut u8>(
    layout: Layout,
    zeroed: bool,
    owner: Owner,
    counters: &'static GlobalCounters,
    plain: F,
) -> *mut u8 {
    if !sample::decide() || layout.align() > os::page_size() {
        return plain(layout);
    }
    let p = {
        let _busy = sample::Busy::enter();
        table::register_atfork();
        let p = if rate() >= SLOT_MIN_RATE {
            large::alloc_slot(layout.size(), zeroed, owner, counters)
        } else {
            core::ptr::null_mut()
        };
        if p.is_null() {
            large::alloc(layout.size(), layout.align(), zeroed, owner, counters)
        } else {
            p
        }
    };
    if p.is_null() {
        return plain(layout);
    }
    record(p, layout.size());
    p
}

/// Records the sampled block `p` of `size` bytes with the calling thread's stack.
#[inline(never)]
fn record(p: *mut u8, size: usize) {
    let _busy = sample::Busy::enter();
    let mut frames = [0usize; stack::MAX_FRAMES];
    let n = stack::capture(&mut frames, 1);
    let (objects, bytes) = scale(size, rate());
    let mut t = table::TABLES.lock();
    if t.insert(p as usize, frames.get(..n).unwrap_or(&[]), objects, bytes) {
        // SAFETY: p is the start of the live large block just allocated, not yet handed out.
        unsafe { large::set_sampled(p, true) };
    }
}

/// The objects and bytes one sample of `size` bytes stands for at `rate`: a block of `size`
/// bytes is sampled with probability `1 - exp(-size / rate)`, so each sample is weighted by its
/// inverse (the unbiased estimate pprof expects).
fn scale(size: usize, rate: usize) -> (f64, f64) {
    if rate == 0 {
        return (1.0, size as f64);
    }
    let p = 1.0 - (-(size as f64) / rate as f64).exp();
    if p <= 0.0 {
        return (1.0, size as f64);
    }
    (1.0 / p, size as f64 / p)
}

/// Called by [`large`] when a block marked as sampled is freed or resized: forgets the sample.
#[cold]
#[inline(never)]
pub(crate) fn on_sampled_free(ptr: *mut u8) {
    table::TABLES.lock().remove(ptr as usize);
}

/// What one distinct call stack allocated, scaled up from the samples (see [`snapshot`]).
#[derive(Clone, Copy, Debug)]
pub struct StackSample<'a> {
    /// Return addresses, innermost first (the first frames are inside the allocator).
    pub frames: &'a [usize],
    /// Objects allocated from this stack since start (estimated).
    pub alloc_objects: f64,
    /// Bytes allocated from this stack since start (estimated).
    pub alloc_bytes: f64,
    /// Objects from this stack live now (estimated).
    pub inuse_objects: f64,
    /// Bytes from this stack live now (estimated).
    pub inuse_bytes: f64,
}

/// Calls `f` once per distinct sampled call stack with what it allocated and holds. The tables
/// are copied (into memory mapped for the purpose) under their lock and `f` runs after it is
/// released, with sampling suspended on the calling thread, so `f` may allocate and free freely.
/// Returns the number of stacks, or `None` if the copy could not be mapped.
pub fn snapshot(mut f: impl FnMut(&StackSample<'_>)) -> Option<usize> {
    let _busy = sample::Busy::enter();
    let bytes = table::STACK_SLOTS * core::mem::size_of::<table::StackEntry>();
    let buf = os::map(bytes).cast::<table::StackEntry>();
    if buf.is_null() {
        return None;
    }
    // SAFETY: buf holds STACK_SLOTS entries, mapped just above.
    let n = unsafe { table::TABLES.lock().copy_stacks(buf) };
    for i in 0..n {
        // SAFETY: the first n entries were written by copy_stacks.
        let e = unsafe { &*buf.add(i) };
        f(&StackSample {
            frames: e.frames.get(..e.depth).unwrap_or(&[]),
            alloc_objects: e.alloc_objects,
            alloc_bytes: e.alloc_bytes,
            inuse_objects: e.inuse_objects,
            inuse_bytes: e.inuse_bytes,
        });
    }
    // SAFETY: mapped above with this length; nothing refers to it any more.
    unsafe { os::unmap(buf.cast(), bytes) };
    Some(n)
}

/// While alive, allocations by the calling thread are never sampled (for code that writes a
/// profile and must not profile itself). Guards nest.
pub struct NotSampled {
    _busy: sample::Busy,
    /// Not `Send`: the guard belongs to the thread that made it.
    _thread: core::marker::PhantomData<*const ()>,
}

/// Suspends sampling on the calling thread until the guard is dropped; see [`NotSampled`].
pub fn suspend() -> NotSampled {
    NotSampled {
        _busy: sample::Busy::enter(),
        _thread: core::marker::PhantomData,
    }
}

/// Whether the calling thread has sampling suspended (inside the profiler or a [`suspend`]).
pub fn suspended() -> bool {
    sample::busy()
}

/// Live sampled blocks now, and samples dropped because the tables were full.
pub fn table_counts() -> (usize, u64) {
    let t = table::TABLES.lock();
    (t.live, t.dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_weights_small_blocks_up_and_large_ones_by_one() {
        let (o, b) = scale(16, DEFAULT_RATE);
        assert!((o - DEFAULT_RATE as f64 / 16.0).abs() / o < 0.01);
        assert!((b - DEFAULT_RATE as f64).abs() / b < 0.01);
        let (o, b) = scale(64 << 20, DEFAULT_RATE);
        assert!((o - 1.0).abs() < 1e-6);
        assert!((b - (64 << 20) as f64).abs() < 1.0);
    }
}
