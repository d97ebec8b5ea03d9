//! The Debian `pen` package's `penctl` (C Pen 0.34.1's client) against our `pen`. The test
//! command's setup installs the package (`scripts/install-deps.sh`); without it this test fails
//! with the reason instead of passing silently.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Listen, Pen, get, unix_listening, wait_until};

const DEBIAN_PENCTL: &str = "/usr/bin/penctl";

fn debian_penctl(target: &str, words: &[&str]) -> (bool, String) {
    assert!(
        Path::new(DEBIAN_PENCTL).exists(),
        "{DEBIAN_PENCTL} is missing: install the Debian package `pen` (apt-get install pen; scripts/install-deps.sh does)"
    );
    let out = Command::new(DEBIAN_PENCTL)
        .arg(target)
        .args(words)
        .output()
        .expect("run the Debian penctl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn debian_penctl_talks_to_our_pen_over_tcp() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let pen = Pen::start(
        &[
            "-u",
            "root",
            "-C",
            "0",
            "-r",
            "127.0.0.1:0",
            &a.spec,
            &b.spec,
        ],
        Listen::Reported,
    );
    let c = pen.control_addr().to_string();
    let (ok, out) = debian_penctl(&c, &["servers"]);
    assert!(ok);
    assert!(
        out.starts_with(&format!(
            "0 addr 127.0.0.1 port {} conn 0 max 0",
            a.spec.rsplit(':').next().unwrap()
        )),
        "{out}"
    );
    assert_eq!(
        debian_penctl(&c, &["mode"]).1,
        "no hash roundrobin no stubborn no weight no prio\n"
    );
    assert_eq!(debian_penctl(&c, &["blacklist", "5"]).1, "5\n");
    assert_eq!(debian_penctl(&c, &["server", "0", "blacklist", "60"]).1, "");
    for _ in 0..4 {
        let at = pen.addr();
        assert_eq!(get(None, at).unwrap(), "b");
    }
    assert_eq!(debian_penctl(&c, &["pid"]).1, format!("{}\n", pen.pid()));
}

#[test]
fn debian_penctl_talks_to_our_pen_over_a_unix_socket() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl");
    let s = sock.display().to_string();
    let _pen = Pen::start(
        &["-u", "root", "-C", &s, "127.0.0.1:0", &a.spec],
        Listen::Reported,
    );
    assert!(wait_until(|| unix_listening(&sock)));
    let (ok, out) = debian_penctl(&s, &["timeout", "7"]);
    assert!(ok);
    assert_eq!(out, "7\n");
    assert_eq!(debian_penctl(&s, &["frobnicate"]).1.lines().count(), 1);
}
