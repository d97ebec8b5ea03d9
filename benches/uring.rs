//! The io_uring loop's per-connection bookkeeping: inserting records into its slab, finding
//! them by key (what every completion does) and removing them, for 100 to 10 000 connections,
//! plus the user-data token round trip, and its timer wheel: filing connect/idle timers and
//! expiring them tick by tick.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pen::proxy::uring::slab::{Slab, bench_churn, bench_tokens};
use pen::proxy::uring::timers::{Wheel, bench_wheel};

fn slab(c: &mut Criterion) {
    let mut g = c.benchmark_group("uring_slab");
    for n in [100u32, 1_000, 10_000] {
        g.throughput(Throughput::Elements(u64::from(n)));
        let mut s = Slab::default();
        g.bench_with_input(BenchmarkId::new("insert_get_remove", n), &n, |b, &n| {
            b.iter(|| black_box(bench_churn(&mut s, black_box(n))));
        });
    }
    g.throughput(Throughput::Elements(1_000));
    g.bench_function("token_round_trip_1000", |b| {
        b.iter(|| black_box(bench_tokens(black_box(1_000))));
    });
    g.finish();
}

fn wheel(c: &mut Criterion) {
    let mut g = c.benchmark_group("uring_timer_wheel");
    for n in [100u32, 1_000, 10_000] {
        g.throughput(Throughput::Elements(u64::from(n)));
        let mut w = Wheel::new(256);
        // Timers spread over 25 ticks (a 5 s connect timeout at 200 ms a tick).
        g.bench_with_input(BenchmarkId::new("insert_expire", n), &n, |b, &n| {
            b.iter(|| black_box(bench_wheel(&mut w, black_box(n), 25)));
        });
    }
    g.finish();
}

criterion_group!(benches, slab, wheel);
criterion_main!(benches);
