//! The lab: topology, peers and the measurements themselves (root).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::backends::{BackendKind, QTYPE_A, backend_argv, build_dns_query, parse_dns_response};
use crate::netns::in_netns;
use crate::node::{self, Proc, output_in_ns, wait_tcp_listening, wait_udp_bound};
use crate::runner::INTERRUPTED;
use crate::topology::{DEFAULT_OFFLOADS_OFF, LinkEnd, NodeKind, Topology, unique_prefix_with};

use super::*;

// ---------------------------------------------------------------------------------------
// The lab.

/// Where the programs are and where the report goes.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub quick: bool,
    pub out: PathBuf,
    pub pen_rs: PathBuf,
    pub c_pen: PathBuf,
    pub self_exe: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

impl BenchOptions {
    /// pen-rs: `$PEN_BIN`, else `target/release/pen` beside pen-lab's own target directory,
    /// else the `pen` next to pen-lab (a debug build: the report says so).
    pub fn from_env(quick: bool, out: PathBuf, command: String) -> Result<BenchOptions> {
        let self_exe = std::env::current_exe().context("finding pen-lab's own executable")?;
        let dir = self_exe.parent().map(Path::to_path_buf).unwrap_or_default();
        let pen_rs = match std::env::var_os("PEN_BIN") {
            Some(p) => PathBuf::from(p),
            None => {
                let release = dir.join("../release/pen");
                if release.is_file() {
                    release
                } else {
                    dir.join("pen")
                }
            }
        };
        let c_pen = std::env::var_os("C_PEN_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/pen"));
        Ok(BenchOptions {
            quick,
            out,
            pen_rs,
            c_pen,
            self_exe,
            command,
        })
    }
}

pub(super) fn find_program(name: &str, package: &str) -> Result<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "{name} not found (Debian package {package}); run scripts/install-deps.sh as root to install the bench peers"
    )
}

pub(super) struct Tools {
    nginx: PathBuf,
    haproxy: PathBuf,
    ab: PathBuf,
    wrk: PathBuf,
    dnsperf: PathBuf,
}

pub(super) fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

pub(super) fn dpkg_version(pkg: &str) -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", pkg])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "not installed".to_string())
}

pub(super) fn pen_rs_version(pen: &Path) -> String {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let profile = if pen.to_string_lossy().contains("/release/") {
        "release build"
    } else {
        "DEBUG build (figures not representative; cargo build --release --workspace --bins)"
    };
    format!("git {git}, {profile}, {}", pen.display())
}

pub(super) fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| field_after(&t, "MemTotal:").and_then(|v| v.parse::<u64>().ok()))
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("nproc {cores}, {cpu}, {mem}, kernel {kernel}")
}

/// Raises the soft descriptor limit to the hard one (inherited by every process the bench
/// starts) and returns it: the memory test holds two descriptors per idle connection in one
/// balancer.
pub(super) fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass; no other preconditions.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            }
        }
    }
    lim.rlim_cur
}

/// Idle connections the memory test can open with `nofile` descriptors per process: the
/// balancer needs two per connection plus a margin (HAProxy asks for 2 × maxconn + 14).
pub fn idle_conns_within(wanted: u32, nofile: u64) -> u32 {
    let fit = nofile.saturating_sub(300) / 2;
    wanted.min(u32::try_from(fit).unwrap_or(u32::MAX))
}

