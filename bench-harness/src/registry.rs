//! The ONE table of allocators under test. Adding an allocator is one line in [`ALLOCATORS`]:
//!
//! ```text
//! entry!("slab", Ours, allocators::Slab = allocators::Slab::new(), reuses_freed: true,
//!        "object caches with per-thread magazines"),
//! ```
//!
//! Each entry's `run` function places the allocator in a `static` of its own type and runs the
//! workload on it through `GlobalAlloc` (monomorphised per allocator: no `dyn` on the hot path);
//! its `micro` functions do the same for the criterion micro-benchmarks.

use crate::micro::{self, Micro};
use crate::worker::{Recorder, Shared};
use crate::workloads::{self, Params};

/// Runs one workload on one allocator: `(workload name, shared state, params, one recorder per
/// lane)`; `Err` if the allocator could not be set up.
pub type RunFn = fn(&str, &Shared, &Params, Vec<Recorder>) -> Result<Vec<Recorder>, String>;

/// Where an allocator comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// One of this suite's allocators.
    Ours,
    /// A baseline to compare against.
    Baseline,
}

/// An allocator's entry in the table.
#[derive(Clone, Copy, Debug)]
pub struct AllocatorEntry {
    /// The name used on the command line and in the results.
    pub name: &'static str,
    /// Ours or a baseline.
    pub family: Family,
    /// One line saying what it is.
    pub description: &'static str,
    /// Whether freed memory is reused. An allocator that never reuses memory is run only on
    /// workloads whose total allocation is bounded, under [`NON_REUSING_BUDGET`].
    pub reuses_freed: bool,
    /// Runs a workload on it.
    pub run: RunFn,
    /// Its criterion micro-benchmarks (`benches/alloc_pairs.rs`).
    pub micro: Micro,
}

/// Total bytes an allocator that never reuses memory may allocate in one cell.
pub const NON_REUSING_BUDGET: u64 = 1 << 30;

/// The allocator every ratio is taken against.
pub const REFERENCE: &str = "mimalloc";

macro_rules! entry {
    ($name:literal, $family:ident, $ty:ty = $init:expr, reuses_freed: $reuses:expr, $desc:literal) => {
        AllocatorEntry {
            name: $name,
            family: Family::$family,
            description: $desc,
            reuses_freed: $reuses,
            run: |workload, shared, params, recorders| {
                static HEAP: $ty = $init;
                workloads::run(workload, &HEAP, shared, params, recorders)
                    .map_err(|e| e.to_string())
            },
            micro: Micro {
                pairs: |layout, iters| {
                    static HEAP: $ty = $init;
                    micro::pairs(&HEAP, layout, iters)
                },
                growth: |max, iters| {
                    static HEAP: $ty = $init;
                    micro::growth(&HEAP, max, iters)
                },
            },
        }
    };
}

/// Every allocator, ours first; the order of the report's columns.
pub const ALLOCATORS: &[AllocatorEntry] = &[
    entry!("bump", Ours, allocators::Bump = allocators::Bump::new(), reuses_freed: false,
        "per-thread pointer bumping; never reuses freed memory"),
    entry!("slab", Ours, allocators::Slab = allocators::Slab::new(), reuses_freed: true,
        "object caches with per-thread magazines (Bonwick)"),
    entry!("buddy", Ours, allocators::Buddy = allocators::Buddy::new(), reuses_freed: true,
        "binary buddy system: power-of-two blocks that split and coalesce"),
    entry!("sizeclass", Ours, allocators::SizeClass = allocators::SizeClass::new(), reuses_freed: true,
        "size classes, thread-local heaps, sharded free lists (mimalloc-style)"),
    entry!("system", Baseline, std::alloc::System = std::alloc::System, reuses_freed: true,
        "the C library's malloc (glibc ptmalloc2)"),
    entry!("mimalloc", Baseline, mimalloc::MiMalloc = mimalloc::MiMalloc, reuses_freed: true,
        "mimalloc (crate `mimalloc`)"),
    entry!("jemalloc", Baseline, tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc, reuses_freed: true,
        "jemalloc (crate `tikv-jemallocator`)"),
    AllocatorEntry {
        name: "buddy_system_allocator",
        family: Family::Baseline,
        description: "crate `buddy_system_allocator`: LockedHeap<32> over a 2 GiB reserved region",
        reuses_freed: true,
        run: crate::baselines::BUDDY_SYSTEM_RUN,
        micro: crate::baselines::BUDDY_SYSTEM_MICRO,
    },
    AllocatorEntry {
        name: "talc",
        family: Family::Baseline,
        description: "crate `talc` 4: Talck<spin::Mutex, ErrOnOom> over a 2 GiB reserved region",
        reuses_freed: true,
        run: crate::baselines::TALC_RUN,
        micro: crate::baselines::TALC_MICRO,
    },
];

/// The suffix naming one of ours built with the `hardened` feature (`sizeclass-hardened`), or
/// mimalloc in its secure mode (`mimalloc-hardened`): such cells run in a second harness binary
/// built with `--features hardened` (`run --hardened-exe`), which also builds mimalloc with
/// `MI_SECURE=4` (the `secure` feature of the `mimalloc` crate).
pub const HARDENED_SUFFIX: &str = "-hardened";

