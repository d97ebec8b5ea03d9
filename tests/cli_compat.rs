//! Command-line compatibility with C Pen: every pen command line from
//! `/work/shared/pen-reference.md`, the blog posts in `/work/shared/seeds/` (addresses that the
//! blog's smart quotes swallowed are reconstructed with plausible real ones) and the pen(1) /
//! penctl(1) manual pages parses, and yields the configuration C Pen would have.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use pen::acl::AclMatch;
use pen::cli::{self, Cli};
use pen::config::{Config, FastClose, HostSpec, ListenAddr, Mode, ServerConfig, defaults};
use pen::ctl::apply::{Applied, apply, apply_text, write_config};
use pen::ctl::command;

/// Splits a shell command line: white space separates words, '...' and "..." quote.
/// Drops a leading `sudo`, and `pen` / `./pen`.
fn sh(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    for ch in line.chars() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => cur.push(ch),
            None if ch == '"' || ch == '\'' => {
                quote = Some(ch);
                in_word = true;
            }
            None if ch.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            None => {
                cur.push(ch);
                in_word = true;
            }
        }
    }
    assert!(quote.is_none(), "unbalanced quote in {line:?}");
    if in_word {
        words.push(cur);
    }
    let skip = words
        .iter()
        .take_while(|w| matches!(w.as_str(), "sudo" | "pen" | "./pen"))
        .count();
    words.split_off(skip)
}

fn pen(line: &str) -> Cli {
    cli::parse(sh(line)).unwrap_or_else(|e| panic!("{line}\n  -> {e}"))
}

fn pen_err(line: &str) -> String {
    match cli::parse(sh(line)) {
        Err(e) => e.to_string(),
        Ok(c) => panic!("{line} should fail, gave {c:?}"),
    }
}

fn inet(s: &str) -> Option<ListenAddr> {
    Some(ListenAddr::Inet(s.parse::<SocketAddr>().unwrap()))
}

fn ip(s: &str) -> Option<HostSpec> {
    Some(HostSpec::Ip(s.parse::<IpAddr>().unwrap()))
}

fn backend(host: Option<HostSpec>, port: u16) -> ServerConfig {
    ServerConfig {
        host,
        port,
        ..ServerConfig::default()
    }
}

// ---- pen-reference.md -------------------------------------------------------------------

