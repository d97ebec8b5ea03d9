//! One test per selection rule, plus a seeded property test over random configurations.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::*;
use crate::acl::{AclEntry, AclMatch};
use crate::config::{BackendAddr, Config, HostSpec, Mode, ServerConfig};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn client(ip: &str) -> Client {
    Client {
        ip: Some(ip.parse().unwrap()),
        port: 40000,
    }
}

fn unix_client(port: u16) -> Client {
    Client { ip: None, port }
}

fn server(port: u16) -> ServerConfig {
    ServerConfig {
        host: Some(HostSpec::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))),
        port,
        ..ServerConfig::default()
    }
}

fn special(port: u16) -> Option<(ServerConfig, BackendAddr)> {
    let cfg = server(port);
    let addr = literal_addr(&cfg).unwrap();
    Some((cfg, addr))
}

/// A balancer with `n` servers on 127.0.0.1:10000+i, after `tweak` edited the config.
fn balancer(n: usize, tweak: impl FnOnce(&mut Config)) -> Balancer {
    let mut cfg = Config {
        servers: (0..n).map(|i| server(10000 + i as u16)).collect(),
        ..Config::default()
    };
    tweak(&mut cfg);
    Balancer::new(&cfg)
}

fn permit_only(list: usize, cfg: &mut Config, addr: &str) {
    cfg.acls.lists[list].entries.push(AclEntry {
        permit: true,
        matcher: AclMatch::V4 {
            addr: addr.parse().unwrap(),
            mask: Ipv4Addr::BROADCAST,
        },
    });
}

fn deny(list: usize, cfg: &mut Config, addr: &str) {
    cfg.acls.lists[list].entries.push(AclEntry {
        permit: false,
        matcher: AclMatch::V4 {
            addr: addr.parse().unwrap(),
            mask: Ipv4Addr::BROADCAST,
        },
    });
}

fn first(b: &mut Balancer, c: &Client, now: Duration) -> Option<Target> {
    b.select(c, now).first().copied()
}

/// Select and connect successfully to the first candidate; returns it.
fn connect(b: &mut Balancer, c: &Client, now: Duration) -> Target {
    let t = first(b, c, now).expect("a candidate");
    b.connect_started(c, t, now);
    b.connect_ok(t, now);
    t
}

fn set_established(b: &mut Balancer, idx: usize, n: u32) {
    // Drive the counter through the public API, as the proxy would.
    let c = client("192.0.2.250");
    for _ in 0..n {
        b.connect_started(&c, Target::Server(idx), secs(0));
        b.connect_ok(Target::Server(idx), secs(0));
    }
}

use Target::{Abuse, Emergency, Server};

// ------------------------------------------------------------------ tracking and client table

#[test]
fn tracking_keeps_client_on_its_server() {
    let mut b = balancer(3, |_| {});
    let a = client("10.0.0.1");
    let first_pick = connect(&mut b, &a, secs(1));
    assert_eq!(
        first_pick,
        Server(1),
        "C Pen's cursor starts at 0, first pick is 1"
    );
    assert_eq!(connect(&mut b, &client("10.0.0.2"), secs(2)), Server(2));
    for t in 3..10 {
        assert_eq!(connect(&mut b, &a, secs(t)), Server(1));
    }
    assert_eq!(b.client(&a).unwrap().connects, 8);
}

#[test]
fn tracked_server_is_initial_choice_even_when_blacklisted() {
    let mut b = balancer(3, |_| {});
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(1));
    // Another client moves the roundrobin cursor to 2: a fresh pick would now be 0, and the
    // failover order after it [0, 2]. Tracking makes a's initial choice its server 1 instead.
    assert_eq!(connect(&mut b, &client("10.0.0.2"), secs(1)), Server(2));
    b.connect_failed(Server(1), secs(2));
    assert!(b.is_blacklisted(1, secs(3)));
    // The blacklisted initial choice is tried and refused; failover continues after it.
    assert_eq!(b.select(&a, secs(3)), vec![Server(2), Server(0)]);
    // An untracked client gets the roundrobin order, which differs.
    assert_eq!(
        b.select(&client("10.0.0.3"), secs(3)),
        vec![Server(0), Server(2)]
    );
}

#[test]
fn tracking_expires_after_tracking_secs() {
    let mut b = balancer(3, |c| c.tracking_secs = 10);
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(0)), Server(1));
    assert_eq!(
        connect(&mut b, &a, secs(10)),
        Server(1),
        "idle 10 s: still tracked"
    );
    assert_eq!(connect(&mut b, &client("10.0.0.2"), secs(11)), Server(2));
    // Idle 11 s > 10: forgotten, so a fresh roundrobin pick and fresh counters.
    assert_eq!(connect(&mut b, &a, secs(21)), Server(0));
    assert_eq!(b.client(&a).unwrap().connects, 1);
}

