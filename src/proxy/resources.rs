//! pen's own resources: file descriptors, memory, local ports.
//!
//! Pure (unit-tested, no IO):
//! - [`is_local_resource_error`]: is a failed `socket`/`connect`/`accept` pen's own shortage
//!   (out of descriptors, buffers, memory, local ports) rather than the server's fault? A local
//!   error must never blacklist a server.
//! - [`Shortage`]: counts those errors and decides when to log (once per burst).
//! - [`FdBudget`]: how many descriptors a configuration can need, for the start-up warning.
//! - [`parse_proc_stat`]: the fields of `/proc/self/stat` the Prometheus process metrics use.
//!
//! IO (thin): [`raise_nofile_limit`] at start-up, [`ProcessStats::read`] for the metrics.

use std::io;
use std::time::Duration;

use crate::config::Config;

/// A failure caused by pen running out of something locally, not by the server: out of file
/// descriptors (`EMFILE` per process, `ENFILE` system-wide), socket buffers (`ENOBUFS`), memory
/// (`ENOMEM`), or local ports (`EADDRNOTAVAIL` from `connect` with an exhausted ephemeral port
/// range, `EADDRINUSE` from binding a `source` address with none left).
///
/// Note: with `transparent`, `EADDRNOTAVAIL` means a missing routing setup; that path wraps the
/// error in a `TransparentError` first, and callers check that before this.
pub fn is_local_resource_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::OutOfMemory
        || matches!(
            e.raw_os_error(),
            Some(
                libc::EMFILE
                    | libc::ENFILE
                    | libc::ENOBUFS
                    | libc::ENOMEM
                    | libc::EADDRNOTAVAIL
                    | libc::EADDRINUSE
            )
        )
}

/// A burst of local resource errors ends when none occurred for this long and something
/// succeeded again.
pub const QUIET: Duration = Duration::from_secs(2);

/// Local resource errors: a total for the metrics, and bursts for the log (one line when a
/// burst starts, one when it is over, nothing in between however many errors it has).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shortage {
    /// Every local resource error since start (accepts and upstream connects).
    pub total: u64,
    /// The burst in progress: (its first error, its last error, errors in it).
    burst: Option<(Duration, Duration, u64)>,
}

/// What [`Shortage::recovered`] reports when a burst is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstEnd {
    /// Errors during the burst.
    pub errors: u64,
    /// From the first error to the recovery.
    pub lasted: Duration,
}

impl Shortage {
    /// One more local resource error at `now`. Returns `true` when it starts a burst (log it).
    pub fn record(&mut self, now: Duration) -> bool {
        self.total = self.total.saturating_add(1);
        match &mut self.burst {
            Some((_, last, n)) => {
                *last = now;
                *n = n.saturating_add(1);
                false
            }
            None => {
                self.burst = Some((now, now, 1));
                true
            }
        }
    }

    /// Something that needs descriptors succeeded at `now`. Ends the burst (and returns what it
    /// was, for the log) when its last error is at least [`QUIET`] old.
    pub fn recovered(&mut self, now: Duration) -> Option<BurstEnd> {
        let (first, last, errors) = self.burst?;
        if now.saturating_sub(last) < QUIET {
            return None;
        }
        self.burst = None;
        Some(BurstEnd {
            errors,
            lasted: now.saturating_sub(first),
        })
    }

    /// A burst is in progress.
    pub fn in_burst(&self) -> bool {
        self.burst.is_some()
    }
}

/// Descriptors a configuration can need at once, by use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdBudget {
    /// TCP: two per proxied connection (client and server side), `2 × conn_max`. UDP: one
    /// upstream socket per flow at worst, per address family of the servers.
    pub connections: u64,
    /// The listening socket, the control socket (and its clients), the Prometheus endpoint
    /// (and its clients), the request log.
    pub control: u64,
    /// The runtime (epoll, eventfd, signal pipe), stdio, `-w` writes.
    pub reserve: u64,
}

/// Clients served at once by the control socket and by the Prometheus endpoint
/// (`ctl::server::CLIENTS_MAX`).
const CONTROL_CLIENTS: u64 = 16;

/// Descriptors pen itself holds whatever the traffic: runtime (two epolls, an eventfd, the
/// signal pipe), stdio, files; an idle pen holds about 11. (Splice pipes are optional: a
/// direction that cannot get one stays on the copy loop.)
const RESERVE: u64 = 16;

impl FdBudget {
    /// The budget of `cfg`.
    pub fn of(cfg: &Config) -> FdBudget {
        let conn_max = u64::try_from(cfg.conn_max).unwrap_or(u64::MAX);
        let connections = if cfg.dsr_if.is_some() {
            0 // DSR forwards frames: no sockets per client.
        } else if cfg.udp {
            let (mut v4, mut v6) = (false, false);
            for s in cfg.servers.iter().chain(&cfg.emergency).chain(&cfg.abuse) {
                match &s.host {
                    Some(crate::config::HostSpec::Ip(std::net::IpAddr::V6(_))) => v6 = true,
                    _ => v4 = true,
                }
            }
            conn_max.saturating_mul(u64::from(v4) + u64::from(v6))
        } else {
            conn_max.saturating_mul(2)
        };
        let mut control = 1;
        if cfg.control.is_some() {
            control += 1 + CONTROL_CLIENTS;
        }
        if cfg.prometheus.is_some() {
            control += 1 + CONTROL_CLIENTS;
        }
        if cfg.log.is_some() {
            control += 1;
        }
        FdBudget {
            connections,
            control,
            reserve: RESERVE,
        }
    }

