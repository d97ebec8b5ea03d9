//! Bulk throughput of `proxy::forward` on loopback: splice vs the copy loop.
//!
//! Each iteration: a client writes 64 MiB to a forwarder, which forwards it to a sink that
//! reads and discards; the iteration ends when the sink has everything and the close has
//! travelled back to the client. Run with `cargo bench --bench forward`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pen::proxy::forward::{Counters, Options, Stream, forward};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOTAL: usize = 64 * 1024 * 1024;

/// One transfer of `TOTAL` bytes through a forwarder; returns the bytes the sink received.
async fn transfer(splice: bool) -> u64 {
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let front_addr = front.local_addr().unwrap();

    let sink_task = tokio::spawn(async move {
        let (mut s, _) = sink.accept().await.unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let fwd_task = tokio::spawn(async move {
        let (c, _) = front.accept().await.unwrap();
        let s = TcpStream::connect(sink_addr).await.unwrap();
        let (c, s) = (Stream::Tcp(c), Stream::Tcp(s));
        let opts = Options {
            splice,
            ..Options::default()
        };
        let counters = Counters::default();
        forward(c, s, &opts, &counters).await.unwrap();
        counters.to_server()
    });

    let mut client = TcpStream::connect(front_addr).await.unwrap();
    let chunk = vec![0x5au8; 1024 * 1024];
    for _ in 0..TOTAL / chunk.len() {
        client.write_all(&chunk).await.unwrap();
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    let forwarded = fwd_task.await.unwrap();
    let received = sink_task.await.unwrap();
    assert_eq!(forwarded, received);
    received
}

fn bench_forward(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("forward_64MiB_loopback");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(500));
    group.measurement_time(Duration::from_secs(5));
    for (name, splice) in [("splice", true), ("copy", false)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let got = rt.block_on(transfer(splice));
                assert_eq!(got, TOTAL as u64);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_forward);
criterion_main!(benches);
