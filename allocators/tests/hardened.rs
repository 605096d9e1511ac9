//! The `hardened` feature's misuse tests: each case runs in a child process (this test binary
//! re-executed with `HARDENED_CASE` set), commits one heap bug, and must be stopped by the
//! allocator with its message on stderr and SIGABRT (or, for a write into a large block's guard
//! page, SIGSEGV).
//!
//! Run with: `cargo test -p allocators --release --features hardened --test hardened`.
//! Adding an allocator is one line in `ALLOCATORS`, naming the misuse its design catches.
#![cfg(feature = "hardened")]

use std::alloc::{GlobalAlloc, Layout};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use allocators::Introspect;

/// A kind of heap bug a test commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bug {
    DoubleFree,
    InteriorFree,
    ForeignFree,
    SmallOverflow,
    LargeOverflow,
    LargeDoubleFree,
    WriteAfterFree,
    /// A write into a freed 100 KiB block: past Buddy's thread caches, so on an arena free list
    /// whose links the write corrupts (Buddy only: the others serve it differently).
    MidWriteAfterFree,
    /// Not a bug: blocks whose requests fill them exactly (no room for a canary), written in
    /// full and freed, also after an in-place `realloc` and from `alloc_zeroed`. Must not be
    /// reported (SizeClass, whose canaries need slack).
    ExactFitFull,
    /// A double free of a block its user filled to the last byte (SizeClass).
    ExactFitDoubleFree,
    /// An overflow past a request with slack in a block whose previous user filled it exactly
    /// (and overwrote the canary's word): the free of that user must have restored the canary
    /// (SizeClass).
    OverflowAfterExactFit,
    /// An overflow past a request with slack after an in-place `realloc` of an exact-fit block
    /// (the realloc must write the canary; SizeClass).
    OverflowAfterRealloc,
}

/// Every kind, for reading a child's case back.
const EVERY_BUG: [Bug; 12] = [
    Bug::DoubleFree,
    Bug::InteriorFree,
    Bug::ForeignFree,
    Bug::SmallOverflow,
    Bug::LargeOverflow,
    Bug::LargeDoubleFree,
    Bug::WriteAfterFree,
    Bug::ExactFitFull,
    Bug::ExactFitDoubleFree,
    Bug::OverflowAfterExactFit,
    Bug::OverflowAfterRealloc,
    Bug::MidWriteAfterFree,
];

/// The kinds Slab and SizeClass catch: the first seven (not the exact-fit cases, nor
/// [`Bug::MidWriteAfterFree`], a Buddy-only case).
const ALL_BUGS: &[Bug] = EVERY_BUG.split_at(7).0;

/// SizeClass: [`ALL_BUGS`] and its exact-fit cases (all but [`Bug::MidWriteAfterFree`]).
const SIZECLASS_BUGS: &[Bug] = EVERY_BUG.split_at(11).0;

/// (allocator name, the bugs its design catches).
const ALLOCATORS: &[(&str, &[Bug])] = &[
    // Buddy's thread caches are arrays of addresses: a write into a cached small block
    // (`WriteAfterFree`) steers nothing and is caught only if the block goes back to its arena;
    // a write into a block on an arena free list is caught when the list is next used.
    (
        "buddy",
        &[
            Bug::DoubleFree,
            Bug::InteriorFree,
            Bug::ForeignFree,
            Bug::SmallOverflow,
            Bug::LargeOverflow,
            Bug::LargeDoubleFree,
            Bug::MidWriteAfterFree,
        ],
    ),
    ("slab", ALL_BUGS),
    (
        "bump",
        &[
            Bug::DoubleFree,
            Bug::InteriorFree,
            Bug::ForeignFree,
            Bug::SmallOverflow,
            Bug::LargeOverflow,
            Bug::LargeDoubleFree,
        ],
    ),
    ("sizeclass", SIZECLASS_BUGS),
];

