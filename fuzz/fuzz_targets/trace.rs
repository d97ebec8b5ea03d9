//! Fuzz the trace reader (pcap/pcapng → flows): `cargo +nightly fuzz run trace`. Any bytes must
//! give a trace or an error naming the file, never a panic; a trace's flows must be
//! consistent with its frames. Half the inputs go through the frame-filter path
//! (`Trace::parse_filtered`, with a filter decided by the input's last byte).
//! Without cargo-fuzz: `cargo check --manifest-path fuzz/Cargo.toml` builds it, and
//! `damaged_captures_never_panic` / `damaged_pcapng_and_sll2_captures_never_panic`
//! (src/sim/trace/tests.rs) feed the same entry points thousands of damaged captures.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pen::sim::trace::{ParseOptions, Trace};

fuzz_target!(|data: &[u8]| {
    let opts = ParseOptions::default();
    let res = match data.last() {
        Some(&k) if k & 1 == 1 => {
            Trace::parse_filtered("fuzz.pcap", data, &opts, &mut |link, f| {
                (link as usize + f.len()) % usize::from(k | 2) != 0
            })
        }
        _ => Trace::parse("fuzz.pcap", data, &opts),
    };
    match res {
        Ok(t) => {
            let datagrams: usize = t
                .udp
                .iter()
                .map(|f| f.queries.len() + f.replies.len())
                .sum();
            assert!(datagrams as u64 <= t.frames);
            assert!(t.tcp.len() as u64 <= t.frames);
            for s in &t.tcp {
                assert!(s.client_chunks.windows(2).all(|w| w[0].end < w[1].end));
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.pcap")),
    }
});
