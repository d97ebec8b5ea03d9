//! DSR mode for the daemon (`-O "dsr_if IF"`): the engine on the live driver, on a dedicated
//! thread, fed with the balancer's servers and blacklist.
//!
//! The daemon opens the interface with [`open`] while it is still root (before dropping
//! privileges), then awaits [`serve_shared`] in place of the TCP/UDP proxy. It runs the engine
//! until its future is dropped (the daemon aborts the task on exit) or the interface fails.
//! On every loop pass (each batch, at least every 100 ms) the engine reads the current server
//! list and tarpit ACL from the shared state, so `server N blacklist T`, `server N weight W`,
//! new servers, `acl`/`tarpit_acl` changes through penctl or `-F` re-reads take effect on the
//! next frame. The VIP, port, `-U` and `-r` are read once at start (`listen` reopens DSR).
//! The tarpit's settings (`tarpit_persist`, `tarpit_capture`, `tarpit_rate`) are read the same
//! way, and the engine publishes the tarpit's counters into the shared state on every pass
//! ([`crate::state::State::tarpit`]) for penctl's `tarpit`, the status page and Prometheus.
//! The DSR interface's own addresses, read at start, are never captured.
//!
//! The engine runs under [`crate::link::io::drive`] on the TPACKET_V2 ring driver
//! (`PEN_DSR_RECVMMSG=1`: `recvmmsg`), wrapped in [`Learning`] when the XDP fast path is
//! attached and, outermost, in a pcap [`Tap`] when `PEN_DSR_TAP=FILE` is set (FILE is created
//! when DSR starts; DSR does not run if it cannot be).

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::acl::Acl;
use crate::config::{BackendAddr, Config};
use crate::engine::{BackendConfig, Engine, EngineConfig};
use crate::link::afpacket::AfPacket;
use crate::link::io::{FrameIo, drive};
use crate::link::tap::Tap;
use crate::link::xdp::Learning;
use crate::proxy::SharedState;
use crate::select::Balancer;
use std::fs::File;

/// The engine's view of the balancer's servers at `now`: one entry per slot, IP address (the
/// port does not matter in DSR), weight, and available unless blacklisted or held out by its
/// active health check (`server N check ...`).
pub fn backends_from(balancer: &Balancer, now: Duration) -> Vec<BackendConfig> {
    balancer
        .servers()
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let ip = match &s.addr {
                Some(BackendAddr::Inet(sa)) => Some(crate::acl::canonical(sa.ip())),
                _ => None,
            };
            BackendConfig {
                ip,
                weight: s.config.weight,
                available: !balancer.is_blacklisted(i, now) && !s.check_down,
            }
        })
        .collect()
}

/// Checks the DSR configuration (a VIP as listen address) and opens the interface named by
/// `config.dsr_if` (needs root or CAP_NET_RAW). Errors name the interface or the address.
/// The XDP program goes into `inherited`, the XDP link a running pen handed over (binary
/// upgrade), when given, instead of a new attachment.
pub fn open_with(config: &Config, inherited: Option<std::os::fd::OwnedFd>) -> io::Result<AfPacket> {
    let Some(ifname) = &config.dsr_if else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "DSR mode needs dsr_if IF",
        ));
    };
    let mut ec = engine_config(config, [0; 6], [0; 16], Vec::new())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut link = AfPacket::open(ifname)?;
    ec.mac = link.mac();
    attach_fast_path(&ec, &mut link, inherited);
    Ok(link)
}

