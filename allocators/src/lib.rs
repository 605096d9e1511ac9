//! Four memory allocators, each usable as a Rust program's `#[global_allocator]`:
//!
//! | type | design | for |
//! |---|---|---|
//! | [`Bump`] | per-thread pointer bumping through 4 MiB chunks; never reuses freed memory | short-lived programs, phase-based work |
//! | [`Slab`] | Bonwick's object caches with per-thread magazines | many objects of few sizes |
//! | [`Buddy`] | binary buddy system: power-of-two blocks that split and coalesce | low external fragmentation |
//! | [`SizeClass`] | mimalloc-style size classes, thread-local heaps, sharded free lists | general purpose |
//!
//! Swapping one in is one line:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: allocators::Bump = allocators::Bump::new();
//!
//! fn main() {
//!     use allocators::Introspect;
//!     let handles: Vec<_> = (0..4)
//!         .map(|i| std::thread::spawn(move || (0..1000).map(|j| format!("{i}-{j}")).collect::<Vec<_>>()))
//!         .collect();
//!     let total: usize = handles.into_iter().map(|h| h.join().unwrap().len()).sum();
//!     assert_eq!(total, 4000);
//!     assert!(GLOBAL.stats().allocations > 0);
//! }
//! ```
//!
//! Every allocator type is a zero-sized handle onto one process-wide heap of that type (as with
//! mimalloc's `MiMalloc`): two values of `Bump` share the same memory. All of them initialise
//! lazily on first use (std allocates before `main`), never allocate through the global allocator
//! themselves, return null when the kernel refuses memory, and answer [`Introspect::usable_size`]
//! and [`Introspect::free_unsized`] from a bare pointer (no `Layout`), which is what C's
//! `malloc_usable_size` and `free` need.
//!
//! The shared parts: [`os`] (pages from the kernel), [`sync`] (the internal lock), [`stats`] (the
//! counters), [`region_map`] (which allocator owns an address) and [`large`] (directly mapped
//! blocks).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod fork;
pub mod hardened;
mod introspect;
pub mod large;
pub mod os;
pub mod profile;
pub mod region_map;
pub mod stats;
pub mod sync;
mod thread_exit;
mod thread_word;

mod buddy;
mod bump;
mod size_class;
mod slab;

pub use buddy::Buddy;
pub use bump::Bump;
pub(crate) use introspect::realloc_by_moving;
pub use introspect::{
    alloc_unsized_by_layout, layout_hint, Introspect, HINT_ALIGN, HINT_LARGE_ALIGN,
};
pub use region_map::Owner;
pub use size_class::SizeClass;
pub use slab::Slab;
pub use stats::Stats;
