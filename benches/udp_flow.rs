//! Criterion benchmarks of the pure UDP flow table: the per-datagram paths (client datagram of
//! an existing flow, server reply routing), flow creation, and expiry.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use pen::proxy::udp::{Candidate, ClientVerdict, FlowTable, Selector};
use pen::select::Target;

/// Round robin over fixed servers, no bookkeeping: measures the table, not the balancer.
struct Rr {
    servers: Vec<SocketAddr>,
    next: usize,
}

impl Selector for Rr {
    fn candidates(&mut self, _c: SocketAddr, _now: Duration) -> Vec<Candidate> {
        self.next = (self.next + 1) % self.servers.len();
        vec![Candidate {
            target: Target::Server(self.next),
            addr: Some(self.servers[self.next]),
        }]
    }
    fn flow_opened(&mut self, _c: SocketAddr, _t: Target, _now: Duration) {}
    fn flow_closed(&mut self, _c: SocketAddr, _t: Target, _s: u64, _r: u64, _now: Duration) {}
    fn server_failed(&mut self, _t: Target, _now: Duration) {}
}

fn rr() -> Rr {
    Rr {
        servers: (1..=4)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 53)))
            .collect(),
        next: 0,
    }
}

fn client(i: u32) -> SocketAddr {
    SocketAddr::from((
        [192, 0, (i >> 16) as u8, (i >> 8) as u8],
        1024 + (i & 0xff) as u16,
    ))
}

fn bench(c: &mut Criterion) {
    const FLOWS: u32 = 10_000;
    let mut sel = rr();
    let mut table = FlowTable::new(FLOWS as usize, Duration::from_secs(60), FLOWS);
    let now = Duration::from_secs(1);
    let mut routes = Vec::new();
    for i in 0..FLOWS {
        if let ClientVerdict::Forward {
            upstream, server, ..
        } = table.handle_client(now, client(i), 64, &mut sel)
        {
            routes.push((upstream, server));
        }
    }

    let mut i = 0u32;
    c.bench_function("udp_flow/client_datagram_existing_flow_10k", |b| {
        b.iter(|| {
            i = (i + 1) % FLOWS;
            black_box(table.handle_client(now, client(i), 64, &mut sel))
        })
    });

    let mut k = 0usize;
    c.bench_function("udp_flow/server_reply_routing_10k", |b| {
        b.iter(|| {
            k = (k + 1) % routes.len();
            let (u, s) = routes[k];
            black_box(table.handle_server(now, u, s, 100))
        })
    });

    c.bench_function("udp_flow/create_and_expire_1k_flows", |b| {
        b.iter(|| {
            let mut sel = rr();
            let mut t = FlowTable::new(1_000, Duration::from_secs(60), 1_000);
            for i in 0..1_000 {
                t.handle_client(now, client(i), 64, &mut sel);
            }
            black_box(t.expire(now + Duration::from_secs(61), &mut sel))
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