/// A private scratch directory, removed on drop.
pub(super) struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> Result<ScratchDir> {
        let p = std::env::temp_dir().join(format!("pen-lab-bench-{}", std::process::id()));
        if p.exists() {
            std::fs::remove_dir_all(&p)
                .with_context(|| format!("removing stale {}", p.display()))?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(ScratchDir(p))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running lab: topology, backends and the balancers' throughput instances.
/// Field order is drop order: the topology (which kills every process in its namespaces)
/// goes first.
pub(super) struct Lab {
    /// Bridge-netfilter sysctls that could not be switched off (empty: all off).
    bridge_nf: Vec<String>,
    topo: Topology,
    dir: ScratchDir,
    procs: Vec<Proc>,
    tools: Tools,
    opts: BenchOptions,
}

impl Lab {
    fn ns(&self, node: &str) -> String {
        self.topo.ns_name(node)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }

    fn build(opts: &BenchOptions, tools: Tools) -> Result<Lab> {
        let dir = ScratchDir::new()?;
        let mut topo = Topology::new(&unique_prefix_with("penlab-bench"))?;
        topo.add_node("sw", NodeKind::Switch)?;
        let hosts = [
            ("client", CLIENT_IP),
            ("lb", LB_IP),
            ("web1", WEB1_IP),
            ("web2", WEB2_IP),
        ];
        for (name, ip) in hosts {
            topo.add_node(name, NodeKind::Host)?;
            topo.add_link(&LinkEnd::new(name, "eth0"), &LinkEnd::new("sw", name))?;
            topo.add_address(name, "eth0", IpAddr::V4(ip), 24)?;
        }
        for node in ["client", "lb"] {
            topo.sysctl(node, "net.ipv4.ip_local_port_range", "1024 65000")?;
            topo.sysctl(node, "net.ipv4.tcp_tw_reuse", "1")?;
        }
        // The balancers' own ports are never source ports of the balancer host's connections
        // to the backends (a TIME_WAIT socket on one would keep the next instance from binding).
        topo.sysctl(
            "lb",
            "net.ipv4.ip_local_reserved_ports",
            &balancer_reserved_ports(),
        )?;
        // Bridged frames need not traverse iptables (br_netfilter is loaded on this kernel and
        // costs every target the same); best effort, the report records the outcome.
        let mut bridge_nf = Vec::new();
        for key in [
            "net.bridge.bridge-nf-call-iptables",
            "net.bridge.bridge-nf-call-ip6tables",
            "net.bridge.bridge-nf-call-arptables",
        ] {
            if let Err(e) = topo.sysctl("sw", key, "0") {
                bridge_nf.push(format!("{key}: {e:#}"));
            }
        }
        // DSR: a dedicated interface without an address on the balancer host (the kernel
        // must not answer ARP on it), the VIP on the backends' lo, hidden from ARP.
        topo.add_link(&LinkEnd::new("lb", DSR_IF), &LinkEnd::new("sw", "lbdsr"))?;
        // The DSR interface belongs to the balancer's raw socket: the host's IP stack must not
        // process its frames a second time (README "DSR host setup").
        topo.nft("lb", &dsr_ingress_drop())?;
        topo.sysctl("lb", "net.ipv4.conf.all.arp_ignore", "1")?;
        for node in ["web1", "web2"] {
            topo.add_address(node, "lo", IpAddr::V4(VIP), 32)?;
            topo.sysctl(node, "net.ipv4.conf.all.arp_ignore", "1")?;
            topo.sysctl(node, "net.ipv4.conf.all.arp_announce", "2")?;
            topo.sysctl(node, "net.ipv4.conf.eth0.arp_ignore", "1")?;
            topo.sysctl(node, "net.ipv4.conf.eth0.arp_announce", "2")?;
        }
        let mut lab = Lab {
            bridge_nf,
            topo,
            dir,
            procs: Vec::new(),
            tools,
            opts: opts.clone(),
        };
        lab.write_content()?;
        lab.start_backends()?;
        Ok(lab)
    }

    fn www(&self) -> PathBuf {
        self.dir.path().join("www")
    }

    fn write_content(&self) -> Result<()> {
        let www = self.www();
        std::fs::create_dir_all(&www).with_context(|| format!("creating {}", www.display()))?;
        let mut page = String::from("pen-lab bench page ");
        while page.len() < SMALL_PAGE_BYTES - 1 {
            page.push('x');
        }
        page.push('\n');
        std::fs::write(www.join("index.html"), page).context("writing index.html")?;
        let chunk = vec![0x5a_u8; MIB as usize];
        std::fs::write(www.join("1m.bin"), &chunk).context("writing 1m.bin")?;
        let mut big = std::fs::File::create(www.join("100m.bin")).context("creating 100m.bin")?;
        for _ in 0..100 {
            std::io::Write::write_all(&mut big, &chunk).context("writing 100m.bin")?;
        }
        Ok(())
    }

    fn start_backends(&mut self) -> Result<()> {
        for (name, ip) in [("web1", WEB1_IP), ("web2", WEB2_IP)] {
            let d = self.dir.path().join(format!("nginx-{name}"));
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            let conf = format!(
                "user root;\ndaemon off;\nworker_processes 1;\nworker_rlimit_nofile 65536;\n\
                 pid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 30000; }}\n\
                 http {{\n  access_log off;\n  sendfile on;\n  tcp_nopush on;\n\
                 keepalive_requests 1000000;\n  keepalive_timeout 120s;\n\
                 default_type application/octet-stream;\n\
                 client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
                 fastcgi_temp_path {d}/fastcgi;\n\
                 server {{ listen {ip}:{HTTP_PORT} backlog=4096; listen {VIP}:{HTTP_PORT} backlog=4096; root {www}; }}\n}}\n",
                d = d.display(),
                www = self.www().display()
            );
            let conf_path = d.join("nginx.conf");
            std::fs::write(&conf_path, conf)
                .with_context(|| format!("writing {}", conf_path.display()))?;
            let argv = vec![
                s(&self.tools.nginx),
                "-c".into(),
                s(&conf_path),
                "-p".into(),
                s(&d),
            ];
            let ns = self.ns(name);
            let log = self.log(&format!("nginx-{name}"));
            let mut p = node::spawn(&ns, &format!("nginx-{name}"), &argv, &[], &log)?;
            let addr = SocketAddr::new(IpAddr::V4(ip), HTTP_PORT);
            if let Err(e) = wait_tcp_listening(&ns, addr, Duration::from_secs(5)) {
                let _ = p.try_wait();
                bail!(
                    "nginx on {name} did not listen on {addr}: {e:#}; log: {}",
                    p.log_tail(600)
                );
            }
            self.procs.push(p);
            let kind = BackendKind::Dns {
                name: format!("dns-{name}"),
                answer: Ipv4Addr::new(10, 77, 9, 9),
            };
            let daddr = SocketAddr::new(IpAddr::V4(ip), DNS_PORT);
            let mut argv = vec![s(&self.opts.self_exe)];
            argv.extend(backend_argv(&kind, &[daddr]));
            let p = node::spawn(
                &ns,
                &format!("dns-{name}"),
                &argv,
                &[],
                &self.log(&format!("dns-{name}")),
            )?;
            wait_udp_bound(&ns, daddr, Duration::from_secs(5))
                .with_context(|| format!("DNS backend on {name}: {}", p.log_tail(400)))?;
            self.procs.push(p);
        }
        Ok(())
    }

    fn haproxy_conf(&self, port: u16, maxconn: u32) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("haproxy-{port}.cfg"));
        let conf = format!(
            "global\n  nbthread 1\n  maxconn {maxconn}\n\ndefaults\n  mode tcp\n  timeout connect 3s\n\
             timeout client 120s\n  timeout server 120s\n\nfrontend f{port}\n  bind {LB_IP}:{port}\n\
             default_backend b{port}\n\nbackend b{port}\n  balance roundrobin\n\
             server web1 {WEB1_IP}:{HTTP_PORT}\n  server web2 {WEB2_IP}:{HTTP_PORT}\n"
        );
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The argv of a TCP balancer instance of `t` on `port` (`max`: connection limit).
    fn balancer_argv(&self, t: Target, port: u16, max: u32) -> Result<Vec<String>> {
        let listen = format!("{LB_IP}:{port}");
        let b1 = format!("{WEB1_IP}:{HTTP_PORT}");
        let b2 = format!("{WEB2_IP}:{HTTP_PORT}");
        let pen = |bin: &Path| {
            let mut argv = vec![s(bin)];
            argv.extend(t.engine_args().iter().map(|a| a.to_string()));
            argv.extend([
                "-f".into(),
                "-r".into(),
                "-x".into(),
                max.to_string(),
                "-c".into(),
                max.to_string(),
                listen.clone(),
                b1.clone(),
                b2.clone(),
            ]);
            argv
        };
        Ok(match t {
            Target::Direct => bail!("direct has no balancer"),
            Target::PenRs | Target::PenRsTokio => pen(&self.opts.pen_rs),
            Target::CPen => pen(&self.opts.c_pen),
            Target::HAProxy => vec![
                s(&self.tools.haproxy),
                "-db".into(),
                "-f".into(),
                s(self.haproxy_conf(port, max)?),
            ],
        })
    }

    /// Spawns `argv` as `name` on the balancer host and waits until it serves (`probe`, and
    /// the process still running), judged by [`judge_start_up`]: what it prints does not
    /// matter unless it fails. A busy port is tried again, up to three attempts a second
    /// apart.
    fn start_peer(
        &self,
        name: &str,
        argv: &[String],
        probe: impl Fn(&mut Proc) -> Result<()>,
    ) -> Result<Proc> {
        let ns = self.ns("lb");
        let log = self.log(name);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            let mut p = node::spawn(&ns, name, argv, &[], &log)?;
            let serves = match probe(&mut p) {
                Err(e) => Err(format!("{e:#}")),
                Ok(()) => match p.try_wait() {
                    Ok(None) => Ok(()),
                    Ok(Some(st)) => Err(format!("it exited ({st})")),
                    Err(e) => Err(format!("{e:#}")),
                },
            };
            match judge_start_up(serves, &read_from(&log, from)) {
                StartUp::Serving => return Ok(p),
                StartUp::PortBusy(m) if attempt < 3 => {
                    eprintln!("  {name}, attempt {attempt}: {m}; trying again in 1 s");
                    let _ = p.stop(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_secs(1));
                }
                StartUp::PortBusy(m) | StartUp::Failed(m) => {
                    let _ = p.stop(Duration::from_secs(2));
                    bail!("{name} ({}) did not start: {m}", argv.join(" "));
                }
            }
        }
    }

    /// Starts a TCP balancer instance of `t` on `port` and waits until it listens there.
    fn start_balancer(&self, t: Target, port: u16, max: u32, tag: &str) -> Result<Proc> {
        let argv = self.balancer_argv(t, port, max)?;
        self.start_tcp_peer(t, &argv, port, tag)
    }

    /// Starts `argv` (a balancer of `t` listening on `port` of the balancer host); started
    /// means listening there (read from /proc: no connection, so an idle instance stays idle).
    fn start_tcp_peer(&self, t: Target, argv: &[String], port: u16, tag: &str) -> Result<Proc> {
        let ns = self.ns("lb");
        let name = format!("{}-{tag}", t.slug());
        let addr = SocketAddr::new(IpAddr::V4(LB_IP), port);
        self.start_peer(&name, argv, |p| {
            until_serving(p, || {
                wait_tcp_listening(&ns, addr, Duration::from_millis(100))
            })
        })
    }

    fn start_udp_balancer(&self, t: Target) -> Result<Option<Proc>> {
        let bin = match t {
            Target::PenRs => &self.opts.pen_rs,
            Target::CPen => &self.opts.c_pen,
            _ => return Ok(None),
        };
        let Some(addr) = t.dns_addr() else {
            return Ok(None);
        };
        let argv = vec![
            s(bin),
            "-f".into(),
            "-U".into(),
            "-r".into(),
            addr.to_string(),
            format!("{WEB1_IP}:{DNS_PORT}"),
            format!("{WEB2_IP}:{DNS_PORT}"),
        ];
        let ns = self.ns("lb");
        let name = format!("{}-udp", t.slug());
        let p = self.start_peer(&name, &argv, |p| {
            until_serving(p, || wait_udp_bound(&ns, addr, Duration::from_millis(100)))
        })?;
        Ok(Some(p))
    }

    fn run_client(&self, argv: Vec<String>, timeout: Duration) -> Result<String> {
        let out = output_in_ns(&self.ns("client"), &argv, None, timeout)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "{:?} failed ({}): {}",
                argv.join(" "),
                out.status,
                tail(&text, 400)
            );
        }
        Ok(text)
    }

    fn ab(&self, flags: &[&str], url: &str, timeout: Duration) -> Result<AbResult> {
        let mut argv = vec![
            s(&self.tools.ab),
            "-q".into(),
            "-r".into(),
            "-s".into(),
            if self.opts.quick { "10" } else { "30" }.into(),
        ];
        argv.extend(flags.iter().map(|f| f.to_string()));
        argv.push(url.to_string());
        let text = self.run_client(argv, timeout)?;
        parse_ab(&text)
    }
}

