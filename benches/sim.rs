//! Criterion benchmarks of the whole-balancer simulation (`pen-sim balance`): flows per second
//! over a generated 1-million-flow trace (UDP with `-U`, TCP sessions in proxy mode), and the
//! memory one tracked client costs in the balancer's client table (counted by a global
//! allocator wrapper, printed once).
//!
//! `cargo bench --bench sim`

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pen::select::{Balancer, Client};
use pen::sim::balance::{SimOptions, simulate};
use pen::sim::mapping::{AddressMap, Pool, default_pools};
use pen::sim::trace::{Chunk, Datagram, TcpSession, Trace, UdpFlow};

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only adds bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const FLOWS: u32 = 1_000_000;
const CLIENTS: u32 = 100_000;

fn client(i: u32) -> SocketAddr {
    let c = i % CLIENTS;
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(
            100,
            64 + (c >> 16) as u8,
            (c >> 8) as u8,
            c as u8,
        )),
        1024 + (i / CLIENTS) as u16,
    )
}

/// 1M UDP flows of one query each from 100k clients, 20k new flows per second.
fn udp_trace() -> Trace {
    let server: SocketAddr = "192.0.2.53:53".parse().unwrap();
    Trace {
        file: "generated-udp".into(),
        udp: (0..FLOWS)
            .map(|i| {
                let at = Duration::from_micros(u64::from(i) * 50);
                UdpFlow {
                    client: client(i),
                    server,
                    first_frame: u64::from(i) + 1,
                    queries: vec![Datagram {
                        at,
                        frame: u64::from(i) + 1,
                        len: 40,
                        payload: Vec::new(),
                    }],
                    replies: Vec::new(),
                }
            })
            .collect(),
        ..Trace::default()
    }
}

/// 1M TCP sessions of 100 ms each from 100k clients, 20k new sessions per second.
fn tcp_trace() -> Trace {
    let server: SocketAddr = "192.0.2.80:80".parse().unwrap();
    Trace {
        file: "generated-tcp".into(),
        tcp: (0..FLOWS)
            .map(|i| {
                let at = Duration::from_micros(u64::from(i) * 50);
                let end = at + Duration::from_millis(100);
                TcpSession {
                    client: client(i),
                    server,
                    first_frame: u64::from(i) + 1,
                    start_missing: false,
                    opened: at,
                    established: Some(at),
                    client_data: Vec::new(),
                    client_chunks: vec![Chunk { at, end: 0 }],
                    server_bytes: 1000,
                    client_fin: Some(end),
                    server_fin: Some(end),
                    reset: None,
                    last: end,
                    retransmitted_bytes: 0,
                    out_of_order: 0,
                    lost_bytes: 0,
                    clipped: false,
                    truncated_frames: 0,
                }
            })
            .collect(),
        ..Trace::default()
    }
}

fn args(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

fn bench_sim(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(u64::from(FLOWS)));
    // 100k clients: more than the default /16 pool holds.
    let (_, v6) = default_pools();
    let v4 = Pool::parse("10.0.0.0/8").unwrap();
    let udp = udp_trace();
    let map = AddressMap::build(&udp, v4, v6, "10.0.0.100:53".parse().unwrap()).unwrap();
    let opts = SimOptions {
        pen_args: args("-U -c 100000 -x 5000 53 10.0.0.3:53 10.0.0.4:53 10.0.0.5:53"),
        events: vec![],
        sample: Duration::from_secs(1),
    };
    g.bench_function("udp_1M_flows", |b| {
        b.iter(|| simulate(&udp, &map, &opts).unwrap().flows.len())
    });
    drop((udp, map));
    let tcp = tcp_trace();
    let map = AddressMap::build(&tcp, v4, v6, "10.0.0.100:80".parse().unwrap()).unwrap();
    let opts = SimOptions {
        pen_args: args("-c 100000 -x 5000 80 10.0.0.3:80 10.0.0.4:80 10.0.0.5:80"),
        events: vec![],
        sample: Duration::from_secs(1),
    };
    g.bench_function("tcp_1M_sessions", |b| {
        b.iter(|| simulate(&tcp, &map, &opts).unwrap().flows.len())
    });
    g.finish();
}

/// Heap bytes per client the balancer tracks (`-c 100000`, 100k distinct clients).
fn memory_per_client(_c: &mut Criterion) {
    let cfg = pen::cli::parse(args("-c 100000 80 10.0.0.3:80 10.0.0.4:80"))
        .unwrap()
        .config;
    let before = LIVE.load(Ordering::Relaxed);
    let mut b = Balancer::new(&cfg);
    let empty = LIVE.load(Ordering::Relaxed);
    for i in 0..CLIENTS {
        let cl = Client {
            ip: Some(client(i).ip()),
            port: 1,
        };
        let t = b.select(&cl, Duration::ZERO);
        if let Some(&t) = t.first() {
            b.connect_started(&cl, t, Duration::ZERO);
            b.connect_abandoned(t);
        }
    }
    let full = LIVE.load(Ordering::Relaxed);
    println!(
        "sim/memory_per_tracked_client: {:.1} bytes ({} clients, {} bytes; empty balancer {} bytes)",
        (full - empty) as f64 / f64::from(CLIENTS),
        CLIENTS,
        full - empty,
        empty - before
    );
    drop(b);
}

criterion_group!(benches, memory_per_client, bench_sim);
criterion_main!(benches);