    pub fn total(&self) -> u64 {
        self.connections
            .saturating_add(self.control)
            .saturating_add(self.reserve)
    }

    /// The start-up warning when `limit` (the soft `RLIMIT_NOFILE` after raising it) is below
    /// the budget; `None` when it fits.
    pub fn warning(&self, cfg: &Config, limit: u64) -> Option<String> {
        let need = self.total();
        if need <= limit {
            return None;
        }
        let what = if cfg.udp {
            format!(
                "-x {} UDP flows need up to {} upstream sockets",
                cfg.conn_max, self.connections
            )
        } else {
            format!(
                "-x {} connections need up to {} descriptors (two per proxied connection)",
                cfg.conn_max, self.connections
            )
        };
        Some(format!(
            "{what}, plus {} for listeners, control and metrics sockets and {} in reserve: {need} \
             in all, but the descriptor limit is {limit}. When descriptors run out pen stops \
             accepting until some are freed (no server is blacklisted for it); raise the limit \
             (ulimit -n, systemd LimitNOFILE=) to at least {need} or lower -x to {}",
            self.control,
            self.reserve,
            max_conns_for(cfg, limit, self),
        ))
    }
}

/// The largest `-x` that fits `limit` with the budget's fixed parts.
fn max_conns_for(cfg: &Config, limit: u64, b: &FdBudget) -> u64 {
    let free = limit.saturating_sub(b.control + b.reserve);
    let per = if cfg.udp {
        (b.connections / u64::try_from(cfg.conn_max.max(1)).unwrap_or(1)).max(1)
    } else {
        2
    };
    free / per
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit. Returns (soft before, soft now).
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let (before, hard) = crate::sys::process::nofile_limit()?;
    if before < hard {
        // Raising soft up to hard is allowed for every process.
        crate::sys::process::set_nofile_limit(hard, hard)?;
        return Ok((before, hard));
    }
    Ok((before, before))
}

/// Start-up: raise the descriptor limit to the hard one and warn when `cfg` can need more.
pub fn check_fd_limit(cfg: &Config) {
    match raise_nofile_limit() {
        Ok((before, now)) => {
            if now > before {
                tracing::debug!("descriptor limit raised from {before} to {now}");
            }
            if let Some(w) = FdBudget::of(cfg).warning(cfg, now) {
                tracing::warn!("{w}");
            }
        }
        Err(e) => tracing::warn!("cannot read or raise the descriptor limit (RLIMIT_NOFILE): {e}"),
    }
}

/// `conn_max N` at run time: warn when `cfg` no longer fits the descriptor limit.
pub fn warn_if_fds_short(cfg: &Config) {
    if let Ok((soft, _)) = crate::sys::process::nofile_limit()
        && let Some(w) = FdBudget::of(cfg).warning(cfg, soft)
    {
        tracing::warn!("conn_max {}: {w}", cfg.conn_max);
    }
}

/// The process metrics Prometheus clients expect (`process_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    /// Unix time the process started, in seconds.
    pub start_time_seconds: f64,
    /// User + system CPU time, in seconds.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub open_fds: u64,
    /// Soft `RLIMIT_NOFILE`.
    pub max_fds: u64,
    pub threads: u64,
}

/// The fields of `/proc/<pid>/stat` after the command name: (utime, stime, starttime in clock
/// ticks, num_threads, vsize in bytes, rss in pages). `None` when the text does not parse.
pub fn parse_proc_stat(stat: &str) -> Option<(u64, u64, u64, u64, u64, u64)> {
    // The command name is in parentheses and may contain spaces and ')'; the fields start
    // after the last ')'. Field 3 (state) is the first after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // proc(5) numbering: state is field 3, so field N is f[N - 3].
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some((num(14)?, num(15)?, num(22)?, num(20)?, num(23)?, num(24)?))
}

/// `btime` (boot time, unix seconds) from `/proc/stat`.
pub fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

