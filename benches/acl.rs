//! ACL matching speed: one client address checked against lists of 1 to 1000 entries (IPv4
//! masks, IPv6 prefixes, mixed), for the worst case (no entry matches, the whole list is
//! walked) and an early match, plus IPv4-mapped IPv6 clients (canonicalised first).

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pen::acl::{Acl, AclEntry, AclMatch};

fn v4_entry(i: u32) -> AclEntry {
    AclEntry {
        permit: i.is_multiple_of(2),
        matcher: AclMatch::V4 {
            addr: Ipv4Addr::from(0x0a00_0000 | (i << 8)),
            mask: Ipv4Addr::new(255, 255, 255, 0),
        },
    }
}

fn v6_entry(i: u32) -> AclEntry {
    AclEntry {
        permit: !i.is_multiple_of(2),
        matcher: AclMatch::V6 {
            addr: Ipv6Addr::new(0x2001, 0xdb8, (i >> 16) as u16, i as u16, 0, 0, 0, 0),
            prefix: 64,
        },
    }
}

fn list(n: u32, mixed: bool) -> Acl {
    Acl {
        entries: (0..n)
            .map(|i| {
                if mixed && !i.is_multiple_of(2) {
                    v6_entry(i)
                } else {
                    v4_entry(i)
                }
            })
            .collect(),
    }
}

fn bench(c: &mut Criterion) {
    let miss_v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1));
    let hit_first = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7));
    let mapped_miss = IpAddr::V6(Ipv4Addr::new(192, 168, 1, 1).to_ipv6_mapped());
    let miss_v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb9, 0, 0, 0, 0, 0, 1));

    let mut g = c.benchmark_group("acl");
    for n in [1u32, 10, 100, 1000] {
        let v4 = list(n, false);
        let mixed = list(n, true);
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::new("v4_no_match", n), &v4, |b, acl| {
            b.iter(|| acl.permits(black_box(Some(miss_v4))))
        });
        g.bench_with_input(BenchmarkId::new("mapped_v6_no_match", n), &v4, |b, acl| {
            b.iter(|| acl.permits(black_box(Some(mapped_miss))))
        });
        g.bench_with_input(
            BenchmarkId::new("mixed_v6_no_match", n),
            &mixed,
            |b, acl| b.iter(|| acl.permits(black_box(Some(miss_v6)))),
        );
        g.throughput(Throughput::Elements(1));
        g.bench_with_input(BenchmarkId::new("v4_first_entry", n), &v4, |b, acl| {
            b.iter(|| acl.permits(black_box(Some(hit_first))))
        });
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(300))
        .measurement_time(std::time::Duration::from_secs(1))
        .sample_size(20)
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench
}
criterion_main!(benches);
