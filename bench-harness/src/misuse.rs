//! The heap-misuse table: each misuse case (an overflow, a double free, an invalid free, ...)
//! committed against each allocator through `GlobalAlloc`, in a child process of its own, and
//! what became of it: stopped with the allocator's message, a crash, reported but not stopped,
//! or not detected. `bench-harness misuse` prints the table as markdown (README, "Hardened
//! mode"); the hidden `misuse-case` subcommand is the child. Built with `--features hardened`,
//! the binary holds the hardened builds of ours and mimalloc's secure mode (`MI_SECURE=4`);
//! glibc is the plain yardstick.
//!
//! Every allocator here is a `static` called directly, not the process's global allocator, so a
//! corrupted heap is only the one under test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::ptr;
use std::time::{Duration, Instant};

static BUMP: allocators::Bump = allocators::Bump::new();
static SLAB: allocators::Slab = allocators::Slab::new();
static BUDDY: allocators::Buddy = allocators::Buddy::new();
static SIZECLASS: allocators::SizeClass = allocators::SizeClass::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The allocators of the table: (name on the command line, column heading).
pub const ALLOCATORS: &[(&str, &str)] = &[
    ("bump", "bump"),
    ("slab", "slab"),
    ("buddy", "buddy"),
    ("sizeclass", "sizeclass"),
    ("mimalloc", "mimalloc"),
    ("system", "glibc"),
];

/// The allocator called `name` in [`ALLOCATORS`].
fn allocator(name: &str) -> Option<&'static dyn GlobalAlloc> {
    Some(match name {
        "bump" => &BUMP,
        "slab" => &SLAB,
        "buddy" => &BUDDY,
        "sizeclass" => &SIZECLASS,
        "mimalloc" => &MIMALLOC,
        "system" => &System,
        _ => return None,
    })
}

/// One misuse case.
pub struct Case {
    /// The name on the command line.
    pub name: &'static str,
    /// What it does, for the table.
    pub what: &'static str,
    /// Commits it. Cases that test a result rather than a check return a line saying what
    /// happened; the others return `None` when they get through undetected.
    ///
    /// # Safety
    /// None: these are the bugs. Run only in a child process.
    run: unsafe fn(&dyn GlobalAlloc) -> Option<String>,
}

/// The size of the "small block" of the cases.
const SMALL: usize = 24;
/// The size of the large block of the cases.
const LARGE: usize = 1 << 20;

/// A layout of `size` bytes aligned to 8.
fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a valid layout")
}

/// Allocates `size` bytes or exits the child with a note (no block to misuse).
///
/// # Safety
/// `size` is non-zero.
unsafe fn must_alloc(a: &dyn GlobalAlloc, size: usize) -> *mut u8 {
    // SAFETY: a non-zero size (the caller's contract).
    let p = unsafe { a.alloc(layout(size)) };
    if p.is_null() {
        println!("setup failed: no memory");
        std::process::exit(3);
    }
    p
}

/// Writes `n` bytes of 0x41 at `p` (volatile: the stores must happen even if the block is freed
/// next).
///
/// # Safety
/// None: the cases write out of bounds on purpose.
unsafe fn scribble(p: *mut u8, n: usize) {
    for i in 0..n {
        // SAFETY: none (a misuse case); volatile so the store is not removed.
        unsafe { ptr::write_volatile(p.add(i), 0x41) };
    }
}

/// Allocates, writes and frees blocks of several sizes (including `SMALL`), so checks made on
/// reuse of a block or of a free list get their chance.
///
/// # Safety
/// None beyond the allocator's own state (which a case may have corrupted).
unsafe fn churn(a: &dyn GlobalAlloc) {
    let mut blocks = [(ptr::null_mut::<u8>(), 0usize); 256];
    for (i, slot) in blocks.iter_mut().enumerate() {
        let size = [SMALL, 16, 48, 100, 4000][i % 5];
        // SAFETY: a non-zero size; the block is written within its size.
        unsafe {
            let p = a.alloc(layout(size));
            if !p.is_null() {
                ptr::write_bytes(p, 7, size);
            }
            *slot = (p, size);
        }
    }
    for &(p, size) in blocks.iter().rev() {
        if !p.is_null() {
            // SAFETY: a block allocated above with this layout, freed once.
            unsafe { a.dealloc(p, layout(size)) };
        }
    }
}

