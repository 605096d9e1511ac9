//! The two Rust baselines that manage a fixed region rather than asking the kernel for more:
//! `buddy_system_allocator` and `talc`. Each is given one large reserved mapping
//! ([`REGION_BYTES`], `MAP_NORESERVE`, so only touched pages count in RSS) before its cell runs;
//! if a workload needs more, the allocator returns null and the cell is reported as skipped.

use std::sync::OnceLock;
use std::time::Duration;

use buddy_system_allocator::LockedHeap;
use talc::{ErrOnOom, Span, Talc, Talck};

use crate::micro::{self, Micro};
use crate::registry::RunFn;
use crate::workloads;

/// Bytes reserved for each fixed-region baseline.
pub const REGION_BYTES: usize = 2 << 30;

/// Reserves `REGION_BYTES` of address space (pages are materialised on first touch).
fn reserve_region() -> Result<usize, String> {
    // SAFETY: an anonymous private mapping at an address the kernel chooses; no existing memory
    // is affected.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REGION_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(format!(
            "could not reserve a {} MiB region",
            REGION_BYTES >> 20
        ))
    } else {
        Ok(p as usize)
    }
}

static BUDDY_SYSTEM: LockedHeap<32> = LockedHeap::<32>::new();
static BUDDY_SYSTEM_READY: OnceLock<Result<(), String>> = OnceLock::new();

/// `buddy_system_allocator::LockedHeap` over a reserved region (set up on first call).
pub fn buddy_system() -> Result<&'static LockedHeap<32>, String> {
    BUDDY_SYSTEM_READY
        .get_or_init(|| {
            let base = reserve_region()?;
            // SAFETY: `base..base + REGION_BYTES` is a fresh mapping used by nothing else, handed
            // to the heap exactly once (guarded by the OnceLock) and never unmapped.
            unsafe { BUDDY_SYSTEM.lock().init(base, REGION_BYTES) };
            Ok(())
        })
        .clone()?;
    Ok(&BUDDY_SYSTEM)
}

static TALC: Talck<spin::Mutex<()>, ErrOnOom> = Talc::new(ErrOnOom).lock();
static TALC_READY: OnceLock<Result<(), String>> = OnceLock::new();

/// `talc::Talck<spin::Mutex<()>, ErrOnOom>` over a reserved region (set up on first call).
pub fn talc() -> Result<&'static Talck<spin::Mutex<()>, ErrOnOom>, String> {
    TALC_READY
        .get_or_init(|| {
            let base = reserve_region()?;
            // SAFETY: as above: a fresh mapping, claimed exactly once, never unmapped.
            unsafe {
                TALC.lock()
                    .claim(Span::from_base_size(base as *mut u8, REGION_BYTES))
                    .map(|_| ())
                    .map_err(|()| "talc refused the region".to_string())
            }
        })
        .clone()?;
    Ok(&TALC)
}

/// Runs a workload on [`buddy_system`].
pub const BUDDY_SYSTEM_RUN: RunFn = |workload, shared, params, recorders| {
    workloads::run(workload, buddy_system()?, shared, params, recorders).map_err(|e| e.to_string())
};

/// Runs a workload on [`talc()`].
pub const TALC_RUN: RunFn = |workload, shared, params, recorders| {
    workloads::run(workload, talc()?, shared, params, recorders).map_err(|e| e.to_string())
};

/// Micro-benchmarks on [`buddy_system`].
pub const BUDDY_SYSTEM_MICRO: Micro = Micro {
    pairs: |l, n| buddy_system().map_or(Duration::ZERO, |h| micro::pairs(h, l, n)),
    growth: |m, n| buddy_system().map_or(Duration::ZERO, |h| micro::growth(h, m, n)),
};

/// Micro-benchmarks on [`talc()`].
pub const TALC_MICRO: Micro = Micro {
    pairs: |l, n| talc().map_or(Duration::ZERO, |h| micro::pairs(h, l, n)),
    growth: |m, n| talc().map_or(Duration::ZERO, |h| micro::growth(h, m, n)),
};