/// What stderr must contain and which signal must end the child (0: none, the child must exit
/// cleanly with no report).
fn expectation(bug: Bug) -> (&'static str, i32) {
    match bug {
        Bug::ExactFitFull => ("", 0),
        Bug::DoubleFree | Bug::ExactFitDoubleFree => ("double free detected", libc::SIGABRT),
        Bug::OverflowAfterExactFit | Bug::OverflowAfterRealloc => {
            ("heap overflow detected", libc::SIGABRT)
        }
        Bug::InteriorFree | Bug::ForeignFree => ("invalid free", libc::SIGABRT),
        // A large block freed twice: its mapping is cached (its header dead) or unmapped (its
        // address foreign); either way reported as an invalid free, in the allocator's name.
        Bug::LargeDoubleFree => ("invalid free", libc::SIGABRT),
        Bug::SmallOverflow => ("heap overflow detected", libc::SIGABRT),
        Bug::LargeOverflow => ("", libc::SIGSEGV),
        Bug::WriteAfterFree | Bug::MidWriteAfterFree => ("corrupted free list", libc::SIGABRT),
    }
}

/// The small overflow's request: 24 bytes, or for SizeClass 48, one of its class sizes (before
/// every hardened request was padded for its canary, a request filling its class kept none, and
/// this overflow went unnoticed).
fn overflow_size(name: &str) -> usize {
    if name == "sizeclass" {
        48
    } else {
        24
    }
}

