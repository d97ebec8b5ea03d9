//! Fuzz `Engine::process` with arbitrary frames: `cargo +nightly fuzz run engine` (from the
//! repository root, with cargo-fuzz installed). The first input byte picks a configuration
//! (TCP/UDP, port 0 or 80, `-r`, tarpit on/off with persist, capture and rate cap, learned MACs
//! or not, checksum offload); the rest is split into frames at 0xfe bytes so one input
//! exercises a sequence, and timers advance between frames. The engine must never panic, must give every frame exactly
//! one verdict and must never report a transmit longer than the buffer.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use pen::acl::Acl;
use pen::engine::{BackendConfig, Engine, EngineConfig, RxMeta, frames};

const OUR: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mut c = EngineConfig::new(
        OUR,
        Ipv4Addr::new(10, 0, 0, 100),
        if sel & 1 != 0 { 0 } else { 80 },
    );
    c.udp = sel & 2 != 0;
    c.per_flow = sel & 4 != 0;
    c.tarpit = (sel & 8 != 0).then(Acl::default);
    // with the tarpit on, its additions too: persist mode, capture of 10.0.0.0/24, a rate cap
    if sel & 8 != 0 {
        c.tarpit_persist = sel & 1 != 0;
        c.tarpit_capture = (sel & 2 == 0).then_some(pen::engine::capture::CaptureConfig {
            net: Ipv4Addr::new(10, 0, 0, 0).into(),
            prefix: 24,
            wait_secs: 1,
            max: 4,
        });
        c.tarpit_rate = (sel & 4 != 0).then_some(pen::engine::ratecap::RateConfig {
            rate: 3,
            burst: 2,
            net_rate: 1,
            net_burst: 1,
        });
    }
    c.hold_max = 4;
    c.backends = (0..3)
        .map(|i| BackendConfig {
            ip: Some(Ipv4Addr::new(10, 0, 0, 3 + i).into()),
            weight: u32::from(i),
            available: sel & (16 << i) != 0 || i == 0,
        })
        .collect();
    let mut e = Engine::new(c);
    if sel & 128 != 0 {
        for i in 0..3u8 {
            let mut f = frames::arp_reply(
                [2, 0, 0, 0, 1, i],
                Ipv4Addr::new(10, 0, 0, 3 + i),
                OUR,
                Ipv4Addr::UNSPECIFIED,
            );
            e.process(Duration::ZERO, &mut f);
        }
    }
    let before = e.counters().rx;
    let mut now = Duration::ZERO;
    let mut n = 0u64;
    for (i, chunk) in rest.split(|&b| b == 0xfe).enumerate() {
        now += Duration::from_millis(700);
        while e.poll_transmit(now).is_some() {}
        let mut buf = chunk.to_vec();
        let v = e.process_meta(
            now,
            &mut buf,
            RxMeta {
                csum_partial: i % 5 == 4,
            },
        );
        n += 1;
        if let Some(len) = v.transmit_len() {
            assert!(len <= buf.len());
        }
    }
    assert_eq!(e.counters().rx, before + n);
});