/// Attaches the XDP fast path ([`crate::link::xdp`]) for `ec` (the engine's configuration
/// with the interface's MAC) to `link` unless `PEN_DSR_XDP=0`, the VIP
/// is IPv6, or the kernel refuses (then pen logs why and the engine sees every frame).
/// Needs the privileges of [`open`], so it runs there.
fn attach_fast_path(
    ec: &EngineConfig,
    link: &mut AfPacket,
    inherited: Option<std::os::fd::OwnedFd>,
) {
    if std::env::var("PEN_DSR_XDP").is_ok_and(|v| v == "0") {
        tracing::info!("DSR on {}: XDP fast path off (PEN_DSR_XDP=0)", link.name());
        return;
    }
    let Some(fc) = crate::link::xdp::FastPathConfig::from_engine(ec) else {
        tracing::info!(
            "DSR on {}: no XDP fast path for an IPv6 VIP; the engine forwards every frame",
            link.name()
        );
        return;
    };
    let attached = match inherited {
        Some(l) => crate::link::xdp::FastPath::adopt(fc, l, link.name()),
        None => crate::link::xdp::FastPath::attach(fc, link.ifindex(), link.name()),
    };
    match attached {
        Ok(fp) => {
            tracing::info!(
                "DSR on {}: XDP fast path attached (generic mode, up to {} clients cached)",
                link.name(),
                crate::link::xdp::MAX_CLIENTS
            );
            link.set_fast_path(fp);
        }
        Err(e) => tracing::warn!(
            "DSR on {}: {e}; the engine forwards every frame",
            link.name()
        ),
    }
}

/// 16 bytes from the kernel's random source: the tarpit's ISN key, drawn once per start.
pub fn isn_key() -> io::Result<[u8; 16]> {
    let mut k = [0u8; 16];
    crate::sys::process::random_bytes(&mut k)?;
    Ok(k)
}

/// Builds the engine's configuration from pen's (VIP, port, `-U`, `-r`, `tarpit_acl`) and the
/// balancer's servers (already resolved).
pub fn engine_config(
    config: &Config,
    link_mac: crate::engine::Mac,
    key: [u8; 16],
    backends: Vec<BackendConfig>,
) -> Result<EngineConfig, String> {
    let mut c = config.clone();
    c.servers.clear();
    let mut ec = EngineConfig::from_config(&c, link_mac, key).map_err(|e| e.to_string())?;
    ec.backends = backends;
    Ok(ec)
}

/// The tarpit ACL `config` names, if any.
pub fn tarpit_acl(config: &Config) -> Option<Acl> {
    config
        .tarpit_acl
        .and_then(|n| config.acls.get(usize::from(n)).cloned())
}

/// What the engine reads from the daemon on every loop pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub backends: Vec<BackendConfig>,
    pub tarpit: Option<Acl>,
    pub tarpit_persist: bool,
    pub tarpit_capture: Option<crate::engine::capture::CaptureConfig>,
    pub tarpit_rate: Option<crate::engine::ratecap::RateConfig>,
}

/// How many captured addresses the published status lists.
pub const STATUS_CAPTURED_MAX: usize = 64;
/// The tarpit's status is published at most this often (a loop pass can be one batch of
/// frames, thousands of times a second under load).
pub const STATUS_EVERY: Duration = Duration::from_millis(100);

/// Whether the status is due at `now`, the last publication having been at `last`; moves
/// `last` on when it is.
fn publish_due(last: &mut Option<Duration>, now: Duration) -> bool {
    match *last {
        Some(t) if now < t.saturating_add(STATUS_EVERY) && now >= t => false,
        _ => {
            *last = Some(now);
            true
        }
    }
}

/// The IP addresses of interface `name` (empty when they cannot be read): the tarpit never
/// captures them.
pub fn interface_addrs(name: &str) -> Vec<IpAddr> {
    crate::sys::ifaddrs::interface_addrs(name)
}

/// Runs DSR on `link` with the daemon's shared state: the engine is configured from the
/// state's configuration and balancer, then follows their changes (see the module doc).
pub async fn serve_shared(link: AfPacket, state: SharedState) -> io::Result<()> {
    let mut hook_guard = HookGuard {
        state: state.clone(),
        hook: None,
    };
    let engine_cfg = {
        let mut g = crate::proxy::lock(&state);
        // A `server` command drops the kernel's cached choices before penctl gets its reply.
        g.io.on_servers_changed = link.fast_path().map(|fp| {
            let generation = fp.generation();
            crate::proxy::ChangeHook(Arc::new(move || {
                if let Err(e) = generation.bump() {
                    tracing::warn!("DSR: cannot invalidate the XDP fast path: {e}");
                }
            }))
        });
        hook_guard.hook = g.io.on_servers_changed.clone();
        let backends = backends_from(&g.balancer, crate::proxy::now());
        let mut ec = engine_config(&g.config, link.mac(), isn_key()?, backends)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        ec.own_addrs = interface_addrs(link.name());
        ec
    };
    let _published = PublishedGuard(state.clone());
    serve(link, engine_cfg, move |status| {
        let mut g = crate::proxy::lock(&state);
        if let Some(st) = status {
            g.tarpit = Some(st);
        }
        Update {
            backends: backends_from(&g.balancer, crate::proxy::now()),
            tarpit: tarpit_acl(&g.config),
            tarpit_persist: g.config.tarpit_persist,
            tarpit_capture: g.config.tarpit_capture,
            tarpit_rate: g.config.tarpit_rate,
        }
    })
    .await
}

