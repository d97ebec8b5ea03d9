//! Processes inside a network namespace, and readiness waits that generate no traffic.
//!
//! Children are started with `pre_exec` + `setns` (only `setns` runs between fork and exec), so
//! they see the namespace's interfaces and addresses but the host's `/sys` (unlike
//! `ip netns exec`, which remounts it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::netns::{in_netns, open_ns, send_signal};

/// A process running inside a lab namespace. Dropping it kills it (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Proc {
    /// The name given at spawn time (used in messages).
    pub name: String,
    /// The process id.
    pub pid: u32,
    /// The namespace it runs in.
    pub ns: String,
    /// The file receiving its stdout and stderr.
    pub log: PathBuf,
    child: Child,
    status: Option<ExitStatus>,
}

/// Builds a `Command` that enters namespace file `ns_file` between fork and exec.
///
/// `ns_file` must stay open until `spawn()`/`output()` returns.
fn command_in(ns_file: &File, argv: &[String]) -> Result<Command> {
    let Some((program, args)) = argv.split_first() else {
        bail!("empty command line: expected a program followed by its arguments");
    };
    let mut cmd = Command::new(program);
    cmd.args(args);
    let fd = ns_file.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec and only calls setns(2),
    // which is async-signal-safe; `fd` stays open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Starts `argv` inside namespace `ns` with extra environment `env`; stdout and stderr are
/// appended to `log` (created with its parent directories). stdin is /dev/null.
pub fn spawn(
    ns: &str,
    name: &str,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
) -> Result<Proc> {
    let ns_file = open_ns(ns).with_context(|| format!("starting process {name:?}"))?;
    if let Some(dir) = log.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating log directory {}", dir.display()))?;
    }
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening log file {} for process {name:?}", log.display()))?;
    let err = out
        .try_clone()
        .with_context(|| format!("duplicating log file {}", log.display()))?;
    let mut cmd = command_in(&ns_file, argv).with_context(|| format!("process {name:?}"))?;
    cmd.envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start process {name:?} in namespace {ns:?}: {:?}",
            argv.join(" ")
        )
    })?;
    drop(ns_file);
    Ok(Proc {
        name: name.to_string(),
        pid: child.id(),
        ns: ns.to_string(),
        log: log.to_path_buf(),
        child,
        status: None,
    })
}

impl Proc {
    /// Returns the exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let s = self
            .child
            .try_wait()
            .with_context(|| format!("checking process {:?} (pid {})", self.name, self.pid))?;
        self.status = s;
        Ok(s)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// SIGTERM (and SIGCONT, so a process a `signal` step stopped sees it), wait up to
    /// `grace`, then SIGKILL; always reaps the process.
    pub fn stop(&mut self, grace: Duration) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        send_signal(self.pid, libc::SIGTERM);
        send_signal(self.pid, libc::SIGCONT);
        if self.wait(grace)?.is_some() {
            return Ok(());
        }
        send_signal(self.pid, libc::SIGKILL);
        match self.wait(Duration::from_secs(5))? {
            Some(_) => Ok(()),
            None => bail!(
                "process {:?} (pid {}) did not exit after SIGKILL",
                self.name,
                self.pid
            ),
        }
    }

    /// The last `max` bytes of the process log (for error messages).
    pub fn log_tail(&self, max: usize) -> String {
        log_tail(&self.log, max)
    }

    /// The last `n` lines of the process log (for error messages).
    pub fn log_lines(&self, n: usize) -> String {
        log_lines(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.try_wait(), Ok(None)) {
            send_signal(self.pid, libc::SIGKILL);
            let _ = self.wait(Duration::from_secs(2));
        }
    }
}

/// The last `max` bytes of a file, lossily decoded ("" if unreadable).
pub fn log_tail(path: &Path, max: usize) -> String {
    let Ok(data) = std::fs::read(path) else {
        return String::new();
    };
    let start = data.len().saturating_sub(max);
    String::from_utf8_lossy(data.get(start..).unwrap_or(&[])).into_owned()
}

/// The last `n` lines of a file, lossily decoded, each line cut to 300 characters
/// ("" if unreadable). Reads at most the last 64 KiB.
pub fn log_lines(path: &Path, n: usize) -> String {
    last_lines(&log_tail(path, 64 * 1024), n)
}

