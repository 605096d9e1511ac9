//! The global-allocator suite with Slab as the process allocator.

allocator_suites::global_allocator_tests!(allocators::Slab, allocators::Slab::new());
