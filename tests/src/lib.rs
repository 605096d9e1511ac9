//! The allocator contract's two test suites.
//!
//! - [`conformance`]: check functions generic over any `GlobalAlloc + Sync`, called directly (the
//!   allocator under test is *not* the process allocator), and the [`conformance_tests!`] macro
//!   that turns them into one `#[test]` each. Run against `std::alloc::System` to prove the suite
//!   itself right, and against the deliberately [`broken`] allocators to prove it catches bugs.
//! - [`global`]: the allocator installed as the `#[global_allocator]` of real programs (threads,
//!   collections, `fork`, out of memory), through the [`global_allocator_tests!`] macro; one test
//!   binary per allocator.
//! - [`unsized_free`]: `Introspect::free_unsized` (C's `free`) frees, for every allocator of the
//!   workspace (`tests/tests/free_unsized.rs`).
//!
//! Adding an allocator is one line in `tests/tests/conformance.rs` and one file
//! `tests/tests/global_<name>.rs` holding one line.

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod broken;
pub mod conformance;
pub mod global;
pub mod pattern;
pub mod unsized_free;

/// Re-exported so the macros can name `Introspect` from any crate.
pub use allocators;