/// Commits `bug` against `a` (named `name`). Returns only if the allocator failed to stop the
/// program.
fn commit<A: GlobalAlloc + Introspect>(a: &A, name: &str, bug: Bug) {
    let small = Layout::from_size_align(24, 8).unwrap();
    let l = |size| Layout::from_size_align(size, 8).unwrap();
    let big = Layout::from_size_align(8 << 20, 8).unwrap();
    // SAFETY: deliberately not: each arm breaks the allocator contract in one named way.
    unsafe {
        match bug {
            Bug::DoubleFree => {
                let keep = a.alloc(small);
                let p = a.alloc(small);
                a.dealloc(p, small);
                a.dealloc(p, small);
                a.dealloc(keep, small);
            }
            Bug::InteriorFree => {
                let p = a.alloc(Layout::from_size_align(64, 8).unwrap());
                a.dealloc(p.add(16), small);
            }
            Bug::ForeignFree => {
                let mut local = [0u64; 4];
                a.dealloc(local.as_mut_ptr().cast(), small);
            }
            Bug::SmallOverflow => {
                let small = l(overflow_size(name));
                let p = a.alloc(small);
                let q = a.alloc(small);
                std::ptr::write_bytes(p, 0x41, small.size() + 8);
                a.dealloc(p, small);
                a.dealloc(q, small);
            }
            Bug::LargeOverflow => {
                let p = a.alloc(big);
                let usable = a.usable_size(p).unwrap();
                std::ptr::write_volatile(p.add(usable), 1);
            }
            Bug::LargeDoubleFree => {
                let p = a.alloc(big);
                a.dealloc(p, big);
                a.dealloc(p, big);
            }
            Bug::WriteAfterFree => {
                let p = a.alloc(small);
                let q = a.alloc(small);
                a.dealloc(p, small);
                a.dealloc(q, small);
                // Steer the free list: overwrite the freed block's link with an address.
                (q as *mut usize).write(0x4141_4141_4141);
                (p as *mut usize).write(0x4141_4141_4141);
                for _ in 0..4 {
                    std::hint::black_box(a.alloc(small));
                }
            }
            Bug::MidWriteAfterFree => {
                let mid = Layout::from_size_align(100 << 10, 8).unwrap();
                // `keep` (p's buddy in Buddy) stays live, so p is not merged on free.
                let p = a.alloc(mid);
                let keep = a.alloc(mid);
                a.dealloc(p, mid);
                (p as *mut usize).write(0x4141_4141_4141);
                for _ in 0..4 {
                    std::hint::black_box(a.alloc(mid));
                }
                a.dealloc(keep, mid);
            }
            Bug::ExactFitFull => {
                // Class sizes (16 is the smallest hardened block, its last word its state word).
                for size in [16, 24, 64, 112, 1024, 4096] {
                    for _ in 0..3 {
                        let p = a.alloc(l(size));
                        std::ptr::write_bytes(p, 0x41, size);
                        a.dealloc(p, l(size));
                        let p = a.alloc_zeroed(l(size));
                        assert!((0..size).all(|i| *p.add(i) == 0));
                        std::ptr::write_bytes(p, 0x42, size);
                        a.dealloc(p, l(size));
                    }
                }
                // Sizes whose block also serves `size - 8` (every request is padded by the
                // canary's 8 bytes: 120 and 112 both take the 128-byte class): a block freed by
                // one user serves the other next; a block goes from one to the other and back
                // by in-place reallocs.
                for size in [120, 1016, 4088] {
                    let p = a.alloc(l(size));
                    std::ptr::write_bytes(p, 0x41, size);
                    a.dealloc(p, l(size));
                    let q = a.alloc(l(size - 8));
                    assert_eq!(q, p, "the freed block is reused first");
                    std::ptr::write_bytes(q, 0x42, size - 8);
                    a.dealloc(q, l(size - 8));
                    let p = a.alloc(l(size - 8));
                    let q = a.realloc(p, l(size - 8), size);
                    assert_eq!(q, p);
                    std::ptr::write_bytes(q, 0x43, size);
                    let r = a.realloc(q, l(size), size - 8);
                    assert_eq!(r, p);
                    std::ptr::write_bytes(r, 0x44, size - 8);
                    a.dealloc(r, l(size - 8));
                }
                // As the C API does: padded requests, freed without a size (the canary is
                // checked), `calloc` and a `realloc` that shrinks by moving (both write every
                // byte of the padded request) among them.
                let padded = |n: usize| A::unsized_request(n).unwrap();
                for n in [8, 56, 104, 120, 1016] {
                    let p = a.alloc_zeroed(l(padded(n)));
                    std::ptr::write_bytes(p, 0x45, n);
                    a.free_unsized(p);
                    let p = a.alloc(l(padded(4096)));
                    let usable = a.usable_size(p).unwrap();
                    std::ptr::write_bytes(p, 0x46, usable);
                    let q = a.realloc(p, l(usable), padded(n));
                    std::ptr::write_bytes(q, 0x47, n);
                    a.free_unsized(q);
                }
            }
            Bug::ExactFitDoubleFree => {
                // 16 bytes: the block's last word is its state word, the user's while live.
                // (`DoubleFree` frees an exact fit of 24 bytes, whose state word is word 1.)
                let keep = a.alloc(l(16));
                let p = a.alloc(l(16));
                std::ptr::write_bytes(p, 0x41, 16);
                a.dealloc(p, l(16));
                a.dealloc(p, l(16));
                a.dealloc(keep, l(16));
            }
            Bug::OverflowAfterExactFit => {
                // 120 and 112 bytes share the 128-byte class (requests padded by 8); the canary
                // lies at 120..128.
                let p = a.alloc(l(120));
                std::ptr::write_bytes(p, 0x41, 120);
                a.dealloc(p, l(120));
                let q = a.alloc(l(112));
                assert_eq!(q, p, "the freed block is reused first");
                std::ptr::write_bytes(q, 0x41, 120 + 1);
                a.dealloc(q, l(112));
            }
            Bug::OverflowAfterRealloc => {
                let p = a.alloc(l(120));
                std::ptr::write_bytes(p, 0x41, 120);
                let q = a.realloc(p, l(120), 112);
                assert_eq!(q, p, "a realloc within the class stays in place");
                std::ptr::write_bytes(q, 0x41, 120 + 1);
                a.dealloc(q, l(112));
            }
        }
    }
}