impl ProcessStats {
    /// Reads this process's figures from `/proc` (zeros for what cannot be read).
    pub fn read() -> ProcessStats {
        let ticks = crate::sys::process::clock_ticks().unwrap_or(100).max(1);
        let page = crate::sys::process::page_size().unwrap_or(4096);
        let mut p = ProcessStats::default();
        if let Some((utime, stime, start, threads, vsize, rss)) =
            std::fs::read_to_string("/proc/self/stat")
                .ok()
                .as_deref()
                .and_then(parse_proc_stat)
        {
            p.cpu_seconds = (utime + stime) as f64 / ticks as f64;
            p.threads = threads;
            p.virtual_memory_bytes = vsize;
            p.resident_memory_bytes = rss.saturating_mul(page);
            if let Some(boot) = std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_boot_time)
            {
                p.start_time_seconds = boot as f64 + start as f64 / ticks as f64;
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // The directory's own descriptor is listed too.
            p.open_fds = (dir.count() as u64).saturating_sub(1);
        }
        if let Ok((soft, _)) = crate::sys::process::nofile_limit() {
            p.max_fds = soft;
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostSpec, ServerConfig};

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn local_shortages_are_not_server_failures() {
        for code in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EADDRNOTAVAIL,
            libc::EADDRINUSE,
        ] {
            assert!(is_local_resource_error(&os(code)), "{}", os(code));
        }
        assert!(is_local_resource_error(&io::ErrorKind::OutOfMemory.into()));
        for code in [
            libc::ECONNREFUSED,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::ETIMEDOUT,
            libc::ECONNRESET,
            libc::EAGAIN,
        ] {
            assert!(!is_local_resource_error(&os(code)), "{}", os(code));
        }
        assert!(!is_local_resource_error(&io::Error::new(
            io::ErrorKind::TimedOut,
            "connect timed out after 3 s"
        )));
    }

    #[test]
    fn shortage_logs_once_per_burst() {
        let s = |x: u64| Duration::from_millis(x);
        let mut sh = Shortage::default();
        assert!(sh.record(s(1000)), "the first error starts a burst");
        assert!(!sh.record(s(1100)));
        assert!(!sh.record(s(1500)));
        assert_eq!(sh.recovered(s(2000)), None, "too soon after the last error");
        assert!(!sh.record(s(2500)), "still the same burst");
        let end = sh.recovered(s(4500)).expect("quiet for 2 s: over");
        assert_eq!(end.errors, 4);
        assert_eq!(end.lasted, s(3500));
        assert!(!sh.in_burst());
        assert_eq!(sh.recovered(s(9000)), None, "nothing to report twice");
        assert!(sh.record(s(9000)), "a new burst");
        assert_eq!(sh.total, 5);
    }

    fn cfg(conn_max: usize, udp: bool, hosts: &[&str]) -> Config {
        Config {
            conn_max,
            udp,
            servers: hosts
                .iter()
                .map(|h| ServerConfig {
                    host: Some(HostSpec::Ip(h.parse().unwrap())),
                    port: 80,
                    ..ServerConfig::default()
                })
                .collect(),
            ..Config::default()
        }
    }

    #[test]
    fn budget_counts_two_descriptors_per_tcp_connection() {
        let c = cfg(1000, false, &["127.0.0.1"]);
        let b = FdBudget::of(&c);
        assert_eq!(b.connections, 2000);
        assert_eq!(b.total(), 2000 + 1 + RESERVE);
        let w = b.warning(&c, 1024).expect("2033 > 1024");
        assert!(
            w.contains("-x 1000 connections need up to 2000 descriptors"),
            "{w}"
        );
        assert!(w.contains("the descriptor limit is 1024"), "{w}");
        assert!(w.contains("lower -x to 503"), "{w}");
        assert_eq!(b.warning(&c, 1 << 20), None);
        // C Pen's default -x 500 fits the common 1024 (1000 + 17), not 1000.
        let d = cfg(500, false, &["127.0.0.1"]);
        assert_eq!(FdBudget::of(&d).warning(&d, 1024), None);
        assert!(FdBudget::of(&d).warning(&d, 1000).is_some());
    }

    #[test]
    fn budget_counts_control_metrics_and_udp_pools() {
        let mut c = cfg(100, true, &["127.0.0.1", "::1"]);
        c.control = Some("10080".into());
        c.prometheus = Some("127.0.0.1:9100".parse().unwrap());
        let b = FdBudget::of(&c);
        assert_eq!(b.connections, 200, "one pool per family");
        assert_eq!(b.control, 1 + 17 + 17);
        let w = b.warning(&c, 64).unwrap();
        assert!(
            w.contains("-x 100 UDP flows need up to 200 upstream sockets"),
            "{w}"
        );
        let v4 = cfg(100, true, &["127.0.0.1"]);
        assert_eq!(FdBudget::of(&v4).connections, 100);
    }

    #[test]
    fn proc_stat_fields_parse_even_with_odd_command_names() {
        let line = "4242 (pen (x) y) S 1 4242 4242 0 -1 4194560 700 0 0 0 \
                    150 50 0 0 20 0 3 0 123456 9876543 2500 18446744073709551615 0 0";
        assert_eq!(
            parse_proc_stat(line),
            Some((150, 50, 123456, 3, 9876543, 2500))
        );
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_boot_time("cpu 1\n"), None);
    }

    #[test]
    fn reading_this_process_gives_plausible_figures() {
        let p = ProcessStats::read();
        assert!(p.open_fds >= 3 && p.open_fds <= p.max_fds, "{p:?}");
        assert!(p.resident_memory_bytes > 1 << 20, "{p:?}");
        assert!(p.start_time_seconds > 1.5e9, "{p:?}");
        assert!(p.threads >= 1, "{p:?}");
    }
}