/// Clears the published tarpit status when DSR stops.
struct PublishedGuard(SharedState);

impl Drop for PublishedGuard {
    fn drop(&mut self) {
        crate::proxy::lock(&self.0).tarpit = None;
    }
}

/// Removes the `server` hook DSR installed in the shared state when DSR stops (unless a newer
/// DSR run replaced it meanwhile).
struct HookGuard {
    state: SharedState,
    hook: Option<crate::proxy::ChangeHook>,
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        let Some(mine) = self.hook.take() else {
            return;
        };
        let mut g = crate::proxy::lock(&self.state);
        let still_mine =
            g.io.on_servers_changed
                .as_ref()
                .is_some_and(|h| std::ptr::addr_eq(Arc::as_ptr(&h.0), Arc::as_ptr(&mine.0)));
        if still_mine {
            g.io.on_servers_changed = None;
        }
    }
}

/// Stops the engine thread when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the engine on `link` until the returned future is dropped or the interface fails.
/// `update` is called once per loop pass on the engine thread, with the tarpit's status when
/// it is due (at most every [`STATUS_EVERY`]).
pub async fn serve(
    mut link: AfPacket,
    engine_cfg: EngineConfig,
    mut update: impl FnMut(Option<crate::engine::TarpitStatus>) -> Update + Send + 'static,
) -> io::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let _guard = StopOnDrop(stop.clone());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = link.name().to_string();
    let tap = open_tap(std::env::var_os(TAP_ENV))?;
    std::thread::Builder::new()
        .name(format!("pen-dsr-{name}"))
        .spawn(move || {
            let mut engine = Engine::new(engine_cfg);
            tracing::info!(
                "DSR on {name}: VIP {}:{} ({}), MAC {}",
                engine.config().vip,
                engine.config().port,
                if engine.config().udp { "UDP" } else { "TCP" },
                crate::engine::wire::MacText(engine.config().mac)
            );
            let mut published = None;
            let tick = move |e: &mut Engine, now: Duration| {
                let status =
                    publish_due(&mut published, now).then(|| e.tarpit_status(STATUS_CAPTURED_MAX));
                let u = update(status);
                e.set_backends(u.backends);
                e.set_tarpit(u.tarpit);
                e.set_tarpit_options(u.tarpit_persist, u.tarpit_capture, u.tarpit_rate, now);
            };
            let fast = link.take_fast_path();
            // PEN_DSR_RECVMMSG=1: the recvmmsg loop instead of the TPACKET_V2 ring (for
            // kernels or drivers where the ring misbehaves, and for comparisons).
            let r = if std::env::var_os("PEN_DSR_RECVMMSG").is_some() {
                run_wrapped(&mut link, fast, tap, &mut engine, &stop, tick)
            } else {
                match link.use_ring() {
                    Ok(ring) => run_wrapped(ring, fast, tap, &mut engine, &stop, tick),
                    Err(e) => {
                        tracing::warn!("{e} on {name}; receiving with recvmmsg instead");
                        run_wrapped(&mut link, fast, tap, &mut engine, &stop, tick)
                    }
                }
            };
            tracing::info!(
                "DSR on {name} stopped: {}; {:?}; XDP fast path: {}",
                engine.counters(),
                link.stats,
                r.as_ref().map_or("?".to_string(), |r| r.fast.clone())
            );
            let r = r.map(|_| ());
            let _ = tx.send(r);
        })?;
    match rx.await {
        Ok(r) => r,
        Err(_) => Err(io::Error::other("the DSR thread ended without a result")),
    }
}

/// The environment variable naming the DSR interface's pcap tap file.
pub const TAP_ENV: &str = "PEN_DSR_TAP";

