//! The simulation on small hand-made traces: the answers are the balancer's and the flow
//! table's, checked here against what pen does (see select::tests for the rules).

use super::*;
use crate::sim::mapping::{AddressMap, default_pools};
use crate::sim::report;
use crate::sim::trace::{Chunk, Datagram, TcpSession, UdpFlow};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn udp(client: &str, times: &[f64]) -> UdpFlow {
    UdpFlow {
        client: client.parse().unwrap(),
        server: "192.0.2.53:53".parse().unwrap(),
        first_frame: 0,
        queries: times
            .iter()
            .map(|&t| Datagram {
                at: secs(t),
                frame: 0,
                len: 30,
                payload: vec![0; 30],
            })
            .collect(),
        replies: vec![],
    }
}

fn tcp(client: &str, open: f64, close: f64) -> TcpSession {
    TcpSession {
        client: client.parse().unwrap(),
        server: "192.0.2.80:80".parse().unwrap(),
        first_frame: 0,
        start_missing: false,
        opened: secs(open),
        established: Some(secs(open)),
        client_data: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        client_chunks: vec![Chunk {
            at: secs(open),
            end: 18,
        }],
        server_bytes: 100,
        client_fin: Some(secs(close)),
        server_fin: Some(secs(close)),
        reset: None,
        last: secs(close),
        retransmitted_bytes: 0,
        out_of_order: 0,
        lost_bytes: 0,
        clipped: false,
        truncated_frames: 0,
    }
}

fn trace(udp: Vec<UdpFlow>, tcp: Vec<TcpSession>) -> Trace {
    let mut t = Trace {
        file: "t.pcap".into(),
        udp,
        tcp,
        ..Trace::default()
    };
    for (i, f) in t.udp.iter_mut().enumerate() {
        f.first_frame = i as u64 + 1;
    }
    for (i, s) in t.tcp.iter_mut().enumerate() {
        s.first_frame = i as u64 + 1;
    }
    t
}

fn run(t: &Trace, args: &str, events: &[&str]) -> SimReport {
    let (v4, v6) = default_pools();
    let map = AddressMap::build(t, v4, v6, "10.0.0.100:53".parse().unwrap()).unwrap();
    let opts = SimOptions {
        pen_args: args.split_whitespace().map(String::from).collect(),
        events: events.iter().map(|e| Event::parse(e).unwrap()).collect(),
        sample: Duration::from_secs(1),
    };
    simulate(t, &map, &opts).unwrap()
}

fn backend(r: &SimReport, i: usize) -> Option<usize> {
    match r.flows[i].backend {
        Some(Target::Server(n)) => Some(n),
        _ => None,
    }
}

#[test]
fn udp_flows_move_off_a_server_that_goes_down_losing_one_datagram() {
    let t = trace(
        vec![
            udp("198.51.100.1:1000", &[0.0, 2.0, 6.0, 7.0]),
            udp("198.51.100.2:1000", &[0.5, 6.5]),
        ],
        vec![],
    );
    let r = run(
        &t,
        "-U 53 10.0.0.3:53 10.0.0.4:53",
        &["at 5s server 1 down"],
    );
    assert_eq!(r.proto, Proto::Udp);
    // Round robin starts after slot 0: the first client goes to server 1, the next to 0.
    assert_eq!(backend(&r, 0), Some(1));
    assert_eq!(backend(&r, 1), Some(0));
    // At 6 s the datagram to the stopped server is lost (port unreachable), at 7 s it moves.
    assert_eq!(r.flows[0].lost, 1);
    let s = |n| Some(Target::Server(n));
    assert_eq!(r.flows[0].answers, vec![s(1), s(1), None, s(0)]);
    assert_eq!(r.flows[0].moves, vec![(secs(7.0), Target::Server(0))]);
    assert_eq!(r.flows[1].lost, 0);
    assert!(r.flows[1].moves.is_empty());
    assert_eq!(r.lost, 1);
    assert!(
        r.server_events
            .iter()
            .any(|(at, e)| *at == secs(6.0) && e.starts_with("server 1 down")),
        "{:?}",
        r.server_events
    );
    assert_eq!(r.clients_moved, 1);
}

#[test]
fn tcp_clients_stick_to_their_server_and_fail_over_when_it_is_down() {
    let t = trace(
        vec![],
        vec![
            tcp("198.51.100.1:40000", 0.0, 1.0),
            tcp("198.51.100.2:40000", 0.1, 1.0),
            tcp("198.51.100.1:40001", 2.0, 3.0),
            tcp("198.51.100.2:40001", 2.1, 3.0),
            tcp("198.51.100.1:40002", 6.0, 7.0),
        ],
    );
    let r = run(&t, "80 10.0.0.3:80 10.0.0.4:80", &["at 5s server 1 down"]);
    assert_eq!(
        (0..4).map(|i| backend(&r, i)).collect::<Vec<_>>(),
        vec![Some(1), Some(0), Some(1), Some(0)],
        "each client keeps its server"
    );
    // Client 1's server is down: the connect fails, it is blacklisted, and 0 takes over.
    assert_eq!(backend(&r, 4), Some(0));
    assert_eq!(r.flows[4].failovers, 1);
    assert_eq!(r.failovers, 1);
    assert_eq!(r.clients_moved, 1);
    assert_eq!(r.totals[&Target::Server(1)].new, 2);
    assert_eq!(r.totals[&Target::Server(0)].new, 3);
}

