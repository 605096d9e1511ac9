//! Criterion micro-benchmarks over every allocator of the registry: an alloc/free pair per size,
//! and a buffer grown by doubling with realloc. Kept short by default (small measurement time);
//! run with `cargo bench -p bench-harness`.

use std::alloc::Layout;
use std::time::Duration;

use bench_harness::registry::ALLOCATORS;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};

const SIZES: [usize; 6] = [16, 64, 256, 1024, 4096, 65536];

fn alloc_free_pairs(c: &mut Criterion) {
    for &size in &SIZES {
        let mut g = c.benchmark_group(format!("alloc_free_{size}B"));
        g.warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_millis(500))
            .sample_size(20);
        let layout = Layout::from_size_align(size, 16).unwrap_or(Layout::new::<u128>());
        for a in ALLOCATORS {
            let pairs = a.micro.pairs;
            g.bench_function(BenchmarkId::from_parameter(a.name), |b| {
                b.iter_custom(|iters| pairs(layout, iters))
            });
        }
        g.finish();
    }
}

fn realloc_growth(c: &mut Criterion) {
    let mut g = c.benchmark_group("realloc_growth_16B_to_64KiB");
    g.warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500))
        .sample_size(20);
    for a in ALLOCATORS {
        let growth = a.micro.growth;
        g.bench_function(BenchmarkId::from_parameter(a.name), |b| {
            b.iter_custom(|iters| growth(1 << 16, iters))
        });
    }
    g.finish();
}

criterion_group!(benches, alloc_free_pairs, realloc_growth);
criterion_main!(benches);
