//! The committed traces and `pen-sim balance` over them (no root, no network).

use std::process::Command;

use pen::sim::synth::{Kind, generate};

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn committed_traces_are_what_the_generator_makes() {
    for (file, kind, clients, seed) in [
        ("dns.pcap", Kind::Dns, 300, 1),
        ("http.pcap", Kind::Http, 200, 2),
        ("mix.pcap", Kind::Mix, 200, 3),
    ] {
        let committed = std::fs::read(root().join("captures/traces").join(file)).unwrap();
        assert!(
            committed == generate(kind, clients, 20.0, seed),
            "captures/traces/{file} is stale: run scripts/make-traces.sh"
        );
    }
}

fn pen_sim(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pen-sim"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

#[test]
fn pen_sim_balance_writes_the_same_report_twice_and_moves_flows_off_a_stopped_server() {
    let dir = tempfile::tempdir().unwrap();
    let outs: Vec<String> = ["a", "b"]
        .iter()
        .map(|d| {
            let out = dir.path().join(d);
            let o = pen_sim(&[
                "balance",
                "--pen",
                "-U 53 10.0.0.3:53 10.0.0.4:53",
                "--server",
                "udp:53",
                "--event",
                "at 10s server 1 down",
                "--out",
                out.to_str().unwrap(),
                "captures/traces/dns.pcap",
            ]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            std::fs::read_to_string(out.join("report.json")).unwrap()
        })
        .collect();
    assert_eq!(outs[0], outs[1], "byte for byte");
    let r = &outs[0];
    assert!(
        r.contains("\"mapping\": {\"listen\": \"0.0.0.0:53\""),
        "{}",
        &r[..400]
    );
    assert!(
        r.contains("server 1 down (blacklisted for"),
        "a server event"
    );
    let md = std::fs::read_to_string(dir.path().join("a/report.md")).unwrap();
    assert!(md.contains("## Flows that moved"), "{md}");
    let svg = std::fs::read_to_string(dir.path().join("a/chart.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("backend 1"));
    let map = std::fs::read_to_string(dir.path().join("a/mapping.txt")).unwrap();
    assert!(map.starts_with("client 198.51.100."), "{map}");
}

#[test]
fn pen_sim_balance_keeps_http_clients_on_one_backend() {
    let o = pen_sim(&[
        "balance",
        "--pen",
        "80 10.0.0.3:80 10.0.0.4:80",
        "captures/traces/http.pcap",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let md = String::from_utf8(o.stdout).unwrap();
    assert!(
        md.contains("200 clients, 0 of them on more than one backend"),
        "{md}"
    );
}

#[test]
fn pen_sim_names_bad_inputs() {
    let o = pen_sim(&["balance", "--pen", "80 10.0.0.3:80", "no/such.pcap"]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("no/such.pcap: cannot read it"), "{e}");
    let o = pen_sim(&[
        "balance",
        "--pen",
        "80 10.0.0.3:80",
        "--event",
        "at soon server 0 down",
        "captures/traces/http.pcap",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("bad time \"soon\""), "{e}");
    let o = pen_sim(&["trace", "Cargo.toml"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("Cargo.toml: not a pcap or pcapng file"), "{e}");
}

/// `--filter`: a BPF expression selects the flows (the mix trace's SYN scan is TCP to many
/// ports; its DNS is UDP), and a bad one names itself and libpcap's message.
#[test]
fn pen_sim_filter_selects_flows_by_bpf() {
    let all = pen_sim(&["trace", "captures/traces/mix.pcap"]);
    assert!(all.status.success());
    let o = pen_sim(&["trace", "--filter", "udp", "captures/traces/mix.pcap"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(" 0 TCP sessions"), "{out}");
    assert!(out.contains("filtered out"), "{out}");
    assert!(!out.contains(" 0 UDP flows"), "{out}");
    let o = pen_sim(&[
        "balance",
        "--pen",
        "-U 53 10.0.0.3:53 10.0.0.4:53",
        "--filter",
        "udp prot 53",
        "captures/traces/mix.pcap",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("filter \"udp prot 53\"") && e.contains("syntax error"),
        "{e}"
    );
}