#[test]
fn tracking_zero_never_expires() {
    let mut b = balancer(3, |_| {});
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(0)), Server(1));
    assert_eq!(connect(&mut b, &a, secs(1_000_000)), Server(1));
}

#[test]
fn lru_client_slot_is_replaced() {
    let mut b = balancer(4, |c| c.clients_max = 2);
    let (a, bb, c) = (client("10.0.0.1"), client("10.0.0.2"), client("10.0.0.3"));
    assert_eq!(connect(&mut b, &a, secs(1)), Server(1));
    assert_eq!(connect(&mut b, &bb, secs(2)), Server(2));
    assert_eq!(connect(&mut b, &bb, secs(3)), Server(2));
    assert_eq!(connect(&mut b, &c, secs(4)), Server(3));
    assert!(b.client(&a).is_none(), "a was least recently used");
    assert!(b.client(&bb).is_some());
    assert_eq!(b.clients().count(), 2);
    // a comes back as a new client: next roundrobin server, not its old server 1.
    assert_eq!(connect(&mut b, &a, secs(5)), Server(0));
}

#[test]
fn clients_max_only_grows() {
    let mut b = balancer(2, |c| c.clients_max = 4);
    let mut cfg = Config {
        clients_max: 2,
        ..Config::default()
    };
    b.update_settings(&cfg);
    assert_eq!(b.clients_max(), 4);
    cfg.clients_max = 8;
    b.update_settings(&cfg);
    assert_eq!(b.clients_max(), 8);
}

#[test]
fn unix_clients_share_one_entry() {
    let mut b = balancer(3, |_| {});
    assert_eq!(connect(&mut b, &unix_client(1), secs(1)), Server(1));
    assert_eq!(connect(&mut b, &unix_client(2), secs(2)), Server(1));
    assert_eq!(b.clients().count(), 1);
    let entry = b.clients().next().unwrap();
    assert_eq!(entry.key, ClientKey::Unix);
    assert_eq!(entry.connects, 2);
}

#[test]
fn clients_are_keyed_by_address_not_port() {
    let mut b = balancer(3, |_| {});
    let mut a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(1));
    a.port = 1234;
    assert_eq!(connect(&mut b, &a, secs(2)), Server(1));
    assert_eq!(b.clients().count(), 1);
}

// ------------------------------------------------------------------ algorithms

#[test]
fn roundrobin_alternates() {
    let mut b = balancer(2, |c| c.mode.roundrobin = true);
    let a = client("10.0.0.1");
    let picks: Vec<_> = (0..5).map(|t| connect(&mut b, &a, secs(t))).collect();
    assert_eq!(
        picks,
        vec![Server(1), Server(0), Server(1), Server(0), Server(1)]
    );
}

#[test]
fn roundrobin_skips_unavailable_and_keeps_cursor_on_failover() {
    let mut b = balancer(3, |c| c.mode.roundrobin = true);
    let a = client("10.0.0.1");
    b.blacklist(2, 60, secs(0)).unwrap();
    // Skips unavailable: 2 is never a pick, nor a failover candidate.
    assert_eq!(b.select(&a, secs(1)), vec![Server(1), Server(0)]);
    assert_eq!(b.select(&a, secs(1)), vec![Server(0), Server(1)]);
    assert_eq!(b.select(&a, secs(1)), vec![Server(1), Server(0)]);
    b.blacklist(2, 0, secs(1)).unwrap();
    // Failover: the pick (2) fails, the proxy connects to the next candidate (0) instead.
    let list = b.select(&a, secs(2));
    assert_eq!(list, vec![Server(2), Server(0), Server(1)]);
    b.connect_started(&a, Server(2), secs(2));
    b.connect_failed(Server(2), secs(2));
    b.connect_started(&a, Server(0), secs(2));
    b.connect_ok(Server(0), secs(2));
    assert_eq!(b.current(), Some(0), "the connection went to 0");
    // The cursor stayed on the pick (2), not on where failover landed (0): next pick is the
    // one after 2 that is available (0), and then 1 -- not 1 then 0.
    assert_eq!(first(&mut b, &a, secs(3)), Some(Server(0)));
    assert_eq!(first(&mut b, &a, secs(3)), Some(Server(1)));
}

