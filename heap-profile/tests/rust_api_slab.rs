//! The Rust-API heap-profile check (see `common`) with `allocators::Slab` as the global allocator.

mod common;

#[global_allocator]
static GLOBAL: allocators::Slab = allocators::Slab::new();

#[test]
fn two_sites_show_at_three_to_one() {
    common::run("slab");
}
