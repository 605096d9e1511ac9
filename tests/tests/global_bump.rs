//! The global-allocator suite with Bump as the process allocator.

allocator_suites::global_allocator_tests!(allocators::Bump, allocators::Bump::new(), never_reuses);
