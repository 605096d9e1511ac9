//! The slab allocator as the process's `#[global_allocator]`: ordinary programs (collections,
//! strings, many threads, short-lived threads, a fork) run on it, and its counters add up.

use allocators::{Introspect, Slab};
use std::collections::{BTreeMap, HashMap};
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static GLOBAL: Slab = Slab::new();

/// The tests of this file run one at a time, so that one test's memory figures are its own.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn collections_and_strings() {
    let _serial = serial();
    let mut m: HashMap<String, Vec<u64>> = HashMap::new();
    for i in 0..20_000u64 {
        m.entry(format!("key-{}", i % 977)).or_default().push(i);
    }
    let total: u64 = m.values().flatten().sum();
    assert_eq!(total, (0..20_000u64).sum());
    let b: BTreeMap<u64, String> = (0..10_000).map(|i| (i, i.to_string().repeat(3))).collect();
    assert_eq!(b[&1234], "123412341234");
    let mut big: Vec<u8> = Vec::new();
    for i in 0..5_000_000u32 {
        big.push(i as u8);
    }
    assert_eq!(big[4_999_999], (4_999_999u32 as u8));
}

#[test]
fn threads_pass_blocks_around() {
    let _serial = serial();
    let (tx, rx) = mpsc::channel::<Box<[u8]>>();
    let producers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                for i in 0..20_000usize {
                    let n = 1 + (i * 31 + t) % 3000;
                    tx.send(vec![t as u8; n].into_boxed_slice()).unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    let mut count = 0;
    for b in rx {
        assert!(b.iter().all(|&x| x == b[0]));
        count += 1;
    }
    for p in producers {
        p.join().unwrap();
    }
    assert_eq!(count, 80_000);
}

#[test]
fn thousands_of_short_lived_threads_do_not_grow_memory() {
    let _serial = serial();
    let run = |n: usize| {
        for _ in 0..n / 50 {
            let hs: Vec<_> = (0..50)
                .map(|i| {
                    thread::spawn(move || {
                        (0..200)
                            .map(|j| format!("{i}:{j}"))
                            .collect::<Vec<_>>()
                            .len()
                    })
                })
                .collect();
            for h in hs {
                assert_eq!(h.join().unwrap(), 200);
            }
        }
    };
    run(500);
    let before = GLOBAL.stats().mapped_bytes;
    run(2000);
    let after = GLOBAL.stats().mapped_bytes;
    eprintln!(
        "slab: mapped {} KiB after 500 threads, {} KiB after 2000 more",
        before >> 10,
        after >> 10
    );
    assert!(after < before + (16 << 20), "before {before} after {after}");
}

#[test]
fn forked_child_allocates() {
    let _serial = serial();
    let worker = thread::spawn(|| {
        for i in 0..200_000 {
            std::hint::black_box(vec![i as u8; 100]);
        }
    });
    for _ in 0..10 {
        // SAFETY: the child only allocates and calls _exit.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let v: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
            // SAFETY: leaving the child without unwinding or running destructors.
            unsafe { libc::_exit(if v.len() == 1000 { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }
    worker.join().unwrap();
}
