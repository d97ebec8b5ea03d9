//! Faults as steps: the live counterparts of the simulation's events (`server N down/up`).
//!
//! - `link_down` / `link_up`: `ip link set IFACE down|up` on one end of a `[[link]]`;
//! - `blackhole` / `lift_blackhole`: an nftables table in the host's namespace that drops every
//!   IP packet in and out of the host (but `lo`), or those of one port (and protocol); its name
//!   carries the run id and what it drops (`penlab_3f2a1c_bh_tcp_80`), so lifting it deletes
//!   exactly that table and no other run's;
//! - `signal`: SIGKILL, SIGSTOP or SIGCONT (and TERM, HUP, INT, USR1, USR2) to a process the
//!   scenario started, by its name.
//!
//! The model and the rulesets are pure (tested here); [`apply`] (the shell) runs them in a
//! lab, and [`live_event`] says which step is the live counterpart of a replay's event.

use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

/// What a blackhole drops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlackholeTarget {
    /// `None`: TCP and UDP (with a port) or every IP packet (without).
    pub proto: Option<L4>,
    pub port: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn parse(s: &str) -> Result<L4, String> {
        match s {
            "tcp" => Ok(L4::Tcp),
            "udp" => Ok(L4::Udp),
            x => Err(format!("expected \"tcp\" or \"udp\", got {x:?}")),
        }
    }
    fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

impl fmt::Display for BlackholeTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.proto, self.port) {
            (None, None) => write!(f, "all traffic"),
            (Some(p), None) => write!(f, "{}", p.name()),
            (None, Some(port)) => write!(f, "port {port}"),
            (Some(p), Some(port)) => write!(f, "{} port {port}", p.name()),
        }
    }
}

/// The signals a `signal` step sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultSignal {
    Kill,
    Stop,
    Cont,
    Term,
    Hup,
    Int,
    Usr1,
    Usr2,
}

impl FaultSignal {
    /// `"KILL"`, `"SIGKILL"`, `"kill"`...
    pub fn parse(s: &str) -> Result<FaultSignal, String> {
        let u = s.to_ascii_uppercase();
        let name = u.strip_prefix("SIG").unwrap_or(&u);
        Ok(match name {
            "KILL" => FaultSignal::Kill,
            "STOP" => FaultSignal::Stop,
            "CONT" => FaultSignal::Cont,
            "TERM" => FaultSignal::Term,
            "HUP" => FaultSignal::Hup,
            "INT" => FaultSignal::Int,
            "USR1" => FaultSignal::Usr1,
            "USR2" => FaultSignal::Usr2,
            _ => {
                return Err(format!(
                    "expected KILL, STOP, CONT, TERM, HUP, INT, USR1 or USR2, got {s:?}"
                ));
            }
        })
    }

    pub fn number(self) -> libc::c_int {
        match self {
            FaultSignal::Kill => libc::SIGKILL,
            FaultSignal::Stop => libc::SIGSTOP,
            FaultSignal::Cont => libc::SIGCONT,
            FaultSignal::Term => libc::SIGTERM,
            FaultSignal::Hup => libc::SIGHUP,
            FaultSignal::Int => libc::SIGINT,
            FaultSignal::Usr1 => libc::SIGUSR1,
            FaultSignal::Usr2 => libc::SIGUSR2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultSignal::Kill => "SIGKILL",
            FaultSignal::Stop => "SIGSTOP",
            FaultSignal::Cont => "SIGCONT",
            FaultSignal::Term => "SIGTERM",
            FaultSignal::Hup => "SIGHUP",
            FaultSignal::Int => "SIGINT",
            FaultSignal::Usr1 => "SIGUSR1",
            FaultSignal::Usr2 => "SIGUSR2",
        }
    }
}

