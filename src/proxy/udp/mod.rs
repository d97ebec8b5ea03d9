//! UDP load balancing (`pen -U`): a pure flow table ([`flow`]) and a thin tokio shell
//! ([`shell`]). See `flow` for the reply routing scheme and the descriptor bound.
//!
//! The daemon calls [`serve`] with the bound listening socket and the shared state when
//! `config.udp` is set. Server choice goes through the shared [`Balancer`] (tracking, `-r`,
//! `-h`, weight, prio, ACLs, limits, blacklist, emergency): a flow counts as one established
//! connection of its server while it lives.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::config::BackendAddr;
use crate::proxy::{SharedState, lock};
use crate::select::{Balancer, Client, Target};

pub mod flow;
pub(crate) use crate::sys::mmsg;
#[cfg(target_os = "linux")]
pub mod offload;
pub mod shell;

pub mod routes;

pub use flow::{
    Activity, Candidate, ClientVerdict, DropReason, Family, FlowId, FlowInfo, FlowTable,
    KernelReport, OffloadCommand, OffloadRequest, Selector, UdpStats, UpstreamId,
};
pub use shell::{Limits, UdpContext, UdpHandle, UdpStatus, new_table, serve_table, serve_with};

fn client_of(addr: SocketAddr) -> Client {
    Client {
        ip: Some(addr.ip()),
        port: addr.port(),
    }
}

/// The balancer as the flow table's selector: a new flow is a connect that starts and succeeds
/// at once (UDP has no handshake); an unreachable server is a failed connect (blacklisted).
impl Selector for Balancer {
    fn candidates(&mut self, client: SocketAddr, now: Duration) -> Vec<Candidate> {
        self.select(&client_of(client), now)
            .into_iter()
            .map(|target| Candidate {
                target,
                addr: match self.addr(target) {
                    Some(BackendAddr::Inet(a)) => Some(*a),
                    _ => None,
                },
            })
            .collect()
    }

    fn flow_opened(&mut self, client: SocketAddr, target: Target, now: Duration) {
        self.connect_started(&client_of(client), target, now);
        self.connect_ok(target, now);
    }

    fn flow_closed(
        &mut self,
        client: SocketAddr,
        target: Target,
        sent: u64,
        received: u64,
        now: Duration,
    ) {
        self.closed(target, &client_of(client), sent, received, now);
    }

    fn server_failed(&mut self, target: Target, now: Duration) {
        self.connect_failed(target, now);
    }

    fn addr_generation(&mut self) -> u64 {
        Balancer::addr_generation(self)
    }

    fn current_addr(&mut self, target: Target) -> Option<SocketAddr> {
        match self.addr(target) {
            Some(BackendAddr::Inet(a)) => Some(*a),
            _ => None,
        }
    }
}

/// [`UdpContext`] over the daemon's shared state.
#[derive(Clone)]
pub struct SharedContext(pub SharedState);

impl UdpContext for SharedContext {
    fn with_selector<R>(&self, f: impl FnOnce(&mut dyn Selector) -> R) -> R {
        let mut g = lock(&self.0);
        f(&mut g.balancer)
    }

    fn limits(&self) -> Limits {
        let g = lock(&self.0);
        Limits {
            max_flows: g.config.conn_max,
            idle: Duration::from_secs(g.config.udp_flow_idle_secs),
            source: g.config.source,
        }
    }

    fn now(&self) -> Duration {
        crate::proxy::now()
    }

    fn transparent(&self) -> bool {
        lock(&self.0).config.transparent
    }

    fn transparent_failed(
        &self,
        client: SocketAddr,
        err: &crate::proxy::transparent::TransparentError,
    ) {
        crate::proxy::transparent::record(&self.0, &client.to_string(), err);
    }

    fn publish(&self, status: UdpStatus) {
        lock(&self.0).udp = Some(status);
    }
}

