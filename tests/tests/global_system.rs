//! The global-allocator suite with glibc malloc (`std::alloc::System`): the baseline.

allocator_suites::global_allocator_tests!(system: std::alloc::System, std::alloc::System);
