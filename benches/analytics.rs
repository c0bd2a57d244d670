//! Analytics over 10 million values (80 MB, far beyond the caches): the one-pass summary, the
//! full analysis (summary plus anomalies), and, as the yardstick, the plainest pass that reads
//! the same memory, which tells how close the summary gets to the machine's read bandwidth.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millwatch::core::analytics::{Baseline, Options, analyze, summarize};
use millwatch::timestamp::Timestamp;

const VALUES: usize = 10_000_000;
/// 100 000 values, 800 kB: inside L2.
const IN_CACHE: usize = 100_000;

/// Temperatures around 70 with one spike in a thousand, as a machine would send them.
fn series() -> (Vec<Timestamp>, Vec<f64>) {
    let mut rng = fastrand::Rng::with_seed(1);
    let values: Vec<f64> = (0..VALUES)
        .map(|_| {
            let v = 60.0 + 20.0 * rng.f64();
            if rng.u32(..1000) == 0 { v * 1.5 } else { v }
        })
        .collect();
    let timestamps = (0..VALUES)
        .map(|i| Timestamp::from_nanos(1_764_300_000_000_000_000 + i as i64 * 1_000_000_000))
        .collect();
    (timestamps, values)
}

/// Eight independent plain sums: as little work per value as a pass can do, so its speed is
/// the memory's.
fn plain_sum(values: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>()
}

/// The same with the prefetch hint that `summarize` gives (2 KiB ahead): on the VM this was
/// written on, the hardware prefetcher alone leaves a fifth of the bandwidth unused.
fn plain_sum_prefetched(values: &[f64]) -> f64 {
    let mut acc = [0.0; 8];
    let mut chunks = values.chunks_exact(8);
    for c in &mut chunks {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint; it never faults, whatever the address.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(c.as_ptr().wrapping_add(256).cast::<i8>());
        }
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>()
}

fn bench(c: &mut Criterion) {
    let (timestamps, values) = series();
    let mut g = c.benchmark_group("analytics");
    g.throughput(Throughput::Elements(VALUES as u64));
    g.sample_size(20);
    g.bench_function("read_bandwidth_plain_sum", |b| {
        b.iter(|| plain_sum(black_box(&values)))
    });
    g.bench_function("read_bandwidth_plain_sum_prefetched", |b| {
        b.iter(|| plain_sum_prefetched(black_box(&values)))
    });
    g.bench_function("summarize", |b| b.iter(|| summarize(black_box(&values))));
    g.bench_function("analyze_global", |b| {
        let opts = Options::default();
        b.iter(|| {
            analyze(black_box(&timestamps), black_box(&values), &opts)
                .anomalies
                .len()
        })
    });
    g.bench_function("analyze_moving_5", |b| {
        let opts = Options {
            baseline: Baseline::Moving(5),
            ..Options::default()
        };
        b.iter(|| {
            analyze(black_box(&timestamps), black_box(&values), &opts)
                .anomalies
                .len()
        })
    });
    g.finish();

    // The same passes over a slice that fits in L2: what the loops cost when memory is not the
    // limit.
    let in_cache = &values[..IN_CACHE];
    let mut g = c.benchmark_group("analytics_in_cache");
    g.throughput(Throughput::Elements(IN_CACHE as u64));
    g.bench_function("plain_sum", |b| b.iter(|| plain_sum(black_box(in_cache))));
    g.bench_function("summarize", |b| b.iter(|| summarize(black_box(in_cache))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