/// Run the UDP balancer on `socket` with the daemon's shared state, until an unrecoverable
/// error. Dropping the future stops every task it started.
pub async fn serve(socket: UdpSocket, shared: SharedState) -> io::Result<()> {
    let ctx = SharedContext(shared.clone());
    let handle = new_table(&ctx.limits());
    lock(&shared).io.udp_table = Some(handle.clone());
    let _published = Unpublish {
        shared: shared.clone(),
        handle: handle.clone(),
    };
    serve_table(socket, ctx, handle).await
}

/// Binary upgrade: set once this pen handed its UDP socket to a new one.
static STOP_READING: (std::sync::atomic::AtomicBool, tokio::sync::Notify) = (
    std::sync::atomic::AtomicBool::new(false),
    tokio::sync::Notify::const_new(),
);

/// Binary upgrade: the listener loop stops reading new datagrams (the new pen reads them);
/// the flows, their upstream sockets and the replies through the listening socket carry on
/// until pen exits.
pub(crate) fn stop_reading() {
    STOP_READING
        .0
        .store(true, std::sync::atomic::Ordering::SeqCst);
    STOP_READING.1.notify_waiters();
}

/// Returns once [`stop_reading`] was called.
pub(crate) async fn reading_stopped() {
    loop {
        let n = STOP_READING.1.notified();
        if STOP_READING.0.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        n.await;
    }
}

/// Takes the table out of the shared state when its balancer stops (unless a newer one
/// replaced it), so that `close N` never reaches a table nobody serves.
struct Unpublish {
    shared: SharedState,
    handle: UdpHandle,
}

impl Drop for Unpublish {
    fn drop(&mut self) {
        let mut g = lock(&self.shared);
        if g.io
            .udp_table
            .as_ref()
            .is_some_and(|h| h.same(&self.handle))
        {
            g.io.udp_table = None;
        }
    }
}

/// `close N` on a UDP balancer: removes flow `n` in the order of the status page (oldest
/// first), as published last, with its kernel entries. Returns whether there was one.
pub fn close_flow(shared: &SharedState, n: usize) -> bool {
    let (handle, client) = {
        let g = lock(shared);
        let client = g
            .udp
            .as_ref()
            .and_then(|u| u.flows.get(n))
            .map(|f| f.client);
        match (g.io.udp_table.clone(), client) {
            (Some(h), Some(c)) => (h, c),
            _ => return false,
        }
    };
    let removed = handle.with_table_mut(|table| {
        let mut g = lock(shared);
        table.remove_flow(crate::proxy::now(), client, &mut g.balancer)
    });
    if removed {
        tracing::info!(%client, "udp flow closed by the control socket");
    }
    removed
}

