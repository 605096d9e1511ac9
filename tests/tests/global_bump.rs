//! The global-allocator suite with Bump as the process allocator.

allocator_suites::global_allocator_tests!(
    allocators::Bump,
    allocators::Bump::new(),
    never_reuses,
    ignore = "Bump bug: a refill re-takes its own too-small tail and returns null (tests/tests/bump_bugs.rs)"
);