/// Creates the tap file `PEN_DSR_TAP` names, if set. Errors name the variable and the file.
fn open_tap(path: Option<std::ffi::OsString>) -> io::Result<Option<std::io::BufWriter<File>>> {
    let Some(path) = path.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let f = File::create(&path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{TAP_ENV}={}: cannot create the pcap tap file: {e}; expected a writable path",
                std::path::Path::new(&path).display()
            ),
        )
    })?;
    tracing::info!(
        "DSR: writing every frame in and out to {} ({TAP_ENV})",
        std::path::Path::new(&path).display()
    );
    Ok(Some(std::io::BufWriter::new(f)))
}

/// What a DSR run reports when it stops.
struct Ran {
    /// The XDP fast path's figures, or "off".
    fast: String,
}

/// Runs the engine on `io`, wrapped in the XDP learning step when `fast` is attached and in a
/// pcap tap when `tap` is set (the tap outermost, so it sees what the engine sees).
fn run_wrapped<I: FrameIo>(
    io: I,
    fast: Option<crate::link::xdp::FastPath>,
    tap: Option<std::io::BufWriter<File>>,
    engine: &mut Engine,
    stop: &AtomicBool,
    tick: impl FnMut(&mut Engine, Duration),
) -> io::Result<Ran> {
    fn tapped<I: FrameIo>(
        io: I,
        tap: Option<std::io::BufWriter<File>>,
        engine: &mut Engine,
        stop: &AtomicBool,
        tick: impl FnMut(&mut Engine, Duration),
    ) -> io::Result<I> {
        match tap {
            None => {
                let mut io = io;
                drive(engine, &mut io, stop, tick)?;
                Ok(io)
            }
            Some(w) => {
                let mut t = Tap::new(io, w)?;
                drive(engine, &mut t, stop, tick)?;
                tracing::info!(
                    "DSR tap: {} frames in, {} out written{}",
                    t.frames_in,
                    t.frames_out,
                    t.error
                        .as_ref()
                        .map_or(String::new(), |e| format!(" (stopped: {e})"))
                );
                Ok(t.finish().0)
            }
        }
    }
    match fast {
        None => {
            tapped(io, tap, engine, stop, tick)?;
            Ok(Ran { fast: "off".into() })
        }
        Some(fp) => {
            let l = tapped(Learning::new(io, fp), tap, engine, stop, tick)?;
            let n = l.fast.counts();
            Ok(Ran {
                fast: format!(
                    "{} frames / {} bytes in the kernel, {} clients learned",
                    n.frames, n.bytes, l.fast.learned
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostSpec, ListenAddr, ServerConfig};

    #[test]
    fn a_stopped_dsr_removes_its_server_hook_but_not_a_newer_one() {
        let state: SharedState = Arc::new(std::sync::Mutex::new(crate::proxy::Shared::new(
            Config::default(),
        )));
        let hook = |n: Arc<std::sync::atomic::AtomicU32>| {
            crate::proxy::ChangeHook(Arc::new(move || {
                n.fetch_add(1, Ordering::Relaxed);
            }))
        };
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let first = hook(calls.clone());
        crate::proxy::lock(&state).io.on_servers_changed = Some(first.clone());
        drop(HookGuard {
            state: state.clone(),
            hook: Some(first.clone()),
        });
        assert!(crate::proxy::lock(&state).io.on_servers_changed.is_none());
        // A restarted DSR installed its own hook before the old run's guard dropped.
        let second = hook(calls.clone());
        crate::proxy::lock(&state).io.on_servers_changed = Some(second);
        drop(HookGuard {
            state: state.clone(),
            hook: Some(first),
        });
        crate::proxy::tell_servers_changed(&state);
        assert_eq!(calls.load(Ordering::Relaxed), 1, "the newer hook stays");
    }

    #[test]
    fn blacklisted_servers_are_unavailable_to_the_engine() {
        let mut cfg = Config {
            listen: Some(ListenAddr::parse("10.0.0.100:0").unwrap()),
            dsr_if: Some("eth1".into()),
            ..Config::default()
        };
        for (h, w) in [("10.0.0.3", 0), ("10.0.0.4", 3)] {
            cfg.servers.push(ServerConfig {
                host: Some(HostSpec::Ip(h.parse().unwrap())),
                port: 0,
                weight: w,
                ..Default::default()
            });
        }
        let mut b = Balancer::new(&cfg);
        let now = Duration::from_secs(100);
        b.blacklist(1, 30, now).unwrap();
        let v = backends_from(&b, now);
        assert_eq!(v.len(), 2);
        assert!(v[0].available && !v[1].available);
        assert_eq!(v[1].weight, 3);
        assert_eq!(v[0].ip, Some("10.0.0.3".parse().unwrap()));
        assert!(backends_from(&b, now + Duration::from_secs(31))[1].available);
        // a failing health check takes a server out of the Maglev table too, apart from the
        // blacklist
        b.set_check_down(0, true);
        let v2 = backends_from(&b, now + Duration::from_secs(31));
        assert!(!v2[0].available && v2[1].available);
        let t = crate::engine::table_for(&v2).unwrap();
        assert_eq!(t.members(), [1], "only server 1 in the Maglev table");
        b.set_check_down(0, false);
        assert!(backends_from(&b, now + Duration::from_secs(31))[0].available);
        let ec = engine_config(&cfg, [2; 6], [1; 16], v).unwrap();
        assert_eq!(ec.port, 0);
        assert_eq!(ec.backends.len(), 2);
    }

    #[test]
    fn the_status_is_published_at_most_every_100_ms() {
        let ms = Duration::from_millis;
        let mut last = None;
        let due: Vec<bool> = [0, 1, 50, 99, 100, 150, 250, 40]
            .iter()
            .map(|t| publish_due(&mut last, ms(*t)))
            .collect();
        // (a clock going backwards publishes at once rather than never)
        assert_eq!(
            due,
            vec![true, false, false, false, true, false, true, true]
        );
    }

    #[test]
    fn the_loopback_interface_has_its_addresses_read() {
        let a = interface_addrs("lo");
        assert!(
            a.contains(&IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            "{a:?}"
        );
        assert!(interface_addrs("no-such-if0").is_empty());
    }

    /// `PEN_DSR_TAP=FILE`: the DSR thread's driver, wrapped in the tap, writes every frame in
    /// and out to FILE, a pcap file pcap-file (libpcap's format) reads back.
    #[test]
    fn the_dsr_tap_writes_the_frames_in_and_out_to_the_named_file() {
        use crate::engine::frames;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dsr.pcap");
        let tap = open_tap(Some(path.clone().into_os_string())).unwrap();
        assert!(tap.is_some());
        let (our, peer) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 9]);
        let vip = std::net::Ipv4Addr::new(10, 0, 0, 100);
        let mut engine = Engine::new(EngineConfig::new(our, vip, 80));
        let mut mem = crate::link::mem::MemIo::new();
        let req = frames::arp_request(peer, std::net::Ipv4Addr::new(10, 0, 0, 2), vip);
        mem.push(Duration::from_millis(3), req.clone());
        let mut ticks = 0;
        let ran = run_wrapped(
            &mut mem,
            None,
            tap,
            &mut engine,
            &AtomicBool::new(false),
            |_, _| ticks += 1,
        )
        .unwrap();
        assert_eq!(ran.fast, "off");
        assert_eq!(ticks, 1);
        let got = crate::link::pcapfile::read_frames(std::fs::File::open(&path).unwrap()).unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].1, req, "the request as received");
        assert_eq!(got[1].1, mem.sent[0].frame, "the reply as sent");
        assert_eq!(&got[1].1[..6], &peer);
        assert!(
            got[0].0 > Duration::from_secs(1_600_000_000),
            "wall-clock stamps"
        );
        assert!(open_tap(None).unwrap().is_none());
        assert!(open_tap(Some("".into())).unwrap().is_none());
        let e = open_tap(Some(dir.path().join("no/such/dir.pcap").into_os_string())).unwrap_err();
        assert!(
            e.to_string().contains("PEN_DSR_TAP=") && e.to_string().contains("no/such/dir.pcap"),
            "{e}"
        );
    }

    #[test]
    fn isn_keys_differ_between_draws() {
        assert_ne!(isn_key().unwrap(), isn_key().unwrap());
    }
}