/// As [`serve`], on a table created with [`new_table`] whose [`UdpHandle`] the caller keeps
/// (for `connection`/status output).
pub async fn serve_with_handle(
    socket: UdpSocket,
    shared: SharedState,
    handle: UdpHandle,
) -> io::Result<()> {
    serve_table(socket, SharedContext(shared), handle).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, HostSpec, ServerConfig};

    #[tokio::test]
    async fn a_stopped_udp_balancer_takes_its_table_out_of_the_shared_state() {
        let shared: SharedState = std::sync::Arc::new(std::sync::Mutex::new(
            crate::proxy::Shared::new(Config::default()),
        ));
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let task = tokio::spawn(serve(sock, shared.clone()));
        for _ in 0..200 {
            if lock(&shared).io.udp_table.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            lock(&shared).io.udp_table.is_some(),
            "published while serving"
        );
        task.abort();
        let _ = task.await;
        assert!(lock(&shared).io.udp_table.is_none(), "gone when it stops");
        assert!(!close_flow(&shared, 0));
    }

    fn config(n: u8, roundrobin: bool) -> Config {
        let mut c = Config {
            udp: true,
            ..Config::default()
        };
        for i in 1..=n {
            c.servers.push(ServerConfig {
                host: Some(HostSpec::Ip([10, 0, 0, i].into())),
                port: 53,
                ..ServerConfig::default()
            });
        }
        c.mode.roundrobin = roundrobin;
        c
    }

    fn server_of(v: ClientVerdict) -> SocketAddr {
        match v {
            ClientVerdict::Forward { server, .. } => server,
            ClientVerdict::Drop(r) => panic!("dropped: {r:?}"),
        }
    }

    const T: Duration = Duration::from_secs(100);

    #[test]
    fn tracking_keeps_a_client_ip_on_one_server_across_ports() {
        let mut b = Balancer::new(&config(3, false));
        let mut t = FlowTable::new(100, Duration::from_secs(60), 100);
        let first = server_of(t.handle_client(T, "192.0.2.7:1000".parse().unwrap(), 1, &mut b));
        for p in 1001..1010u16 {
            let c = SocketAddr::from(([192, 0, 2, 7], p));
            assert_eq!(server_of(t.handle_client(T, c, 1, &mut b)), first);
        }
    }

    #[test]
    fn roundrobin_spreads_flows_of_one_ip() {
        let mut b = Balancer::new(&config(3, true));
        let mut t = FlowTable::new(100, Duration::from_secs(60), 100);
        let mut seen = std::collections::HashSet::new();
        for p in 1000..1006u16 {
            let c = SocketAddr::from(([192, 0, 2, 7], p));
            seen.insert(server_of(t.handle_client(T, c, 1, &mut b)));
        }
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn blacklisted_server_gets_no_new_flows_and_all_blacklisted_drops() {
        let mut b = Balancer::new(&config(3, true));
        let mut t = FlowTable::new(100, Duration::from_secs(60), 100);
        b.blacklist(1, 30, T).unwrap();
        for p in 1000..1010u16 {
            let c = SocketAddr::from(([192, 0, 2, 7], p));
            assert_ne!(
                server_of(t.handle_client(T, c, 1, &mut b)),
                "10.0.0.2:53".parse().unwrap()
            );
        }
        b.blacklist(0, 30, T).unwrap();
        b.blacklist(2, 30, T).unwrap();
        let c = SocketAddr::from(([192, 0, 2, 8], 1));
        assert_eq!(
            t.handle_client(T, c, 1, &mut b),
            ClientVerdict::Drop(DropReason::NoServer)
        );
        // `server N blacklist 0` brings it back.
        b.blacklist(1, 0, T).unwrap();
        assert_eq!(
            server_of(t.handle_client(T, c, 1, &mut b)),
            "10.0.0.2:53".parse().unwrap()
        );
    }

    #[test]
    fn flows_count_as_connections_until_they_expire() {
        let mut b = Balancer::new(&config(1, true));
        let mut t = FlowTable::new(100, Duration::from_secs(60), 100);
        for p in 1..=3u16 {
            server_of(t.handle_client(T, SocketAddr::from(([192, 0, 2, 7], p)), 10, &mut b));
        }
        assert_eq!(b.servers()[0].load(), 3);
        t.expire(T + Duration::from_secs(60), &mut b);
        assert_eq!(b.servers()[0].load(), 0);
    }

    #[test]
    fn icmp_unreachable_blacklists_in_the_balancer() {
        let mut b = Balancer::new(&config(2, true));
        let mut t = FlowTable::new(100, Duration::from_secs(60), 100);
        let c: SocketAddr = "192.0.2.7:1".parse().unwrap();
        let (up, server) = match t.handle_client(T, c, 1, &mut b) {
            ClientVerdict::Forward {
                upstream, server, ..
            } => (upstream, server),
            v => panic!("{v:?}"),
        };
        t.server_unreachable(T, up, server, &mut b);
        let idx = if server == "10.0.0.1:53".parse().unwrap() {
            0
        } else {
            1
        };
        assert!(b.is_blacklisted(idx, T));
        assert_ne!(server_of(t.handle_client(T, c, 1, &mut b)), server);
    }
}
