//! The Debian `pen` package's `penctl` (C Pen 0.34.1's client) against our `pen`. The test
//! command's setup installs the package (`scripts/install-deps.sh`); without it this test fails
//! with the reason instead of passing silently.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Backend, Listen, Pen, free_port, get, tcp_listening, unix_listening, wait_until};

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
    let (lport, cport) = (free_port(), free_port());
    let (c, l) = (format!("127.0.0.1:{cport}"), format!("127.0.0.1:{lport}"));
    let _pen = Pen::start(
        &["-u", "root", "-C", &c, "-r", &l, &a.spec, &b.spec],
        Listen::Tcp(lport),
    );
    assert!(wait_until(|| tcp_listening(cport)));
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
        let at: std::net::SocketAddr = l.parse().unwrap();
        assert_eq!(get(None, at).unwrap(), "b");
    }
    assert_eq!(debian_penctl(&c, &["pid"]).1, format!("{}\n", _pen.pid()));
}

#[test]
fn debian_penctl_talks_to_our_pen_over_a_unix_socket() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("ctl");
    let s = sock.display().to_string();
    let lport = free_port();
    let l = format!("127.0.0.1:{lport}");
    let _pen = Pen::start(&["-u", "root", "-C", &s, &l, &a.spec], Listen::Tcp(lport));
    assert!(wait_until(|| unix_listening(&sock)));
    let (ok, out) = debian_penctl(&s, &["timeout", "7"]);
    assert!(ok);
    assert_eq!(out, "7\n");
    assert_eq!(debian_penctl(&s, &["frobnicate"]).1.lines().count(), 1);
}