#[test]
fn hash_spreads_by_client_address() {
    let mut b = balancer(3, |c| c.mode.hash = true);
    // s_addr as x86 reads it: 10.0.0.1 -> 0x0100000a = 16777226; 16777226 % 3 == 2.
    assert_eq!(first(&mut b, &client("10.0.0.1"), secs(1)), Some(Server(2)));
    assert_eq!(first(&mut b, &client("11.0.0.1"), secs(1)), Some(Server(0)));
    assert_eq!(first(&mut b, &client("12.0.0.1"), secs(1)), Some(Server(1)));
    // Same address, other port: same server (no -r).
    let mut c = client("11.0.0.1");
    c.port = 7;
    assert_eq!(hash_index(&c, false, 3), 0);
    let spread: std::collections::HashSet<_> = (1..=30)
        .map(|i| hash_index(&client(&format!("10.0.{i}.1")), false, 3))
        .collect();
    assert_eq!(spread.len(), 3);
}

#[test]
fn hash_uses_port_with_roundrobin() {
    let mut b = balancer(3, |c| {
        c.mode.hash = true;
        c.mode.roundrobin = true;
    });
    // sin_port of port 256 is bytes 01 00, read as 1 on x86: (16777226 ^ 1) % 3 == 0.
    let mut c = client("10.0.0.1");
    c.port = 256;
    assert_eq!(first(&mut b, &c, secs(1)), Some(Server(0)));
    c.port = 768; // read as 3: (16777226 ^ 3) % 3 == 1
    assert_eq!(first(&mut b, &c, secs(1)), Some(Server(1)));
    c.port = 0;
    assert_eq!(first(&mut b, &c, secs(1)), Some(Server(2)));
    c.port = 256;
    assert_eq!(
        hash_index(&c, false, 3),
        2,
        "without -r the port is ignored"
    );
}

#[test]
fn hash_choice_is_not_checked_for_availability_but_fails_over() {
    let mut b = balancer(3, |c| c.mode.hash = true);
    b.blacklist(2, 60, secs(0)).unwrap();
    assert_eq!(
        b.select(&client("10.0.0.1"), secs(1)),
        vec![Server(0), Server(1)]
    );
}

#[test]
fn ipv6_hash_uses_whole_address() {
    let n = 8;
    let spread: std::collections::HashSet<_> = (1..=64)
        .map(|i| hash_index(&client(&format!("2001:db8:{i:x}::1")), false, n))
        .collect();
    assert!(
        spread.len() > 4,
        "clients differing above the last byte spread: {spread:?}"
    );
    let mapped = hash_index(&client("::ffff:10.0.0.1"), false, 3);
    assert_eq!(mapped, 2, "IPv4-mapped clients hash as IPv4");
}

#[test]
fn weight_picks_least_loaded_relative_to_weight() {
    let mut b = balancer(2, |c| {
        c.mode.weight = true;
        c.mode.roundrobin = true;
        c.servers[0].weight = 1;
        c.servers[1].weight = 3;
    });
    set_established(&mut b, 0, 1); // 256*1/1 = 256
    set_established(&mut b, 1, 2); // 256*2/3 = 170
    assert_eq!(first(&mut b, &client("10.0.0.1"), secs(1)), Some(Server(1)));
    set_established(&mut b, 1, 1); // 256*3/3 = 256: tie goes to the lowest index
    assert_eq!(first(&mut b, &client("10.0.0.1"), secs(1)), Some(Server(0)));
}

#[test]
fn weight_zero_is_never_picked_by_weight() {
    let mut b = balancer(2, |c| {
        c.mode.weight = true;
        c.mode.roundrobin = true;
        c.servers[0].weight = 0;
        c.servers[1].weight = 1;
    });
    set_established(&mut b, 1, 100);
    assert_eq!(
        b.select(&client("10.0.0.1"), secs(1)),
        vec![Server(1), Server(0)],
        "weight 0 is still a failover candidate"
    );
}

#[test]
fn weight_counts_pending_connects() {
    let mut b = balancer(2, |c| {
        c.mode.weight = true;
        c.mode.roundrobin = true;
        c.servers[0].weight = 1;
        c.servers[1].weight = 1;
    });
    let a = client("10.0.0.1");
    b.connect_started(&a, Server(0), secs(0)); // in flight, not yet established
    assert_eq!(first(&mut b, &a, secs(0)), Some(Server(1)));
}

