//! The C allocation interface (`malloc`, `free`, `calloc`, `realloc`, `reallocarray`,
//! `posix_memalign`, `aligned_alloc`, `memalign`, `valloc`, `pvalloc`, `malloc_usable_size`) over
//! any allocator of the suite, so that any C program can run on it with `LD_PRELOAD`:
//!
//! ```sh
//! cargo build --release
//! LD_PRELOAD=target/release/libbump_preload.so your-program
//! ```
//!
//! Each allocator gets its own shared library, built by a tiny `cdylib` crate in
//! `preload/libs/<name>/` whose whole source is one line:
//!
//! ```ignore
//! preload::export_c_allocator!(allocators::Bump);
//! ```
//!
//! The semantics (glibc's, edge cases included) live in [`c_api`]; the macro only exports them.
//! Adding an allocator: copy `preload/libs/bump/` to `preload/libs/<name>/`, rename the package to
//! `<name>-preload` and change the type in that line. The workspace picks the crate up by its
//! `preload/libs/*` member glob, the tests by scanning `preload/libs/`.
//!
//! Panics: the exported functions reach no code that can panic (checked arithmetic, no
//! indexing, no unwrap), and since Rust 1.81 an unwind reaching an `extern "C"` function aborts
//! the process rather than crossing into C, so the libraries are safe without `panic = "abort"`
//! (a profile setting, which Cargo does not allow per package).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(
    not(test),
    deny(
        clippy::panic,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing
    )
)]

pub mod bootstrap;
pub mod c_api;
pub mod foreign;
pub mod reentry;
pub mod stats_at_exit;

/// The heap profiler's set-up under `LD_PRELOAD`: run by each library's constructor (see
/// [`heap_profile::preload`]: the profile is written at exit and on `SIGUSR2` when
/// `ALLOCATORS_PROFILE` names a file).
pub fn profile_init() {
    heap_profile::preload::init();
}

/// Exports the C allocation interface (`#[no_mangle] extern "C"` `malloc` & co.) backed by one
/// process-wide instance of the allocator type `$alloc`, which must implement
/// [`allocators::Introspect`] and have a `const fn new()`. Use it once, in a `cdylib` crate.
#[macro_export]
macro_rules! export_c_allocator {
    ($alloc:ty) => {
        /// The allocator behind every exported function.
        static PRELOAD_ALLOCATOR: $alloc = <$alloc>::new();

        /// The library's constructor: sets up the heap profile's output (see
        /// [`preload::profile_init`]) and the counters printed at exit (see
        /// [`preload::stats_at_exit`]).
        #[used]
        #[link_section = ".init_array"]
        static PRELOAD_PROFILE_INIT: extern "C" fn() = {
            extern "C" fn init() {
                $crate::profile_init();
                $crate::stats_at_exit::init(<$alloc as ::allocators::Introspect>::NAME, || {
                    ::allocators::Introspect::stats(&PRELOAD_ALLOCATOR)
                });
            }
            init
        };

        /// C `malloc`; see [`preload::c_api::malloc`].
        #[no_mangle]
        pub extern "C" fn malloc(size: usize) -> *mut ::core::ffi::c_void {
            $crate::c_api::malloc(&PRELOAD_ALLOCATOR, size)
        }

        /// C `free`; see [`preload::c_api::free`].
        ///
        /// # Safety
        /// `ptr` must be null or a live block from this library (or foreign memory, ignored).
        #[no_mangle]
        pub unsafe extern "C" fn free(ptr: *mut ::core::ffi::c_void) {
            // SAFETY: forwarded contract.
            unsafe { $crate::c_api::free(&PRELOAD_ALLOCATOR, ptr) }
        }

        /// C `calloc`; see [`preload::c_api::calloc`].
        #[no_mangle]
        pub extern "C" fn calloc(n: usize, size: usize) -> *mut ::core::ffi::c_void {
            $crate::c_api::calloc(&PRELOAD_ALLOCATOR, n, size)
        }

        /// C `realloc`; see [`preload::c_api::realloc`].
        ///
        /// # Safety
        /// As for [`free`].
        #[no_mangle]
        pub unsafe extern "C" fn realloc(
            ptr: *mut ::core::ffi::c_void,
            size: usize,
        ) -> *mut ::core::ffi::c_void {
            // SAFETY: forwarded contract.
            unsafe { $crate::c_api::realloc(&PRELOAD_ALLOCATOR, ptr, size) }
        }

        /// C `reallocarray`; see [`preload::c_api::reallocarray`].
        ///
        /// # Safety
        /// As for [`free`].
        #[no_mangle]
        pub unsafe extern "C" fn reallocarray(
            ptr: *mut ::core::ffi::c_void,
            n: usize,
            size: usize,
        ) -> *mut ::core::ffi::c_void {
            // SAFETY: forwarded contract.
            unsafe { $crate::c_api::reallocarray(&PRELOAD_ALLOCATOR, ptr, n, size) }
        }

        /// C `posix_memalign`; see [`preload::c_api::posix_memalign`].
        ///
        /// # Safety
        /// `out` must be valid for writing a pointer.
        #[no_mangle]
        pub unsafe extern "C" fn posix_memalign(
            out: *mut *mut ::core::ffi::c_void,
            align: usize,
            size: usize,
        ) -> ::core::ffi::c_int {
            // SAFETY: forwarded contract.
            unsafe { $crate::c_api::posix_memalign(&PRELOAD_ALLOCATOR, out, align, size) }
        }

        /// C `aligned_alloc`; see [`preload::c_api::aligned_alloc`].
        #[no_mangle]
        pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut ::core::ffi::c_void {
            $crate::c_api::aligned_alloc(&PRELOAD_ALLOCATOR, align, size)
        }

        /// C `memalign`; see [`preload::c_api::memalign`].
        #[no_mangle]
        pub extern "C" fn memalign(align: usize, size: usize) -> *mut ::core::ffi::c_void {
            $crate::c_api::memalign(&PRELOAD_ALLOCATOR, align, size)
        }

        /// C `valloc`; see [`preload::c_api::valloc`].
        #[no_mangle]
        pub extern "C" fn valloc(size: usize) -> *mut ::core::ffi::c_void {
            $crate::c_api::valloc(&PRELOAD_ALLOCATOR, size)
        }

        /// C `pvalloc`; see [`preload::c_api::pvalloc`].
        #[no_mangle]
        pub extern "C" fn pvalloc(size: usize) -> *mut ::core::ffi::c_void {
            $crate::c_api::pvalloc(&PRELOAD_ALLOCATOR, size)
        }

        /// C `malloc_usable_size`; see [`preload::c_api::malloc_usable_size`].
        ///
        /// # Safety
        /// As for [`free`].
        #[no_mangle]
        pub unsafe extern "C" fn malloc_usable_size(ptr: *mut ::core::ffi::c_void) -> usize {
            // SAFETY: forwarded contract.
            unsafe { $crate::c_api::malloc_usable_size(&PRELOAD_ALLOCATOR, ptr) }
        }
    };
}