/// One fault, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    Link {
        node: String,
        iface: String,
        up: bool,
    },
    Blackhole {
        host: String,
        target: BlackholeTarget,
        /// `true`: lift it (delete the table).
        lift: bool,
    },
    Signal {
        process: String,
        signal: FaultSignal,
    },
    /// Not a fault but its counterpart: waits for `process` to exit by itself within `within`
    /// with exit code `expect_exit` (a pen that handed its sockets to a new binary and
    /// finished its connections).
    Exited {
        process: String,
        within: std::time::Duration,
        expect_exit: i32,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Link { node, iface, up } => {
                write!(f, "link {node}:{iface} {}", if *up { "up" } else { "down" })
            }
            Fault::Blackhole {
                host,
                target,
                lift: false,
            } => write!(f, "blackhole {target} on {host}"),
            Fault::Blackhole {
                host,
                target,
                lift: true,
            } => write!(f, "lift the blackhole of {target} on {host}"),
            Fault::Signal { process, signal } => write!(f, "{} {process}", signal.name()),
            Fault::Exited {
                process, within, ..
            } => write!(f, "{process} exits within {} ms", within.as_millis()),
        }
    }
}

/// The nftables table of a blackhole: run id (letters and digits only) + what it drops.
pub fn blackhole_table(run_id: &str, t: &BlackholeTarget) -> String {
    let run: String = run_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let what = match (t.proto, t.port) {
        (None, None) => "all".to_string(),
        (Some(p), None) => p.name().to_string(),
        (None, Some(port)) => format!("port_{port}"),
        (Some(p), Some(port)) => format!("{}_{port}", p.name()),
    };
    format!("{run}_bh_{what}")
}

/// The ruleset that makes the blackhole: `input`, `output` and `forward` chains at priority
/// -200 (before any filter the scenario's own `nft` has) that drop the matching packets;
/// `lo` is left alone when the whole host is dropped, so its own processes keep working.
pub fn blackhole_ruleset(table: &str, t: &BlackholeTarget) -> String {
    let (inbound, outbound) = match (t.proto, t.port) {
        (None, None) => (
            "iifname != \"lo\" drop".to_string(),
            "oifname != \"lo\" drop".to_string(),
        ),
        (Some(p), None) => (
            format!("meta l4proto {} drop", p.name()),
            format!("meta l4proto {} drop", p.name()),
        ),
        (None, Some(port)) => (
            format!("meta l4proto {{ tcp, udp }} th dport {port} drop"),
            format!("meta l4proto {{ tcp, udp }} th sport {port} drop"),
        ),
        (Some(p), Some(port)) => (
            format!("{} dport {port} drop", p.name()),
            format!("{} sport {port} drop", p.name()),
        ),
    };
    format!(
        "table inet {table} {{\n\
         \tchain input {{ type filter hook input priority -200; policy accept; {inbound}; }}\n\
         \tchain forward {{ type filter hook forward priority -200; policy accept; {inbound}; }}\n\
         \tchain output {{ type filter hook output priority -200; policy accept; {outbound}; }}\n\
         }}\n"
    )
}