/// The cases, in the table's order.
pub const CASES: &[Case] = &[
    Case {
        name: "overflow-1",
        what: "write 1 byte past a 24-byte block, free it",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, SMALL);
            scribble(p.add(SMALL), 1);
            a.dealloc(p, layout(SMALL));
            churn(a);
            None
        },
    },
    Case {
        name: "overflow-32",
        what: "write 32 bytes past a 24-byte block, free it",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, SMALL);
            scribble(p.add(SMALL), 32);
            a.dealloc(p, layout(SMALL));
            churn(a);
            None
        },
    },
    Case {
        name: "overflow-large",
        what: "write 1 byte past a 1 MiB block, free it",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, LARGE);
            scribble(p.add(LARGE), 1);
            a.dealloc(p, layout(LARGE));
            churn(a);
            None
        },
    },
    Case {
        name: "underflow-8",
        what: "write 8 bytes before a 24-byte block, free it",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, SMALL);
            scribble(p.sub(8), 8);
            a.dealloc(p, layout(SMALL));
            churn(a);
            None
        },
    },
    Case {
        name: "double-free",
        what: "free a block twice in a row",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, SMALL);
            a.dealloc(p, layout(SMALL));
            a.dealloc(p, layout(SMALL));
            churn(a);
            None
        },
    },
    Case {
        name: "double-free-delayed",
        what: "free a block, free two others, free the first again",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, SMALL);
            let q = must_alloc(a, SMALL);
            let r = must_alloc(a, SMALL);
            a.dealloc(p, layout(SMALL));
            a.dealloc(q, layout(SMALL));
            a.dealloc(r, layout(SMALL));
            a.dealloc(p, layout(SMALL));
            churn(a);
            None
        },
    },
    Case {
        name: "free-interior",
        what: "free a pointer 16 bytes into a 64-byte block",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, 64);
            a.dealloc(p.add(16), layout(48));
            churn(a);
            None
        },
    },
    Case {
        name: "free-stack",
        what: "free the address of a local variable",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let mut local = [0u64; 4];
            let p = std::hint::black_box(local.as_mut_ptr()).cast::<u8>();
            a.dealloc(p, layout(32));
            churn(a);
            None
        },
    },
    Case {
        name: "free-static",
        what: "free the address of a static",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            static STATIC_BLOCK: [u64; 4] = [0; 4];
            let p = std::hint::black_box(STATIC_BLOCK.as_ptr())
                .cast_mut()
                .cast::<u8>();
            a.dealloc(p, layout(32));
            churn(a);
            None
        },
    },
    Case {
        name: "write-after-free",
        what: "free a 24-byte block, overwrite it, keep allocating",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let p = must_alloc(a, SMALL);
            a.dealloc(p, layout(SMALL));
            scribble(p, SMALL);
            churn(a);
            churn(a);
            None
        },
    },
    Case {
        name: "zero-size",
        what: "allocate 0 bytes twice (outside `GlobalAlloc`'s contract; C's `malloc(0)`)",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let zero = Layout::from_size_align(0, 8).expect("a valid layout");
            let p = a.alloc(zero);
            let q = a.alloc(zero);
            let what = match (p.is_null(), q.is_null()) {
                (true, true) => "null".to_string(),
                (false, false) if p != q => "two distinct pointers".to_string(),
                (false, false) => "the same pointer twice".to_string(),
                _ => "null once".to_string(),
            };
            for x in [p, q] {
                if !x.is_null() {
                    a.dealloc(x, zero);
                }
            }
            Some(what)
        },
    },
    Case {
        name: "huge",
        what: "allocate `isize::MAX` bytes (rounded down to a page)",
        // SAFETY: none: a misuse case, run in a child process of its own.
        run: |a| unsafe {
            let size = isize::MAX as usize & !4095;
            let p = a.alloc(layout(size));
            Some(if p.is_null() {
                "null".to_string()
            } else {
                a.dealloc(p, layout(size));
                "a pointer (!)".to_string()
            })
        },
    },
];

/// The child's side: commits `case` against `allocator`, prints what a result case found, and
/// returns (exit 0) if nothing stopped it.
pub fn run_case(allocator_name: &str, case_name: &str) -> Result<(), String> {
    let a = allocator(allocator_name).ok_or_else(|| format!("no allocator {allocator_name}"))?;
    let case = CASES
        .iter()
        .find(|c| c.name == case_name)
        .ok_or_else(|| format!("no case {case_name}"))?;
    // SAFETY: none: the case is a heap bug, committed on purpose in this child process.
    if let Some(found) = unsafe { (case.run)(a) } {
        println!("result: {found}");
    }
    Ok(())
}

/// How long a case may run before it counts as hung.
const CASE_LIMIT: Duration = Duration::from_secs(20);

