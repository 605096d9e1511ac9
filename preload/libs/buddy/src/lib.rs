//! `libbuddy_preload.so`: the C allocation interface served by [`allocators::Buddy`].
//! Use: `LD_PRELOAD=target/release/libbuddy_preload.so your-program`.

preload::export_c_allocator!(allocators::Buddy);