#[test]
fn prio_picks_lowest_prio() {
    let mut b = balancer(3, |c| {
        c.mode.prio = true;
        c.mode.roundrobin = true;
        c.servers[0].prio = 3;
        c.servers[1].prio = 1;
        c.servers[2].prio = 2;
    });
    set_established(&mut b, 1, 50);
    let a = client("10.0.0.1");
    assert_eq!(
        first(&mut b, &a, secs(1)),
        Some(Server(1)),
        "load is ignored"
    );
    b.blacklist(1, 60, secs(1)).unwrap();
    assert_eq!(first(&mut b, &a, secs(2)), Some(Server(2)));
}

#[test]
fn prio_beats_weight_beats_hash() {
    // prio says 0, weight says 1, hash (10.0.0.1 % 3) says 2, roundrobin would say 1.
    let mut b = balancer(3, |c| {
        c.mode = Mode {
            roundrobin: true,
            hash: true,
            weight: true,
            prio: true,
            stubborn: false,
        };
        for (i, s) in c.servers.iter_mut().enumerate() {
            s.prio = i as u32;
            s.weight = 1;
        }
    });
    set_established(&mut b, 0, 1);
    set_established(&mut b, 2, 1);
    let mut a = client("10.0.0.1");
    a.port = 0;
    assert_eq!(first(&mut b, &a, secs(1)), Some(Server(0)));
    let mut cfg = Config {
        mode: b.mode(),
        ..Config::default()
    };
    cfg.mode.prio = false;
    b.update_settings(&cfg);
    assert_eq!(first(&mut b, &a, secs(1)), Some(Server(1)));
    cfg.mode.weight = false;
    b.update_settings(&cfg);
    assert_eq!(first(&mut b, &a, secs(1)), Some(Server(2)));
}

// ------------------------------------------------------------------ try_server

fn limited(maxc: u32, hard: u32) -> Balancer {
    balancer(2, |c| {
        c.mode.prio = true; // new clients always start at server 0
        c.servers[0].maxc = maxc;
        c.servers[0].hard = hard;
        c.servers[1].prio = 1;
    })
}

#[test]
fn soft_limit_refuses_new_client() {
    let mut b = limited(1, 2);
    assert_eq!(connect(&mut b, &client("10.0.0.1"), secs(1)), Server(0));
    assert_eq!(b.select(&client("10.0.0.2"), secs(2)), vec![Server(1)]);
}

#[test]
fn hard_limit_admits_returning_client() {
    let mut b = limited(1, 2);
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(0));
    assert_eq!(connect(&mut b, &a, secs(2)), Server(0), "1 < hard 2");
    assert_eq!(b.select(&a, secs(3)), vec![Server(1)], "2 >= hard 2");
}

#[test]
fn hard_zero_gives_returning_client_no_extra_room() {
    let mut b = limited(1, 0);
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(0));
    assert_eq!(b.select(&a, secs(2)), vec![Server(1)]);
}

#[test]
fn pending_connects_count_toward_maxc() {
    let mut b = limited(1, 1);
    let a = client("10.0.0.1");
    b.connect_started(&a, Server(0), secs(0));
    assert_eq!(b.select(&client("10.0.0.2"), secs(0)), vec![Server(1)]);
    b.connect_abandoned(Server(0));
    assert_eq!(first(&mut b, &client("10.0.0.2"), secs(0)), Some(Server(0)));
}

#[test]
fn closing_frees_room_under_maxc() {
    let mut b = limited(1, 1);
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(0));
    b.closed(Server(0), &a, 10, 20, secs(2));
    assert_eq!(first(&mut b, &client("10.0.0.2"), secs(3)), Some(Server(0)));
}

#[test]
fn server_acl_denies_client() {
    let mut b = balancer(2, |c| {
        c.mode.prio = true;
        c.servers[1].prio = 1;
        c.servers[0].acl = Some(1);
        permit_only(1, c, "10.0.0.1");
    });
    assert_eq!(b.select(&client("10.0.0.2"), secs(1)), vec![Server(1)]);
    assert_eq!(
        b.select(&client("10.0.0.1"), secs(1)),
        vec![Server(0), Server(1)]
    );
}

#[test]
fn port_zero_server_is_never_chosen() {
    let mut b = balancer(3, |c| c.servers[1].port = 0);
    let a = client("10.0.0.1");
    assert_eq!(b.select(&a, secs(1)), vec![Server(2), Server(0)]);
}

#[test]
fn server_without_address_is_never_chosen() {
    let mut b = balancer(0, |_| {});
    b.set_server(2, server(10002), literal_addr(&server(10002)))
        .unwrap();
    assert_eq!(b.servers().len(), 3);
    assert_eq!(b.select(&client("10.0.0.1"), secs(1)), vec![Server(2)]);
}

