//! The conformance suite against every allocator (one line each) and against System, which
//! proves the suite itself right.

allocator_suites::conformance_tests!(system, std::alloc::System);
allocator_suites::conformance_tests!(
    bump,
    allocators::Bump::new(),
    ignore = "Bump bug: a refill re-takes its own too-small tail and returns null (tests/tests/bump_bugs.rs)"
);
allocator_suites::conformance_tests!(sizeclass, allocators::SizeClass::new());
