//! Fuzz the X-Forwarded-For rewriter (`pen -H`) with arbitrary client bytes fed in arbitrary
//! chunks: `cargo +nightly fuzz run xff`. The first byte picks the protocol and a small head
//! limit or the default; the rest is split into chunks at 0xff bytes. It must never panic and
//! never drop data: while no head was rewritten the output is the input unchanged, and
//! otherwise it is no shorter than the input unless the client sent X-Forwarded-Proto fields
//! (which pen replaces with its own).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pen::proxy::http::{Proto, Rewriter};

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let proto = if sel & 1 == 0 {
        Proto::Http
    } else {
        Proto::Https
    };
    let mut rw = if sel & 2 == 0 {
        Rewriter::new("192.0.2.7", proto)
    } else {
        Rewriter::with_limit("192.0.2.7", proto, 64)
    };
    let mut out = Vec::new();
    let mut fed = 0usize;
    for chunk in rest.split(|&b| b == 0xff) {
        rw.feed(chunk, &mut out);
        fed += chunk.len();
    }
    rw.finish(&mut out);
    assert_eq!(rw.buffered(), 0, "finish hands over everything held back");
    let input: Vec<u8> = rest.iter().copied().filter(|&b| b != 0xff).collect();
    if rw.rewritten() == 0 {
        assert_eq!(out, input, "nothing rewritten, so nothing changed");
    }
    let proto_field = input
        .windows(17)
        .any(|w| w.eq_ignore_ascii_case(b"x-forwarded-proto"));
    if !proto_field {
        assert!(out.len() >= fed, "{} bytes out for {fed} in", out.len());
    }
});
