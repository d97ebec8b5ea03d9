//! The DSR + tarpit engine: frames per second on one core.
//!
//! - `dsr_forward/{2,10,100}`: TCP frames from 1024 different clients to the VIP, backend MACs
//!   known: the DSR forwarding decision plus the in-place MAC rewrite (target: >= 10 M/s).
//!   Each iteration first restores the destination MAC (6 bytes), which the rewrite changed.
//! - `dsr_forward_v6/10`: the same over IPv6 with 10 backends.
//! - `mix`: 80 % DSR, 10 % ARP requests for the VIP, 10 % tarpit SYNs (20 option bytes);
//!   each frame is copied back from a pristine copy first (the ARP and tarpit answers rewrite it
//!   in place).
//! - `maglev_build/{2,10,100}`: rebuilding the 65,537-slot table (a blacklist change).
//! - `pcap_replay`: the offline driver over an in-memory pcap of 10,000 mixed frames, output
//!   pcap into memory, verdict log discarded.
//! - `drive_mem/10`: the one drive loop (`link::io::drive`) over the memory driver, 1024 DSR
//!   frames in batches of 64 (as the live driver's); includes the memory driver's copies of
//!   every frame in and out, so compare it with `dsr_forward/10` for the loop's whole cost.

use std::hint::black_box;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pen::acl::{Acl, AclEntry, AclMatch};
use pen::engine::frames::{self, ACK, PSH, SYN};
use pen::engine::maglev::{Maglev, Member};
use pen::engine::{BackendConfig, Engine, EngineConfig, Mac};
use pen::link::io::drive_to_end;
use pen::link::mem::MemIo;
use pen::link::pcapfile::{replay, write_frames};

const OUR: Mac = [0x02, 0, 0, 0, 0, 0x01];
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);
const TARPIT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 200);
const CLIENTS: u32 = 1024;

fn backend_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 1, (i / 250) as u8, (i % 250 + 1) as u8)
}

fn engine(n: usize) -> Engine {
    let mut c = EngineConfig::new(OUR, VIP, 80);
    c.backends = (0..n)
        .map(|i| BackendConfig {
            ip: Some(backend_ip(i).into()),
            weight: 0,
            available: true,
        })
        .collect();
    c.tarpit = Some(Acl {
        entries: vec![AclEntry {
            permit: true,
            matcher: AclMatch::V4 {
                addr: TARPIT,
                mask: Ipv4Addr::BROADCAST,
            },
        }],
    });
    c.isn_key = [7; 16];
    let mut e = Engine::new(c);
    for i in 0..n {
        let mut f = frames::arp_reply(
            [2, 0, 0, 1, (i >> 8) as u8, i as u8],
            backend_ip(i),
            OUR,
            VIP,
        );
        e.process(Duration::ZERO, &mut f);
    }
    e
}

fn client(i: u32) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(0x0a80_0000 + i * 7),
        30000 + (i % 20000) as u16,
    )
}

fn dsr_frame(i: u32) -> Vec<u8> {
    frames::tcp(
        [2, 0, 0, 2, 0, 1],
        OUR,
        client(i),
        SocketAddrV4::new(VIP, 80),
        ACK | PSH,
        i,
        1,
        &[],
        &[0u8; 64],
    )
}