/// The argv that takes a link end down or up (run inside its node's namespace).
pub fn link_argv(iface: &str, up: bool) -> Vec<String> {
    [
        "ip",
        "link",
        "set",
        "dev",
        iface,
        if up { "up" } else { "down" },
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Is `/proc/PID/stat`'s state field "stopped" (`T`)? `None`: no such process.
pub fn stopped_state(stat: &str) -> Option<bool> {
    // "pid (comm) S ...": comm may hold spaces and parentheses; the state follows the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let state = rest.split_whitespace().next()?;
    Some(state == "T" || state == "t")
}

// The shell: applying faults in a running lab.

/// Runs a fault step in the lab (the shell): `ip link`, `nft`, a signal to a process of
/// `procs` (a killed one is reaped and removed, so `start` starts it again).
pub fn apply(
    topo: &mut crate::topology::Topology,
    procs: &mut std::collections::BTreeMap<String, crate::node::Proc>,
    f: &Fault,
) -> Result<String> {
    match f {
        Fault::Link { node, iface, up } => {
            topo.run_command(node, &link_argv(iface, *up))?;
            Ok(String::new())
        }
        Fault::Blackhole { host, target, lift } => {
            let table = blackhole_table(topo.prefix(), target);
            if *lift {
                let argv: Vec<String> = ["nft", "delete", "table", "inet", table.as_str()]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                topo.run_command(host, &argv)?;
            } else {
                topo.nft(host, &blackhole_ruleset(&table, target))?;
            }
            Ok(format!("nft table inet {table}"))
        }
        Fault::Exited {
            process,
            within,
            expect_exit,
        } => {
            let p = procs.get_mut(process).ok_or_else(|| {
                anyhow!("process {process:?} is not running (never started, or stopped)")
            })?;
            let pid = p.pid;
            let st = p.wait(*within)?.ok_or_else(|| {
                anyhow!(
                    "process {process:?} (pid {pid}) is still running after {} ms",
                    within.as_millis()
                )
            })?;
            procs.remove(process);
            if st.code() != Some(*expect_exit) {
                bail!(
                    "process {process:?} (pid {pid}) exited with {st}, expected exit code {expect_exit}"
                );
            }
            Ok(format!("pid {pid} exited ({st})"))
        }
        Fault::Signal { process, signal } => {
            let p = procs.get_mut(process).ok_or_else(|| {
                anyhow!("process {process:?} is not running (never started, or stopped)")
            })?;
            if let Some(st) = p.try_wait()? {
                bail!(
                    "process {process:?} (pid {}) has already exited ({st})",
                    p.pid
                );
            }
            let pid = p.pid;
            crate::netns::send_signal(pid, signal.number());
            let stat = || std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
            let t0 = Instant::now();
            match signal {
                FaultSignal::Kill => {
                    let st = p.wait(Duration::from_secs(5))?.ok_or_else(|| {
                        anyhow!("process {process:?} (pid {pid}) is still there 5 s after SIGKILL")
                    })?;
                    procs.remove(process);
                    Ok(format!("pid {pid} killed ({st})"))
                }
                FaultSignal::Stop | FaultSignal::Cont => {
                    let want = *signal == FaultSignal::Stop;
                    loop {
                        let now = stat().as_deref().and_then(stopped_state);
                        match now {
                            Some(s) if s == want => break,
                            None => bail!("process {process:?} (pid {pid}) is gone"),
                            _ if t0.elapsed() > Duration::from_secs(2) => bail!(
                                "process {process:?} (pid {pid}) is not {} 2 s after {}",
                                if want { "stopped" } else { "running" },
                                signal.name()
                            ),
                            _ => std::thread::sleep(Duration::from_millis(5)),
                        }
                    }
                    Ok(format!(
                        "pid {pid} {}",
                        if want { "stopped" } else { "continued" }
                    ))
                }
                _ => Ok(format!("pid {pid}")),
            }
        }
    }
}

/// The live counterpart of `server i down` (`up`): a stop/start or a fault step on
/// `processes[i]`, as the replay's `down` says.
pub fn live_event(
    plan: &crate::scenario::Plan,
    r: &crate::replay::PlannedReplay,
    i: usize,
    up: bool,
) -> Result<crate::scenario::StepAction> {
    use crate::replay::DownMode;
    let name = r.processes.get(i).cloned().unwrap_or_default();
    let host = || -> Result<String> {
        plan.processes
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.host.clone())
            .ok_or_else(|| anyhow!("no process {name:?}"))
    };
    Ok(match (r.down, up) {
        (DownMode::Stop | DownMode::Kill, true) => crate::scenario::StepAction::Start(name),
        (DownMode::Stop, false) => crate::scenario::StepAction::Stop(name),
        (DownMode::Kill, false) => crate::scenario::StepAction::Fault(Fault::Signal {
            process: name,
            signal: FaultSignal::Kill,
        }),
        (DownMode::Pause, up) => crate::scenario::StepAction::Fault(Fault::Signal {
            process: name,
            signal: if up {
                FaultSignal::Cont
            } else {
                FaultSignal::Stop
            },
        }),
        (DownMode::Blackhole, lift) => crate::scenario::StepAction::Fault(Fault::Blackhole {
            host: host()?,
            target: BlackholeTarget {
                proto: None,
                port: None,
            },
            lift,
        }),
        (DownMode::Link, up) => {
            let node = host()?;
            let ends: Vec<&str> = plan
                .topology
                .links
                .iter()
                .flat_map(|l| [&l.a, &l.b])
                .filter(|e| e.node == node)
                .map(|e| e.iface.as_str())
                .collect();
            let [iface] = ends[..] else {
                bail!(
                    "down = \"link\": host {node:?} of process {name:?} has {} links; it needs exactly one",
                    ends.len()
                );
            };
            crate::scenario::StepAction::Fault(Fault::Link {
                node,
                iface: iface.to_string(),
                up,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_carry_the_run_and_the_target() {
        let t = BlackholeTarget {
            proto: Some(L4::Tcp),
            port: Some(80),
        };
        assert_eq!(
            blackhole_table("penlab-3f2a1c", &t),
            "penlab_3f2a1c_bh_tcp_80"
        );
        let all = BlackholeTarget {
            proto: None,
            port: None,
        };
        assert_eq!(blackhole_table("ci7-0a0b0c", &all), "ci7_0a0b0c_bh_all");
    }

    #[test]
    fn rulesets_drop_what_they_say() {
        let port = blackhole_ruleset(
            "t",
            &BlackholeTarget {
                proto: Some(L4::Udp),
                port: Some(53),
            },
        );
        assert!(port.contains("hook input priority -200; policy accept; udp dport 53 drop;"));
        assert!(port.contains("hook output priority -200; policy accept; udp sport 53 drop;"));
        let both = blackhole_ruleset(
            "t",
            &BlackholeTarget {
                proto: None,
                port: Some(80),
            },
        );
        assert!(both.contains("meta l4proto { tcp, udp } th dport 80 drop"));
        let all = blackhole_ruleset(
            "t",
            &BlackholeTarget {
                proto: None,
                port: None,
            },
        );
        assert!(all.contains("iifname != \"lo\" drop") && all.contains("oifname != \"lo\" drop"));
        assert!(all.starts_with("table inet t {"));
    }

    #[test]
    fn signals_parse_with_or_without_sig() {
        assert_eq!(FaultSignal::parse("KILL"), Ok(FaultSignal::Kill));
        assert_eq!(FaultSignal::parse("sigstop"), Ok(FaultSignal::Stop));
        assert_eq!(
            FaultSignal::parse("SIGCONT").unwrap().number(),
            libc::SIGCONT
        );
        let e = FaultSignal::parse("PAUSE").unwrap_err();
        assert!(
            e.contains("KILL, STOP, CONT") && e.contains("\"PAUSE\""),
            "{e}"
        );
    }

    #[test]
    fn stopped_state_reads_proc_stat() {
        assert_eq!(stopped_state("42 (dns backend) T 1 42"), Some(true));
        assert_eq!(stopped_state("42 (a) b) S 1 42"), Some(false));
        assert_eq!(stopped_state("garbage"), None);
    }

    #[test]
    fn faults_say_what_they_do() {
        let f = Fault::Blackhole {
            host: "web2".into(),
            target: BlackholeTarget {
                proto: Some(L4::Tcp),
                port: Some(80),
            },
            lift: false,
        };
        assert_eq!(f.to_string(), "blackhole tcp port 80 on web2");
        let s = Fault::Signal {
            process: "pen".into(),
            signal: FaultSignal::Kill,
        };
        assert_eq!(s.to_string(), "SIGKILL pen");
        let x = Fault::Exited {
            process: "pen".into(),
            within: std::time::Duration::from_millis(15000),
            expect_exit: 0,
        };
        assert_eq!(x.to_string(), "pen exits within 15000 ms");
        assert_eq!(
            link_argv("eth0", false).join(" "),
            "ip link set dev eth0 down"
        );
    }
}
