//! Fuzz the penctl command parser (`pen::ctl::command::parse`) with arbitrary lines, as a
//! hostile control client would send them: `cargo +nightly fuzz run ctl_command`. It must never
//! panic, and every command it accepts must print (Display) as a line it parses back to the
//! same command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pen::ctl::command::parse;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    if let Ok(Some(cmd)) = parse(&line) {
        let text = cmd.to_string();
        match parse(&text) {
            Ok(Some(back)) => assert_eq!(back, cmd, "{line:?} printed as {text:?}"),
            other => panic!("{line:?} printed as {text:?}, which parses as {other:?}"),
        }
    }
});