fn mix_frames() -> Vec<Vec<u8>> {
    (0..CLIENTS)
        .map(|i| match i % 10 {
            0 => frames::arp_request([2, 0, 0, 2, 0, 1], *client(i).ip(), VIP),
            1 => frames::tcp(
                [2, 0, 0, 2, 0, 1],
                OUR,
                client(i),
                SocketAddrV4::new(TARPIT, 80),
                SYN,
                i,
                0,
                &frames::syn_options(20),
                b"",
            ),
            _ => dsr_frame(i),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("dsr_forward");
    g.throughput(Throughput::Elements(u64::from(CLIENTS)));
    for n in [2usize, 10, 100] {
        let mut e = engine(n);
        let mut bufs: Vec<Vec<u8>> = (0..CLIENTS).map(dsr_frame).collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                for f in bufs.iter_mut() {
                    f[..6].copy_from_slice(&OUR);
                    black_box(e.process(Duration::from_secs(1), f));
                }
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("dsr_forward_v6");
    g.throughput(Throughput::Elements(u64::from(CLIENTS)));
    let vip6 = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100);
    let mut c6 = EngineConfig::new(OUR, vip6, 80);
    c6.backends = (0..10u16)
        .map(|i| BackendConfig {
            ip: Some(std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, i).into()),
            weight: 0,
            available: true,
        })
        .collect();
    let mut e6 = Engine::new(c6);
    for i in 0..10u16 {
        let ip = std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 1, i);
        let mac = [2, 0, 0, 1, 0, i as u8];
        e6.process(
            Duration::ZERO,
            &mut frames::nd(mac, OUR, ip, ip, true, ip, Some(mac)),
        );
    }
    let mut bufs6: Vec<Vec<u8>> = (0..CLIENTS)
        .map(|i| {
            frames::tcp6(
                [2, 0, 0, 2, 0, 1],
                OUR,
                std::net::SocketAddrV6::new(
                    std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 2, (i >> 16) as u16, i as u16),
                    40000,
                    0,
                    0,
                ),
                std::net::SocketAddrV6::new(vip6, 80, 0, 0),
                ACK | PSH,
                i,
                1,
                &[],
                &[0u8; 64],
            )
        })
        .collect();
    g.bench_function("10", |b| {
        b.iter(|| {
            for f in bufs6.iter_mut() {
                f[..6].copy_from_slice(&OUR);
                black_box(e6.process(Duration::from_secs(1), f));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("mix");
    g.throughput(Throughput::Elements(u64::from(CLIENTS)));
    let pristine = mix_frames();
    let mut bufs = pristine.clone();
    let mut e = engine(10);
    g.bench_function("dsr80_arp10_tarpit10", |b| {
        b.iter(|| {
            for (f, p) in bufs.iter_mut().zip(&pristine) {
                f.copy_from_slice(p);
                black_box(e.process(Duration::from_secs(1), f));
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("maglev_build");
    for n in [2usize, 10, 100] {
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                backend: i,
                ip: backend_ip(i).into(),
                weight: 1,
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &members, |b, m| {
            b.iter(|| black_box(Maglev::build(m)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("drive_mem");
    g.throughput(Throughput::Elements(u64::from(CLIENTS)));
    let dsr: Vec<Vec<u8>> = (0..CLIENTS).map(dsr_frame).collect();
    let mut e = engine(10);
    g.bench_function("10", |b| {
        b.iter(|| {
            let mut io = MemIo::new();
            io.batch_max = 64;
            for f in &dsr {
                io.push(Duration::from_secs(1), f.clone());
            }
            let r = drive_to_end(&mut e, &mut io);
            black_box((r.is_ok(), io.sent.len()))
        })
    });
    g.finish();

    let mut g = c.benchmark_group("pcap_replay");
    let frames: Vec<(Duration, Vec<u8>)> = (0..10_000u32)
        .map(|i| {
            let f = &pristine[(i % CLIENTS) as usize];
            (Duration::from_micros(u64::from(i)), f.clone())
        })
        .collect();
    let mut pcap = Vec::new();
    write_frames(&mut pcap, &frames).unwrap_or_default();
    g.throughput(Throughput::Elements(frames.len() as u64));
    let fresh = engine(10);
    g.bench_function("10k_mixed_frames", |b| {
        b.iter(|| {
            let mut e = fresh.clone();
            let mut out = Vec::with_capacity(pcap.len() + 4096);
            let s = replay(&mut e, &pcap[..], &mut out, &mut std::io::sink());
            black_box((s.is_ok(), out.len()))
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);
