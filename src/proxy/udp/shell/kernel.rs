//! The shell's side of the kernel fast path: it carries out the flow table's
//! [`OffloadCommand`]s and reads the kernel's counters for it, never with the table's lock
//! held, and feeds the routing's changes to the route cache.
//!
//! Locks: the kernel path's mutex first, the table's second, each held only for its own work:
//! commands are taken from the table under its lock, carried out under the kernel's alone,
//! and their results handed back under the table's again. Nothing takes the kernel's lock
//! while holding the table's. The kernel's lock keeps the commands in the order the table
//! emitted them even when two threads drain (the data path and `close N`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::lock;
use crate::proxy::udp::flow::{Activity, FlowId, FlowTable, KernelReport, OffloadCommand};

#[cfg(target_os = "linux")]
use crate::proxy::udp::offload::KernelPath;

/// Where there is no kernel fast path: nothing can be made of this type.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
pub enum KernelPath {}

#[cfg(not(target_os = "linux"))]
impl KernelPath {
    fn install(
        &mut self,
        _req: &crate::proxy::udp::flow::OffloadRequest,
    ) -> Result<(), std::io::Error> {
        match *self {}
    }
    fn activity(&mut self, _client: &SocketAddr, _now: Duration) -> Activity {
        match *self {}
    }
    fn withdraw(&mut self, _client: &SocketAddr) -> Activity {
        match *self {}
    }
    fn routes_changed(&mut self) {
        match *self {}
    }
}

/// The kernel fast path of one UDP balancer, once it is loaded (shared by the data path and
/// the [`super::UdpHandle`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelSlot {
    path: Arc<Mutex<Option<KernelPath>>>,
    /// Route notifications reach [`KernelSlot::routes_changed`].
    watching: Arc<AtomicBool>,
}

impl KernelSlot {
    /// Whether there is a fast path.
    pub(crate) fn is_ready(&self) -> bool {
        lock(&self.path).is_some()
    }

    /// Carries out the table's offload commands, in order, and hands back their results.
    pub(crate) fn drain(&self, table: &Mutex<FlowTable>) {
        let mut kernel = lock(&self.path);
        let Some(k) = kernel.as_mut() else {
            return;
        };
        let commands: Vec<OffloadCommand> = {
            let mut t = lock(table);
            std::iter::from_fn(|| t.poll_offload()).collect()
        };
        if commands.is_empty() {
            return;
        }
        let mut results: Vec<(SocketAddr, FlowId, bool)> = Vec::new();
        let mut withdrawn = Activity::default();
        for command in commands {
            match command {
                OffloadCommand::Install(req) => {
                    let installed = match k.install(&req) {
                        Ok(()) => {
                            tracing::debug!(client = %req.client, "udp flow forwarded by the kernel from now on");
                            true
                        }
                        Err(e) => {
                            tracing::debug!(client = %req.client, error = %e, "udp flow stays in pen");
                            false
                        }
                    };
                    results.push((req.client, req.flow, installed));
                }
                OffloadCommand::Withdraw { client, .. } => {
                    let a = k.withdraw(&client);
                    withdrawn.datagrams_up += a.datagrams_up;
                    withdrawn.bytes_up += a.bytes_up;
                    withdrawn.datagrams_down += a.datagrams_down;
                    withdrawn.bytes_down += a.bytes_down;
                }
            }
        }
        let mut t = lock(table);
        for (client, flow, installed) in results {
            t.handle_offload_result(&client, flow, installed);
        }
        if !withdrawn.is_empty() {
            t.handle_withdrawn(&withdrawn);
        }
    }

    /// Reads what the kernel forwarded for the flows `which` picks (under the table's lock)
    /// and reports it to the table.
    pub(crate) fn read_activity(
        &self,
        table: &Mutex<FlowTable>,
        now: Duration,
        which: impl FnOnce(&mut FlowTable) -> Vec<(SocketAddr, FlowId)>,
    ) {
        let mut kernel = lock(&self.path);
        let Some(k) = kernel.as_mut() else {
            return;
        };
        let flows = which(&mut lock(table));
        if flows.is_empty() {
            return;
        }
        let reports: Vec<KernelReport> = flows
            .into_iter()
            .map(|(client, flow)| KernelReport {
                client,
                flow,
                activity: k.activity(&client, now),
            })
            .collect();
        let mut t = lock(table);
        for r in &reports {
            t.handle_activity(now, r);
        }
    }

    /// The routing changed: route look-ups are made again.
    pub(crate) fn routes_changed(&self) {
        if let Some(k) = lock(&self.path).as_mut() {
            k.routes_changed();
        }
    }

    /// Whether route notifications reach the route cache (else the expiry task drops it at
    /// every tick).
    pub(crate) fn watching_routes(&self) -> bool {
        self.watching.load(Ordering::Relaxed)
    }