// ------------------------------------------------------------------ blacklist

#[test]
fn blacklisted_server_is_skipped() {
    let mut b = balancer(3, |c| c.mode.roundrobin = true);
    b.connect_failed(Server(1), secs(0));
    let list = b.select(&client("10.0.0.1"), secs(1));
    assert_eq!(list, vec![Server(2), Server(0)]);
    assert!(b.is_blacklisted(1, secs(1)));
    assert_eq!(b.server(1).unwrap().failures, 1);
}

#[test]
fn blacklist_expires() {
    let mut b = balancer(2, |c| c.blacklist_secs = 30);
    b.connect_failed(Server(0), secs(100));
    assert!(b.is_blacklisted(0, secs(129)));
    assert!(!b.is_blacklisted(0, secs(130)));
}

#[test]
fn manual_blacklist_lasts_exactly_given_secs() {
    let mut b = balancer(2, |c| c.blacklist_secs = 30);
    b.blacklist(1, 5, secs(100)).unwrap();
    assert!(b.is_blacklisted(1, secs(104)));
    assert!(!b.is_blacklisted(1, secs(105)));
    b.blacklist(1, 500, secs(100)).unwrap();
    assert!(b.is_blacklisted(1, secs(599)));
    b.blacklist(1, 0, secs(101)).unwrap();
    assert!(!b.is_blacklisted(1, secs(101)), "blacklist 0 un-blacklists");
    let err = b.blacklist(7, 5, secs(0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no server 7: server indexes 0..=1 are accepted"
    );
}

#[test]
fn blacklist_time_change_applies_to_blacklisted_servers() {
    let mut b = balancer(2, |c| c.blacklist_secs = 30);
    b.connect_failed(Server(0), secs(0));
    let cfg = Config {
        blacklist_secs: 5,
        ..Config::default()
    };
    b.update_settings(&cfg);
    assert!(!b.is_blacklisted(0, secs(5)));
}

#[test]
fn successful_connect_clears_blacklist() {
    let mut b = balancer(2, |_| {});
    b.blacklist(0, 100, secs(0)).unwrap();
    let a = client("10.0.0.1");
    b.connect_started(&a, Server(0), secs(1));
    b.connect_ok(Server(0), secs(1));
    assert!(!b.is_blacklisted(0, secs(1)));
}

// ------------------------------------------------------------------ failover, emergency, abuse

#[test]
fn failover_tries_following_servers() {
    let mut b = balancer(4, |_| {});
    assert_eq!(
        b.select(&client("10.0.0.1"), secs(1)),
        vec![Server(1), Server(2), Server(3), Server(0)]
    );
    b.set_emergency(special(9999));
    assert_eq!(
        b.select(&client("10.0.0.2"), secs(1)),
        vec![Server(2), Server(3), Server(0), Server(1), Emergency]
    );
}

#[test]
fn stubborn_does_not_fail_over() {
    let mut b = balancer(3, |c| c.mode.stubborn = true);
    b.set_emergency(special(9999));
    let a = client("10.0.0.1");
    assert_eq!(b.select(&a, secs(1)), vec![Server(1)]);
    b.connect_started(&a, Server(1), secs(1));
    b.connect_failed(Server(1), secs(1));
    assert_eq!(b.select(&a, secs(2)), vec![], "tracked server down: close");
}

#[test]
fn emergency_after_all_fail() {
    let mut b = balancer(2, |_| {});
    b.set_emergency(special(9999));
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(1));
    b.connect_failed(Server(0), secs(2));
    b.connect_failed(Server(1), secs(2));
    assert_eq!(b.select(&a, secs(3)), vec![Emergency]);
    // A new client too (C Pen would close it: no initial server).
    assert_eq!(b.select(&client("10.0.0.2"), secs(3)), vec![Emergency]);
}

#[test]
fn emergency_never_fails_over() {
    let mut b = balancer(2, |_| {});
    b.set_emergency(special(9999));
    let a = client("10.0.0.1");
    b.blacklist(0, 10, secs(0)).unwrap();
    b.blacklist(1, 10, secs(0)).unwrap();
    assert_eq!(b.select(&a, secs(1)), vec![Emergency]);
    b.connect_started(&a, Emergency, secs(1));
    b.connect_failed(Emergency, secs(1));
    assert_eq!(
        b.select(&a, secs(2)),
        vec![],
        "nothing after the emergency server"
    );
    // Once servers are back, a client last on the emergency server is not tracked to it.
    assert_eq!(
        b.select(&a, secs(60)),
        vec![Server(1), Server(0), Emergency]
    );
}

