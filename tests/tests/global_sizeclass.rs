//! The global-allocator suite with SizeClass as the process allocator.

allocator_suites::global_allocator_tests!(allocators::SizeClass, allocators::SizeClass::new());
