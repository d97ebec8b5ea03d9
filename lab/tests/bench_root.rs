//! Root-only test of the bench's balancer-host setting in real network namespaces: the
//! balancers' ports are reserved (`net.ipv4.ip_local_reserved_ports`), so the host's outgoing
//! connections never leave a TIME_WAIT socket on one of them that would keep the next
//! balancer instance from binding it (C Pen: "can't bind local address"; it failed the idle
//! memory measurement in every repetition of a memory-only run without the reservation).
//! FAILS (never skips) when not root.

mod common;
use common::require_root;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::Duration;

use pen_lab::bench::balancer_reserved_ports;
use pen_lab::netns::in_netns;
use pen_lab::topology::{NodeKind, Topology, unique_prefix_with};
use socket2::{Domain, Socket, Type};

/// In a fresh namespace whose ephemeral range is 8990-9010 (around the memory instances'
/// ports 9001-9003), with `reserved` as its reserved ports: opens connections until the range
/// is used up, closes them from the client side (TIME_WAIT there), then tries to bind a
/// SO_REUSEADDR listener on 9001, 9002 and 9003, as a balancer does. Returns the source
/// ports used and the ports that could not be bound.
fn connect_close_then_bind(reserved: Option<String>) -> (Vec<u16>, Vec<u16>) {
    let mut topo = Topology::new(&unique_prefix_with("penlabbench")).unwrap();
    topo.add_node("lb", NodeKind::Host).unwrap();
    topo.sysctl("lb", "net.ipv4.ip_local_port_range", "8990 9010")
        .unwrap();
    if let Some(r) = &reserved {
        topo.sysctl("lb", "net.ipv4.ip_local_reserved_ports", r)
            .unwrap();
    }
    let ns = topo.ns_name("lb");
    in_netns(&ns, || {
        let lst = TcpListener::bind((Ipv4Addr::LOCALHOST, 80)).unwrap();
        let mut pairs = Vec::new();
        for _ in 0..40 {
            let Ok(c) = TcpStream::connect((Ipv4Addr::LOCALHOST, 80)) else {
                break; // EADDRNOTAVAIL: the range is used up
            };
            let (s, _) = lst.accept().unwrap();
            pairs.push((c, s));
        }
        let used: Vec<u16> = pairs
            .iter()
            .map(|(c, _)| c.local_addr().unwrap().port())
            .collect();
        // The client side closes first: its sockets go to TIME_WAIT on the source ports.
        for (c, s) in pairs {
            drop(c);
            std::thread::sleep(Duration::from_millis(5));
            drop(s);
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut busy = Vec::new();
        for port in [9001, 9002, 9003] {
            let sk = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
            sk.set_reuse_address(true).unwrap();
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
            if sk.bind(&addr.into()).and_then(|()| sk.listen(16)).is_err() {
                busy.push(port);
            }
        }
        (used, busy)
    })
    .unwrap()
}

#[test]
fn balancer_ports_stay_bindable_after_the_balancer_hosts_connections_close() {
    require_root("network namespaces for the balancer host");
    let balancer_ports = [9001, 9002, 9003];
    // Control: without the reservation the connections take balancer ports too, and their
    // TIME_WAIT sockets keep a SO_REUSEADDR listener off exactly those ports.
    let (used, busy) = connect_close_then_bind(None);
    let mut taken: Vec<u16> = used
        .iter()
        .copied()
        .filter(|p| balancer_ports.contains(p))
        .collect();
    taken.sort_unstable();
    assert!(
        !taken.is_empty(),
        "the control used no balancer port: {used:?}"
    );
    assert_eq!(busy, taken, "the control did not reproduce the conflict");
    // The bench's setting: the connections never use a balancer port; every one binds.
    let (used, busy) = connect_close_then_bind(Some(balancer_reserved_ports()));
    assert!(used.len() >= 10, "source ports with reservation: {used:?}");
    assert!(
        !used.iter().any(|p| balancer_ports.contains(p)),
        "a reserved port was used as a source port: {used:?}"
    );
    assert!(busy.is_empty(), "balancer ports still taken: {busy:?}");
}