/// Repeats `check` (a short probe) for up to 5 s until it succeeds; stops early with an
/// error when `p` exits first (a peer that cannot bind its port exits at once).
pub(super) fn until_serving(p: &mut Proc, check: impl Fn() -> Result<()>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = check();
        if r.is_ok() {
            return Ok(());
        }
        if let Some(st) = p.try_wait()? {
            bail!("it exited ({st}) before serving");
        }
        if Instant::now() >= deadline {
            return r.context("still not serving after 5 s");
        }
    }
}

/// One measurement of `fig` (and the figures measured with it) on `t`.
pub(super) fn measure(
    lab: &Lab,
    plan: &Plan,
    test: Figure,
    t: Target,
    pid: Option<u32>,
    res: &mut Results,
) -> Result<()> {
    let base = format!("http://{}", t.http_addr());
    let cpu0 = pid.and_then(cpu_ns);
    // CPU time the balancer spent per completed request (all its threads).
    let add_cpu = |res: &mut Results, f: Figure, r: &AbResult| {
        if let (Some(p), Some(c0)) = (pid, cpu0)
            && let Some(c1) = cpu_ns(p)
            && r.complete > 0
        {
            res.add(f, t, c1.saturating_sub(c0) as f64 / 1e3 / r.complete as f64);
        }
    };
    let long = Duration::from_secs(600);
    let note_failures = |res: &mut Results, what: &str, r: &AbResult| {
        if r.failed > 0 || r.non2xx > 0 {
            res.notes.push(format!(
                "{what} on {}: {} failed, {} non-2xx of {} requests",
                t.label(),
                r.failed,
                r.non2xx,
                r.complete
            ));
        }
    };
    match test {
        Figure::AbKeepAlive => {
            let n = plan.abk_n.to_string();
            let r = lab.ab(
                &["-k", "-c", "20", "-n", &n],
                &format!("{base}{SMALL_PAGE}"),
                long,
            )?;
            note_failures(res, "ab -k", &r);
            add_cpu(res, Figure::AbKeepAliveCpu, &r);
            res.add(test, t, r.rps);
        }
        Figure::Ab => {
            let n = plan.ab_n.to_string();
            let r = lab.ab(
                &["-c", "20", "-n", &n],
                &format!("{base}{SMALL_PAGE}"),
                long,
            )?;
            note_failures(res, "ab", &r);
            add_cpu(res, Figure::AbCpu, &r);
            res.add(test, t, r.rps);
        }
        Figure::Wrk => {
            let argv = vec![
                s(&lab.tools.wrk),
                "-t2".into(),
                "-c50".into(),
                format!("-d{}s", plan.wrk_secs),
                format!("{base}{SMALL_PAGE}"),
            ];
            let text = lab.run_client(argv, Duration::from_secs(u64::from(plan.wrk_secs) + 60))?;
            let (rps, errors) = parse_wrk(&text)?;
            if errors > 0 {
                res.notes
                    .push(format!("wrk on {}: {errors} errors", t.label()));
            }
            res.add(test, t, rps);
        }
        Figure::BulkSeq => {
            let n = plan.bulk_seq_n.to_string();
            let r = lab.ab(
                &["-c", "1", "-n", &n],
                &format!("{base}{MIB100_FILE}"),
                long,
            )?;
            note_failures(res, "sequential bulk", &r);
            res.add(test, t, r.gbits());
        }
        Figure::BulkPar => {
            let c = plan.bulk_par_c.to_string();
            let n = (plan.bulk_par_c * plan.bulk_par_each).to_string();
            let r = lab.ab(&["-c", &c, "-n", &n], &format!("{base}{MIB100_FILE}"), long)?;
            note_failures(res, "parallel bulk", &r);
            res.add(test, t, r.gbits());
        }
        Figure::Mib1KeepAlive => {
            let n = plan.mib1_n.to_string();
            let r = lab.ab(
                &["-k", "-c", "10", "-n", &n],
                &format!("{base}{MIB1_FILE}"),
                long,
            )?;
            note_failures(res, "1 MiB keep-alive", &r);
            res.add(test, t, r.rps);
        }
        Figure::Dnsperf => {
            let Some(addr) = t.dns_addr() else {
                return Ok(());
            };
            let argv = vec![
                s(&lab.tools.dnsperf),
                "-s".into(),
                addr.ip().to_string(),
                "-p".into(),
                addr.port().to_string(),
                "-d".into(),
                s(lab.dir.path().join("queries.txt")),
                "-c".into(),
                "20".into(),
                "-l".into(),
                plan.dns_secs.to_string(),
                "-t".into(),
                "1".into(),
            ];
            let text = lab.run_client(argv, Duration::from_secs(u64::from(plan.dns_secs) + 60))?;
            let (qps, lost) = parse_dnsperf(&text)?;
            res.add(Figure::Dnsperf, t, qps);
            res.add(Figure::DnsperfLost, t, lost);
        }
        Figure::FreshQps => {
            let Some(addr) = t.dns_addr() else {
                return Ok(());
            };
            let (answered, lost, secs) = fresh_port_loop(
                &lab.ns("client"),
                addr,
                20,
                Duration::from_secs(u64::from(plan.dns_secs)),
            )?;
            res.add(Figure::FreshQps, t, answered as f64 / secs.max(1e-9));
            let total = answered + lost;
            res.add(
                Figure::FreshLost,
                t,
                if total > 0 {
                    lost as f64 * 100.0 / total as f64
                } else {
                    100.0
                },
            );
        }
        Figure::RssIdle => {
            if t == Target::Direct {
                return Ok(());
            }
            memory(lab, plan, t, res)?;
        }
        _ => {}
    }
    Ok(())
}