    /// Loads the fast path for an IPv4 listener and lets `table` offer flows to it, unless
    /// `PEN_UDP_OFFLOAD=0` or the kernel refuses (logged; every datagram then goes through
    /// pen). Returns whether it is ready.
    pub(crate) fn attach(&self, table: &Mutex<FlowTable>, listen: SocketAddr) -> bool {
        if !listen.is_ipv4() || std::env::var("PEN_UDP_OFFLOAD").is_ok_and(|v| v == "0") {
            return false;
        }
        #[cfg(target_os = "linux")]
        match KernelPath::new() {
            Ok(k) => {
                tracing::info!("udp: kernel fast path ready for established flows");
                *lock(&self.path) = Some(k);
                lock(table).enable_offload();
                return true;
            }
            Err(e) => {
                tracing::info!(error = %e, "udp: no kernel fast path; pen forwards every datagram")
            }
        }
        let _ = table;
        false
    }

    /// Feeds the kernel's route notifications to the route cache until an error (then the
    /// expiry task drops the cache at every tick instead). Runs on the data path's runtime.
    #[cfg(target_os = "linux")]
    pub(crate) async fn watch_routes(self) {
        let mut watch = match crate::proxy::udp::routes::RouteWatch::new() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "udp: cannot watch route changes; route look-ups are repeated every tick");
                return;
            }
        };
        self.watching.store(true, Ordering::Relaxed);
        let _unwatch = Unwatch(Arc::clone(&self.watching));
        loop {
            if let Err(e) = watch.changed().await {
                tracing::warn!(error = %e, "udp: route notifications failed; route look-ups are repeated every tick");
                return;
            }
            tracing::debug!("udp: routes changed; the fast path looks them up again");
            self.routes_changed();
        }
    }
}

/// Marks the route watch as gone when its task ends (or is aborted).
struct Unwatch(Arc<AtomicBool>);

impl Drop for Unwatch {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    //! Live test in a throw-away network namespace with two veth pairs (needs root).
    use super::*;
    use std::net::Ipv4Addr;
    use std::process::Command;
    use std::time::Instant;

    fn require_root() {
        crate::testing::require_root("creates a network namespace and loads a BPF program");
    }