/// §10, the wiki's DSR set-up.
#[test]
fn reference_dsr_wiki_line() {
    let c = pen(r#"pen -df -O "dsr_if eth1" -r 192.168.100.1:0 192.168.100.3 192.168.100.4"#);
    let g = &c.config;
    assert_eq!(g.debug, 1);
    assert!(g.foreground);
    assert_eq!(g.dsr_if.as_deref(), Some("eth1"));
    assert!(g.mode.roundrobin);
    assert_eq!(
        g.listen,
        inet("192.168.100.1:0"),
        "port 0 = every port in DSR mode"
    );
    assert_eq!(
        c.servers,
        vec![
            backend(ip("192.168.100.3"), 0),
            backend(ip("192.168.100.4"), 0)
        ]
    );
    assert!(c.notices.is_empty());
}

/// §11 and the tarpit blog post (whose smart quotes lost the addresses).
#[test]
fn reference_tarpit_line() {
    let c = pen(
        r#"pen -df -O "acl 1 permit 192.168.2.11" -O "tarpit_acl 1" -O "dsr_if eth1" 192.168.2.10:80 192.168.2.2 192.168.2.3"#,
    );
    let g = &c.config;
    assert_eq!(g.tarpit_acl, Some(1));
    assert_eq!(g.dsr_if.as_deref(), Some("eth1"));
    let acl = &g.acls.lists[1];
    assert_eq!(acl.entries.len(), 1);
    assert!(acl.entries[0].permit);
    assert_eq!(
        acl.entries[0].matcher,
        AclMatch::V4 {
            addr: "192.168.2.11".parse().unwrap(),
            mask: "255.255.255.255".parse().unwrap()
        }
    );
    // "All other IP addresses will be rejected."
    assert!(g.acls.permits(1, Some("192.168.2.11".parse().unwrap())));
    assert!(!g.acls.permits(1, Some("192.168.2.12".parse().unwrap())));
    assert_eq!(g.listen, inet("192.168.2.10:80"));
    assert_eq!(
        c.servers,
        vec![
            backend(ip("192.168.2.2"), 80),
            backend(ip("192.168.2.3"), 80)
        ]
    );
}

/// The tarpit blog's ACL that tarpits a whole subnet except four hosts (addresses lost,
/// reconstructed), as a `-F` file.
#[test]
fn tarpit_blog_acl_file() {
    let mut cfg = Config::default();
    let text = "acl 1 deny 192.168.2.1\nacl 1 deny 192.168.2.2\nacl 1 deny 192.168.2.3\n\
                acl 1 deny 192.168.2.10\ntarpit_acl 1\n";
    assert!(apply_text(&mut cfg, text, "tarpit.cfg").is_empty());
    assert_eq!(cfg.tarpit_acl, Some(1));
    let hit = |a: &str| cfg.acls.permits(1, Some(a.parse().unwrap()));
    assert!(
        !hit("192.168.2.10"),
        "the load-balanced address is not tarpitted"
    );
    assert!(hit("192.168.2.77"), "anything else is tarpitted");
}

// ---- seeds ------------------------------------------------------------------------------

/// "Direct Server Return for UDP": `sudo ./pen -df -U -O poll -O “dsr_if eth1” -S 2 -r`.
#[test]
fn seed_udp_dsr_line() {
    let c = pen(
        r#"sudo ./pen -df -U -O poll -O "dsr_if eth1" -S 2 -r 192.168.2.10:53 192.168.2.3 192.168.2.4"#,
    );
    let g = &c.config;
    assert!(g.udp && g.foreground && g.mode.roundrobin);
    assert_eq!(g.event_backend.as_deref(), Some("poll"));
    assert_eq!(g.dsr_if.as_deref(), Some("eth1"));
    assert_eq!(g.listen, inet("192.168.2.10:53"));
    assert_eq!(c.servers.len(), 2);
    assert_eq!(c.servers[1], backend(ip("192.168.2.4"), 53));
    assert_eq!(
        c.notices,
        vec!["-S is obsolete: the server table grows dynamically; ignored".to_string()]
    );
}

/// "Comparing Raw Networking on Linux and FreeBSD": the same line on both systems.
#[test]
fn seed_raw_networking_lines() {
    for ifname in ["eth1", "em1"] {
        let c = pen(&format!(
            r#"sudo ./pen -df -O poll -O "dsr_if {ifname}" -S 2 -r 192.168.1.10:80 192.168.1.11 192.168.1.12"#
        ));
        assert_eq!(c.config.dsr_if.as_deref(), Some(ifname));
        assert_eq!(c.config.event_backend.as_deref(), Some("poll"));
        assert!(!c.config.udp);
        assert_eq!(c.servers.len(), 2);
    }
}

/// "Transparent Reverse Proxy": `sudo ./pen -df -O transparent` (addresses lost).
#[test]
fn seed_transparent_line() {
    let c = pen("pen -df -O transparent 192.168.1.1:80 192.168.2.2");
    assert!(c.config.transparent);
    assert_eq!(c.config.listen, inet("192.168.1.1:80"));
    assert_eq!(c.servers, vec![backend(ip("192.168.2.2"), 80)]);
}

/// The blog's command lines with the smart quotes as typed: the shell hands pen words like
/// `“acl`, which are not commands.
#[test]
fn seed_smart_quotes_give_a_clear_error() {
    let e = pen_err("pen -df -O “acl 1 permit” -O “tarpit_acl 1” 80 h");
    assert_eq!(e, "pen: -O \"“acl\": unknown command \"“acl\"");
}

// ---- manual pages and usage --------------------------------------------------------------

/// pen(1) EXAMPLE.
#[test]
fn manual_example() {
    let c = pen("pen 80 www1:8000:10 www2:80:10 www3");
    assert_eq!(c.config.listen, inet("0.0.0.0:80"));
    let name = |n: &str| Some(HostSpec::Name(n.into()));
    assert_eq!(
        c.servers,
        vec![
            ServerConfig {
                maxc: 10,
                ..backend(name("www1"), 8000)
            },
            ServerConfig {
                maxc: 10,
                ..backend(name("www2"), 80)
            },
            backend(name("www3"), 80),
        ]
    );
}

#[test]
fn manual_style_emergency_and_limits() {
    let c = pen("pen -r -e 127.0.0.1:10000 8080 localhost:80:10 hostb:80:10");
    let g = &c.config;
    assert!(g.mode.roundrobin);
    assert_eq!(g.emergency, Some(backend(ip("127.0.0.1"), 10000)));
    assert_eq!(g.listen, inet("0.0.0.0:8080"));
    assert_eq!(c.servers[0].host, Some(HostSpec::Name("localhost".into())));
    assert_eq!((c.servers[0].port, c.servers[0].maxc), (80, 10));
    assert_eq!(c.servers[1].host, Some(HostSpec::Name("hostb".into())));
}

#[test]
fn manual_style_control_port_and_conn_max() {
    let c = pen("pen -C 8081 -x 1000 8080 h1 h2");
    assert_eq!(c.config.control.as_deref(), Some("8081"));
    assert_eq!(c.config.conn_max, 1000);
    assert_eq!(c.servers.len(), 2);
    assert_eq!(c.servers[0].port, 8080);
}

#[test]
fn ipv6_backend_in_brackets() {
    let c = pen("pen 8080 [::1]:80");
    assert_eq!(c.servers, vec![backend(ip("::1"), 80)]);
}

#[test]
fn ipv6_and_unix_listeners() {
    assert_eq!(pen("pen :::10000 h").config.listen, inet("[::]:10000"));
    assert_eq!(pen("pen ::1:2222 h").config.listen, inet("[::1]:2222"));
    assert_eq!(pen("pen [::1]:8080 h").config.listen, inet("[::1]:8080"));
    let c = pen("pen /tmp/pen.sock /run/app.sock 10.0.0.1:80");
    assert_eq!(
        c.config.listen,
        Some(ListenAddr::Unix(PathBuf::from("/tmp/pen.sock")))
    );
    assert_eq!(
        c.servers[0].host,
        Some(HostSpec::Unix("/run/app.sock".into()))
    );
    assert_eq!(c.servers[1].port, 80);
}

/// The usage text's own example uses service names: they resolve as C Pen's getservbyname does.
#[test]
fn usage_example_with_service_names_works() {
    let c = pen("pen smtp mailhost1:smtp mailhost2:25 mailhost3");
    assert_eq!(c.config.listen.as_ref().and_then(|l| l.port()), Some(25));
    assert_eq!(
        c.servers.iter().map(|s| s.port).collect::<Vec<_>>(),
        vec![25, 25, 25]
    );
    assert_eq!(
        pen_err("pen 25 mailhost1:smtpx"),
        "pen: bad backend \"mailhost1:smtpx\": port must be a number 1-65535 or a well-known service name (http, smtp, ...), got \"smtpx\""
    );
}

#[test]
fn ssl_termination_line() {
    let c = pen(
        "pen -E /etc/pen/cert.pem -K /etc/pen/key.pem -G /etc/pen/ca.pem -R -Z -L tls1 443 10.0.0.1:80 10.0.0.2:80",
    );
    let t = &c.config.tls;
    assert_eq!(t.cert, Some(PathBuf::from("/etc/pen/cert.pem")));
    assert_eq!(t.key, Some(PathBuf::from("/etc/pen/key.pem")));
    assert_eq!(t.ca_file, Some(PathBuf::from("/etc/pen/ca.pem")));
    assert!(t.require_client_cert && t.compat);
    assert_eq!(c.servers.len(), 2);
}

#[test]
fn permuted_options_after_backends() {
    let c = pen("pen 8080 10.0.0.1:80 10.0.0.2:80 -W -O \"server 0 weight 3\" -x 50");
    assert!(c.config.mode.weight);
    assert_eq!(c.config.conn_max, 50);
    assert_eq!(
        c.config.servers[0].weight, 3,
        "-O server sets config.servers"
    );
    // The positional backends are overlaid after the -F file, so they win.
    let mut cfg = c.config.clone();
    cli::overlay_servers(&mut cfg, &c.servers);
    assert_eq!(cfg.servers[0].weight, 0);
    assert_eq!(cfg.servers[1].host, ip("10.0.0.2"));
}

#[test]
fn defaults_match_c_pen_code() {
    let c = pen("pen 80 h");
    let g = &c.config;
    assert_eq!(g.conn_max, 500);
    assert_eq!(g.clients_max, 2048);
    assert_eq!(g.blacklist_secs, 30);
    assert_eq!(g.connect_timeout_secs, 3);
    assert_eq!(g.tracking_secs, 0);
    assert_eq!(g.pending_max, 100);
    assert_eq!(g.multi_accept, 100);
    assert_eq!(g.backlog, 500);
    assert_eq!(g.mode, Mode::default());
    assert_eq!((g.client_acl, g.control_acl, g.tarpit_acl), (0, 0, None));
    assert_eq!(g.tcp_fastclose, FastClose::Off);
    assert!(!g.tcp_nodelay && !g.keepalive && !g.foreground);
}

// ---- penctl(1) -----------------------------------------------------------------------------

/// Every form of penctl(1)'s command list (with the placeholders filled in) and its two
/// examples parse, print back to themselves, and apply.
#[test]
fn penctl_manual_commands() {
    let lines = [
        "abort_on_error",
        "no abort_on_error",
        "acl 2 permit 10.0.0.0 255.0.0.0",
        "acl 2 deny 2001:db8::/32",
        "acl 2 permit country SE",
        "no acl 2",
        "ascii",
        "no ascii",
        "blacklist",
        "blacklist 10",
        "block",
        "no block",
        "client_acl 1",
        "clients_max",
        "clients_max 4000",
        "close 3",
        "connection 3",
        "conn_max",
        "conn_max 800",
        "control",
        "control_acl 2",
        "debug",
        "debug 2",
        "delayed_forward",
        "no delayed_forward",
        "dsr_if eth1",
        "dummy",
        "no dummy",
        "epoll",
        "exit",
        "hash",
        "no hash",
        "http",
        "no http",
        "idle_timeout 60",
        "idlers",
        "idlers 4",
        "include /etc/pen/extra.cfg",
        "kqueue",
        "listen",
        "listen 0.0.0.0:8081",
        "log",
        "log /var/log/pen.log",
        "mode",
        "no log",
        "pending_max 50",
        "pid",
        "poll",
        "prio",
        "no prio",
        "recent",
        "recent 60",
        "roundrobin",
        "no roundrobin",
        "select",
        "server 1 acl 2 address 10.0.0.9 port 8080 max 10 hard 20 blacklist 30 weight 2 prio 1",
        "servers",
        "socket 5",
        "source 10.0.0.254",
        "ssl_ciphers HIGH:!aNULL",
        "ssl_client_renegotiation_interval 600",
        "ssl_ocsp_response /etc/pen/ocsp.der",
        "ssl_option no_sslv3",
        "ssl_sni_path /etc/pen/sni",
        "status",
        "stubborn",
        "no stubborn",
        "tarpit_acl",
        "tarpit_acl 2",
        "tcp_fastclose up",
        "tcp_fastclose down",
        "tcp_fastclose both",
        "tcp_fastclose off",
        "tcp_nodelay",
        "no tcp_nodelay",
        "timeout",
        "timeout 5",
        "tracking 30",
        "transparent",
        "no transparent",
        "web_stats",
        "web_stats /var/www/pen.html",
        "no web_stats",
        "weight",
        "no weight",
        "write",
        "write /etc/pen/pen.cfg",
    ];
    let mut cfg = Config::default();
    for line in lines {
        let cmd = command::parse(line)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
            .unwrap_or_else(|| panic!("{line}: parsed as nothing"));
        assert_eq!(cmd.to_string(), line);
        apply(&mut cfg, &cmd).unwrap_or_else(|e| panic!("{line}: {e}"));
    }
    // penctl's examples: `penctl lbhost:8888 roundrobin`, `penctl /var/run/pen/tmp/ctrl status`.
    let mut cfg = Config::default();
    let rr = command::parse("roundrobin").unwrap().unwrap();
    assert_eq!(apply(&mut cfg, &rr), Ok(Applied::Config));
    assert!(cfg.mode.roundrobin);
    let st = command::parse("status").unwrap().unwrap();
    assert_eq!(apply(&mut cfg, &st), Ok(Applied::Runtime));
}

// ---- bad command lines ----------------------------------------------------------------------

#[test]
fn bad_command_lines_give_one_line_errors() {
    let cases = [
        (
            "pen -r",
            "pen: no listen address given; usage: pen [options] [host:]port|/path h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2...]",
        ),
        (
            "pen 80 10.0.0.1:htttp",
            "pen: bad backend \"10.0.0.1:htttp\": port must be a number 1-65535 or a well-known service name (http, smtp, ...), got \"htttp\"",
        ),
        (
            "pen -x 80",
            "pen: no listen address given; usage: pen [options] [host:]port|/path h1[:p1[:maxc1[:hard1[:weight1[:prio1]]]]] [h2...]",
        ),
        (
            "pen -t 0 80 h",
            "pen: bad value \"0\" for -t: expected a number of seconds >= 1",
        ),
        ("pen -y 80 h", "pen: unknown option -y"),
        ("pen 80 h -c", "pen: option -c requires an argument"),
        (
            "pen -i svc 80 h",
            "pen: -i \"svc\": installing a Windows service is Windows-only",
        ),
        (
            "pen -O \"acl 10 permit 1.2.3.4\" 80 h",
            "pen: -O \"acl 10 permit 1.2.3.4\": acl: expected an access list number 0-9, got \"10\"",
        ),
        (
            "pen -O \"timeout abc\" 80 h",
            "pen: -O \"timeout abc\": timeout: expected a number of seconds >= 1, got \"abc\"",
        ),
        (
            "pen -O frobnicate 80 h",
            "pen: -O \"frobnicate\": unknown command \"frobnicate\"",
        ),
        (
            "pen 80 [::1]:80:x",
            "pen: bad backend \"[::1]:80:x\": maxc must be a number >= 0, got \"x\"",
        ),
        (
            "pen -L tls13 443 h",
            "pen: bad protocol \"tls13\" for -L: expected ssl23, ssl2, ssl3 or tls1",
        ),
    ];
    for (line, want) in cases {
        let got = pen_err(line);
        assert_eq!(got, want, "{line}");
        assert!(!got.contains('\n'), "{line}: one line");
    }
}

// ---- write / read round trip --------------------------------------------------------------

/// `write` puts the option-only settings into a `# pen ...` header like C Pen's write_cfg;
/// parsing that header as a command line and applying the body gives back the config.
#[test]
fn written_config_header_and_body_reproduce_the_config() {
    let c = pen(
        r#"pen -U -f -X -c 4096 -x 900 -m 20 -q 200 -e 10.0.0.99:8080 -B [::1]:9 -j /var/empty -p /run/pen.pid -u "pen user" -E /etc/c.pem -K /etc/k.pem -G /etc/ca.pem -A /etc/ca -Z -R -L ssl3 -F /etc/pen.cfg -C 127.0.0.1:10000 -H -W -h -s -b 11 -T 22 -t 4 -l /var/log/pen.log -w /tmp/w.html -O "acl 3 deny 10.0.0.0/8" -O "tcp_fastclose up" -O "server 0 address 10.0.0.1 port 81 weight 4" -O "dsr_if eth2" -O "idlers 3" -ddd 10.0.0.50:0 10.0.0.2"#,
    );
    let mut cfg = c.config.clone();
    cli::overlay_servers(&mut cfg, &c.servers);
    let text = write_config(&cfg);
    let header = text
        .lines()
        .find_map(|l| l.strip_prefix("# pen "))
        .expect("header line");
    let mut back = cli::parse(sh(header))
        .unwrap_or_else(|e| panic!("header {header:?}: {e}"))
        .config;
    let errs = apply_text(&mut back, &text, "written");
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(back, cfg, "\n{text}");
    assert_eq!(back.clients_max, 4096);
    assert_eq!(back.conn_max, 900);
    assert_eq!(defaults::BACKLOG_MIN, 50);
}

// ---- version and help (the binaries) ----------------------------------------------------

/// Runs a binary of this package with `args` (it must exit within 5 s); returns (exit code,
/// stdout, stderr).
fn run_bin(bin: &str, args: &[&str]) -> (Option<i32>, String, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{bin} {args:?} did not exit within 5 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let (mut out, mut err) = (String::new(), String::new());
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), out, err)
}

