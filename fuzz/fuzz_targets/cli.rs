//! Fuzz pen's command line parser (`pen::cli::parse`) with arbitrary argument lists (the input
//! split at NUL bytes): `cargo +nightly fuzz run cli`. It must never panic: a bad command
//! line is an error naming what is wrong.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The arguments after the program name, as `pen` passes them.
    let args: Vec<String> = data
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let _ = pen::cli::parse(args);
});
