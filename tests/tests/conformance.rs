//! The conformance suite against every allocator (one line each) and against System, which
//! proves the suite itself right.

allocator_suites::conformance_tests!(system, std::alloc::System);
allocator_suites::conformance_tests!(bump, allocators::Bump::new());
allocator_suites::conformance_tests!(buddy, allocators::Buddy::new());
allocator_suites::conformance_tests!(sizeclass, allocators::SizeClass::new());
allocator_suites::conformance_tests!(slab, allocators::Slab::new());
