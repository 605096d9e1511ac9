//! One machine word per thread, reached with a single `%fs`-relative load even from a shared
//! library (the allocators' per-thread fast-path state).
//!
//! Why not `thread_local!`: in an executable a `const` `thread_local!` is one `%fs` load, but in a
//! shared library (the `LD_PRELOAD` builds) Rust uses the general-dynamic TLS model, where every
//! access calls `__tls_get_addr`: 16.6% of all cycles of a malloc/free loop under
//! `libsizeclass_preload.so`, measured with `perf record`. The initial-exec model (one GOT load of
//! the word's offset from the thread pointer, then one `%fs`-relative load) needs `-Z tls-model`,
//! which stable Rust lacks. So on x86-64 Linux the word is declared in assembly (`.tdata`, with
//! its initial value) and read and written with the initial-exec sequence in inline assembly;
//! mimalloc's preloaded library reaches its heap the same way. The cost: the library gets the
//! `STATIC_TLS` flag: its words and blocks (8 bytes for SizeClass, about 1.6 KB for Slab and
//! 6.8 KB for Buddy) live in the static TLS block, which always has room for a library loaded at
//! start-up such as a preloaded one; a library `dlopen`ed later may not find that much room in
//! glibc's surplus, so these libraries are for `LD_PRELOAD` (or linking), not `dlopen`.
//! Elsewhere the word is a `const` `thread_local!` `Cell`.
//!
//! The word has no destructor, so touching it never registers anything and never allocates.

/// Declares `mod $name` with `get()` and `set(v)` for one per-thread `usize`, starting at
/// `$init` (a path to a `static`, whose address is the initial value) in every thread.
macro_rules! thread_word {
    ($(#[$doc:meta])* $name:ident, $sym:literal, init = $init:path) => {
        $(#[$doc])*
        pub(crate) mod $name {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            core::arch::global_asm!(
                concat!(".pushsection .tdata.", $sym, ",\"awT\",@progbits"),
                ".p2align 3",
                concat!(".globl ", $sym),
                concat!(".hidden ", $sym),
                concat!(".type ", $sym, ",@object"),
                concat!(".size ", $sym, ",8"),
                concat!($sym, ":"),
                ".quad {init}",
                ".popsection",
                init = sym $init,
            );

            /// The calling thread's word.
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            #[inline(always)]
            pub(super) fn get() -> usize {
                let v: usize;
                // SAFETY: initial-exec access to the 8-byte TLS word declared above: the GOT
                // entry holds its offset from the thread pointer (`%fs`), valid in every thread
                // of the process. Reads nothing else, writes nothing.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {v}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov {v}, qword ptr fs:[{v}]",
                        v = out(reg) v,
                        options(nostack, preserves_flags, readonly, pure),
                    );
                }
                v
            }

            /// Sets the calling thread's word.
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            #[inline(always)]
            pub(super) fn set(v: usize) {
                // SAFETY: as in `get`; writes only the calling thread's word.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {o}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "mov qword ptr fs:[{o}], {v}",
                        o = out(reg) _,
                        v = in(reg) v,
                        options(nostack, preserves_flags),
                    );
                }
            }

            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            std::thread_local! {
                static WORD: core::cell::Cell<usize> =
                    const { core::cell::Cell::new(0) };
            }

            /// The calling thread's word.
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            #[inline(always)]
            pub(super) fn get() -> usize {
                match WORD.try_with(|w| w.get()) {
                    Ok(0) | Err(_) => (&raw const $init) as usize,
                    Ok(v) => v,
                }
            }

            /// Sets the calling thread's word.
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            #[inline(always)]
            pub(super) fn set(v: usize) {
                let _ = WORD.try_with(|w| w.set(v));
            }
        }
    };
}

pub(crate) use thread_word;

