//! The global-allocator suite: the allocator under test is the process's `#[global_allocator]`
//! and runs real programs: threads and collections, thousands of short-lived threads, memory
//! freed after its threads exited, `fork`
//! with busy threads, out of memory under `RLIMIT_AS`, and `usable_size` against every block.
//!
//! [`global_allocator_tests!`](crate::global_allocator_tests) declares the `static GLOBAL` and
//! one `#[test]` per check; one test binary per allocator. All tests take [`serial`] so memory
//! measurements are not disturbed by tests running in parallel threads.

use std::sync::{Mutex, MutexGuard};

mod churn;
mod exited;
mod fork;
mod oom;
mod program;
mod usable;

pub use churn::{check_thread_churn, CHURN_THREADS};
pub use exited::check_memory_after_threads_exit;
pub use fork::check_fork_with_busy_threads;
pub use oom::{check_out_of_memory, OOM_CHILD_ENV};
pub use program::run_multithreaded_program;
pub use usable::check_usable_size;

/// What the suite needs to know about the allocator under test, beyond `GlobalAlloc`.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    /// The allocator's name in messages.
    pub name: &'static str,
    /// Bytes of memory the allocator holds now (ours: `stats().mapped_bytes`; System: RSS).
    pub held_bytes: fn() -> usize,
    /// The usable size of a block from its address (ours: `Introspect::usable_size`; System:
    /// `malloc_usable_size`). Only called on live blocks, and on a stack address when
    /// `recognises_foreign` is set.
    pub usable_size: unsafe fn(*const u8) -> Option<usize>,
    /// How far `usable_size` may fall short of a request made without padding (ours:
    /// `hardened::UnsizedPad::UNSIZED_PAD`, non-zero only in some hardened builds; System: 0).
    pub unsized_pad: usize,
    /// `usable_size` answers `None` for memory the allocator never handed out.
    pub recognises_foreign: bool,
    /// The allocator never reuses freed memory (Bump): memory may grow with bytes allocated.
    pub never_reuses: bool,
}

/// The resident set size of this process, from `/proc/self/statm`.
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * allocators::os::page_size()
}

/// `malloc_usable_size` for System's blocks.
///
/// # Safety
/// `ptr` must be a live block of the C allocator.
pub unsafe fn malloc_usable_size(ptr: *const u8) -> Option<usize> {
    // SAFETY: the caller passes a live malloc block.
    Some(unsafe { libc::malloc_usable_size(ptr as *mut libc::c_void) })
}

/// The probe for `std::alloc::System` (glibc malloc).
pub fn system_probe() -> Probe {
    Probe {
        name: "system",
        held_bytes: rss_bytes,
        usable_size: malloc_usable_size,
        unsized_pad: 0,
        recognises_foreign: false,
        never_reuses: false,
    }
}

static SERIAL: Mutex<()> = Mutex::new(());

/// Serialises the tests of one binary (a failed test's poison is ignored).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Declares `#[global_allocator] static GLOBAL` and one `#[test]` per global-allocator check.
/// `never_reuses` is for an allocator that never reuses freed memory (memory may grow with the
/// bytes allocated); a trailing `ignore = "reason"` marks every test `#[ignore]` (known bug).
///
/// ```text
/// allocator_suites::global_allocator_tests!(allocators::Slab, allocators::Slab::new());
/// allocator_suites::global_allocator_tests!(allocators::Bump, allocators::Bump::new(), never_reuses);
/// allocator_suites::global_allocator_tests!(system: std::alloc::System, std::alloc::System);
/// ```
#[macro_export]
macro_rules! global_allocator_tests {
    (system: $ty:ty, $init:expr) => {
        #[global_allocator]
        static GLOBAL: $ty = $init;

        fn probe() -> $crate::global::Probe {
            $crate::global::system_probe()
        }

        $crate::__global_allocator_test_fns!([]);
    };
    ($ty:ty, $init:expr, never_reuses $(, ignore = $reason:literal)?) => {
        $crate::global_allocator_tests!(@ours $ty, $init, true, [$(#[ignore = $reason])?]);
    };
    ($ty:ty, $init:expr $(, ignore = $reason:literal)?) => {
        $crate::global_allocator_tests!(@ours $ty, $init, false, [$(#[ignore = $reason])?]);
    };
    (@ours $ty:ty, $init:expr, $never_reuses:expr, [$(#[$attr:meta])*]) => {
        #[global_allocator]
        static GLOBAL: $ty = $init;

        fn probe() -> $crate::global::Probe {
            use $crate::allocators::Introspect;
            fn held() -> usize {
                GLOBAL.stats().mapped_bytes
            }
            unsafe fn usable(p: *const u8) -> Option<usize> {
                // SAFETY: forwarded: the suite passes live blocks or foreign addresses.
                unsafe { GLOBAL.usable_size(p) }
            }
            $crate::global::Probe {
                name: <$ty as Introspect>::NAME,
                held_bytes: held,
                usable_size: usable,
                unsized_pad: <$ty as $crate::allocators::hardened::UnsizedPad>::UNSIZED_PAD,
                recognises_foreign: true,
                never_reuses: $never_reuses,
            }
        }

        $crate::__global_allocator_test_fns!([$(#[$attr])*]);
    };
}

/// The `#[test]` functions of [`global_allocator_tests!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __global_allocator_test_fns {
    ([$(#[$attr:meta])*]) => {
        #[test]
        $(#[$attr])*
        fn multithreaded_program() {
            let _serial = $crate::global::serial();
            $crate::global::run_multithreaded_program();
        }

        #[test]
        $(#[$attr])*
        fn short_lived_threads_do_not_grow_memory() {
            let _serial = $crate::global::serial();
            $crate::global::check_thread_churn(&probe());
        }

        #[test]
        $(#[$attr])*
        fn memory_comes_back_after_its_threads_exit_light_work() {
            let _serial = $crate::global::serial();
            $crate::global::check_memory_after_threads_exit(&probe(), true);
        }

        #[test]
        $(#[$attr])*
        fn memory_comes_back_after_its_threads_exit_idle() {
            let _serial = $crate::global::serial();
            $crate::global::check_memory_after_threads_exit(&probe(), false);
        }

        #[test]
        $(#[$attr])*
        fn fork_with_busy_threads() {
            let _serial = $crate::global::serial();
            $crate::global::check_fork_with_busy_threads();
        }

        #[test]
        $(#[$attr])*
        fn out_of_memory_returns_err_and_recovers() {
            let _serial = $crate::global::serial();
            $crate::global::check_out_of_memory("out_of_memory_returns_err_and_recovers");
        }

        #[test]
        $(#[$attr])*
        fn usable_size_covers_every_block() {
            let _serial = $crate::global::serial();
            $crate::global::check_usable_size(&probe());
        }
    };
}
