//! `libsizeclass_preload.so`: the C allocation interface served by [`allocators::SizeClass`].
//! Use: `LD_PRELOAD=target/release/libsizeclass_preload.so your-program`.

preload::export_c_allocator!(allocators::SizeClass);