/// Declares `mod $name` with `get() -> *mut $ty`: the calling thread's instance of `$ty`, which
/// starts as all-zero bytes in every thread (so `$ty`'s all-zero bytes must be a valid value:
/// null pointers, zero counts, an enum's variant 0). Reaching it is the initial-exec sequence
/// and one add of the thread pointer (x86-64 Linux), or a `const` `thread_local!` elsewhere.
macro_rules! thread_block {
    ($(#[$doc:meta])* $name:ident, $sym:literal, $ty:ty) => {
        $(#[$doc])*
        pub(crate) mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            core::arch::global_asm!(
                concat!(".pushsection .tbss.", $sym, ",\"awT\",@nobits"),
                ".p2align 6",
                concat!(".globl ", $sym),
                concat!(".hidden ", $sym),
                concat!(".type ", $sym, ",@object"),
                concat!(".size ", $sym, ",{size}"),
                concat!($sym, ":"),
                ".zero {size}",
                ".popsection",
                size = const core::mem::size_of::<$ty>(),
            );

            /// The calling thread's instance (valid for the thread's life).
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            #[inline(always)]
            pub(super) fn get() -> *mut $ty {
                const _: () = assert!(core::mem::align_of::<$ty>() <= 64);
                let a: usize;
                // The GOT entry holds the block's offset from the thread pointer, and `fs:[0]`
                // holds the thread pointer itself (the x86-64 TLS ABI); neither changes for a
                // thread, so `pure, readonly` lets the compiler reuse the address.
                // SAFETY: initial-exec access to the 64-aligned TLS block declared above.
                unsafe {
                    core::arch::asm!(
                        concat!("mov {a}, qword ptr [rip + ", $sym, "@GOTTPOFF]"),
                        "add {a}, qword ptr fs:[0]",
                        a = out(reg) a,
                        options(nostack, pure, readonly),
                    );
                }
                a as *mut $ty
            }

            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            std::thread_local! {
                static BLOCK: core::cell::UnsafeCell<$ty> =
                    // SAFETY: the macro's contract: all-zero bytes are a valid value.
                    const { core::cell::UnsafeCell::new(unsafe { core::mem::zeroed() }) };
            }

            /// The calling thread's instance (valid for the thread's life).
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            #[inline(always)]
            pub(super) fn get() -> *mut $ty {
                BLOCK.with(|b| b.get())
            }
        }
    };
}

pub(crate) use thread_block;

#[cfg(test)]
mod tests {
    static START: u64 = 7;
    static OTHER: u64 = 9;

    thread_word!(
        /// A word for the test.
        word,
        "allocators_test_thread_word",
        init = super::START
    );

    thread_block!(
        /// A block for the test.
        block,
        "allocators_test_thread_block",
        [u64; 20]
    );

    #[test]
    fn blocks_start_zeroed_and_are_per_thread() {
        let mine = block::get();
        assert_eq!(mine as usize % 64, 0);
        // SAFETY: the calling thread's block, used by nothing else.
        unsafe {
            assert_eq!(*mine, [0; 20]);
            (*mine)[19] = 5;
        }
        let theirs = std::thread::spawn(|| {
            let b = block::get();
            // SAFETY: as above, in that thread.
            unsafe {
                assert_eq!(*b, [0; 20]);
                (*b)[0] = 1;
            }
            b as usize
        })
        .join()
        .unwrap();
        assert_ne!(theirs, mine as usize);
        // SAFETY: as above.
        unsafe {
            assert_eq!(*mine, {
                let mut e = [0; 20];
                e[19] = 5;
                e
            })
        };
    }

    #[test]
    fn starts_at_init_in_every_thread_and_is_per_thread() {
        let start = (&raw const START) as usize;
        let other = (&raw const OTHER) as usize;
        assert_eq!(word::get(), start);
        word::set(other);
        assert_eq!(word::get(), other);
        std::thread::spawn(move || {
            assert_eq!(word::get(), start);
            word::set(other + 8);
            assert_eq!(word::get(), other + 8);
        })
        .join()
        .unwrap();
        assert_eq!(word::get(), other);
        word::set(start);
    }
}
