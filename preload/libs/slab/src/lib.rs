//! `libslab_preload.so`: the C allocation interface served by [`allocators::Slab`].
//! Use: `LD_PRELOAD=target/release/libslab_preload.so your-program`.

preload::export_c_allocator!(allocators::Slab);