    /// The namespace, deleted when the test ends (however it ends).
    struct Netns(String);

    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("run ip");
        assert!(st.success(), "ip {args:?} failed");
    }

    fn ifindex(ns: &str, dev: &str) -> u32 {
        let out = Command::new("ip")
            .args(["-n", ns, "-o", "link", "show", dev])
            .output()
            .expect("run ip");
        let text = String::from_utf8_lossy(&out.stdout);
        text.split(':')
            .next()
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ifindex for {dev} in {text:?}"))
    }

    /// Polls `f` until it returns `want` (at most 3 s, letting the runtime's other tasks
    /// run); returns the last value.
    async fn settle(f: impl Fn() -> Option<u32>, want: Option<u32>) -> Option<u32> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let got = f();
            if got == want || Instant::now() >= deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A namespace with veth ends d1 (10.91.1.1/24) and d2 (10.91.2.1/24), both up.
    fn two_links(tag: &str) -> Netns {
        let ns = Netns(format!("pen-udp-{tag}-{}", std::process::id()));
        ip(&["netns", "add", &ns.0]);
        for (dev, peer, addr) in [("d1", "p1", "10.91.1.1/24"), ("d2", "p2", "10.91.2.1/24")] {
            ip(&[
                "-n", &ns.0, "link", "add", dev, "type", "veth", "peer", "name", peer,
            ]);
            ip(&["-n", &ns.0, "addr", "add", addr, "dev", dev]);
            ip(&["-n", &ns.0, "link", "set", dev, "up"]);
            ip(&["-n", &ns.0, "link", "set", peer, "up"]);
        }
        ns
    }

    /// Runs `f` on a new thread inside `ns`, on a single-threaded runtime.
    fn in_ns<F: std::future::Future<Output = ()>>(ns: &Netns, f: impl FnOnce() -> F + Send) {
        let file = std::fs::File::open(format!("/run/netns/{}", ns.0)).expect("netns file");
        std::thread::scope(|s| {
            s.spawn(move || {
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(f());
            })
            .join()
            .expect("the namespace thread");
        });
    }

    #[test]
    fn a_route_change_reaches_the_fast_paths_route_cache() {
        require_root();
        let ns = two_links("rt");
        ip(&["-n", &ns.0, "route", "add", "10.99.0.0/24", "dev", "d1"]);
        let (d1, d2) = (ifindex(&ns.0, "d1"), ifindex(&ns.0, "d2"));
        let dst = Ipv4Addr::new(10, 99, 0, 5);
        let name = ns.0.clone();
        in_ns(&ns, || async move {
            {
                // One fast path with the route watch, one without (to show that the cache
                // alone would keep the old route).
                let watched = KernelSlot::default();
                *lock(&watched.path) = Some(KernelPath::new().expect("load the fast path"));
                let mut unwatched = KernelPath::new().expect("load the fast path");
                let watch = tokio::spawn(watched.clone().watch_routes());
                let t0 = Instant::now();
                while !watched.watching_routes() && t0.elapsed() < Duration::from_secs(3) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                assert!(watched.watching_routes(), "route notifications subscribed");
                let route_to = |slot: &KernelSlot| lock(&slot.path).as_mut()?.route_to(dst);
                assert_eq!(route_to(&watched), Some(d1));
                assert_eq!(unwatched.route_to(dst), Some(d1));
                ip(&["-n", &name, "route", "replace", "10.99.0.0/24", "dev", "d2"]);
                let got = settle(|| route_to(&watched), Some(d2)).await;
                assert_eq!(got, Some(d2), "the watched cache follows the new route");
                assert_eq!(
                    unwatched.route_to(dst),
                    Some(d1),
                    "an unwatched cache keeps the old one"
                );
                // A route that goes away: the destination is no longer reached.
                ip(&["-n", &name, "route", "del", "10.99.0.0/24"]);
                let got = settle(|| route_to(&watched), None).await;
                assert_eq!(got, None, "no route, no fast path");
                watch.abort();
            }
        });
    }

    /// One server, no bookkeeping.
    struct One(SocketAddr);

    impl crate::proxy::udp::flow::Selector for One {
        fn candidates(
            &mut self,
            _c: SocketAddr,
            _now: Duration,
        ) -> Vec<crate::proxy::udp::flow::Candidate> {
            vec![crate::proxy::udp::flow::Candidate {
                target: crate::select::Target::Server(0),
                addr: Some(self.0),
            }]
        }
        fn flow_opened(&mut self, _c: SocketAddr, _t: crate::select::Target, _now: Duration) {}
        fn flow_closed(
            &mut self,
            _c: SocketAddr,
            _t: crate::select::Target,
            _s: u64,
            _r: u64,
            _now: Duration,
        ) {
        }
        fn server_failed(&mut self, _t: crate::select::Target, _now: Duration) {}
    }

    /// `c`'s flow established in `t` (query, answer, query) and offered to the kernel.
    fn offer(t: &mut FlowTable, c: SocketAddr, sel: &mut One) {
        let now = Duration::from_secs(1);
        let crate::proxy::udp::flow::ClientVerdict::Forward {
            upstream, server, ..
        } = t.handle_client(now, c, 10, sel)
        else {
            panic!("dropped")
        };
        t.handle_server(now, upstream, server, 10);
        t.handle_client(now, c, 10, sel);
        let (listen, local) = ("10.91.1.1:53".parse().unwrap(), "10.91.2.1:40000");
        assert!(t.offload(&c, listen, local.parse().unwrap()));
    }

    #[test]
    fn the_shell_carries_out_the_tables_offload_commands_and_reports_back() {
        require_root();
        let ns = two_links("cmd");
        in_ns(&ns, || async {
            let slot = KernelSlot::default();
            *lock(&slot.path) = Some(KernelPath::new().expect("load the fast path"));
            let mut sel = One("10.91.2.2:53".parse().unwrap());
            let mut table = FlowTable::new(10, Duration::from_secs(60), 10);
            table.enable_offload();
            // A client behind d1, and one on this host (the kernel path refuses it).
            let (c, local) = (
                "10.91.1.2:5000".parse().unwrap(),
                "10.91.1.1:5000".parse().unwrap(),
            );
            offer(&mut table, c, &mut sel);
            offer(&mut table, local, &mut sel);
            let handle = super::super::UdpHandle {
                table: Arc::new(Mutex::new(table)),
                kernel: slot.clone(),
            };
            // Nothing reaches the kernel under the table's lock.
            handle.with_table(|t| assert!(!t.is_offloaded(&c)));
            assert!(!lock(&slot.path).as_ref().is_some_and(|k| k.holds(&c)));
            // A change through the handle carries the queued commands out afterwards.
            handle.with_table_mut(|_| ());
            assert!(lock(&slot.path).as_ref().is_some_and(|k| k.holds(&c)));
            handle.with_table(|t| {
                assert!(t.is_offloaded(&c), "the result came back");
                assert!(!t.is_offloaded(&local), "refused: the host itself");
                assert!(!t.wants_offload(&local), "and not offered again");
                assert_eq!(t.stats().flows_offloaded, 1);
            });
            // `close N`: the flow leaves the kernel with the table.
            let now = Duration::from_secs(2);
            assert!(handle.with_table_mut(|t| t.remove_flow(now, c, &mut sel)));
            assert!(!lock(&slot.path).as_ref().is_some_and(|k| k.holds(&c)));
            // Reading activity with nothing offloaded does nothing.
            slot.read_activity(&handle.table, now, |t| t.offloaded_turn(10));
        });
    }
}
