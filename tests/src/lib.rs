//! The allocator contract test suites (placeholder until the suites land).