/// Queries `server` from a fresh UDP socket (so a fresh source port) per query, `inflight`
/// at a time, for `dur`; a query unanswered within one second is lost. Returns (answered,
/// lost, elapsed seconds).
pub fn fresh_port_loop(
    ns: &str,
    server: SocketAddr,
    inflight: usize,
    dur: Duration,
) -> Result<(u64, u64, f64)> {
    let r = in_netns(ns, move || -> Result<(u64, u64, f64)> {
        let start = Instant::now();
        let deadline = start + dur;
        // Threads created here inherit this thread's network namespace.
        let results: Vec<Result<(u64, u64)>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..inflight)
                .map(|w| {
                    sc.spawn(move || -> Result<(u64, u64)> {
                        let (mut ok, mut lost) = (0u64, 0u64);
                        let mut id = (w as u16).wrapping_mul(3001);
                        let mut buf = [0u8; 512];
                        while Instant::now() < deadline {
                            id = id.wrapping_add(1);
                            let sock = UdpSocket::bind(SocketAddr::new(IpAddr::V4(CLIENT_IP), 0))
                                .context("binding a fresh UDP socket")?;
                            sock.set_read_timeout(Some(Duration::from_secs(1)))?;
                            let q = build_dns_query(id, &format!("q{id}.bench.example"), QTYPE_A)?;
                            sock.send_to(&q, server)
                                .with_context(|| format!("sending a DNS query to {server}"))?;
                            let answered = loop {
                                match sock.recv_from(&mut buf) {
                                    Ok((n, _)) => {
                                        if let Some(r) = buf.get(..n).and_then(parse_dns_response)
                                            && r.id == id
                                        {
                                            break true;
                                        }
                                    }
                                    Err(_) => break false,
                                }
                            };
                            if answered {
                                ok += 1;
                            } else {
                                lost += 1;
                            }
                        }
                        Ok((ok, lost))
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("query thread panicked")))
                })
                .collect()
        });
        let (mut ok, mut lost) = (0, 0);
        for r in results {
            let (o, l) = r?;
            ok += o;
            lost += l;
        }
        Ok((ok, lost, start.elapsed().as_secs_f64()))
    })??;
    Ok(r)
}

/// Nanoseconds on CPU of every thread of `pid` (`/proc/PID/task/*/schedstat`, first field).
pub(super) fn cpu_ns(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for e in dir.flatten() {
        if let Ok(t) = std::fs::read_to_string(e.path().join("schedstat"))
            && let Some(ns) = t
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            total = total.saturating_add(ns);
        }
    }
    Some(total)
}

/// RSS of `pid` in bytes; a whole process tree is not needed: every balancer here is one
/// process.
pub(super) fn rss_of(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    parse_vmrss(&status).ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))
}

/// Open descriptors of `pid` (0 if unreadable).
pub(super) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls every `step` until `pid` holds at least `want` descriptors or `deadline` passes.
pub(super) fn wait_fds(pid: u32, want: usize, deadline: Instant, step: Duration) {
    while fd_count(pid) < want && Instant::now() < deadline {
        std::thread::sleep(step);
    }
}

