//! The flow table's side of the kernel fast path, sans IO (quinn-proto's `handle_*`/`poll_*`
//! shape): the table decides which flows the kernel forwards and when they stop, and emits
//! those decisions as [`OffloadCommand`]s ([`FlowTable::poll_offload`]); the shell carries
//! them out outside the table's lock (netlink route look-ups, tcx attachment, map writes) and
//! hands back what came of them ([`FlowTable::handle_offload_result`]) and what the kernel
//! forwarded ([`FlowTable::handle_activity`], [`FlowTable::handle_withdrawn`]).
//!
//! The shell's part of the contract:
//! - carry out the commands in the order they were polled (a flow's `Withdraw` may follow its
//!   `Install` before the install's result came back, and a client's new flow may be
//!   installed after its old one was withdrawn);
//! - before [`FlowTable::expire`], report the activity of [`FlowTable::offloaded_due`], so
//!   that no flow the kernel kept busy is judged idle;
//! - now and then, report the activity of [`FlowTable::offloaded_turn`], so that counters,
//!   idle times and the eviction order of live kernel flows stay fresh.

use std::net::SocketAddr;
use std::time::Duration;

use super::{FlowTable, Path};

/// Which flow an offload answer is about: a client's flow that ended and a later flow of the
/// same client have different ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId(pub u64);

/// Traffic the kernel forwarded for one offloaded flow since it was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Activity {
    /// When the latest of those datagrams passed (in the table's clock).
    pub last_seen: Option<Duration>,
    pub datagrams_up: u64,
    pub bytes_up: u64,
    pub datagrams_down: u64,
    pub bytes_down: u64,
}

impl Activity {
    /// Whether the kernel forwarded nothing.
    pub fn is_empty(&self) -> bool {
        self.datagrams_up == 0 && self.datagrams_down == 0
    }
}

/// What the kernel needs to forward a flow: the client, the address it sends to, the server,
/// and the address of the upstream socket pen sends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffloadRequest {
    pub flow: FlowId,
    pub client: SocketAddr,
    pub listen: SocketAddr,
    pub server: SocketAddr,
    pub upstream: SocketAddr,
}

/// What the table asks of the kernel fast path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadCommand {
    /// Forward this flow in the kernel from now on; answer with
    /// [`FlowTable::handle_offload_result`].
    Install(OffloadRequest),
    /// Stop forwarding `client`'s flow `flow` in the kernel (it left the table, or its
    /// install is no longer wanted); what the kernel forwarded since it was last read goes to
    /// [`FlowTable::handle_withdrawn`]. Nothing to do when the install had failed.
    Withdraw { client: SocketAddr, flow: FlowId },
}

/// The kernel's traffic for one flow, as the shell read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelReport {
    pub client: SocketAddr,
    pub flow: FlowId,
    pub activity: Activity,
}

impl FlowTable {
    /// Offer established flows to the kernel fast path from now on (the shell has one).
    pub fn enable_offload(&mut self) {
        self.offload = true;
    }

    /// Whether `client`'s flow should be offered to the kernel: there is a fast path, the
    /// flow is still forwarded by pen and has completed an exchange (its server answered and
    /// the client sent again), so one-shot flows (a query from a fresh port) never cost a
    /// kernel update. Transparent flows stay in pen (the fast path sends from pen's address).
    pub fn wants_offload(&self, client: &SocketAddr) -> bool {
        self.offload
            && self.flows.get(client).is_some_and(|f| {
                f.path == Path::Pen
                    && f.upstream.bound.is_none()
                    && f.datagrams_down > 0
                    && f.datagrams_up >= 2
            })
    }

