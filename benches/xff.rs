//! The X-Forwarded-For rewriter (`proxy::http::Rewriter`) on the inputs a proxy sees: one
//! browser-like GET head, a 32 KiB read full of pipelined GETs, a 1 MiB POST body in 32 KiB
//! reads (the pass-through cost of the framing state machine), a head arriving in 64-byte
//! pieces, and binary (non-HTTP) data. Throughput is in input bytes.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pen::proxy::http::{Proto, Rewriter};

const READ: usize = 32 * 1024;

fn browser_get() -> Vec<u8> {
    b"GET /static/app.js?v=3 HTTP/1.1\r\n\
      Host: www.example.org\r\n\
      User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
      Accept: */*\r\n\
      Accept-Language: en-US,en;q=0.5\r\n\
      Accept-Encoding: gzip, deflate, br\r\n\
      Referer: https://www.example.org/\r\n\
      Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n\
      Connection: keep-alive\r\n\r\n"
        .to_vec()
}

/// Feeds `input` in `chunk`-sized reads through a fresh rewriter; returns the output size.
fn run(input: &[u8], chunk: usize, out: &mut Vec<u8>) -> usize {
    let mut r = Rewriter::new("192.0.2.10", Proto::Https);
    out.clear();
    for c in input.chunks(chunk) {
        r.feed(c, out);
    }
    r.finish(out);
    out.len()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("xff");
    let mut out = Vec::with_capacity(2 * 1024 * 1024);

    let get = browser_get();
    g.throughput(Throughput::Bytes(get.len() as u64));
    g.bench_function("one_get_head", |b| {
        b.iter(|| run(black_box(&get), READ, &mut out))
    });
    g.bench_function("one_get_head_in_64_byte_reads", |b| {
        b.iter(|| run(black_box(&get), 64, &mut out))
    });

    let pipelined: Vec<u8> = get.iter().copied().cycle().take(READ).collect();
    g.throughput(Throughput::Bytes(pipelined.len() as u64));
    g.bench_function("pipelined_gets_32k_read", |b| {
        b.iter(|| run(black_box(&pipelined), READ, &mut out))
    });

    let body = 1024 * 1024;
    let mut post =
        format!("POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: {body}\r\n\r\n").into_bytes();
    post.extend(std::iter::repeat_n(b'x', body));
    g.throughput(Throughput::Bytes(post.len() as u64));
    g.bench_function("post_1mib_body_32k_reads", |b| {
        b.iter(|| run(black_box(&post), READ, &mut out))
    });

    let mut x: u32 = 7;
    let binary: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    g.throughput(Throughput::Bytes(binary.len() as u64));
    g.bench_function("binary_1mib_32k_reads", |b| {
        b.iter(|| run(black_box(&binary), READ, &mut out))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
