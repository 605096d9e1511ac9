//! The clock used to time single sampled operations: the CPU's time-stamp counter on x86_64
//! (a few nanoseconds per read, so the timer does not dominate a 20 ns allocation), a monotonic
//! `Instant` elsewhere. Ticks are converted to nanoseconds with a rate calibrated once per process.

use std::time::{Duration, Instant};

/// Reads the tick counter.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `rdtsc` is available on every x86_64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        use std::sync::OnceLock;
        static START: OnceLock<Instant> = OnceLock::new();
        START.get_or_init(Instant::now).elapsed().as_nanos() as u64
    }
}

/// Ticks per nanosecond and the cost of one back-to-back pair of reads.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    /// Ticks per nanosecond.
    pub ticks_per_ns: f64,
    /// The smallest tick difference seen between two consecutive reads (subtracted from samples).
    pub overhead_ticks: u64,
    /// The median difference between two consecutive reads: the timer's effective resolution
    /// (virtual machines often advance the counter in coarse steps).
    pub resolution_ticks: u64,
}

impl Calibration {
    /// Measures the tick rate against `Instant` over `span`.
    pub fn measure(span: Duration) -> Self {
        let t0 = Instant::now();
        let c0 = ticks();
        while t0.elapsed() < span {
            std::hint::spin_loop();
        }
        let c1 = ticks();
        let ns = t0.elapsed().as_nanos().max(1) as f64;
        let ticks_per_ns = ((c1.wrapping_sub(c0)) as f64 / ns).max(1e-9);
        let mut diffs = [0u64; 1001];
        for d in diffs.iter_mut() {
            let a = ticks();
            let b = ticks();
            *d = b.wrapping_sub(a);
        }
        diffs.sort_unstable();
        Calibration {
            ticks_per_ns,
            overhead_ticks: diffs[0],
            resolution_ticks: diffs[diffs.len() / 2],
        }
    }

    /// The effective resolution in nanoseconds.
    pub fn resolution_ns(&self) -> f64 {
        self.resolution_ticks.max(1) as f64 / self.ticks_per_ns
    }

    /// Converts a raw sample (ticks, timer overhead included) to nanoseconds.
    pub fn to_ns(&self, raw_ticks: u32) -> f64 {
        (raw_ticks as u64).saturating_sub(self.overhead_ticks) as f64 / self.ticks_per_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_is_positive_and_converts_monotonically() {
        let c = Calibration::measure(Duration::from_millis(5));
        assert!(c.ticks_per_ns > 0.0);
        assert!(c.to_ns(1_000_000) >= c.to_ns(1_000));
    }
}
