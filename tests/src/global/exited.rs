//! Contract point: memory comes back even after its threads are gone. Two worker threads
//! allocate many small blocks, hand them to the main thread and exit; the main thread frees
//! them all and then goes on lightly. The freed memory must leave the process's resident set
//! within about a second, whether or not the main thread allocates again: thread pools and
//! producer/consumer code free blocks on another thread than the one that made them, often after
//! that thread has exited (the bloat allocator users report most).

use std::time::Duration;

use super::Probe;

/// Bytes of blocks each worker allocates (16-512 B each).
pub const PER_WORKER: usize = 128 << 20;
/// Workers.
const WORKERS: usize = 2;
/// Resident memory allowed above the starting point once everything is freed.
pub const ALLOWED_GROWTH: usize = 48 << 20;

/// The resident set size, read without allocating (so that the check itself does not give the
/// allocator a slow path to run its chores on).
fn rss_no_alloc() -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; `buf` is writable for its length; the fd is closed.
    let n = unsafe {
        let fd = libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY);
        if fd < 0 {
            return 0;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        n
    };
    let text = &buf[..usize::try_from(n).unwrap_or(0)];
    let mut fields = text.split(|&b| b == b' ');
    let resident = fields.nth(1).unwrap_or(b"0");
    let pages = resident
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .fold(0usize, |acc, &b| acc * 10 + usize::from(b - b'0'));
    pages * allocators::os::page_size()
}

/// Allocates [`PER_WORKER`] bytes of blocks in each of two threads, which hand them over and
/// exit; frees them all on this thread; then, with `light_work`, allocates 4 KiB every 50 ms for
/// a second, else allocates nothing for a second. Checks (for an allocator that reuses memory,
/// other than System, which is only reported) that resident memory ends within
/// [`ALLOWED_GROWTH`] of where it started, having held at least the blocks' bytes.
pub fn check_memory_after_threads_exit(probe: &Probe, light_work: bool) {
    if probe.never_reuses {
        return;
    }
    let start = rss_no_alloc();
    let (tx, rx) = crossbeam_channel::unbounded::<Vec<Box<[u8]>>>();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut made = 0;
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ w as u64;
                while made < PER_WORKER {
                    let mut batch = Vec::with_capacity(4096);
                    for _ in 0..4096 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        let size = 16 + (x % 497) as usize;
                        batch.push(vec![w as u8; size].into_boxed_slice());
                        made += size;
                    }
                    tx.send(batch).expect("main thread gone");
                }
            })
        })
        .collect();
    drop(tx);
    let mut held: Vec<Vec<Box<[u8]>>> = rx.iter().collect();
    for w in workers {
        w.join().expect("worker panicked");
    }
    let peak = rss_no_alloc();
    let blocks: usize = held.iter().map(Vec::len).sum();
    assert!(blocks > 0);
    // Every block is intact and freed here, on a thread other than its maker's, which is gone.
    for batch in held.drain(..) {
        for b in batch {
            assert!(b.iter().all(|&v| usize::from(v) < WORKERS));
        }
    }
    drop(held);
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        if light_work {
            std::hint::black_box(vec![1u8; 4096]);
        }
    }
    let end = rss_no_alloc();
    eprintln!(
        "{}: {} blocks freed after their threads exited ({}): resident {} MiB at start, \
         {} MiB holding them, {} MiB one second after the frees",
        probe.name,
        blocks,
        if light_work {
            "then light work"
        } else {
            "then idle"
        },
        start >> 20,
        peak >> 20,
        end >> 20
    );
    if probe.name == "system" {
        return;
    }
    assert!(
        peak >= start + WORKERS * PER_WORKER / 2,
        "held {peak} B resident, started at {start} B: the blocks were not resident?"
    );
    assert!(
        end <= start + ALLOWED_GROWTH,
        "{}: {} MiB resident one second after freeing everything (started at {} MiB)",
        probe.name,
        end >> 20,
        start >> 20
    );
}