/// Idle RSS of a fresh default instance, then RSS with `idle_conns` open idle client
/// connections on a fresh instance sized for them.
pub(super) fn memory(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    let port = t.ports().2;
    // Idle: default limits (HAProxy needs a maxconn; give it the same as pen's default -x).
    let mut p = match t {
        Target::HAProxy => lab.start_balancer(t, port, 500, "idle")?,
        _ => {
            let bin = if t == Target::CPen {
                &lab.opts.c_pen
            } else {
                &lab.opts.pen_rs
            };
            let mut argv = vec![s(bin)];
            argv.extend(t.engine_args().iter().map(|a| a.to_string()));
            argv.extend([
                "-f".into(),
                "-r".into(),
                format!("{LB_IP}:{port}"),
                format!("{WEB1_IP}:{HTTP_PORT}"),
                format!("{WEB2_IP}:{HTTP_PORT}"),
            ]);
            lab.start_tcp_peer(t, &argv, port, "idle")?
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss_of(p.pid)?;
    p.stop(Duration::from_secs(2))?;
    res.add(Figure::RssIdle, t, idle as f64 / 1e6);

    let n = plan.idle_conns;
    let mut p = lab.start_balancer(t, port, n + 50, "conns")?;
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_of(p.pid)?;
    let fds_before = fd_count(p.pid);
    let addr = SocketAddr::new(IpAddr::V4(LB_IP), port);
    let conns = open_idle(&lab.ns("client"), addr, n as usize, p.pid, fds_before)?;
    let after = rss_of(p.pid)?;
    let held = fd_count(p.pid).saturating_sub(fds_before);
    drop(conns);
    p.stop(Duration::from_secs(3))?;
    if held < 2 * n as usize * 95 / 100 {
        res.notes.push(format!(
            "{}: with {n} client connections open it held only {held} extra descriptors (expected about {})",
            t.label(),
            2 * n
        ));
    }
    res.add(Figure::Rss10k, t, after as f64 / 1e6);
    res.add(
        Figure::PerConn,
        t,
        after.saturating_sub(before) as f64 / f64::from(n.max(1)),
    );
    Ok(())
}

/// Opens `n` idle TCP connections to `addr` from namespace `ns`, in batches, and waits (at
/// most 30 s) until the balancer `pid` holds a client and a server descriptor for each.
pub(super) fn open_idle(
    ns: &str,
    addr: SocketAddr,
    n: usize,
    pid: u32,
    fds_before: usize,
) -> Result<Vec<socket2::Socket>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut all = Vec::with_capacity(n);
    let batch = 500;
    while all.len() < n {
        let k = batch.min(n - all.len());
        let socks = in_netns(ns, move || connects_in_progress(addr, k))??;
        all.extend(socks);
        // Let the balancer catch up before the next batch (its accept backlog is finite).
        let want = fds_before + 2 * all.len() * 95 / 100;
        wait_fds(pid, want, deadline, Duration::from_millis(20));
        if Instant::now() >= deadline {
            break;
        }
    }
    wait_fds(pid, fds_before + 2 * n, deadline, Duration::from_millis(50));
    std::thread::sleep(Duration::from_millis(500));
    Ok(all)
}

/// The argv of a DSR instance (with the tarpit for `tarpit`), as in the wiki and the blog.
pub(super) fn dsr_argv(bin: &Path, tarpit: bool) -> Vec<String> {
    let mut argv = vec![s(bin), "-f".into(), "-r".into()];
    if tarpit {
        argv.extend([
            "-O".into(),
            format!("acl 1 permit {TARPIT_IP}"),
            "-O".into(),
            "tarpit_acl 1".into(),
        ]);
    }
    argv.extend([
        "-O".into(),
        format!("dsr_if {DSR_IF}"),
        format!("{VIP}:{HTTP_PORT}"),
        format!("{WEB1_IP}:{HTTP_PORT}"),
        format!("{WEB2_IP}:{HTTP_PORT}"),
    ]);
    argv
}

/// Starts `t` in DSR mode on the balancer host; an instance that exits within 700 ms is an
/// error quoting what it printed (e.g. a build without DSR).
pub(super) fn start_dsr(lab: &Lab, t: Target, tarpit: bool) -> Result<Proc> {
    let bin = match t {
        Target::PenRs => &lab.opts.pen_rs,
        Target::CPen => &lab.opts.c_pen,
        _ => bail!("{} has no DSR mode", t.label()),
    };
    let name = format!("{}-{}", t.slug(), if tarpit { "tarpit" } else { "dsr" });
    // A DSR instance has no socket to probe: it serves when it still runs after 700 ms (a
    // build without DSR, or a missing interface, makes it exit at once).
    lab.start_peer(&name, &dsr_argv(bin, tarpit), |p| {
        p.wait(Duration::from_millis(700))?;
        Ok(())
    })
    .with_context(|| format!("{} in DSR mode (-O \"dsr_if {DSR_IF}\")", t.label()))
}

/// Probes whether pen-rs runs with `-O "dsr_if IF"`; `Err` says why not.
pub(super) fn probe_dsr(lab: &Lab) -> Result<()> {
    let mut p = start_dsr(lab, Target::PenRs, false)?;
    p.stop(Duration::from_millis(500))
}

/// Transmitted frames of `iface` in namespace `ns` (from `/proc/thread-self/net/dev`).
pub(super) fn tx_frames(ns: &str, iface: &str) -> Result<u64> {
    let text = in_netns(ns, || std::fs::read_to_string("/proc/thread-self/net/dev"))?
        .context("reading /proc/thread-self/net/dev")?;
    parse_net_dev_tx(&text, iface)
        .ok_or_else(|| anyhow!("no interface {iface:?} in {ns:?}'s /proc/net/dev"))
}

/// DSR: ab -k and sequential bulk through the VIP, and the frames/s the balancer forwards
/// (its DSR interface's tx counter over the ab -k run). Direct is measured again in the same
/// phase, so the ratios compare like with like.
pub(super) fn measure_dsr(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    let long = Duration::from_secs(600);
    let abk_n = plan.abk_n.to_string();
    let seq_n = plan.bulk_seq_n.to_string();
    let base = match t {
        Target::Direct => format!("http://{WEB1_IP}:{HTTP_PORT}"),
        Target::PenRs | Target::CPen => format!("http://{VIP}:{HTTP_PORT}"),
        Target::HAProxy | Target::PenRsTokio => return Ok(()),
    };
    let mut p = match t {
        Target::Direct => None,
        _ => Some(start_dsr(lab, t, false)?),
    };
    let lb = lab.ns("lb");
    let before = tx_frames(&lb, DSR_IF)?;
    let r = lab.ab(
        &["-k", "-c", "20", "-n", &abk_n],
        &format!("{base}{SMALL_PAGE}"),
        long,
    )?;
    let after = tx_frames(&lb, DSR_IF)?;
    if r.failed > 0 || r.non2xx > 0 {
        res.notes.push(format!(
            "DSR ab -k on {}: {} failed, {} non-2xx of {}",
            t.label(),
            r.failed,
            r.non2xx,
            r.complete
        ));
    }
    res.add(Figure::DsrAbKeepAlive, t, r.rps);
    if p.is_some() {
        res.add(
            Figure::DsrFps,
            t,
            after.saturating_sub(before) as f64 / r.secs.max(1e-9),
        );
    }
    let b = lab.ab(
        &["-c", "1", "-n", &seq_n],
        &format!("{base}{MIB100_FILE}"),
        long,
    )?;
    res.add(Figure::DsrBulkSeq, t, b.gbits());
    if let Some(p) = p.as_mut() {
        if !p.running() {
            bail!(
                "{} in DSR mode exited during the test: {}",
                t.label(),
                p.log_tail(300)
            );
        }
        p.stop(Duration::from_secs(2))?;
    }
    Ok(())
}

/// Tarpit: `tarpit_syns` SYNs from fresh client sockets to the tarpit address; counts the
/// SYN+ACKs captured at the client, their rate (first to last) and the share with valid
/// IPv4 and TCP checksums.
pub(super) fn measure_tarpit(lab: &Lab, plan: &Plan, t: Target, res: &mut Results) -> Result<()> {
    if !matches!(t, Target::PenRs | Target::CPen) {
        return Ok(());
    }
    let mut p = start_dsr(lab, t, true)?;
    let client = lab.ns("client");
    let pcap = lab.dir.path().join(format!("tarpit-{}.pcap", t.slug()));
    let cap = crate::capture::start_capture(
        &client,
        "eth0",
        &format!("tcp and src host {TARPIT_IP}"),
        &pcap,
    )?;
    let dst = SocketAddr::new(IpAddr::V4(TARPIT_IP), HTTP_PORT);
    let n = plan.tarpit_syns as usize;
    let connect_all = move |k: usize| connects_in_progress(dst, k);
    // One SYN first, so the client has resolved the tarpit's ARP before the burst.
    let warm = in_netns(&client, move || connect_all(1))??;
    std::thread::sleep(Duration::from_millis(300));
    let socks = in_netns(&client, move || connect_all(n))??;
    std::thread::sleep(Duration::from_millis(500));
    let stats = cap.stop()?;
    drop(socks);
    drop(warm);
    let alive = p.running();
    p.stop(Duration::from_secs(2))?;
    if !alive {
        bail!(
            "{} exited during the tarpit test: {}",
            t.label(),
            p.log_tail(300)
        );
    }
    let frames = crate::decode::read_pcap(&pcap)?;
    let synacks: Vec<_> = frames
        .iter()
        .filter(|f| f.tcp.as_ref().is_some_and(|h| h.syn && h.ack))
        .collect();
    let valid = synacks.iter().filter(|f| f.checksums_valid()).count();
    // The first SYN+ACK answers the warm-up SYN, 300 ms before the burst.
    let burst = synacks.get(1..).unwrap_or_default();
    let span = match (burst.first(), burst.last()) {
        (Some(a), Some(b)) => b.ts.saturating_sub(a.ts).as_secs_f64().max(1e-3),
        _ => 1.0,
    };
    res.notes.push(format!(
        "tarpit on {}: {} SYN+ACKs for {} SYNs (+1 warm-up), {valid} with valid checksums, capture dropped {}",
        t.label(),
        synacks.len(),
        n,
        stats.dropped
    ));
    let _ = std::fs::remove_file(&pcap);
    res.add(Figure::TarpitRate, t, burst.len() as f64 / span);
    res.add(
        Figure::TarpitValid,
        t,
        if synacks.is_empty() {
            0.0
        } else {
            valid as f64 * 100.0 / synacks.len() as f64
        },
    );
    Ok(())
}

/// The reply rate cap of the `tarpit-hold` test (replies per second, and its burst).
pub(super) const TARPIT_CAP: u32 = 1000;
pub(super) const TARPIT_CAP_BURST: u32 = 100;

/// The tarpit's DSR command line with `tarpit_persist` and the cap, for `tarpit-hold`.
pub(super) fn tarpit_hold_argv(bin: &Path) -> Vec<String> {
    let mut argv = dsr_argv(bin, true);
    let extra = [
        "-O".to_string(),
        "tarpit_persist".to_string(),
        "-O".to_string(),
        format!("tarpit_rate {TARPIT_CAP} burst {TARPIT_CAP_BURST}"),
    ];
    let at = argv.len().min(3);
    argv.splice(at..at, extra);
    argv
}

/// Tarpit hold (issue #22), pen-rs only (C Pen has neither persist mode nor a cap): the
/// tarpit with `tarpit_persist` and `tarpit_rate`; `tarpit_syns` connects from the client,
/// paced at twice the cap (rounds of 100), whose SYN+ACKs captured at the client during the
/// flood give the reply rate under the cap (the burst included), and pen's RSS before the
/// connects and with them held (every answered connection sits in a zero window) gives the
/// memory per held connection: none beyond noise, the engine keeps no state per connection.
pub(super) fn measure_tarpit_hold(
    lab: &Lab,
    plan: &Plan,
    t: Target,
    res: &mut Results,
) -> Result<()> {
    use socket2::Socket;
    if t != Target::PenRs {
        return Ok(());
    }
    let argv = tarpit_hold_argv(&lab.opts.pen_rs);
    let name = "pen-rs-tarpit-hold";
    let mut p = node::spawn(&lab.ns("lb"), name, &argv, &[], &lab.log(name))?;
    if let Some(st) = p.wait(Duration::from_millis(700))? {
        bail!(
            "pen-rs tarpit (hold) exited ({st}): {}",
            p.log_tail(300).trim()
        );
    }
    let client = lab.ns("client");
    let pcap = lab.dir.path().join("tarpit-hold.pcap");
    let cap = crate::capture::start_capture(
        &client,
        "eth0",
        &format!("tcp and src host {TARPIT_IP}"),
        &pcap,
    )?;
    let dst = SocketAddr::new(IpAddr::V4(TARPIT_IP), HTTP_PORT);
    let connect_all = move |k: usize| connects_in_progress(dst, k);
    // One connection first (ARP resolved, pen's buffers touched), then the baseline RSS.
    let warm = in_netns(&client, move || connect_all(1))??;
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = rss_of(p.pid)?;
    let n = plan.tarpit_syns as usize;
    let round = 100usize;
    let every = Duration::from_secs_f64(round as f64 / f64::from(2 * TARPIT_CAP));
    let flood = move || -> Result<(Vec<Socket>, Duration)> {
        let start = Instant::now();
        let mut all = Vec::with_capacity(n);
        let mut rounds = 0u32;
        while all.len() < n {
            all.extend(connect_all(round.min(n - all.len()))?);
            rounds += 1;
            let due = start + every * rounds;
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        Ok((all, start.elapsed()))
    };
    let (socks, flood_time) = in_netns(&client, flood)??;
    // The held connections settle (clients retransmit unanswered SYNs after 1 s).
    std::thread::sleep(Duration::from_millis(1500));
    let rss_held = rss_of(p.pid)?;
    let stats = cap.stop()?;
    drop(socks);
    drop(warm);
    let alive = p.running();
    p.stop(Duration::from_secs(2))?;
    if !alive {
        bail!(
            "pen-rs exited during the tarpit hold test: {}",
            p.log_tail(300)
        );
    }
    let frames = crate::decode::read_pcap(&pcap)?;
    let _ = std::fs::remove_file(&pcap);
    let synacks: Vec<_> = frames
        .iter()
        .filter(|f| f.tcp.as_ref().is_some_and(|h| h.syn && h.ack))
        .collect();
    let held: std::collections::BTreeSet<u16> = synacks.iter().filter_map(|f| f.dst_port).collect();
    // The first SYN+ACK answers the warm-up; the flood's window starts at the next one.
    let span = flood_time.as_secs_f64().max(1e-3);
    let in_flood = match synacks.get(1) {
        Some(first) => synacks
            .iter()
            .skip(1)
            .filter(|f| f.ts.saturating_sub(first.ts) <= flood_time)
            .count(),
        None => 0,
    };
    let grown = rss_held.saturating_sub(rss_before);
    res.notes.push(format!(
        "tarpit hold on pen-rs (tarpit_persist, tarpit_rate {TARPIT_CAP} burst {TARPIT_CAP_BURST}): \
         {n} connects (+1 warm-up) in {span:.2} s, {in_flood} SYN+ACKs during them, {} in all \
         (client retransmissions included), {} connections held, \
         RSS {} kB before, {} kB held ({} kB more), capture dropped {}",
        synacks.len(),
        held.len(),
        rss_before / 1024,
        rss_held / 1024,
        grown / 1024,
        stats.dropped
    ));
    res.add(Figure::TarpitHoldRate, t, in_flood as f64 / span);
    res.add(
        Figure::TarpitHeldBytes,
        t,
        grown as f64 / held.len().max(1) as f64,
    );
    Ok(())
}

pub(super) fn tools() -> Result<Tools> {
    Ok(Tools {
        nginx: find_program("nginx", "nginx-light")?,
        haproxy: find_program("haproxy", "haproxy")?,
        ab: find_program("ab", "apache2-utils")?,
        wrk: find_program("wrk", "wrk")?,
        dnsperf: find_program("dnsperf", "dnsperf")?,
    })
}

pub(super) fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the whole bench and writes `report.md`, `chart.svg` and `samples.tsv` into
/// `opts.out`. Returns the results; `Err` when the lab could not be built at all.
pub fn run(opts: &BenchOptions) -> Result<Results> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("pen-lab bench needs root (network namespaces, veths)");
    }
    let tools = tools()?;
    for (bin, what) in [
        (
            &opts.pen_rs,
            "pen-rs (cargo build --release --workspace --bins, or set PEN_BIN)",
        ),
        (&opts.c_pen, "C Pen (Debian package pen, or set C_PEN_BIN)"),
    ] {
        if !bin.is_file() {
            bail!("{} not found: {what}", bin.display());
        }
    }
    let nofile = raise_nofile();
    let mut plan = if opts.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    if let Some(n) = std::env::var("PENLAB_BENCH_IDLE_CONNS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        plan.idle_conns = n;
    }
    let mut notes = Vec::new();
    let fit = idle_conns_within(plan.idle_conns, nofile);
    if fit < plan.idle_conns {
        notes.push(format!(
            "memory test: {fit} idle connections instead of {}: the descriptor limit here is {nofile} per process \
             (hard limit; no CAP_SYS_RESOURCE to raise it) and a proxy holds two per connection",
            plan.idle_conns
        ));
        plan.idle_conns = fit;
    }
    let setting = vec![
        ("command".into(), format!("`{}`", opts.command)),
        ("date".into(), date_utc()),
        ("machine".into(), machine()),
        ("pen-rs".into(), pen_rs_version(&opts.pen_rs)),
        (
            "peers".into(),
            format!(
                "C Pen {} ({}), HAProxy {} (mode tcp, nbthread 1, balance roundrobin), nginx-light {} (1 worker per backend, sendfile)",
                dpkg_version("pen"),
                opts.c_pen.display(),
                dpkg_version("haproxy"),
                dpkg_version("nginx-light")
            ),
        ),
        (
            "load generators".into(),
            format!(
                "ab (apache2-utils {}), wrk {}, dnsperf {}, pen-lab's fresh-port DNS loop",
                dpkg_version("apache2-utils"),
                dpkg_version("wrk"),
                dpkg_version("dnsperf")
            ),
        ),
        (
            "topology".into(),
            format!(
                "client {CLIENT_IP}, balancer host {LB_IP}, backends {WEB1_IP} and {WEB2_IP} on one bridge (network namespaces, veth); \
                 direct = client → backend 1; balancers use -r (round robin, no client tracking) over both backends; \
                 the balancers' ports ({}) are reserved on the balancer host (net.ipv4.ip_local_reserved_ports), never source ports",
                balancer_reserved_ports()
            ),
        ),
        (
            "offloads".into(),
            format!(
                "{} off on every veth end (ethtool -K), set explicitly by the lab",
                DEFAULT_OFFLOADS_OFF.join(", ")
            ),
        ),
        (
            "DSR interface".into(),
            format!(
                "the balancer host's {DSR_IF} has no address and an nft netdev ingress chain with policy drop \
                 (runs after the packet taps: the balancer's raw socket still gets every frame, the host's IP stack none)"
            ),
        ),
        (
            "balancer flags".into(),
            format!(
                "pen-rs and C Pen `-f -r -x {THROUGHPUT_MAXCONN} -c {THROUGHPUT_MAXCONN}`, HAProxy maxconn {THROUGHPUT_MAXCONN} \
                 (memory instances: `-f -r` / maxconn 500 idle, `-x`/`-c`/maxconn {} with connections); UDP `-f -U -r`",
                plan.idle_conns + 50
            ),
        ),
    ];
    let mut res = Results {
        setting,
        notes,
        ..Results::default()
    };
    eprintln!("pen-lab bench: building the lab...");
    let lab = Lab::build(opts, tools)?;
    res.setting.push((
        "bridge netfilter".into(),
        if lab.bridge_nf.is_empty() {
            "bridge-nf-call-iptables/ip6tables/arptables = 0 in the switch namespace".to_string()
        } else {
            format!("left on: {}", lab.bridge_nf.join("; "))
        },
    ));
    let mut queries = String::new();
    for i in 0..200 {
        let _ = writeln!(queries, "bench{i}.example A");
    }
    std::fs::write(lab.dir.path().join("queries.txt"), queries).context("writing queries.txt")?;
    let mut balancers = Vec::new();
    let mut tcp_pids = BTreeMap::new();
    for t in [
        Target::PenRs,
        Target::PenRsTokio,
        Target::CPen,
        Target::HAProxy,
    ] {
        let p = lab.start_balancer(t, t.ports().0, THROUGHPUT_MAXCONN, "tcp")?;
        tcp_pids.insert(t, p.pid);
        balancers.push(p);
        if let Some(p) = lab.start_udp_balancer(t)? {
            balancers.push(p);
        }
    }
    let dsr_rs = probe_dsr(&lab);
    if let Err(e) = &dsr_rs {
        res.notes
            .push(format!("pen-rs DSR and tarpit rows: not yet — {e:#}"));
    }
    if Target::HAProxy.dns_addr().is_none() {
        res.notes
            .push("HAProxy 2.6 has no UDP load balancing: no DNS rows for it.".to_string());
    }
    res.notes.push(
        "pen-rs is its default build and paths (io_uring for plain TCP); pen-rs (tokio) is the \
         same binary with -O epoll, measured on the TCP rows only."
            .to_string(),
    );
    let tests = match std::env::var("PENLAB_BENCH_TESTS") {
        Ok(list) if !list.trim().is_empty() => {
            let t = select_tests(&list)?;
            res.notes.push(format!(
                "only these tests ran (PENLAB_BENCH_TESTS): {}",
                list.trim()
            ));
            t
        }
        _ => TESTS.iter().map(|(_, f)| *f).collect(),
    };
    let started = Instant::now();
    for rep in 0..plan.reps {
        let order = rotated(rep);
        eprintln!(
            "pen-lab bench: repetition {}/{} (order: {})",
            rep + 1,
            plan.reps,
            order
                .iter()
                .map(|t| t.label())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for &test in tests.iter().filter(|t| **t != Figure::FailoverOutage) {
            for t in &order {
                interrupted()?;
                if dsr_rs.is_err()
                    && *t == Target::PenRs
                    && matches!(
                        test,
                        Figure::DsrAbKeepAlive | Figure::TarpitRate | Figure::TarpitHoldRate
                    )
                {
                    continue;
                }
                let t0 = Instant::now();
                let r = match test {
                    Figure::DsrAbKeepAlive => measure_dsr(&lab, &plan, *t, &mut res),
                    Figure::TarpitRate => measure_tarpit(&lab, &plan, *t, &mut res),
                    Figure::TarpitHoldRate => measure_tarpit_hold(&lab, &plan, *t, &mut res),
                    _ => measure(&lab, &plan, test, *t, tcp_pids.get(t).copied(), &mut res),
                };
                match r {
                    Ok(()) => {
                        if let Some(v) = res.samples.get(&(test, *t)).and_then(|v| v.last()) {
                            eprintln!(
                                "  {:<45} {:<14} {:>12} {} ({:.1} s)",
                                plan.describe(test),
                                t.label(),
                                fmt_value(*v),
                                test.unit(),
                                t0.elapsed().as_secs_f64()
                            );
                        }
                    }
                    Err(e) => {
                        let msg = format!("{} / {}: {e:#}", plan.describe(test), t.label());
                        eprintln!("  FAILED {msg}");
                        res.errors.push(msg);
                    }
                }
            }
        }
    }
    if tests.contains(&Figure::FailoverOutage) {
        measure_failover(opts, &lab, &plan, &mut res);
    }
    for mut p in balancers {
        if !p.running() {
            res.errors.push(format!(
                "{} exited during the bench: {}",
                p.name,
                p.log_tail(300)
            ));
        }
        let _ = p.stop(Duration::from_secs(2));
    }
    res.setting.push((
        "duration".into(),
        format!("{:.0} s of measurements", started.elapsed().as_secs_f64()),
    ));
    write_report(&opts.out, &plan, &res)?;
    drop(lab);
    Ok(res)
}

/// Starts `k` non-blocking connects to `dst` (each sends one SYN: the tarpit's measurements
/// and the idle connections of the memory test); the sockets are returned so the connections
/// stay open while they are measured.
fn connects_in_progress(dst: SocketAddr, k: usize) -> Result<Vec<socket2::Socket>> {
    use socket2::{Domain, Socket, Type};
    let mut v = Vec::with_capacity(k);
    for _ in 0..k {
        let sk = Socket::new(Domain::IPV4, Type::STREAM, None)
            .context("creating a client socket (file descriptor limit?)")?;
        sk.set_nonblocking(true)?;
        match sk.connect(&dst.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(anyhow!("connecting to {dst}: {e}")),
        }
        v.push(sk);
    }
    Ok(v)
}

/// The failover figures (issue #18): the lab scenario `vrrp-failover` (a keepalived pair of
/// balancers on its own topology, the master's balancer killed and then its link taken down
/// under a paced load) run `plan.failover_runs` times with pen-rs and as many with C Pen as
/// the pair, alternating which goes first. A failed run is reported as an error, not measured.
fn measure_failover(opts: &BenchOptions, lab: &Lab, plan: &Plan, res: &mut Results) {
    let scenario = match crate::scenario::scenarios_dir() {
        Some(d) => d.join("vrrp-failover.toml"),
        None => {
            res.errors.push(
                "failover: no scenarios directory (run from the repository, or set PENLAB_SCENARIOS)"
                    .to_string(),
            );
            return;
        }
    };
    // Each run's captures and logs, removed with the bench's scratch directory.
    let runs_dir = lab.dir.path().join("failover-runs");
    let mut run_opts = match crate::runner::RunOptions::from_env(false, true) {
        Ok(o) => o,
        Err(e) => {
            res.errors.push(format!("failover: {e:#}"));
            return;
        }
    };
    run_opts.out_root = runs_dir;
    let pairs = [(Target::PenRs, &opts.pen_rs), (Target::CPen, &opts.c_pen)];
    for run in 0..plan.failover_runs {
        for i in 0..pairs.len() {
            let (t, bin) = pairs[(i + run) % pairs.len()];
            if interrupted().is_err() {
                return;
            }
            let t0 = Instant::now();
            run_opts.pen_bin = bin.clone();
            match failover_run(&scenario, &run_opts) {
                Ok(figures) => {
                    for (f, v) in figures {
                        res.add(f, t, v);
                    }
                    for f in [Figure::FailoverOutage, Figure::LinkDownOutage] {
                        if let Some(v) = res.samples.get(&(f, t)).and_then(|v| v.last()) {
                            eprintln!(
                                "  {:<45} {:<14} {:>12} {} ({:.1} s)",
                                plan.describe(f),
                                t.label(),
                                fmt_value(*v),
                                f.unit(),
                                t0.elapsed().as_secs_f64()
                            );
                        }
                    }
                }
                Err(e) => {
                    let msg = format!(
                        "{} / {} (run {}): {e:#}",
                        plan.describe(Figure::FailoverOutage),
                        t.label(),
                        run + 1
                    );
                    eprintln!("  FAILED {msg}");
                    res.errors.push(msg);
                }
            }
        }
    }
}

/// One run of the failover scenario: its measured steps as figures.
fn failover_run(
    scenario: &Path,
    run_opts: &crate::runner::RunOptions,
) -> Result<Vec<(Figure, f64)>> {
    let report = crate::runner::run_file(scenario, run_opts);
    if !report.ok {
        let failed: Vec<String> = report
            .steps
            .iter()
            .filter(|s| !s.ok)
            .map(|s| format!("step {:?}: {}", s.label, s.detail))
            .chain(
                report
                    .expects
                    .iter()
                    .filter(|e| !e.ok)
                    .map(|e| format!("expectation {:?}: {}", e.name, e.detail)),
            )
            .chain(report.errors.iter().cloned())
            .collect();
        bail!("scenario vrrp-failover failed: {}", failed.join("; "));
    }
    let mut out = Vec::new();
    for (label, outage, lost) in [
        (
            "failover measured",
            Figure::FailoverOutage,
            Figure::FailoverLost,
        ),
        (
            "link-down measured",
            Figure::LinkDownOutage,
            Figure::LinkDownLost,
        ),
    ] {
        let step = report
            .steps
            .iter()
            .find(|s| s.label == label)
            .ok_or_else(|| anyhow!("scenario vrrp-failover has no step {label:?}"))?;
        let (o, l) = parse_failover_detail(&step.detail)?;
        out.push((outage, o));
        out.push((lost, l));
    }
    Ok(out)
}