/// The last `n` lines of `text` (without a trailing empty line), each cut to 300 characters.
pub fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end_matches(['\n', '\r']).lines().collect();
    let start = lines.len().saturating_sub(n);
    lines
        .get(start..)
        .unwrap_or(&[])
        .iter()
        .map(|l| {
            if l.chars().count() > 300 {
                format!("{}…", l.chars().take(300).collect::<String>())
            } else {
                (*l).to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `argv` inside `ns` to completion, feeding `stdin`, killing it after `timeout`.
pub fn output_in_ns(
    ns: &str,
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output> {
    let what = argv.join(" ");
    let ns_file = open_ns(ns).with_context(|| format!("running {what:?}"))?;
    let mut cmd = command_in(&ns_file, argv)?;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {what:?} in namespace {ns:?}"))?;
    drop(ns_file);
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        // A writer thread, so a child that does not read its input cannot block us.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_t = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err_t = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child
            .try_wait()
            .with_context(|| format!("waiting for {what:?}"))?
        {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{what:?} in namespace {ns:?} did not finish within {:?} and was killed",
                timeout
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap_or_default();
    let stderr = err_t.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// One socket from `/proc/net/{tcp,udp}{,6}`: local address and the kernel state code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSocket {
    pub local: SocketAddr,
    pub state: u8,
}

/// TCP_LISTEN in `/proc/net/tcp`.
pub const TCP_LISTEN: u8 = 0x0A;

/// Parses `/proc/net/{tcp,udp}` (v4, `v6 == false`) or `{tcp6,udp6}` (`v6 == true`).
/// Malformed lines are skipped.
pub fn parse_proc_net(text: &str, v6: bool) -> Vec<ProcSocket> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let mut fields = line.split_whitespace();
        let (Some(_slot), Some(local), Some(_remote), Some(state)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some((ip_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let Ok(state) = u8::from_str_radix(state, 16) else {
            continue;
        };
        let ip = if v6 {
            parse_hex_v6(ip_hex).map(IpAddr::V6)
        } else {
            parse_hex_u32(ip_hex).map(|w| IpAddr::V4(Ipv4Addr::from(w)))
        };
        if let Some(ip) = ip {
            out.push(ProcSocket {
                local: SocketAddr::new(ip, port),
                state,
            });
        }
    }
    out
}

/// The kernel prints each 32-bit word of an address with `%08X` in host byte order.
fn parse_hex_u32(hex: &str) -> Option<[u8; 4]> {
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes)
}

fn parse_hex_v6(hex: &str) -> Option<Ipv6Addr> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, chunk) in bytes.chunks_mut(4).enumerate() {
        let word = parse_hex_u32(hex.get(i * 8..i * 8 + 8)?)?;
        chunk.copy_from_slice(&word);
    }
    Some(Ipv6Addr::from(bytes))
}

/// Does a socket bound to `bound` accept traffic for `want` (exact, or wildcard on the port)?
pub fn covers(bound: SocketAddr, want: SocketAddr) -> bool {
    if bound.port() != want.port() {
        return false;
    }
    if bound.ip() == want.ip() || bound.ip().is_unspecified() {
        return true;
    }
    // An IPv4-mapped listener on an IPv6 socket.
    matches!((bound.ip(), want.ip()), (IpAddr::V6(b), IpAddr::V4(w)) if b.to_ipv4_mapped() == Some(w))
}

/// Why a readiness wait ended without success.
fn exited(pid: u32) -> anyhow::Error {
    anyhow::anyhow!("the process (pid {pid}) exited while pen-lab waited for it to be ready")
}

fn wait_proc_net(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
    proto: &'static str,
    listen_only: bool,
    watch: Option<u32>,
) -> Result<()> {
    let found = in_netns(ns, move || {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pid) = watch
                && !crate::netns::pid_alive(pid)
            {
                return Err(exited(pid));
            }
            for v6 in [false, true] {
                let file = format!("/proc/thread-self/net/{proto}{}", if v6 { "6" } else { "" });
                let Ok(text) = std::fs::read_to_string(&file) else {
                    continue;
                };
                if parse_proc_net(&text, v6)
                    .iter()
                    .any(|s| (!listen_only || s.state == TCP_LISTEN) && covers(s.local, addr))
                {
                    return Ok(true);
                }
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })??;
    if !found {
        bail!(
            "nothing {} on {proto} {addr} in namespace {ns:?} after {:?}",
            if listen_only { "listening" } else { "bound" },
            timeout
        );
    }
    Ok(())
}

/// Waits until a TCP socket in `ns` listens on `addr` (or on its port's wildcard address).
/// Reads `/proc/thread-self/net/tcp{,6}` inside the namespace: no connection, no traffic.
pub fn wait_tcp_listening(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_proc_net(ns, addr, timeout, "tcp", true, None)
}

/// [`wait_tcp_listening`] that gives up as soon as process `pid` has exited.
pub fn wait_tcp_listening_by(
    ns: &str,
    addr: SocketAddr,
    timeout: Duration,
    pid: u32,
) -> Result<()> {
    wait_proc_net(ns, addr, timeout, "tcp", true, Some(pid))
}

/// [`wait_udp_bound`] that gives up as soon as process `pid` has exited.
pub fn wait_udp_bound_by(ns: &str, addr: SocketAddr, timeout: Duration, pid: u32) -> Result<()> {
    wait_proc_net(ns, addr, timeout, "udp", false, Some(pid))
}

/// [`wait_path`] that gives up as soon as process `pid` has exited (`None`: never).
pub fn wait_path_by(path: &Path, timeout: Duration, pid: Option<u32>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if let Some(pid) = pid
            && !crate::netns::pid_alive(pid)
        {
            return Err(exited(pid));
        }
        if Instant::now() >= deadline {
            bail!("{} did not appear within {:?}", path.display(), timeout);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Sleeps `d`, returning early with an error when process `pid` exits.
pub fn sleep_by(d: Duration, pid: u32) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if !crate::netns::pid_alive(pid) {
            return Err(exited(pid));
        }
        std::thread::sleep(
            end.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(10)),
        );
    }
    Ok(())
}

/// Waits until a UDP socket in `ns` is bound to `addr` (or to its port's wildcard address).
pub fn wait_udp_bound(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<()> {
    wait_proc_net(ns, addr, timeout, "udp", false, None)
}

/// Waits until `path` exists.
pub fn wait_path(path: &Path, timeout: Duration) -> Result<()> {
    wait_path_by(path, timeout, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP4: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0200000A:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: garbage
";
    const TCP6: &str =
        "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0
   1: 0000000000000000FFFF00000200000A:0035 00000000000000000000000000000000:0000 07 0
";

    #[test]
    fn proc_net_tcp_addresses_decode_in_network_order() {
        let socks = parse_proc_net(TCP4, false);
        assert_eq!(socks.len(), 2);
        assert_eq!(socks[0].local, "10.0.0.2:80".parse().unwrap());
        assert_eq!(socks[0].state, TCP_LISTEN);
        assert_eq!(socks[1].local, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(socks[1].state, 1);
    }

    #[test]
    fn proc_net_tcp6_addresses_decode() {
        let socks = parse_proc_net(TCP6, true);
        assert_eq!(socks[0].local, "[::]:8080".parse().unwrap());
        assert_eq!(socks[1].local, "[::ffff:10.0.0.2]:53".parse().unwrap());
    }

    #[test]
    fn wildcard_and_mapped_listeners_cover_a_specific_address() {
        let want: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert!(covers("0.0.0.0:80".parse().unwrap(), want));
        assert!(covers("[::]:80".parse().unwrap(), want));
        assert!(covers("[::ffff:10.0.0.2]:80".parse().unwrap(), want));
        assert!(covers(want, want));
        assert!(!covers("10.0.0.3:80".parse().unwrap(), want));
        assert!(!covers("0.0.0.0:81".parse().unwrap(), want));
    }

    #[test]
    fn output_in_missing_namespace_names_it() {
        let err = output_in_ns(
            "penlab-missing-ns",
            &["true".to_string()],
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("penlab-missing-ns"));
    }

    #[test]
    fn last_lines_are_whole_lines_not_bytes() {
        let log =
            "pen: starting\npen: bad listen address \"x\": expected a port\nusage: pen [options]\n";
        assert_eq!(
            last_lines(log, 2),
            "pen: bad listen address \"x\": expected a port\nusage: pen [options]"
        );
        assert_eq!(last_lines(log, 10), log.trim_end());
        assert_eq!(last_lines("", 3), "");
        assert_eq!(
            last_lines("one line, no newline", 1),
            "one line, no newline"
        );
        let long = "x".repeat(1000);
        assert_eq!(last_lines(&long, 1).chars().count(), 301);
    }

    #[test]
    fn readiness_waits_end_when_the_process_exits() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let _ = child.wait();
        let t0 = Instant::now();
        let err = wait_path_by(
            Path::new("/nonexistent/pen-lab-y"),
            Duration::from_secs(5),
            Some(pid),
        )
        .unwrap_err();
        assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
        assert!(err.to_string().contains("exited"), "{err}");
        assert!(sleep_by(Duration::from_secs(5), pid).is_err());
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn wait_path_times_out_naming_the_path() {
        let err = wait_path(
            Path::new("/nonexistent/pen-lab-x"),
            Duration::from_millis(20),
        )
        .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pen-lab-x"));
    }
}
