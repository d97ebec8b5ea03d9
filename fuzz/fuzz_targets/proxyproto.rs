//! Fuzz the PROXY protocol parser (`accept_proxy`) with arbitrary stream starts:
//! `cargo +nightly fuzz run proxyproto`. The first byte picks the accepted versions. It must
//! never panic, a header never claims more bytes than it was given or more than the bound, an
//! incomplete answer stays below the bound, and every prefix of an accepted header is
//! incomplete (the parser never decides early on what it has not seen).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pen::proxyproto::{Accept, Parsed, V2_MAX, parse};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let accept = match sel % 3 {
        0 => Accept::V1,
        1 => Accept::V2,
        _ => Accept::Any,
    };
    match parse(rest, accept) {
        Parsed::Header(h) => {
            assert!(h.len <= rest.len() && h.len <= V2_MAX);
            for n in 0..h.len {
                assert_eq!(parse(&rest[..n], accept), Parsed::Incomplete, "prefix {n}");
            }
            assert_eq!(parse(&rest[..h.len], accept), Parsed::Header(h));
        }
        Parsed::Incomplete => assert!(rest.len() < V2_MAX),
        Parsed::Error(_) => {}
    }
});