#[test]
fn a_session_open_when_its_server_goes_down_is_cut_and_stubborn_refuses() {
    let t = trace(
        vec![],
        vec![
            tcp("198.51.100.1:40000", 0.0, 10.0),
            tcp("198.51.100.1:40001", 6.0, 7.0),
        ],
    );
    let r = run(
        &t,
        "-s 80 10.0.0.3:80 10.0.0.4:80",
        &["at 5s server 1 down"],
    );
    assert_eq!(backend(&r, 0), Some(1));
    assert_eq!(r.flows[0].cut, Some(secs(5.0)));
    assert!(r.flows[1].refused, "stubborn: no failover");
    assert_eq!(r.refused, 1);
}

#[test]
fn penctl_events_run_through_the_control_language() {
    let t = trace(
        vec![],
        (0..6)
            .map(|i| tcp(&format!("198.51.100.{i}:40000"), f64::from(i), 100.0))
            .collect(),
    );
    // Tracking off (-r); server 1 blacklisted for a minute at 2.5 s: later clients go to 0.
    let r = run(
        &t,
        "-r 80 10.0.0.3:80 10.0.0.4:80",
        &[
            "at 2.5s penctl \"server 1 blacklist 60\"",
            "at 2.6s bogus_command",
        ],
    );
    let got: Vec<_> = (0..6).map(|i| backend(&r, i)).collect();
    assert_eq!(
        got,
        vec![Some(1), Some(0), Some(1), Some(0), Some(0), Some(0)]
    );
    assert!(
        r.penctl_replies
            .iter()
            .any(|(_, m)| m.starts_with("bogus_command: do_cmd: ignoring")),
        "{:?}",
        r.penctl_replies
    );
}

#[test]
fn conn_max_refuses_sessions_beyond_it() {
    let t = trace(
        vec![],
        (0..3)
            .map(|i| tcp(&format!("198.51.100.{i}:40000"), f64::from(i), 100.0))
            .collect(),
    );
    let r = run(&t, "-x 2 80 10.0.0.3:80 10.0.0.4:80", &[]);
    assert!(!r.flows[1].refused);
    assert!(r.flows[2].refused);
}

#[test]
fn sessions_without_their_start_and_other_protocols_are_left_out_and_counted() {
    let mut s = tcp("198.51.100.1:40000", 0.0, 1.0);
    s.start_missing = true;
    let t = trace(vec![udp("198.51.100.1:1000", &[0.0])], vec![s]);
    let r = run(&t, "80 10.0.0.3:80", &[]);
    assert_eq!(r.flows.len(), 0);
    assert_eq!((r.start_missing, r.other_protocol), (1, 1));
}

#[test]
fn the_same_input_gives_the_same_report_byte_for_byte() {
    let t = trace(
        (0..50)
            .map(|i| {
                udp(
                    &format!("198.51.100.{}:{}", i % 17, 1000 + i),
                    &[f64::from(i) * 0.1, 3.0 + f64::from(i) * 0.05],
                )
            })
            .collect(),
        vec![],
    );
    let ev = ["at 2s server 2 down", "at 4s server 2 up"];
    let args = "-U -r 53 10.0.0.3:53 10.0.0.4:53 10.0.0.5:53";
    let a = run(&t, args, &ev);
    let b = run(&t, args, &ev);
    assert_eq!(report::json(&a, None), report::json(&b, None));
    assert_eq!(report::markdown(&a), report::markdown(&b));
    assert_eq!(report::svg(&a), report::svg(&b));
    assert!(report::svg(&a).starts_with("<svg"));
    assert!(report::markdown(&a).contains("| 2 |"));
}

#[test]
fn events_parse_and_bad_ones_say_what_is_accepted() {
    assert_eq!(
        Event::parse("at 5s server 1 down").unwrap(),
        Event {
            at: secs(5.0),
            action: Action::Down(1)
        }
    );
    assert_eq!(
        Event::parse("at 250ms penctl \"server 0 weight 3\"").unwrap(),
        Event {
            at: Duration::from_millis(250),
            action: Action::Penctl("server 0 weight 3".into())
        }
    );
    assert_eq!(
        Event::parse("at 12s client_acl 1").unwrap().action,
        Action::Penctl("client_acl 1".into())
    );
    let e = Event::parse("5s server 1 down").unwrap_err();
    assert!(e.contains("expected `at TIME server N down|up`"), "{e}");
    assert!(
        Event::parse("at 5 server 1 down")
            .unwrap_err()
            .contains("bad time \"5\"")
    );
    // A server that does not exist is named.
    let t = trace(vec![], vec![tcp("198.51.100.1:1", 0.0, 1.0)]);
    let (v4, v6) = default_pools();
    let map = AddressMap::build(&t, v4, v6, "10.0.0.1:80".parse().unwrap()).unwrap();
    let opts = SimOptions {
        pen_args: vec!["80".into(), "10.0.0.3:80".into()],
        events: vec![Event::parse("at 1s server 4 down").unwrap()],
        sample: Duration::from_secs(1),
    };
    let e = simulate(&t, &map, &opts).unwrap_err();
    assert!(e.contains("no server 4; pen has servers 0-0"), "{e}");
    let opts = SimOptions {
        pen_args: vec!["80".into(), "web:80".into()],
        events: vec![],
        sample: Duration::from_secs(1),
    };
    assert!(simulate(&t, &map, &opts).unwrap_err().contains("\"web\""));
}
