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
//! `STATIC_TLS` flag (its 8 bytes live in the static TLS block, which always has room for a
//! library loaded at start-up such as a preloaded one, and glibc keeps a surplus for `dlopen`).
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
            pub fn get() -> usize {
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
            pub fn set(v: usize) {
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
            pub fn get() -> usize {
                match WORD.try_with(|w| w.get()) {
                    Ok(0) | Err(_) => (&raw const $init) as usize,
                    Ok(v) => v,
                }
            }

            /// Sets the calling thread's word.
            #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
            #[inline(always)]
            pub fn set(v: usize) {
                let _ = WORD.try_with(|w| w.set(v));
            }
        }
    };
}

pub(crate) use thread_word;

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
