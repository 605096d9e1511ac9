//! `Introspect::free_unsized` frees every kind of block, for every allocator. Each allocator is
//! used by one test only, so its counters see that test's operations alone.

use allocator_suites::unsized_free::check_free_unsized;

#[test]
fn bump() {
    check_free_unsized(&allocators::Bump::new());
}

#[test]
fn buddy() {
    check_free_unsized(&allocators::Buddy::new());
}

#[test]
fn slab() {
    check_free_unsized(&allocators::Slab::new());
}

#[test]
fn sizeclass() {
    check_free_unsized(&allocators::SizeClass::new());
}
