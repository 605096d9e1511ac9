//! The Rust-API heap-profile check (see `common`) with `allocators::Bump` as the global allocator.

mod common;

#[global_allocator]
static GLOBAL: allocators::Bump = allocators::Bump::new();

#[test]
fn two_sites_show_at_three_to_one() {
    common::run("bump");
}