fn run_child(allocator: &str, bug: Bug) {
    match allocator {
        "bump" => commit(&allocators::Bump::new(), allocator, bug),
        "buddy" => commit(&allocators::Buddy::new(), allocator, bug),
        "slab" => commit(&allocators::Slab::new(), allocator, bug),
        "sizeclass" => commit(&allocators::SizeClass::new(), allocator, bug),
        other => panic!("unknown allocator {other}"),
    }
}

#[test]
fn misuse_is_caught() {
    if let Ok(case) = std::env::var("HARDENED_CASE") {
        let (name, bug) = case.split_once(':').unwrap();
        let bug = EVERY_BUG
            .into_iter()
            .find(|b| format!("{b:?}") == bug)
            .unwrap();
        run_child(name, bug);
        // Reaching here means the bug went unnoticed; exit cleanly so the parent sees it.
        std::process::exit(0);
    }
    let exe = std::env::current_exe().unwrap();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (name, bugs) in ALLOCATORS {
        for &bug in *bugs {
            let out = Command::new(&exe)
                .args([
                    "--exact",
                    "misuse_is_caught",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env("HARDENED_CASE", format!("{name}:{bug:?}"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            let (needle, signal) = expectation(bug);
            let ok = if signal == 0 {
                out.status.success() && !stderr.contains("allocators:")
            } else {
                out.status.signal() == Some(signal)
                    && stderr.contains(needle)
                    && (needle.is_empty() || stderr.contains(&format!("allocators: {name}")))
            };
            checked += 1;
            if !ok {
                failures.push(format!(
                    "{name} {bug:?}: status {:?}, stderr: {}",
                    out.status,
                    stderr.trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "misuse not caught:\n{}",
        failures.join("\n")
    );
    assert!(checked >= 6);
}

/// Sizes the key test cycles blocks through: exact fits of common classes and orders (which
/// leave no room for a canary) and requests with room, from 8 bytes to 100 KiB.
const KEY_TEST_SIZES: [usize; 15] = [
    8,
    16,
    24,
    32,
    48,
    56,
    64,
    100,
    128,
    256,
    1000,
    1024,
    4096,
    5000,
    100 << 10,
];

/// Checks every word a new user of a block can read before writing it (the block's first
/// `size` bytes) for the process key: an encoded free-list link (it decodes, with the key and
/// its address, to an address within 1 GiB of the block), or a canary computed with the key.
/// Either lets a program that reads uninitialised memory recover the key, and with it forge
/// links that steer the allocator. Returns a description of each kind of finding (allocator, size, word).
fn key_words_in<A: GlobalAlloc>(name: &str, a: &A) -> Vec<String> {
    use allocators::hardened;
    let key = hardened::key();
    let mut found = Vec::new();
    let mut scan = |p: *mut u8, size: usize| {
        for i in 0..size / 8 {
            let slot = p as usize + 8 * i;
            // SAFETY: the block holds `size` bytes, 8-aligned; reading them before writing is
            // what the test is about (the allocator decides what they hold).
            let word = unsafe { (slot as *const usize).read() };
            if word == 0 {
                continue;
            }
            let link = hardened::decode_link_keyed(word, slot, key);
            if link != 0 && link.abs_diff(p as usize) < 1 << 30 {
                found.push(format!(
                    "{name}: {size}-byte blocks, word {i}: an encoded link"
                ));
            } else if word == hardened::canary_keyed(p as usize, key) {
                found.push(format!(
                    "{name}: {size}-byte blocks, word {i}: a canary made with the link key"
                ));
            }
        }
    };
    for _round in 0..4 {
        let mut live = Vec::new();
        for &size in &KEY_TEST_SIZES {
            let layout = Layout::from_size_align(size, 8).unwrap();
            for _ in 0..32 {
                // SAFETY: a non-zero size.
                let p = unsafe { a.alloc(layout) };
                assert!(!p.is_null(), "{name}: out of memory");
                scan(p, size);
                // Fill the whole block, as a user of an exact fit may: whatever the allocator
                // keeps in its words must be rewritten when it takes the block back.
                // SAFETY: the block's `size` bytes are the caller's.
                unsafe { std::ptr::write_bytes(p, 0x5a, size) };
                live.push((p, layout));
            }
        }
        // Free in an order that mixes sizes, so blocks are reused by other sizes of their class.
        live.sort_by_key(|&(p, _)| p as usize % 4099);
        for (p, layout) in live {
            // SAFETY: a live block of `a` with this layout, not used afterwards.
            unsafe { a.dealloc(p, layout) };
        }
    }
    found
}

#[test]
fn handed_out_blocks_do_not_reveal_the_key() {
    if std::env::var("HARDENED_CASE").is_ok() {
        return;
    }
    let mut found = Vec::new();
    found.extend(key_words_in("bump", &allocators::Bump::new()));
    found.extend(key_words_in("buddy", &allocators::Buddy::new()));
    found.extend(key_words_in("slab", &allocators::Slab::new()));
    found.extend(key_words_in("sizeclass", &allocators::SizeClass::new()));
    found.sort();
    found.dedup();
    assert!(
        found.is_empty(),
        "key material handed out:\n{}",
        found.join("\n")
    );
}

/// Allocates a large block with `a` and returns it with the address of the page just past its
/// guard page (a wild pointer into the block's mapping whose "header" would be the guard page).
fn block_and_pointer_past_its_guard<A: GlobalAlloc + Introspect>(a: &A) -> (*mut u8, *mut u8) {
    let big = Layout::from_size_align(8 << 20, 8).unwrap();
    // SAFETY: a valid layout; usable_size of the live block just allocated.
    unsafe {
        let p = a.alloc(big);
        assert!(!p.is_null());
        let usable = a.usable_size(p).unwrap();
        (p, p.add(usable + allocators::os::page_size()))
    }
}

/// Frees a pointer just past a large block's guard page with `a` (the child of
/// [`a_pointer_past_a_large_blocks_guard_page_is_reported`]).
fn free_past_guard<A: GlobalAlloc + Introspect>(a: &A) {
    let (_, wild) = block_and_pointer_past_its_guard(a);
    // SAFETY: deliberately not: a wild free the allocator must report.
    unsafe { a.dealloc(wild, Layout::from_size_align(8 << 20, 8).unwrap()) };
}

/// Issue 23 item 7: a wild pointer just past a large block's guard page is not a block:
/// `usable_size` says so, and freeing it is reported as an invalid free (SIGABRT), where reading
/// its would-be header (the guard page) used to end the program with SIGSEGV.
#[test]
fn a_pointer_past_a_large_blocks_guard_page_is_reported() {
    if let Ok(name) = std::env::var("HARDENED_WILD") {
        match name.as_str() {
            "bump" => free_past_guard(&allocators::Bump::new()),
            "buddy" => free_past_guard(&allocators::Buddy::new()),
            "slab" => free_past_guard(&allocators::Slab::new()),
            _ => free_past_guard(&allocators::SizeClass::new()),
        }
        std::process::exit(0);
    }
    fn in_process<A: GlobalAlloc + Introspect>(a: &A) {
        let (p, wild) = block_and_pointer_past_its_guard(a);
        // SAFETY: `wild` lies in the live block's mapping; p is live and freed once.
        unsafe {
            assert_eq!(a.usable_size(wild), None, "{}", A::NAME);
            a.dealloc(p, Layout::from_size_align(8 << 20, 8).unwrap());
        }
    }
    in_process(&allocators::Bump::new());
    in_process(&allocators::Buddy::new());
    in_process(&allocators::Slab::new());
    in_process(&allocators::SizeClass::new());
    let exe = std::env::current_exe().unwrap();
    for name in ["bump", "buddy", "slab", "sizeclass"] {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "a_pointer_past_a_large_blocks_guard_page_is_reported",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("HARDENED_WILD", name)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.signal() == Some(libc::SIGABRT) && stderr.contains("invalid free"),
            "{name}: status {:?}, stderr: {}",
            out.status,
            stderr.trim()
        );
    }
}
