//! A real multithreaded program run on the global allocator, with every result checked two ways:
//! word counts (HashMap per thread merged over mpsc vs. one BTreeMap), sorting strings in
//! threads (sorted and a permutation), trait objects, shared counters, producer/consumer sums.

use std::collections::{BTreeMap, HashMap};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use crate::pattern::Rng;

/// Builds a deterministic text of `words` words from a small vocabulary.
fn make_text(words: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let vocabulary: Vec<String> = (0..300)
        .map(|i| {
            let len = 2 + i % 9;
            (0..len)
                .map(|j| (b'a' + ((i * 7 + j * 3) % 26) as u8) as char)
                .collect::<String>()
                + &i.to_string()
        })
        .collect();
    let mut text = String::new();
    for _ in 0..words {
        text.push_str(&vocabulary[rng.below(vocabulary.len())]);
        text.push(' ');
    }
    text
}

trait Shape: Send {
    fn area(&self) -> u64;
}
struct Rect(u64, u64);
struct Square(u64);
impl Shape for Rect {
    fn area(&self) -> u64 {
        self.0 * self.1
    }
}
impl Shape for Square {
    fn area(&self) -> u64 {
        self.0 * self.0
    }
}

/// Runs the program; panics if any result disagrees with its second computation.
pub fn run_multithreaded_program() {
    const THREADS: usize = 4;

    // 1. Word counts: per-thread HashMaps sent over mpsc and merged, vs. one BTreeMap.
    let text = Arc::new(make_text(200_000, 42));
    let words: Arc<Vec<String>> = Arc::new(text.split_whitespace().map(str::to_owned).collect());
    let (tx, rx) = mpsc::channel::<HashMap<String, usize>>();
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let words = Arc::clone(&words);
        let tx = tx.clone();
        handles.push(thread::spawn(move || {
            let mut counts = HashMap::new();
            for w in words.iter().skip(t).step_by(THREADS) {
                *counts.entry(w.clone()).or_insert(0) += 1;
            }
            tx.send(counts).expect("consumer alive");
        }));
    }
    drop(tx);
    let mut merged: HashMap<String, usize> = HashMap::new();
    for part in rx {
        for (w, c) in part {
            *merged.entry(w).or_insert(0) += c;
        }
    }
    for h in handles {
        h.join().expect("word-count thread");
    }
    let mut reference: BTreeMap<&str, usize> = BTreeMap::new();
    for w in text.split_whitespace() {
        *reference.entry(w).or_insert(0) += 1;
    }
    assert_eq!(
        merged.len(),
        reference.len(),
        "word counts: distinct words differ"
    );
    for (w, c) in &reference {
        assert_eq!(merged.get(*w), Some(c), "word counts differ for {w:?}");
    }
    assert_eq!(merged.values().sum::<usize>(), 200_000);

    // 2. Sorting strings in threads, merged: sorted, and a permutation of the input.
    let mut rng = Rng::new(7);
    let input: Vec<String> = (0..100_000)
        .map(|_| format!("{:x}-{}", rng.next_u64(), rng.below(1000)))
        .collect();
    let chunks: Vec<Vec<String>> = input
        .chunks(input.len() / THREADS + 1)
        .map(<[String]>::to_vec)
        .collect();
    let sorted_chunks: Vec<Vec<String>> = chunks
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                c.sort();
                c
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("sort thread"))
        .collect();
    let mut merged_sorted: Vec<String> = sorted_chunks.into_iter().flatten().collect();
    merged_sorted.sort(); // a stable merge of sorted runs
    assert!(
        merged_sorted.windows(2).all(|w| w[0] <= w[1]),
        "sorted output is not sorted"
    );
    let mut reference_sorted = input.clone();
    reference_sorted.sort_unstable();
    assert_eq!(
        merged_sorted, reference_sorted,
        "sorted output is not a permutation of the input"
    );

    // 3. Box<dyn Trait> built in threads.
    let area_handles: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            thread::spawn(move || {
                let shapes: Vec<Box<dyn Shape>> = (0..10_000u64)
                    .map(|i| -> Box<dyn Shape> {
                        if i % 2 == 0 {
                            Box::new(Rect(i + t, 3))
                        } else {
                            Box::new(Square(i % 100))
                        }
                    })
                    .collect();
                shapes.iter().map(|s| s.area()).sum::<u64>()
            })
        })
        .collect();
    for (t, h) in area_handles.into_iter().enumerate() {
        let t = t as u64;
        let expected: u64 = (0..10_000u64)
            .map(|i| {
                if i % 2 == 0 {
                    (i + t) * 3
                } else {
                    (i % 100) * (i % 100)
                }
            })
            .sum();
        assert_eq!(
            h.join().expect("shape thread"),
            expected,
            "trait-object areas differ"
        );
    }

    // 4. Arc<Mutex<_>> shared counters and a shared log.
    let counter = Arc::new(Mutex::new(0u64));
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let counter = Arc::clone(&counter);
            let log = Arc::clone(&log);
            thread::spawn(move || {
                for i in 0..10_000 {
                    *counter.lock().expect("counter") += 1;
                    if i % 100 == 0 {
                        log.lock().expect("log").push(format!("thread {t} at {i}"));
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("counter thread");
    }
    assert_eq!(*counter.lock().expect("counter"), (THREADS * 10_000) as u64);
    assert_eq!(log.lock().expect("log").len(), THREADS * 100);

    // 5. crossbeam producers and consumers passing Vec batches.
    let (tx, rx) = crossbeam_channel::bounded::<Vec<u64>>(64);
    let producers: Vec<_> = (0..2u64)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                for batch in 0..2_000u64 {
                    let v: Vec<u64> = (0..50).map(|k| p * 1_000_000 + batch * 50 + k).collect();
                    tx.send(v).expect("consumers alive");
                }
            })
        })
        .collect();
    drop(tx);
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            thread::spawn(move || rx.iter().map(|v| v.iter().sum::<u64>()).sum::<u64>())
        })
        .collect();
    for p in producers {
        p.join().expect("producer");
    }
    let total: u64 = consumers
        .into_iter()
        .map(|c| c.join().expect("consumer"))
        .sum();
    let expected: u64 = (0..2u64)
        .flat_map(|p| (0..100_000u64).map(move |i| p * 1_000_000 + i))
        .sum();
    assert_eq!(total, expected, "producer/consumer sums differ");
}
