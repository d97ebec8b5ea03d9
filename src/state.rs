//! The running state of one pen process, as plain data. Pure.
//!
//! [`State`] is what the decisions and the reports read and change: the configuration, the
//! balancer built from it, pen's own counters, and what the UDP shell and the DSR thread last
//! published. It holds no socket, task, lock, callback, file or clock: the daemon keeps it
//! behind its lock together with the IO handles ([`crate::proxy::Shared`], whose
//! [`Handles`](crate::proxy::Handles) are the TLS terminator, the UDP table, the
//! servers-changed hook and the connection table), and passes `&State` / `&mut State` to
//! [`crate::ctl::reply`] and [`crate::stats`].
//!
//! The active health checks' machines ([`crate::health::Checks`]) live here too: the shell
//! (`proxy::health`) asks [`State::due_probes`], runs them, and hands each result to
//! [`State::record_check`], which keeps the balancer's `check_down` marks in step.
//!
//! [`OpenConns`] is the one view of the data path the reports need: the open TCP connections
//! as rows, and the bytes of those whose totals the balancer does not hold yet. The shell
//! takes it under the state's lock (`Handles::open_conns`) and passes it in as a value.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{BackendAddr, Config};
use crate::health::{Change, CheckConfig, CheckState, Checks, Probe};
use crate::proxy::resources::Shortage;
use crate::proxy::udp::UdpStatus;
use crate::select::{Balancer, Target};
use crate::stats::ConnRow;

/// The configuration, the balancer and the counters: everything but the IO handles.
#[derive(Debug)]
pub struct State {
    pub config: Config,
    pub balancer: Balancer,
    /// Upstream connections that `transparent` could not open from the client's address
    /// (no CAP_NET_ADMIN, missing routing setup, family mismatch); see
    /// `proxy::transparent`.
    pub transparent_failures: u64,
    /// pen's own shortages of descriptors, buffers, memory or local ports (never blamed on a
    /// server); see [`crate::proxy::resources`].
    pub shortage: Shortage,
    /// The UDP flow table (`-U`) as the UDP shell last published it, for the reports: at
    /// every tick and soon after new flows (`proxy::udp::shell`).
    pub udp: Option<UdpStatus>,
    /// The DSR tarpit's settings and counters as the DSR thread last published them (about
    /// every 100 ms), for the reports; `None` outside DSR mode.
    pub tarpit: Option<crate::engine::TarpitStatus>,
    /// The active health checks' state machines (`server N check ...`), kept in line with
    /// `config.checks` by [`State::sync_checks`].
    pub checks: Checks,
    /// PROXY protocol headers accepted and refused on an `accept_proxy` listener.
    pub proxy_headers: crate::proxyproto::HeaderCounts,
}

impl State {
    /// A fresh balancer for `config` (servers with literal addresses only; the daemon sets
    /// resolved host names with `Balancer::set_server`).
    pub fn new(config: Config) -> State {
        let balancer = Balancer::new(&config);
        let mut state = State {
            config,
            balancer,
            transparent_failures: 0,
            shortage: Shortage::default(),
            udp: None,
            tarpit: None,
            checks: Checks::default(),
            proxy_headers: Default::default(),
        };
        state.sync_checks();
        state
    }

    /// Brings the check machines in line with `config.checks` (a new or changed check starts
    /// unknown, due at once) and tells the balancer which servers the checks hold out: every
    /// server whose check is not up.
    pub fn sync_checks(&mut self) {
        let configs: Vec<Option<&CheckConfig>> = (0..self.config.servers.len())
            .map(|i| self.config.checks.get(&i))
            .collect();
        self.checks.sync(&configs);
        self.mark_check_down();
    }

    fn mark_check_down(&mut self) {
        for i in 0..self.balancer.servers().len() {
            let down = self
                .checks
                .get(i)
                .is_some_and(|h| h.state != CheckState::Up);
            self.balancer.set_check_down(i, down);
        }
    }

    /// The probes due at `now`, at most `room` (marked running), and the changes of servers
    /// whose check could not even start (no address).
    pub fn due_probes(&mut self, now: Duration, room: usize) -> (Vec<Probe>, Vec<Change>) {
        let addrs: Vec<Option<SocketAddr>> = self
            .balancer
            .servers()
            .iter()
            .map(|s| match &s.addr {
                Some(BackendAddr::Inet(sa)) => Some(*sa),
                _ => None,
            })
            .collect();
        let out = self.checks.due(now, room, &addrs);
        if !out.1.is_empty() {
            self.mark_check_down();
        }
        out
    }

    /// A probe's result at `now`; the change of state, if any, already told to the balancer.
    pub fn record_check(
        &mut self,
        probe: &Probe,
        now: Duration,
        ok: bool,
        detail: &str,
    ) -> Option<Change> {
        let change = self
            .checks
            .record(probe.server, probe.generation, now, ok, detail)?;
        self.mark_check_down();
        Some(change)
    }

    /// Tests of the reports: a connection of client 10.0.0.7 to `target`, established at `t`
    /// and listed in `conns` as the data path lists an open connection, having sent `sx`
    /// bytes to the server and received `rx`. Returns the client.
    #[cfg(test)]
    pub(crate) fn open_connection_for_test(
        &mut self,
        conns: &mut OpenConns,
        target: Target,
        t: std::time::Duration,
        sx: u64,
        rx: u64,
    ) -> crate::select::Client {
        let c = crate::select::Client {
            ip: Some(std::net::IpAddr::from([10, 0, 0, 7])),
            port: 1,
        };
        self.balancer.connect_started(&c, target, t);
        self.balancer.connect_ok(target, t);
        let index = conns.rows.iter().map(|r| r.index + 1).max().unwrap_or(0);
        conns.rows.push(ConnRow {
            index,
            downfd: -1,
            upfd: -1,
            client: "test".to_string(),
            server: crate::stats::target_number(Some(target)),
            sx,
            rx,
            ..ConnRow::default()
        });
        let v = conns.unreported.entry(target).or_default();
        v.0 += sx;
        v.1 += rx;
        c
    }
}

/// The open TCP connections as the data path's table listed them, taken by the shell while it
/// holds the state's lock: the lock under which a closing connection moves its bytes to the
/// balancer's totals, so every byte is in exactly one of `unreported` and the balancer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenConns {
    /// One row per open connection (`connection N`, `socket N`, the status page).
    pub rows: Vec<ConnRow>,
    /// Bytes so far of the open connections whose totals the balancer does not hold yet, by
    /// target: (sent to it, received from it).
    pub unreported: HashMap<Target, (u64, u64)>,
}

impl OpenConns {
    /// The bytes of `target`'s open connections not yet in its totals: (sent, received).
    pub fn unreported(&self, target: Target) -> (u64, u64) {
        self.unreported.get(&target).copied().unwrap_or((0, 0))
    }
}
