//! The Rust-API heap-profile check (see `common`) with `allocators::Buddy` as the global allocator.

mod common;

#[global_allocator]
static GLOBAL: allocators::Buddy = allocators::Buddy::new();

#[test]
fn two_sites_show_at_three_to_one() {
    common::run("buddy");
}