#[test]
fn abuse_for_denied_client() {
    let mut b = balancer(2, |c| {
        deny(1, c, "10.0.0.66");
        c.client_acl = 1;
    });
    b.set_abuse(special(6666));
    b.set_emergency(special(9999));
    assert_eq!(b.select(&client("10.0.0.66"), secs(1)), vec![Abuse]);
    assert_eq!(b.addr(Abuse), literal_addr(&server(6666)).as_ref());
    assert_eq!(
        first(&mut b, &client("10.0.0.67"), secs(1)),
        Some(Server(1))
    );
}

#[test]
fn denied_client_without_abuse_is_closed() {
    let mut b = balancer(2, |c| deny(0, c, "10.0.0.66"));
    b.set_emergency(special(9999));
    assert_eq!(b.select(&client("10.0.0.66"), secs(1)), vec![]);
    assert!(b.client(&client("10.0.0.66")).is_some(), "still recorded");
}

#[test]
fn nothing_left_closes_client() {
    let mut b = balancer(2, |_| {});
    b.blacklist(0, 10, secs(0)).unwrap();
    b.blacklist(1, 10, secs(0)).unwrap();
    assert_eq!(b.select(&client("10.0.0.1"), secs(1)), vec![]);
    let mut empty = balancer(0, |_| {});
    assert_eq!(empty.select(&client("10.0.0.1"), secs(1)), vec![]);
}

// ------------------------------------------------------------------ outcomes and table

#[test]
fn connect_started_records_server_before_success() {
    let mut b = balancer(3, |_| {});
    let a = client("10.0.0.1");
    b.connect_started(&a, Server(2), secs(0)); // no select yet: not in the table, ignored
    assert!(b.client(&a).is_none());
    assert_eq!(b.select(&a, secs(1))[0], Server(1));
    b.connect_started(&a, Server(2), secs(1));
    assert_eq!(b.client(&a).unwrap().server, Some(Server(2)));
    assert_eq!(b.current(), Some(2));
    let s = b.server(2).unwrap();
    assert_eq!((s.pending, s.established, s.selected), (2, 0, 2));
}

#[test]
fn closed_adds_bytes_to_server_and_client() {
    let mut b = balancer(2, |_| {});
    let a = client("10.0.0.1");
    let t = connect(&mut b, &a, secs(1));
    b.closed(t, &a, 100, 2000, secs(2));
    let s = b.state(t).unwrap();
    assert_eq!((s.established, s.sx, s.rx), (0, 100, 2000));
    let c = b.client(&a).unwrap();
    assert_eq!((c.sx, c.rx), (100, 2000));
}

#[test]
fn set_server_grows_table_keeping_counters() {
    let mut b = balancer(1, |_| {});
    let a = client("10.0.0.1");
    assert_eq!(connect(&mut b, &a, secs(1)), Server(0));
    let mut cfg = server(10500);
    cfg.maxc = 7;
    b.set_server(0, cfg.clone(), literal_addr(&cfg)).unwrap();
    b.set_server(3, server(10003), None).unwrap();
    assert_eq!(b.servers().len(), 4);
    assert_eq!(b.server(0).unwrap().established, 1);
    assert_eq!(b.server(0).unwrap().config.maxc, 7);
    assert_eq!(
        b.addr(Server(0)),
        Some(&BackendAddr::Inet(SocketAddr::from((
            [127, 0, 0, 1],
            10500
        ))))
    );
    let err = b.set_server(MAX_SERVERS, server(1), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no server 65536: server indexes 0..=65535 are accepted"
    );
}

#[test]
fn addr_generation_moves_only_when_an_address_changes() {
    let mut b = balancer(2, |_| {});
    let g0 = b.addr_generation();
    // Same address, other settings (e.g. `server 0 max 7`): flows may stay.
    let mut cfg = server(10000);
    cfg.maxc = 7;
    b.set_server(0, cfg.clone(), literal_addr(&cfg)).unwrap();
    assert_eq!(b.addr_generation(), g0);
    let cfg = server(10500);
    b.set_server(0, cfg.clone(), literal_addr(&cfg)).unwrap();
    let g1 = b.addr_generation();
    assert_ne!(g1, g0);
    b.set_server(1, server(10001), None).unwrap(); // address gone (unresolved)
    let g2 = b.addr_generation();
    assert_ne!(g2, g1);
    b.set_emergency(special(9999));
    let g3 = b.addr_generation();
    assert_ne!(g3, g2);
    b.set_emergency(special(9999));
    assert_eq!(b.addr_generation(), g3);
    b.set_emergency(None);
    assert_ne!(b.addr_generation(), g3);
    let g4 = b.addr_generation();
    b.set_abuse(None);
    assert_eq!(b.addr_generation(), g4);
}

