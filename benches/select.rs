//! `Balancer::select` per algorithm, with 2, 10, 100 and 1000 servers and a full client table
//! (C Pen's default 2048 entries).
//!
//! - `tracking`: default mode, returning clients (every lookup hits the table).
//! - `roundrobin` (`-r`), `hash` (`-h`), `weight` (`-W`), `prio`: new clients every time
//!   (4096 addresses cycling through a 2048-entry table, so each select evicts the LRU entry)
//!   so the algorithm runs on each call.
//! - `failover_all_down`: every regular server blacklisted; the whole table is scanned before
//!   the emergency server.
//!
//! Every select returns the full candidate list (initial choice + failover order), so its cost
//! grows with the number of servers.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use pen::config::{Config, HostSpec, Mode, ServerConfig};
use pen::select::{Balancer, Client, Target, literal_addr};

const CLIENTS_MAX: usize = 2048;
const SIZES: [usize; 4] = [2, 10, 100, 1000];

fn client(i: u32) -> Client {
    Client {
        ip: Some(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))),
        port: (i % 50_000) as u16 + 1024,
    }
}

fn balancer(n: usize, mode: Mode) -> Balancer {
    let servers = (0..n)
        .map(|i| ServerConfig {
            host: Some(HostSpec::Ip(IpAddr::V4(Ipv4Addr::new(
                10,
                1,
                (i / 256) as u8,
                (i % 256) as u8,
            )))),
            port: 80,
            weight: 1 + (i % 4) as u32,
            prio: (i % 7) as u32,
            ..ServerConfig::default()
        })
        .collect();
    let cfg = Config {
        servers,
        mode,
        clients_max: CLIENTS_MAX,
        ..Config::default()
    };
    let mut b = Balancer::new(&cfg);
    let emergency = ServerConfig {
        host: Some(HostSpec::Ip(IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)))),
        port: 80,
        ..ServerConfig::default()
    };
    if let Some(addr) = literal_addr(&emergency) {
        b.set_emergency(Some((emergency, addr)));
    }
    // Fill the client table and give the servers some established connections.
    for i in 0..CLIENTS_MAX as u32 {
        let c = client(i);
        if let Some(&t) = b.select(&c, Duration::ZERO).first() {
            b.connect_started(&c, t, Duration::ZERO);
            b.connect_ok(t, Duration::ZERO);
        }
    }
    b
}

fn bench_mode(c: &mut Criterion, name: &str, mode: Mode, distinct_clients: u32, down: bool) {
    let mut group = c.benchmark_group(format!("select/{name}"));
    for n in SIZES {
        let mut b = balancer(n, mode);
        if down {
            for i in 0..n {
                let _ = b.blacklist(i, 1_000_000, Duration::ZERO);
            }
        }
        let now = Duration::from_secs(1);
        let mut i = 0u32;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |bench, _| {
            bench.iter(|| {
                i = (i + 1) % distinct_clients;
                let list = b.select(&client(i), now);
                black_box(list.first().copied().unwrap_or(Target::Abuse))
            })
        });
    }
    group.finish();
}

fn select_benches(c: &mut Criterion) {
    let new_clients = 2 * CLIENTS_MAX as u32;
    let returning = CLIENTS_MAX as u32;
    bench_mode(c, "tracking", Mode::default(), returning, false);
    let rr = Mode {
        roundrobin: true,
        ..Mode::default()
    };
    bench_mode(c, "roundrobin", rr, new_clients, false);
    let hash = Mode {
        hash: true,
        ..Mode::default()
    };
    bench_mode(c, "hash", hash, new_clients, false);
    let weight = Mode {
        weight: true,
        ..Mode::default()
    };
    bench_mode(c, "weight", weight, new_clients, false);
    let prio = Mode {
        prio: true,
        ..Mode::default()
    };
    bench_mode(c, "prio", prio, new_clients, false);
    bench_mode(c, "failover_all_down", rr, new_clients, true);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(20);
    targets = select_benches
}
criterion_main!(benches);