    /// Offer `client`'s flow to the kernel: it was sent to `listen` (the listener's address;
    /// a wildcard listener's flows use the address recorded by [`FlowTable::note_local`]) and
    /// goes upstream from `upstream` (the upstream socket's address). Queues an
    /// [`OffloadCommand::Install`] and returns whether it did; the flow stays in pen until
    /// the result comes back, and is not offered twice.
    pub fn offload(
        &mut self,
        client: &SocketAddr,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> bool {
        if !self.wants_offload(client) {
            return false;
        }
        let Some(f) = self.flows.get_mut(client) else {
            return false;
        };
        let listen = SocketAddr::new(f.local.unwrap_or(listen.ip()), listen.port());
        f.path = Path::Offering;
        self.offload_queue
            .push_back(OffloadCommand::Install(OffloadRequest {
                flow: f.id,
                client: *client,
                listen,
                server: f.server,
                upstream,
            }));
        true
    }

    /// The next thing the kernel fast path must do (oldest first), if any.
    pub fn poll_offload(&mut self) -> Option<OffloadCommand> {
        self.offload_queue.pop_front()
    }

    /// The kernel took flow `flow` of `client` (`installed`), or refused it (it stays in pen
    /// for good). An answer about a flow that is gone (its `Withdraw` is queued or done) is
    /// ignored.
    pub fn handle_offload_result(&mut self, client: &SocketAddr, flow: FlowId, installed: bool) {
        let Some(f) = self
            .flows
            .get_mut(client)
            .filter(|f| f.id == flow && f.path == Path::Offering)
        else {
            return;
        };
        if !installed {
            f.path = Path::PenOnly;
            return;
        }
        f.path = Path::Kernel;
        let (seen, unanswered) = (f.last_seen, f.answered.is_none());
        // Its exchanges now pass in the kernel, unseen by `handle_server`: it joins the
        // eviction LRU here (and moves in it with the kernel's reports).
        if unanswered {
            self.mark_answered(*client, seen);
        }
        self.stats.flows_offloaded += 1;
    }

    /// Binary upgrade (the old pen): offer no flow to the kernel any more and take back every
    /// flow it forwards or was offered ([`OffloadCommand::Withdraw`]s, in the table's order);
    /// they carry on in pen for good, so their clients' next datagrams reach the listening
    /// socket (read by the new pen) while the servers' answers still come back here. What the
    /// kernel forwarded since a flow's last reading goes to the table's counters only (as for
    /// any withdrawal). Returns how many flows were taken back.
    pub fn withdraw_all(&mut self) -> usize {
        self.offload = false;
        let mut n = 0;
        for (client, f) in &mut self.flows {
            if matches!(f.path, Path::Kernel | Path::Offering) {
                self.offload_queue.push_back(OffloadCommand::Withdraw {
                    client: *client,
                    flow: f.id,
                });
                f.path = Path::PenOnly;
                n += 1;
            }
        }
        n
    }

    /// Whether `client`'s flow is forwarded by the kernel.
    pub fn is_offloaded(&self, client: &SocketAddr) -> bool {
        self.flows
            .get(client)
            .is_some_and(|f| f.path == Path::Kernel)
    }

    /// What the kernel forwarded for an offloaded flow since it was last read: added to its
    /// counters and last-seen time, and to the table's. A flow the kernel carried answers for
    /// moves to the recent end of the eviction order. A report about a flow that is gone or
    /// not in the kernel is ignored (see [`FlowTable::handle_withdrawn`]).
    pub fn handle_activity(&mut self, now: Duration, report: &KernelReport) {
        let Some(f) = self
            .flows
            .get_mut(&report.client)
            .filter(|f| f.id == report.flow && f.path == Path::Kernel)
        else {
            return;
        };
        let a = &report.activity;
        let before = f.last_seen;
        if let Some(t) = a.last_seen {
            f.last_seen = f.last_seen.max(t.min(now));
        }
        f.datagrams_up += a.datagrams_up;
        f.bytes_up += a.bytes_up;
        f.datagrams_down += a.datagrams_down;
        f.bytes_down += a.bytes_down;
        let seen = f.last_seen;
        self.count_kernel(a);
        if a.datagrams_down > 0 && seen > before {
            self.mark_answered(report.client, seen);
        }
    }

    /// What the kernel forwarded for a flow between its last reading and its withdrawal: the
    /// flow is gone, so only the table's counters take it.
    pub fn handle_withdrawn(&mut self, activity: &Activity) {
        self.count_kernel(activity);
    }

    fn count_kernel(&mut self, a: &Activity) {
        let s = &mut self.stats;
        s.datagrams_from_clients += a.datagrams_up;
        s.bytes_from_clients += a.bytes_up;
        s.datagrams_from_servers += a.datagrams_down;
        s.bytes_from_servers += a.bytes_down;
        s.kernel_datagrams += a.datagrams_up + a.datagrams_down;
    }

    /// The offloaded flows [`FlowTable::expire`] at `now` would judge: report their activity
    /// before calling it.
    pub fn offloaded_due(&self, now: Duration) -> Vec<(SocketAddr, FlowId)> {
        self.deadlines
            .range(..=(now, u64::MAX))
            .filter_map(|(_, c)| {
                let f = self.flows.get(c)?;
                (f.path == Path::Kernel).then_some((*c, f.id))
            })
            .collect()
    }

    /// Up to `max` offloaded flows whose activity to read now, taking turns when there are
    /// more (so that the reports' counters, idle times and the eviction order of live kernel
    /// flows are at most a few turns old).
    pub fn offloaded_turn(&mut self, max: usize) -> Vec<(SocketAddr, FlowId)> {
        if !self.offload {
            return Vec::new();
        }
        let kernel: Vec<(SocketAddr, FlowId)> = self
            .flows
            .iter()
            .filter(|(_, f)| f.path == Path::Kernel)
            .map(|(c, f)| (*c, f.id))
            .collect();
        if kernel.is_empty() {
            return kernel;
        }
        let start = self.refresh_turn % kernel.len();
        let n = max.min(kernel.len());
        self.refresh_turn = start + n;
        kernel.into_iter().cycle().skip(start).take(n).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::super::tests::{Fake, forward, ip, sa, secs, transparent_table};
    use super::*;
    use crate::proxy::udp::flow::Selector;
    use crate::select::Target;

    /// A kernel fast path in memory, driven as the shell drives the real one: it carries out
    /// the table's commands in order and reports the traffic it forwarded.
    #[derive(Debug, Default)]
    struct Kernel {
        refuse: bool,
        installed: Vec<OffloadRequest>,
        withdrawn: Vec<SocketAddr>,
        /// The flows in the kernel now.
        live: HashMap<SocketAddr, FlowId>,
        /// Traffic forwarded since the table was last told.
        pending: HashMap<SocketAddr, Activity>,
    }

    impl Kernel {
        /// The kernel forwarded `a` for `client` since the table was last told.
        fn saw(&mut self, client: SocketAddr, a: Activity) {
            self.pending.insert(client, a);
        }

        /// Carries out the table's commands; returns how many.
        fn run(&mut self, t: &mut FlowTable) -> usize {
            let mut n = 0;
            while let Some(cmd) = t.poll_offload() {
                n += 1;
                match cmd {
                    OffloadCommand::Install(r) => {
                        self.installed.push(r);
                        if !self.refuse {
                            self.live.insert(r.client, r.flow);
                        }
                        t.handle_offload_result(&r.client, r.flow, !self.refuse);
                    }
                    OffloadCommand::Withdraw { client, flow } => {
                        if self.live.get(&client) == Some(&flow) {
                            self.live.remove(&client);
                            self.withdrawn.push(client);
                            let a = self.pending.remove(&client).unwrap_or_default();
                            t.handle_withdrawn(&a);
                        }
                    }
                }
            }
            n
        }

        /// Reports the traffic of `flows` to the table.
        fn report(&mut self, t: &mut FlowTable, now: Duration, flows: &[(SocketAddr, FlowId)]) {
            for &(client, flow) in flows {
                let activity = self.pending.remove(&client).unwrap_or_default();
                t.handle_activity(
                    now,
                    &KernelReport {
                        client,
                        flow,
                        activity,
                    },
                );
            }
        }

        /// The shell's tick: report what is due, expire, carry out the withdrawals.
        fn expire(&mut self, t: &mut FlowTable, now: Duration, sel: &mut dyn Selector) -> usize {
            let due = t.offloaded_due(now);
            self.report(t, now, &due);
            let n = t.expire(now, sel);
            self.run(t);
            n
        }
    }

    fn kernel_table() -> FlowTable {
        let mut t = FlowTable::new(10, secs(60), 10);
        t.enable_offload();
        t
    }

    /// `c`'s flow established in `t`: query (second 0), answer, query (second 1).
    fn establish(t: &mut FlowTable, c: SocketAddr, sel: &mut Fake) {
        let (u, server, _) = forward(t.handle_client(secs(0), c, 10, sel));
        assert!(!t.wants_offload(&c), "a new flow is not offered");
        t.handle_server(secs(0), u, server, 20);
        assert!(
            !t.wants_offload(&c),
            "one exchange is not an established flow yet"
        );
        forward(t.handle_client(secs(1), c, 10, sel));
        assert!(t.wants_offload(&c));
    }

    /// A table offering flows to the kernel, and `c`'s flow established.
    fn established(c: SocketAddr, sel: &mut Fake) -> (FlowTable, Kernel) {
        let mut t = kernel_table();
        establish(&mut t, c, sel);
        (t, Kernel::default())
    }

    /// [`established`], and the flow handed to the kernel.
    fn offloaded(c: SocketAddr, sel: &mut Fake) -> (FlowTable, Kernel) {
        let (mut t, mut k) = established(c, sel);
        assert!(t.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        assert_eq!(k.run(&mut t), 1);
        (t, k)
    }

    fn busy(up: u64, down: u64, at: Option<u64>) -> Activity {
        Activity {
            last_seen: at.map(secs),
            datagrams_up: up,
            bytes_up: 10 * up,
            datagrams_down: down,
            bytes_down: 20 * down,
        }
    }

    #[test]
    fn an_established_flow_is_offered_to_the_kernel_once() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = offloaded(c, &mut sel);
        assert!(t.is_offloaded(&c));
        assert!(!t.wants_offload(&c));
        assert!(!t.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        assert_eq!(k.run(&mut t), 0);
        let flow = k.installed[0].flow;
        assert_eq!(
            k.installed,
            vec![OffloadRequest {
                flow,
                client: c,
                listen: sa("198.51.100.1:53"),
                server: sa("10.0.0.1:53"),
                upstream: sa("10.0.0.9:40000"),
            }]
        );
        assert_eq!(t.stats().flows_offloaded, 1);
        // No fast path, no offer.
        let mut plain = FlowTable::new(10, secs(60), 10);
        establish_plain(&mut plain, c, &mut sel);
        assert!(!plain.wants_offload(&c));
        assert!(!plain.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        assert_eq!(plain.poll_offload(), None);
    }

    fn establish_plain(t: &mut FlowTable, c: SocketAddr, sel: &mut Fake) {
        let (u, server, _) = forward(t.handle_client(secs(0), c, 10, sel));
        t.handle_server(secs(0), u, server, 20);
        forward(t.handle_client(secs(1), c, 10, sel));
    }

    #[test]
    fn withdraw_all_takes_every_kernel_flow_back_to_pen_for_good() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let (c1, c2, c3) = (
            sa("192.0.2.1:5000"),
            sa("192.0.2.2:5000"),
            sa("192.0.2.3:5000"),
        );
        let (mut t, mut k) = offloaded(c1, &mut sel);
        // c2 offered, its answer not back yet; c3 established, never offered.
        establish(&mut t, c2, &mut sel);
        assert!(t.offload(&c2, sa("198.51.100.1:53"), sa("10.0.0.9:40001")));
        establish(&mut t, c3, &mut sel);
        k.saw(c1, busy(3, 3, Some(2)));
        assert_eq!(t.withdraw_all(), 2);
        // The queued install of c2 runs first, then the two withdrawals.
        k.run(&mut t);
        assert!(
            k.live.is_empty(),
            "nothing left in the kernel: {:?}",
            k.live
        );
        let mut withdrawn = k.withdrawn.clone();
        withdrawn.sort();
        assert_eq!(withdrawn, vec![c1, c2]);
        assert!(!t.is_offloaded(&c1) && !t.is_offloaded(&c2));
        assert_eq!(
            t.stats().kernel_datagrams,
            6,
            "the last kernel traffic is counted"
        );
        // Still flows of this table, forwarded by pen; never offered again.
        for c in [c1, c2, c3] {
            assert!(t.flow(&c).is_some());
            forward(t.handle_client(secs(3), c, 10, &mut sel));
            assert!(!t.wants_offload(&c));
            assert!(!t.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40002")));
        }
        assert_eq!(k.run(&mut t), 0);
        t.check_invariants().unwrap();
    }

    #[test]
    fn an_offered_flow_stays_in_pen_until_the_kernel_answers() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = established(c, &mut sel);
        assert!(t.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        assert!(!t.is_offloaded(&c), "not before the answer");
        assert!(!t.wants_offload(&c), "offered once");
        assert_eq!(t.stats().flows_offloaded, 0);
        // Pen keeps forwarding meanwhile.
        forward(t.handle_client(secs(2), c, 10, &mut sel));
        k.run(&mut t);
        assert!(t.is_offloaded(&c));
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_wildcard_listeners_flow_is_offloaded_with_the_address_its_client_used() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = established(c, &mut sel);
        t.note_local(&c, "198.51.100.7".parse().unwrap());
        assert!(t.offload(&c, sa("0.0.0.0:53"), sa("10.0.0.9:40000")));
        k.run(&mut t);
        assert_eq!(k.installed[0].listen, sa("198.51.100.7:53"));
    }

    #[test]
    fn a_refused_flow_stays_in_pen_and_is_not_offered_again() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = established(c, &mut sel);
        k.refuse = true;
        assert!(t.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        k.run(&mut t);
        assert!(!t.is_offloaded(&c));
        assert!(!t.wants_offload(&c));
        assert_eq!(t.stats().flows_offloaded, 0);
        // Removing it withdraws nothing from the kernel.
        k.expire(&mut t, secs(100), &mut sel);
        assert!(t.is_empty());
        assert_eq!(t.poll_offload(), None);
        assert!(k.withdrawn.is_empty());
    }

    #[test]
    fn kernel_traffic_keeps_an_offloaded_flow_alive_and_is_counted() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = offloaded(c, &mut sel);
        // The first deadline (0 + 60) comes; the kernel forwarded traffic until second 50.
        k.saw(c, busy(100, 100, Some(50)));
        assert_eq!(t.offloaded_due(secs(59)), vec![]);
        assert_eq!(t.offloaded_due(secs(60)).len(), 1);
        assert_eq!(k.expire(&mut t, secs(61), &mut sel), 0);
        let f = t.flow(&c).unwrap();
        assert_eq!(f.last_seen, secs(50));
        assert_eq!(f.expires, secs(110));
        assert_eq!((f.datagrams_up, f.bytes_up), (102, 1020));
        assert_eq!((f.datagrams_down, f.bytes_down), (101, 2020));
        let st = t.stats();
        assert_eq!(st.kernel_datagrams, 200);
        assert_eq!(st.datagrams_from_clients, 102);
        assert_eq!(st.bytes_from_servers, 2020);
        t.check_invariants().unwrap();
        // Nothing more: it expires, is withdrawn, and its server gets the full byte counts.
        assert_eq!(k.expire(&mut t, secs(110), &mut sel), 1);
        assert_eq!(k.withdrawn, vec![c]);
        assert_eq!(sel.closed, vec![(c, Target::Server(0), 1020, 2020)]);
    }

    #[test]
    fn every_way_out_of_the_table_withdraws_an_offloaded_flow() {
        // Server unreachable; what the kernel forwarded since the last reading still counts
        // in the table's totals.
        let mut sel = Fake::new(&["10.0.0.1:53", "10.0.0.2:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = offloaded(c, &mut sel);
        let f = t.flow(&c).unwrap();
        k.saw(c, busy(5, 0, None));
        t.server_unreachable(secs(2), f.upstream, f.server, &mut sel);
        assert!(
            k.withdrawn.is_empty(),
            "the shell does it, outside the table"
        );
        k.run(&mut t);
        assert_eq!(k.withdrawn, vec![c]);
        assert_eq!(t.stats().bytes_from_clients, 20 + 50);
        assert_eq!(t.stats().kernel_datagrams, 5);
        // Server readdressed.
        let (mut t, mut k) = offloaded(c, &mut sel);
        let Target::Server(idx) = t.flow(&c).unwrap().target else {
            panic!("not a server flow")
        };
        sel.readdress(idx, Some("10.0.0.7:53"));
        assert_eq!(t.follow_servers(secs(2), &mut sel), 1);
        k.run(&mut t);
        assert_eq!(k.withdrawn, vec![c]);
        // Removed by the shell (`close N`).
        let (mut t, mut k) = offloaded(c, &mut sel);
        t.remove_flow(secs(2), c, &mut sel);
        k.run(&mut t);
        assert_eq!(k.withdrawn, vec![c]);
        assert!(k.live.is_empty());
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_flow_removed_before_the_kernel_answers_is_withdrawn_after_its_install() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, _) = established(c, &mut sel);
        assert!(t.offload(&c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        assert!(t.remove_flow(secs(2), c, &mut sel));
        let Some(OffloadCommand::Install(old)) = t.poll_offload() else {
            panic!("install first")
        };
        assert_eq!(
            t.poll_offload(),
            Some(OffloadCommand::Withdraw {
                client: c,
                flow: old.flow
            })
        );
        // The client comes back: a new flow; the old install's late answer does not touch it.
        forward(t.handle_client(secs(3), c, 10, &mut sel));
        t.handle_offload_result(&c, old.flow, true);
        assert!(!t.is_offloaded(&c));
        assert_eq!(t.stats().flows_offloaded, 0);
        // Nor does a report of the old flow's traffic.
        t.handle_activity(
            secs(3),
            &KernelReport {
                client: c,
                flow: old.flow,
                activity: busy(7, 7, Some(3)),
            },
        );
        assert_eq!(t.flow(&c).unwrap().datagrams_up, 1);
        assert_eq!(t.stats().kernel_datagrams, 0);
        t.check_invariants().unwrap();
    }

    #[test]
    fn a_full_table_keeps_an_offloaded_flow_the_kernel_keeps_busy() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let busy_client = sa("192.0.2.1:5000");
        let (mut t, mut k) = offloaded(busy_client, &mut sel);
        t.set_limits(2, secs(60));
        // A second flow, answered later than the busy one's last reply through pen.
        let quiet = sa("192.0.2.2:5000");
        let (upstream, server, _) = forward(t.handle_client(secs(3), quiet, 1, &mut sel));
        assert_eq!(t.handle_server(secs(3), upstream, server, 1), Some(quiet));
        // The kernel forwarded exchanges for the busy flow after that, and says so.
        k.saw(busy_client, busy(3, 3, Some(5)));
        let turn = t.offloaded_turn(100);
        k.report(&mut t, secs(6), &turn);
        forward(t.handle_client(secs(6), sa("192.0.2.3:5000"), 1, &mut sel));
        k.run(&mut t);
        assert!(
            t.flow(&busy_client).is_some(),
            "the busy offloaded flow stays"
        );
        assert!(
            t.flow(&quiet).is_none(),
            "the least recently active flow goes"
        );
        assert!(k.withdrawn.is_empty());
        t.check_invariants().unwrap();
        // With no kernel traffic since, the offloaded flow is evicted like any other.
        let newest = sa("192.0.2.3:5000");
        let f = t.flow(&newest).unwrap();
        assert_eq!(
            t.handle_server(secs(7), f.upstream, f.server, 1),
            Some(newest)
        );
        forward(t.handle_client(secs(8), sa("192.0.2.4:5000"), 1, &mut sel));
        k.run(&mut t);
        assert!(t.flow(&busy_client).is_none());
        assert_eq!(k.withdrawn, vec![busy_client]);
        t.check_invariants().unwrap();
    }

    #[test]
    fn live_kernel_flows_report_their_traffic_when_read() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (mut t, mut k) = offloaded(c, &mut sel);
        k.saw(c, busy(4, 4, Some(3)));
        let turn = t.offloaded_turn(100);
        assert_eq!(turn.len(), 1);
        k.report(&mut t, secs(4), &turn);
        let f = t.flow(&c).unwrap();
        assert_eq!(
            (f.datagrams_up, f.bytes_down, f.last_seen),
            (6, 100, secs(3))
        );
        assert_eq!(t.stats().kernel_datagrams, 8);
        // Read once: nothing is counted twice.
        let turn = t.offloaded_turn(100);
        k.report(&mut t, secs(5), &turn);
        assert_eq!(t.stats().kernel_datagrams, 8);
        assert!(t.offloaded_turn(0).is_empty());
        // A time in the future is taken as now.
        k.saw(c, busy(1, 0, Some(99)));
        k.report(&mut t, secs(6), &turn);
        assert_eq!(t.flow(&c).unwrap().last_seen, secs(6));
        t.check_invariants().unwrap();
    }

    #[test]
    fn reading_many_kernel_flows_takes_turns() {
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let mut t = kernel_table();
        let mut k = Kernel::default();
        let clients: Vec<SocketAddr> = (1..=5u16)
            .map(|p| SocketAddr::from(([192, 0, 2, 1], p)))
            .collect();
        for c in &clients {
            establish(&mut t, *c, &mut sel);
            assert!(t.offload(c, sa("198.51.100.1:53"), sa("10.0.0.9:40000")));
        }
        k.run(&mut t);
        for c in &clients {
            k.saw(*c, busy(1, 0, None));
        }
        // Two per turn: after three turns every flow has been read once or more.
        for _ in 0..3 {
            let turn = t.offloaded_turn(2);
            assert_eq!(turn.len(), 2);
            k.report(&mut t, secs(2), &turn);
        }
        assert!(k.pending.is_empty(), "every flow had its turn");
        assert_eq!(t.stats().kernel_datagrams, 5);
    }

    #[test]
    fn transparent_flows_are_never_offered_to_the_kernel() {
        let mut t = transparent_table(10);
        t.enable_offload();
        let mut sel = Fake::new(&["10.0.0.1:53"]);
        let c = sa("192.0.2.1:5000");
        let (u, server, _) = forward(t.handle_client(secs(0), c, 10, &mut sel));
        assert_eq!(u.bound, Some(ip("192.0.2.1")));
        t.handle_server(secs(0), u, server, 20);
        forward(t.handle_client(secs(1), c, 10, &mut sel));
        assert!(
            !t.wants_offload(&c),
            "an established transparent flow stays in pen"
        );
        assert!(!t.offload(&c, sa("10.0.0.254:53"), sa("192.0.2.1:40000")));
        assert_eq!(t.poll_offload(), None);
    }
}
