//! What one heap-profile sample costs, end to end and by part (stack walk, the sampled block's
//! mapping, the table), on SizeClass as the global allocator.
//!
//! `cargo run --release -p allocators --example sample_cost`

use std::hint::black_box;
use std::time::Instant;

use allocators::profile;

#[global_allocator]
static A: allocators::SizeClass = allocators::SizeClass::new();

/// Allocations of 64 bytes per timed loop.
const N: usize = 4_000_000;

/// Allocates and frees `N` blocks of 64 bytes through a few frames of depth; ns per allocation.
#[inline(never)]
fn churn(depth: usize) -> f64 {
    if depth > 0 {
        return black_box(churn(black_box(depth - 1)));
    }
    let t = Instant::now();
    for _ in 0..N {
        let v: Vec<u8> = Vec::with_capacity(black_box(64));
        black_box(&v);
    }
    t.elapsed().as_nanos() as f64 / N as f64
}

fn per_call(n: usize, mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// Frames walked, then ns per walk with `capture` and with `capture_libgcc`, from `depth`
/// calls below the caller.
#[inline(never)]
fn nested(depth: usize) -> (usize, f64, f64) {
    if depth > 0 {
        return black_box(nested(black_box(depth - 1)));
    }
    let mut frames = [0usize; profile::stack::MAX_FRAMES];
    let n = profile::stack::capture(&mut frames, 0);
    let fast = (0..5)
        .map(|_| {
            per_call(20_000, || {
                black_box(profile::stack::capture(&mut frames, 0));
            })
        })
        .fold(f64::MAX, f64::min);
    let libgcc = (0..5)
        .map(|_| {
            per_call(2_000, || {
                black_box(profile::stack::capture_libgcc(&mut frames, 0));
            })
        })
        .fold(f64::MAX, f64::min);
    (n, fast, libgcc)
}

fn main() {
    // The first walk of the process: every return address is new (a `dl_iterate_phdr` and an
    // FDE evaluation each, on x86-64 Linux), and the thread's stack pages are checked once.
    let mut frames = [0usize; profile::stack::MAX_FRAMES];
    let t = Instant::now();
    let n = profile::stack::capture(&mut frames, 0);
    println!(
        "first stack walk ({n} frames, rules new): {} ns",
        t.elapsed().as_nanos()
    );

    // End to end: the extra time per sample at a high rate (many samples), against rate 0.
    let rate = 16 * 1024;
    let best = |r: usize| {
        profile::set_rate(r);
        (0..5).map(|_| churn(20)).fold(f64::MAX, f64::min)
    };
    let off = best(0);
    let on = best(rate);
    let samples_per_alloc = 64.0 / rate as f64;
    println!(
        "end to end: {off:.2} ns/alloc off, {on:.2} ns/alloc at {rate} B: {:.0} ns per sample",
        (on - off) / samples_per_alloc
    );
    profile::set_rate(0);

    // The parts: the stack walk as `capture` does it (the fast walker on x86-64 Linux) and with
    // libgcc's `_Unwind_Backtrace` alone, from here and from 24 calls deeper.
    let mut frames = [0usize; profile::stack::MAX_FRAMES];
    let walk =
        |frames: &mut [usize; profile::stack::MAX_FRAMES]| profile::stack::capture(frames, 1);
    let depth = walk(&mut frames);
    for deeper in [0, 24] {
        let (n, fast, libgcc) = nested(deeper);
        println!(
            "stack walk ({n} frames): {fast:.0} ns ({:.1} ns a frame); libgcc: {libgcc:.0} ns \
             ({:.1} ns a frame)",
            fast / n as f64,
            libgcc / n as f64
        );
    }

    static C: allocators::stats::GlobalCounters = allocators::stats::GlobalCounters::new();
    let ns = per_call(20_000, || {
        let p = allocators::large::alloc(64, 16, false, allocators::Owner::SizeClass, &C);
        // SAFETY: p is a live large block of ours (or null, tested).
        unsafe {
            p.write(1);
            allocators::large::dealloc(p, 64, &C);
        }
    });
    println!("large alloc + write + free (cached mapping): {ns:.0} ns");

    // Sampled blocks that stay live (more than the large cache's slots): a mapping each.
    let live = |f: &dyn Fn() -> *mut u8| {
        let mut ps = [core::ptr::null_mut::<u8>(); 32];
        per_call(500, || {
            for p in ps.iter_mut() {
                *p = f();
                // SAFETY: a live block of at least 64 bytes.
                unsafe { p.write(1) };
            }
            for &p in &ps {
                // SAFETY: each p is a live large block of ours.
                unsafe { allocators::large::dealloc(p, 64, &C) };
            }
        }) / ps.len() as f64
    };
    let ns = live(&|| allocators::large::alloc(64, 16, false, allocators::Owner::SizeClass, &C));
    println!("large alloc + write + free, 32 live at once: {ns:.0} ns");
    let ns = live(&|| allocators::large::alloc_slot(64, false, allocators::Owner::SizeClass, &C));
    println!("sampled-block slot alloc + write + free, 32 live at once: {ns:.0} ns");

    let ns = per_call(20_000, || {
        let p = allocators::large::alloc_slot(64, false, allocators::Owner::SizeClass, &C);
        // SAFETY: p is a live large block of ours (or null, tested).
        unsafe {
            p.write(1);
            allocators::large::dealloc(p, 64, &C);
        }
    });
    println!("sampled-block slot alloc + write + free: {ns:.0} ns");

    let ns = per_call(20_000, || {
        let mut t = profile::table::TABLES.lock();
        t.insert(0x1000_0000, &frames[..depth], 1.0, 64.0);
        t.remove(0x1000_0000);
    });
    println!("table insert + remove under the lock: {ns:.0} ns");
}
