//! The per-thread sampling decision: a byte countdown, decremented by every allocation's size.
//!
//! The fast path ([`hit`]) is one subtraction from a per-thread word and one branch, taken only
//! when the countdown goes negative (on average once per [`super::rate`] bytes). The slow path
//! ([`decide`]) draws the next interval from a geometric (exponential) distribution with the
//! rate as mean, as tcmalloc and jemalloc do, so that every byte allocated has the same chance of
//! being the one that triggers a sample whatever the sizes of the allocations around it.

use core::sync::atomic::AtomicUsize;

use crate::thread_word::thread_block;

/// The per-thread state. All-zero bytes are the starting state: a countdown of 0 sends the
/// thread's first allocation to [`decide`], which seeds the rest.
#[repr(C)]
pub(crate) struct ThreadState {
    /// Bytes left until the next sample; negative once passed.
    pub countdown: isize,
    /// The xorshift state (0 until seeded).
    pub rng: u64,
    /// Non-zero while the thread is inside the profiler (capturing a stack, writing a profile):
    /// its allocations are then never sampled, so the profiler never re-enters itself.
    pub busy: usize,
}

thread_block!(
    /// The calling thread's sampling state.
    state,
    "allocators_profile_thread_state",
    crate::profile::sample::ThreadState
);

/// Bytes between samples on average; 0 when off. `usize::MAX` until the environment is read.
pub(crate) static RATE: AtomicUsize = AtomicUsize::new(UNSET);
/// [`RATE`] before the environment has been read.
pub(crate) const UNSET: usize = usize::MAX;
/// The countdown a thread gets while sampling is off: it looks at the rate again after this
/// many bytes, so that turning sampling on reaches every thread.
const OFF_RECHECK: isize = 64 << 20;

/// The fast path: counts `size` bytes against the calling thread's countdown and says whether
/// they cross it (then the caller asks [`decide`]).
#[inline(always)]
pub(crate) fn hit(size: usize) -> bool {
    let s = state::get();
    // SAFETY: the calling thread's own block, valid for the thread's life; nothing else holds a
    // reference to it across this statement.
    unsafe {
        let left = (*s).countdown.wrapping_sub(size as isize);
        (*s).countdown = left;
        left < 0
    }
}

/// Ends the calling thread's current interval, so that its next allocation reads the rate
/// again (after [`super::set_rate`]; other threads pick the rate up when their interval ends).
pub(crate) fn restart_interval() {
    let s = state::get();
    // SAFETY: the calling thread's own block (see `hit`).
    unsafe { (*s).countdown = 0 };
}

/// The slow path behind a [`hit`]: whether to sample this allocation, resetting the countdown to
/// a fresh interval. `false` when sampling is off or the thread is inside the profiler.
#[cold]
#[inline(never)]
pub(crate) fn decide() -> bool {
    let s = state::get();
    let rate = super::rate();
    // SAFETY: the calling thread's own block (see `hit`).
    unsafe {
        if rate == 0 {
            (*s).countdown = OFF_RECHECK;
            return false;
        }
        if (*s).rng == 0 {
            // The thread's first crossing: its countdown started at 0, not at a drawn
            // interval. Draw one now and count the bytes already seen against it, so that a
            // thread's first allocation is not sampled more often than any other.
            let first = next_interval(&mut (*s).rng, rate) as isize;
            let left = first.saturating_add((*s).countdown);
            if left >= 0 {
                (*s).countdown = left;
                return false;
            }
        }
        let next = next_interval(&mut (*s).rng, rate);
        (*s).countdown = next as isize;
        (*s).busy == 0
    }
}

/// A draw from the exponential distribution with mean `rate` (`-ln(U) * rate`), at least 1 and
/// capped at 2^40.
fn next_interval(rng: &mut u64, rate: usize) -> usize {
    if *rng == 0 {
        // Seed from the thread's stack address and the clock, once per thread.
        let local = 0u8;
        let seed = (&raw const local as u64) ^ crate::os::coarse_millis().rotate_left(32);
        *rng = seed | 1;
    }
    // xorshift64*
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    // U in (0, 1]: 53 random bits, plus one so that ln never sees 0.
    let u = ((r >> 11) + 1) as f64 / (1u64 << 53) as f64;
    let v = -u.ln() * rate as f64;
    (v as usize).clamp(1, 1 << 40)
}

/// Marks the calling thread as inside the profiler while it lives (nested guards allowed).
pub(crate) struct Busy(());

impl Busy {
    /// Enters; see [`Busy`].
    pub(crate) fn enter() -> Busy {
        // SAFETY: the calling thread's own block.
        unsafe { (*state::get()).busy += 1 };
        Busy(())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        // SAFETY: the calling thread's own block.
        unsafe { (*state::get()).busy -= 1 };
    }
}

/// Whether the calling thread is inside the profiler.
pub(crate) fn busy() -> bool {
    // SAFETY: the calling thread's own block.
    unsafe { (*state::get()).busy != 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn intervals_average_to_the_rate() {
        let mut rng = 0;
        let n = 200_000;
        let rate = 512 * 1024;
        let sum: f64 = (0..n)
            .map(|_| super::next_interval(&mut rng, rate) as f64)
            .sum();
        let mean = sum / n as f64;
        assert!((mean / rate as f64 - 1.0).abs() < 0.02, "mean {mean}");
    }
}