/// The one baseline with a hardened twin: mimalloc's secure mode (encoded free lists, double
/// free checks, padding checked on free, guard pages around its metadata), the yardstick the
/// hardened mode's cost is set against.
pub const HARDENED_BASELINE: &str = "mimalloc";

/// Whether `a` also runs as `<name>-hardened` in a hardened harness binary.
pub fn has_hardened_twin(a: &AllocatorEntry) -> bool {
    a.family == Family::Ours || a.name == HARDENED_BASELINE
}

/// The suffix naming one of ours run with the heap profiler's sampling off
/// (`sizeclass-unsampled`): the same binary, its cell's child process started with
/// [`PROFILE_RATE_ENV`]`=0` (`run --sampling-cost`), the side-by-side yardstick of what sampling
/// costs the plain cell.
pub const UNSAMPLED_SUFFIX: &str = "-unsampled";

/// The environment variable the allocators read their sampling rate from (bytes; 0 = off).
pub const PROFILE_RATE_ENV: &str = allocators::profile::RATE_ENV;

/// Whether `a` also runs as `<name>-unsampled` (ours: they carry the sampling profiler).
pub fn has_unsampled_twin(a: &AllocatorEntry) -> bool {
    a.family == Family::Ours
}

/// Looks an allocator up by name; `<name>-hardened` finds the entry of `<name>` if it has a
/// hardened twin, `<name>-unsampled` if it has an unsampled twin.
pub fn find(name: &str) -> Option<&'static AllocatorEntry> {
    let (name, unsampled) = split_unsampled(name);
    let (base, hardened) = split_hardened(name);
    ALLOCATORS.iter().find(|a| {
        a.name == base
            && (!hardened || has_hardened_twin(a))
            && (!unsampled || (has_unsampled_twin(a) && !hardened))
    })
}

/// Splits `<name>-unsampled` into (`<name>`, true); any other name into (name, false).
pub fn split_unsampled(name: &str) -> (&str, bool) {
    match name.strip_suffix(UNSAMPLED_SUFFIX) {
        Some(base) => (base, true),
        None => (name, false),
    }
}

/// The registry name under a twin's name (`slab-hardened`, `slab-unsampled`: `slab`).
pub fn base_name(name: &str) -> &str {
    split_hardened(split_unsampled(name).0).0
}

/// Whether `name` is a twin (hardened or unsampled) rather than a plain build or a baseline.
pub fn is_twin(name: &str) -> bool {
    base_name(name) != name
}

/// Splits `<name>-hardened` into (`<name>`, true); any other name into (name, false).
pub fn split_hardened(name: &str) -> (&str, bool) {
    match name.strip_suffix(HARDENED_SUFFIX) {
        Some(base) => (base, true),
        None => (name, false),
    }
}

/// Why `allocator` cannot serve `workload`, if it cannot (checked before a cell is started).
pub fn skip_reason(
    allocator: &AllocatorEntry,
    workload: &workloads::WorkloadInfo,
) -> Option<String> {
    if !allocator.reuses_freed && !workload.bounded_total {
        return Some(format!(
            "{} never reuses freed memory and {} allocates without bound (memory would grow with run time)",
            allocator.name, workload.name
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_the_reference_exists() {
        for (i, a) in ALLOCATORS.iter().enumerate() {
            assert!(ALLOCATORS[i + 1..].iter().all(|o| o.name != a.name));
        }
        assert!(find(REFERENCE).is_some());
    }

    #[test]
    fn hardened_variants_exist_for_ours_and_mimalloc_only() {
        assert_eq!(find("sizeclass-hardened").unwrap().name, "sizeclass");
        assert_eq!(find("mimalloc-hardened").unwrap().name, "mimalloc");
        assert!(find("jemalloc-hardened").is_none());
        assert!(find("system-hardened").is_none());
        assert_eq!(split_hardened("slab-hardened"), ("slab", true));
        assert_eq!(split_hardened("slab"), ("slab", false));
    }

    #[test]
    fn unsampled_variants_exist_for_ours_only() {
        assert_eq!(find("sizeclass-unsampled").unwrap().name, "sizeclass");
        assert!(find("mimalloc-unsampled").is_none());
        assert!(find("slab-hardened-unsampled").is_none());
        assert_eq!(base_name("slab-unsampled"), "slab");
        assert!(is_twin("slab-unsampled") && is_twin("slab-hardened") && !is_twin("slab"));
    }

    #[test]
    fn bump_runs_only_bounded_workloads() {
        let bump = find("bump").unwrap();
        assert!(skip_reason(bump, workloads::find("phase").unwrap()).is_none());
        assert!(skip_reason(bump, workloads::find("larson").unwrap()).is_some());
        let sys = find("system").unwrap();
        assert!(workloads::WORKLOADS
            .iter()
            .all(|w| skip_reason(sys, w).is_none()));
    }
}