#[test]
fn new_resolves_only_literal_addresses() {
    let b = balancer(0, |c| {
        c.servers.push(ServerConfig {
            host: Some(HostSpec::Name("backend.example".into())),
            port: 80,
            ..ServerConfig::default()
        });
        c.servers.push(ServerConfig {
            host: Some(HostSpec::Unix("/run/app.sock".into())),
            ..ServerConfig::default()
        });
    });
    assert_eq!(b.addr(Server(0)), None);
    assert_eq!(
        b.addr(Server(1)),
        Some(&BackendAddr::Unix("/run/app.sock".into()))
    );
}

// ------------------------------------------------------------------ seeded property test

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

fn random_config(rng: &mut XorShift) -> Config {
    let n = rng.below(7) as usize;
    let mut cfg = Config {
        tracking_secs: rng.below(3) * 5,
        blacklist_secs: rng.below(4) * 3,
        clients_max: 1 + rng.below(6) as usize,
        mode: Mode {
            roundrobin: rng.chance(40),
            hash: rng.chance(30),
            weight: rng.chance(30),
            prio: rng.chance(20),
            stubborn: rng.chance(20),
        },
        ..Config::default()
    };
    for i in 0..n {
        let mut s = server(10000 + i as u16);
        if rng.chance(10) {
            s.port = 0;
        }
        if rng.chance(10) {
            s.host = Some(HostSpec::Name("unresolved.example".into()));
        }
        s.maxc = if rng.chance(50) {
            rng.below(3) as u32
        } else {
            0
        };
        s.hard = rng.below(4) as u32;
        s.weight = rng.below(4) as u32;
        s.prio = rng.below(4) as u32;
        if rng.chance(25) {
            s.acl = Some(1 + rng.below(2) as u8);
        }
        cfg.servers.push(s);
    }
    for list in 0..3 {
        for _ in 0..rng.below(3) {
            let addr = format!("10.0.0.{}", rng.below(8));
            if rng.chance(50) {
                permit_only(list, &mut cfg, &addr);
            } else {
                deny(list, &mut cfg, &addr);
            }
        }
    }
    cfg
}

#[test]
fn random_operations_keep_candidate_invariants() {
    for seed in 1..=300u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let cfg = random_config(&mut rng);
        let mut b = Balancer::new(&cfg);
        if rng.chance(50) {
            b.set_emergency(special(9999));
        }
        if rng.chance(50) {
            b.set_abuse(special(6666));
        }
        let mut open: Vec<(Target, Client)> = Vec::new();
        let mut now = Duration::ZERO;
        for step in 0..200 {
            now += Duration::from_millis(rng.below(3000));
            let c = if rng.chance(5) {
                unix_client(rng.below(5) as u16)
            } else {
                Client {
                    ip: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, rng.below(8) as u8))),
                    port: rng.below(4) as u16 * 256,
                }
            };
            let ctx = format!("seed {seed} step {step} client {c:?} mode {:?}", b.mode());
            let denied = !cfg.acls.permits(usize::from(cfg.client_acl), c.ip);
            let list = b.select(&c, now);
            for t in &list {
                assert!(b.try_server(*t, &c, now), "{ctx}: {t:?} not available");
            }
            for (i, t) in list.iter().enumerate() {
                assert!(!list[..i].contains(t), "{ctx}: duplicate {t:?} in {list:?}");
            }
            if let Some(pos) = list.iter().position(|t| *t == Emergency) {
                assert_eq!(pos, list.len() - 1, "{ctx}: emergency not last: {list:?}");
            }
            if list.contains(&Abuse) || denied {
                assert!(list.is_empty() || list == vec![Abuse], "{ctx}: {list:?}");
            }
            if b.mode().stubborn {
                assert!(list.len() <= 1, "{ctx}: stubborn list {list:?}");
            }
            // Walk the list as the proxy would.
            for t in list {
                b.connect_started(&c, t, now);
                match rng.below(10) {
                    0..=5 => {
                        b.connect_ok(t, now);
                        open.push((t, c));
                        break;
                    }
                    6 => {
                        b.connect_abandoned(t);
                        break;
                    }
                    _ => b.connect_failed(t, now),
                }
            }
            if rng.chance(30) && !open.is_empty() {
                let i = rng.below(open.len() as u64) as usize;
                let (t, c) = open.swap_remove(i);
                b.closed(t, &c, rng.below(1000), rng.below(1000), now);
            }
            if rng.chance(5) && !b.servers().is_empty() {
                let idx = rng.below(b.servers().len() as u64) as usize;
                b.blacklist(idx, rng.below(3), now).unwrap();
            }
            assert!(b.clients().count() <= b.clients_max(), "{ctx}");
            let established: u32 = b.servers().iter().map(|s| s.established).sum::<u32>()
                + b.emergency().map_or(0, |s| s.established)
                + b.abuse().map_or(0, |s| s.established);
            assert_eq!(established as usize, open.len(), "{ctx}");
            let pending: u32 = b.servers().iter().map(|s| s.pending).sum();
            assert_eq!(pending, 0, "{ctx}: every connect got an outcome");
        }
    }
}

