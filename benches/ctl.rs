//! Parse speed of penctl command lines, pen command lines and config files.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pen::config::Config;
use pen::ctl::{apply, command};

const LINES: &[&str] = &[
    "server 2 acl 1 address 10.0.0.3 port 8080 max 10 hard 20 weight 3 prio 1",
    "acl 1 permit 192.168.0.0 255.255.0.0",
    "acl 2 deny 2001:db8::/32",
    "timeout 5",
    "no roundrobin",
    "tcp_fastclose both",
    "servers",
    "# a comment line",
    "blacklist 30 # trailing comment",
    "listen [::1]:8080",
];

fn config_text() -> String {
    let mut t = String::new();
    for i in 0..100 {
        t.push_str(&format!(
            "server {i} address 10.0.{}.{} port 80 max 100 weight 1\n",
            i / 250,
            i % 250 + 1
        ));
    }
    t.push_str("acl 1 permit 10.0.0.0 255.0.0.0\nroundrobin\ntimeout 4\nblacklist 10\n");
    t
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ctl");
    g.throughput(Throughput::Elements(LINES.len() as u64));
    g.bench_function("parse_lines", |b| {
        b.iter(|| {
            for l in LINES {
                let _ = black_box(command::parse(black_box(l)));
            }
        })
    });
    let cmds: Vec<command::Command> = LINES
        .iter()
        .filter_map(|l| command::parse(l).ok().flatten())
        .collect();
    g.bench_function("display_lines", |b| {
        b.iter(|| {
            for c in &cmds {
                black_box(c.to_string());
            }
        })
    });
    g.finish();

    let text = config_text();
    let mut g = c.benchmark_group("config_file");
    g.throughput(Throughput::Elements(text.lines().count() as u64));
    g.bench_function("apply_text_104_lines", |b| {
        b.iter(|| {
            let mut cfg = Config::default();
            black_box(apply::apply_text(&mut cfg, black_box(&text), "bench"));
            cfg
        })
    });
    let mut cfg = Config::default();
    let _ = apply::apply_text(&mut cfg, &text, "bench");
    g.bench_function("write_config_100_servers", |b| {
        b.iter(|| black_box(apply::write_config(black_box(&cfg))))
    });
    g.finish();

    let argv: Vec<String> = [
        "-df",
        "-x",
        "1000",
        "-O",
        "dsr_if eth1",
        "-O",
        "acl 1 permit 192.168.2.11",
        "-r",
        "192.168.2.10:80",
        "192.168.2.2",
        "192.168.2.3:8080:10:20:1:1",
        "[::1]:80",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    c.bench_function("cli/parse_argv", |b| {
        b.iter(|| black_box(pen::cli::parse(black_box(argv.clone()))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
