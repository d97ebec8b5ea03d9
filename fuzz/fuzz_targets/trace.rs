//! Fuzz the trace reader (pcap/pcapng → flows): `cargo +nightly fuzz run trace`. Any bytes must
//! give a trace or an error naming the file, never a panic; a trace's flows must be
//! consistent with its frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pen::sim::trace::{ParseOptions, Trace};

fuzz_target!(|data: &[u8]| {
    match Trace::parse("fuzz.pcap", data, &ParseOptions::default()) {
        Ok(t) => {
            let datagrams: usize = t.udp.iter().map(|f| f.queries.len() + f.replies.len()).sum();
            assert!(datagrams as u64 <= t.frames);
            assert!(t.tcp.len() as u64 <= t.frames);
            for s in &t.tcp {
                assert!(s.client_chunks.windows(2).all(|w| w[0].end < w[1].end));
            }
        }
        Err(e) => assert!(e.to_string().starts_with("fuzz.pcap")),
    }
});