#[test]
fn a_server_going_down_and_coming_back_makes_one_event_each() {
    let mut b = balancer(2, |c| c.blacklist_secs = 30);
    let c = client("10.0.0.1");
    let s0 = Target::Server(0);
    b.connect_started(&c, s0, secs(10));
    b.connect_ok(s0, secs(10));
    assert_eq!(
        b.take_events(),
        (vec![], 0),
        "a working server makes no event"
    );
    b.connect_started(&c, s0, secs(20));
    b.connect_failed(s0, secs(20));
    // Failing again once the blacklist lapsed: still down, no second event.
    b.connect_started(&c, s0, secs(55));
    b.connect_failed(s0, secs(55));
    assert_eq!(b.server(0).unwrap().down_since, Some(secs(20)));
    b.connect_started(&c, s0, secs(90));
    b.connect_ok(s0, secs(90));
    assert_eq!(
        b.take_events(),
        (
            vec![
                ServerEvent::Down {
                    target: s0,
                    blacklist: secs(30)
                },
                ServerEvent::Up {
                    target: s0,
                    down_for: secs(70)
                },
            ],
            0
        )
    );
    assert_eq!(b.take_events(), (vec![], 0), "taken once");
    // The emergency server reports too.
    b.set_emergency(special(9));
    b.connect_started(&c, Target::Emergency, secs(100));
    b.connect_failed(Target::Emergency, secs(100));
    assert!(matches!(
        b.take_events().0[..],
        [ServerEvent::Down {
            target: Target::Emergency,
            ..
        }]
    ));
    // A manual blacklisting is the operator's doing, not a failure: no event.
    b.blacklist(1, 60, secs(100)).unwrap();
    assert_eq!(b.take_events(), (vec![], 0));
}

#[test]
fn events_nobody_takes_are_bounded() {
    let mut b = balancer(1, |_| {});
    let c = client("10.0.0.1");
    let s0 = Target::Server(0);
    for i in 0..(MAX_EVENTS as u64 + 10) {
        b.connect_started(&c, s0, secs(i));
        if i % 2 == 0 {
            b.connect_failed(s0, secs(i));
        } else {
            b.connect_ok(s0, secs(i));
        }
    }
    let (events, dropped) = b.take_events();
    assert_eq!(events.len(), MAX_EVENTS);
    assert_eq!(dropped, 10);
    assert!(matches!(events.last(), Some(ServerEvent::Up { .. })));
}

#[test]
fn a_server_whose_check_is_down_is_left_out_apart_from_the_blacklist() {
    for hash_mode in [false, true] {
        let mut b = balancer(3, |c| c.mode.hash = hash_mode);
        let a = client("10.0.0.1");
        b.set_check_down(1, true);
        for k in 0..6 {
            let t = connect(&mut b, &client(&format!("10.0.1.{k}")), secs(1));
            assert_ne!(t, Server(1));
        }
        // the passive blacklist works beside it: 0 blacklisted leaves only 2
        b.connect_failed(Server(0), secs(2));
        assert_eq!(b.select(&a, secs(2)), vec![Server(2)]);
        assert!(!b.try_server(Server(1), &a, secs(2)));
        // the check says up again: selected again, while 0 stays blacklisted
        b.set_check_down(1, false);
        assert!(b.try_server(Server(1), &a, secs(2)));
        assert!(b.select(&a, secs(2)).contains(&Server(1)));
        assert!(b.is_blacklisted(0, secs(2)));
        // a nonexistent index is ignored
        b.set_check_down(99, true);
    }
}
