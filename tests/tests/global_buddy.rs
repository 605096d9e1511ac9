//! The global-allocator suite with Buddy as the process allocator.

allocator_suites::global_allocator_tests!(allocators::Buddy, allocators::Buddy::new());
