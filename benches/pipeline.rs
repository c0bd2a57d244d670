//! The hot path of ingestion: parse NDJSON and compute moving averages, for 100 machines with
//! 4 parameters each (3 numeric and a status), as a gateway would send them.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use millwatch::pipeline::{Outcome, Pipeline};
use millwatch::reading::{MachineId, ReadingStream};
use millwatch::timestamp::Timestamp;

const READINGS: usize = 100_000;

fn ndjson() -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(1);
    let mut out = String::new();
    for i in 0..READINGS {
        let machine = i % 100;
        let secs = 1_764_300_000 + (i / 100) as u64;
        out.push_str(&format!(
            "{{\"machine_id\":\"press-{machine:03}\",\"timestamp\":\"{}\",\"temperature\":{:.1},\"speed\":{},\"pressure\":{:.3},\"status\":\"RUNNING\"}}\n",
            Timestamp::from_nanos(secs as i64 * 1_000_000_000),
            60.0 + 20.0 * rng.f64(),
            1400 + rng.u32(..200),
            4.0 + rng.f64(),
        ));
    }
    out.into_bytes()
}

fn bench(c: &mut Criterion) {
    let input = ndjson();
    let mut g = c.benchmark_group("pipeline");
    g.throughput(Throughput::Elements(READINGS as u64));
    g.bench_function("parse_only", |b| {
        b.iter(|| {
            ReadingStream::new(black_box(&input[..]))
                .filter(|(_, r)| r.is_ok())
                .count()
        })
    });
    g.bench_function("parse_and_average", |b| {
        b.iter(|| {
            let mut p = Pipeline::new(
                5,
                MachineId::parse("machine-1").unwrap_or_else(|_| unreachable!()),
            );
            let now = Timestamp::from_nanos(0);
            let mut records = 0usize;
            for (_, r) in ReadingStream::new(black_box(&input[..])) {
                if let Ok(r) = r
                    && let Outcome::Record(rec) = p.process(r, now)
                {
                    records += rec.averages.len();
                }
            }
            records
        })
    });
    g.bench_function("parse_average_serialize", |b| {
        let mut out = Vec::with_capacity(input.len() * 2);
        b.iter(|| {
            out.clear();
            let mut p = Pipeline::new(
                5,
                MachineId::parse("machine-1").unwrap_or_else(|_| unreachable!()),
            );
            let now = Timestamp::from_nanos(0);
            for (_, r) in ReadingStream::new(black_box(&input[..])) {
                if let Ok(r) = r
                    && let Outcome::Record(rec) = p.process(r, now)
                {
                    let _ = serde_json::to_writer(&mut out, &rec);
                    out.push(b'\n');
                }
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
