//! `libbump_preload.so`: the C allocation interface served by [`allocators::Bump`].
//! Use: `LD_PRELOAD=target/release/libbump_preload.so your-program`.

preload::export_c_allocator!(allocators::Bump);