#[test]
fn pen_version_says_pen_rs_and_exits_zero() {
    let want = format!(
        "pen-rs {} (a Rust rewrite of C Pen 0.34)\n",
        env!("CARGO_PKG_VERSION")
    );
    for flag in ["--version", "-V"] {
        let (code, out, err) = run_bin(env!("CARGO_BIN_EXE_pen"), &[flag]);
        assert_eq!(
            (code, out.as_str()),
            (Some(0), want.as_str()),
            "{flag}: {err}"
        );
    }
    let (code, out, _) = run_bin(env!("CARGO_BIN_EXE_penctl"), &["--version"]);
    assert_eq!(code, Some(0));
    assert!(
        out.starts_with(&format!("penctl (pen-rs {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
}

#[test]
fn pen_help_exits_zero_with_what_pen_rs_supports() {
    let (code, out, err) = run_bin(env!("CARGO_BIN_EXE_pen"), &["--help"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("pen-rs "), "{out}");
    assert!(
        out.contains("usage:") && out.contains("-h        use hash"),
        "{out}"
    );
    assert!(out.contains("prometheus [addr:]port"), "{out}");
    assert!(out.contains("PEN_DSR_TAP=FILE"), "{out}");
    assert!(!out.contains("ssl2,") && !out.contains("ssl3"), "{out}");
    // -h stays C Pen's hash option: without a listen address it is a usage error.
    let (code, out, err) = run_bin(env!("CARGO_BIN_EXE_pen"), &["-h"]);
    assert_eq!(code, Some(1));
    assert!(out.is_empty() && err.contains("no listen address"), "{err}");
}