/// What became of one case, as a table cell.
fn outcome(exe: &Path, allocator_name: &str, case: &str) -> String {
    let child = Command::new(exe)
        .args(["misuse-case", "--allocator", allocator_name, "--case", case])
        // mimalloc detects without a word unless asked to show its errors.
        .env("MIMALLOC_SHOW_ERRORS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return format!("could not start: {e}"),
    };
    let deadline = Instant::now() + CASE_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return "hang".to_string();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return format!("could not wait: {e}"),
        }
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => return format!("could not wait: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = report_in(&stderr);
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("result: "))
        .map(str::to_string);
    match (out.status.code(), out.status.signal(), message, result) {
        (Some(0), _, None, Some(r)) => r,
        (Some(0), _, Some(m), Some(r)) => format!("{r}; reported: {m}"),
        (Some(0), _, None, None) => "not detected".to_string(),
        (Some(0), _, Some(m), None) => format!("reported, not stopped: {m}"),
        (_, Some(libc::SIGABRT), Some(m), _) => format!("**stopped**: {m}"),
        (_, Some(libc::SIGABRT), None, _) => "abort, no message".to_string(),
        (_, Some(sig), _, _) => format!("crash ({})", signal_name(sig)),
        (Some(code), _, _, _) => format!("exit {code}: {}", stdout.trim()),
        (None, None, _, _) => "no status".to_string(),
    }
}

/// The allocator's report on stderr, shortened: ours (`allocators: slab: double free detected
/// at 0x...; aborting`), mimalloc's (`mimalloc: error: double free detected of block 0x...`)
/// and glibc's (`free(): double free detected in tcache 2`): the first line written that is
/// not a warning, without its address or parenthesis.
fn report_in(stderr: &str) -> Option<String> {
    stderr.lines().find_map(|line| {
        let text = if let Some(rest) = line.strip_prefix("allocators: ") {
            rest.split_once(": ").map_or(rest, |(_, m)| m)
        } else if let Some(rest) = line.strip_prefix("mimalloc: error: ") {
            rest
        } else if line.trim().is_empty() || line.starts_with("mimalloc: warning") {
            return None;
        } else {
            line // glibc's, say `free(): invalid pointer`
        };
        let cut = [" at 0x", " of block", " of size", " 0x", ";", ": 0x", " ("]
            .iter()
            .filter_map(|pat| text.find(pat))
            .min()
            .unwrap_or(text.len());
        Some(text[..cut].trim().to_string())
    })
}

/// A signal's short name.
fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".to_string(),
        libc::SIGBUS => "SIGBUS".to_string(),
        libc::SIGILL => "SIGILL".to_string(),
        libc::SIGTRAP => "SIGTRAP".to_string(),
        libc::SIGFPE => "SIGFPE".to_string(),
        other => format!("signal {other}"),
    }
}

/// Runs every case against every allocator (each in a child process of `exe`) and returns the
/// markdown table, cases down, allocators across.
pub fn table(exe: &Path) -> String {
    let hardened = cfg!(feature = "hardened");
    let mut out = String::new();
    out.push_str("| case | what |");
    for (_, heading) in ALLOCATORS {
        let label = match (*heading, hardened) {
            ("glibc", _) => "glibc".to_string(),
            ("mimalloc", true) => "mimalloc secure".to_string(),
            (h, true) => format!("{h} hardened"),
            (h, false) => h.to_string(),
        };
        out.push_str(&format!(" {label} |"));
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---|".repeat(ALLOCATORS.len()));
    out.push('\n');
    for case in CASES {
        out.push_str(&format!("| `{}` | {} |", case.name, case.what));
        for (name, _) in ALLOCATORS {
            out.push_str(&format!(" {} |", outcome(exe, name, case.name)));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_shortened_to_what_was_detected() {
        assert_eq!(
            report_in("allocators: slab: double free detected at 0x7f00; aborting\n").as_deref(),
            Some("double free detected")
        );
        assert_eq!(
            report_in("mimalloc: error: double free detected of block 0x7f00 with size 32\n")
                .as_deref(),
            Some("double free detected")
        );
        assert_eq!(
            report_in("free(): double free detected in tcache 2\n").as_deref(),
            Some("free(): double free detected in tcache 2")
        );
        assert_eq!(
            report_in("allocators: buddy: heap overflow detected (canary after the block)\n")
                .as_deref(),
            Some("heap overflow detected")
        );
        assert_eq!(report_in("mimalloc: warning: unable to allocate\n"), None);
        assert_eq!(report_in("\n  \n"), None);
    }

    #[test]
    fn every_case_and_allocator_is_reachable_by_name() {
        for (name, _) in ALLOCATORS {
            assert!(allocator(name).is_some(), "{name}");
        }
        assert!(run_case("nobody", "huge").is_err());
        assert!(run_case("system", "no-such-case").is_err());
        let mut names: Vec<_> = CASES.iter().map(|c| c.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CASES.len(), "case names are unique");
    }
}
