//! The IO of the binary upgrade (the protocol and its checks are [`crate::upgrade`]; the
//! descriptor passing is [`crate::sys::handover`]).
//!
//! Old pen: [`open_handover`] binds the hand-over socket at start; [`accept_loop`] serves one
//! new pen at a time: sends the [`Passable`] sockets, waits for `ready PID` and hands that to
//! the main loop ([`Ready`]), which stops accepting, answers `stopped` and drains.
//! New pen (`-O upgrade`): [`take_over`] receives and checks the sockets before anything else
//! is opened; [`announce`] says `ready` once it serves and waits for `stopped`.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{DaemonError, OpenListener, err, io_err};
use crate::config::{Config, ListenAddr};
use crate::ctl::server::{ControlAddr, StdListener};
use crate::sys::handover;
use crate::upgrade::{self, Entry, Header, Role, Socket};

/// How long the old pen waits for the new one to say `ready` (once it has the sockets it only
/// builds its runtime and runs its start-up commands; this bounds a new pen that hangs).
const READY_WAIT: Duration = Duration::from_secs(120);
/// How long the new pen waits for the old one's `stopped`.
const STOPPED_WAIT: Duration = Duration::from_secs(30);

/// The sockets a running pen can hand over: each with a descriptor of its own (a `dup`), so
/// the serving tasks keep theirs.
#[derive(Debug, Default)]
pub(crate) struct Passable {
    entries: Vec<(Entry, Option<OwnedFd>)>,
}

fn dup(fd: impl AsFd) -> io::Result<OwnedFd> {
    fd.as_fd().try_clone_to_owned()
}

impl Passable {
    /// The listener's entry (replaced by `listen ADDR`).
    pub(crate) fn set_listen(&mut self, l: &OpenListener, cfg: &Config) -> io::Result<()> {
        let (socket, fd) = match l {
            OpenListener::Tcp(t) => (Socket::Tcp(t.local_addr()?.to_string()), Some(dup(t)?)),
            OpenListener::Udp(u) => (Socket::Udp(u.local_addr()?.to_string()), Some(dup(u)?)),
            OpenListener::Unix(u) => {
                let path = match &cfg.listen {
                    Some(ListenAddr::Unix(p)) => p.display().to_string(),
                    _ => u
                        .local_addr()?
                        .as_pathname()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                };
                (Socket::Unix(path), Some(dup(u)?))
            }
            #[cfg(target_os = "linux")]
            OpenListener::Dsr(link) => {
                let ifname = cfg.dsr_if.clone().unwrap_or_default();
                // The XDP link: the new pen swaps its program into it.
                match link.fast_path().and_then(|f| f.link_fd()) {
                    Some(x) => self.set(Role::Xdp, Socket::Link(ifname.clone()), Some(dup(x)?)),
                    None => self.entries.retain(|(e, _)| e.role != Role::Xdp),
                }
                (Socket::Dsr(ifname), None)
            }
        };
        if !matches!(socket, Socket::Dsr(_)) {
            self.entries.retain(|(e, _)| e.role != Role::Xdp);
        }
        self.set(Role::Listen, socket, fd);
        Ok(())
    }

    pub(crate) fn set_control(&mut self, l: &StdListener) -> io::Result<()> {
        let (socket, fd) = match l {
            StdListener::Tcp(t) => (Socket::Tcp(t.local_addr()?.to_string()), dup(t)?),
            StdListener::Unix(u) => (
                Socket::Unix(
                    u.local_addr()?
                        .as_pathname()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
                dup(u)?,
            ),
        };
        self.set(Role::Control, socket, Some(fd));
        Ok(())
    }

    pub(crate) fn set_handover(&mut self, l: &UnixListener, path: &Path) -> io::Result<()> {
        self.set(
            Role::Handover,
            Socket::Unix(path.display().to_string()),
            Some(dup(l)?),
        );
        Ok(())
    }

    fn set(&mut self, role: Role, socket: Socket, fd: Option<OwnedFd>) {
        self.entries.retain(|(e, _)| e.role != role);
        self.entries.push((Entry { role, socket }, fd));
    }

    fn header(&self) -> Header {
        Header {
            pid: std::process::id(),
            entries: self.entries.iter().map(|(e, _)| e.clone()).collect(),
        }
    }
}

/// Opens the hand-over socket at `path` (a stale socket file is replaced), for root and pen's
/// own user only (mode 0600; the peer's uid is checked too).
pub(crate) fn open_handover(path: &Path) -> Result<UnixListener, DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    let what = || format!("pen: cannot open the upgrade socket {}", path.display());
    let l = crate::proxy::sockets::listen_unix(path, 8).map_err(io_err(what()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(what()))?;
    Ok(l)
}

/// A new pen that said `ready`: its pid, and the connection to answer `stopped` on.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) pid: u32,
    pub(crate) stream: UnixStream,
}

/// Old pen: serves new pens one at a time on the hand-over socket until one is ready (sent on
/// `ready`, then the loop ends). A new pen that fails or disconnects changes nothing.
pub(crate) async fn accept_loop(
    listener: UnixListener,
    passable: Arc<Mutex<Passable>>,
    ready: tokio::sync::mpsc::UnboundedSender<Ready>,
) {
    let listener = match listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(listener))
    {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("upgrade socket: {e}; binary upgrades are not possible");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("upgrade socket: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let passable = passable.clone();
        let session = tokio::task::spawn_blocking(move || {
            let s = stream.into_std()?;
            s.set_nonblocking(false)?;
            session(s, &passable)
        })
        .await;
        match session {
            Ok(Ok(r)) => {
                tracing::info!("upgrade: pen {} is ready; handing over", r.pid);
                let _ = ready.send(r);
                return;
            }
            Ok(Err(e)) => tracing::warn!("upgrade: {e}; still serving"),
            Err(e) => tracing::warn!("upgrade: the hand-over task failed: {e}; still serving"),
        }
    }
}

/// One new pen: check who it is, send the header and the descriptors, wait for `ready PID`.
fn session(s: UnixStream, passable: &Mutex<Passable>) -> io::Result<Ready> {
    let uid = handover::peer_uid(&s)?;
    let me = nix::unistd::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "a process of uid {uid} asked for the listening sockets; only root or uid {me} may"
            ),
        ));
    }
    {
        let p = passable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fds: Vec<_> = p
            .entries
            .iter()
            .filter_map(|(_, fd)| fd.as_ref().map(AsFd::as_fd))
            .collect();
        handover::send_with_fds(&s, p.header().encode().as_bytes(), &fds)?;
    }
    s.set_read_timeout(Some(READY_WAIT))?;
    let mut line = String::new();
    BufReader::new(&s).take_line(&mut line)?;
    match upgrade::parse_ready(&line) {
        Some(pid) => Ok(Ready { pid, stream: s }),
        None if line.is_empty() => Err(io::Error::other(
            "the new pen went away before it was ready (see its error)",
        )),
        None => Err(io::Error::other(format!(
            "the new pen did not start: {}",
            line.trim_end()
        ))),
    }
}

trait TakeLine {
    fn take_line(self, line: &mut String) -> io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    /// One line of at most 4 KiB.
    fn take_line(self, line: &mut String) -> io::Result<()> {
        self.take(4096).read_line(line).map(|_| ())
    }
}

/// Old pen, once it stopped accepting: tells the new one.
pub(crate) fn answer_stopped(mut r: Ready) {
    if let Err(e) = r.stream.write_all(upgrade::STOPPED.as_bytes()) {
        tracing::warn!(
            "upgrade: cannot tell pen {} that this one stopped: {e}",
            r.pid
        );
    }
}

/// What a new pen took over.
#[derive(Debug)]
pub(crate) struct TakenOver {
    pub(crate) old_pid: u32,
    /// `None` for DSR: the new pen opens its own raw socket.
    pub(crate) listener: Option<OpenListener>,
    pub(crate) control: Option<StdListener>,
    pub(crate) handover: Option<UnixListener>,
    /// DSR: the old pen's XDP link, for [`crate::link::dsr::open_with`].
    pub(crate) xdp: Option<OwnedFd>,
    /// The connection to the old pen, for [`announce`].
    pub(crate) stream: UnixStream,
}

/// What this command line asks for, as header entries.
fn wanted(cfg: &Config) -> Result<upgrade::Wanted, DaemonError> {
    let listen = if let Some(i) = &cfg.dsr_if {
        Socket::Dsr(i.clone())
    } else {
        match &cfg.listen {
            Some(ListenAddr::Inet(sa)) if cfg.udp => Socket::Udp(sa.to_string()),
            Some(ListenAddr::Inet(sa)) => Socket::Tcp(sa.to_string()),
            Some(ListenAddr::Unix(p)) => Socket::Unix(p.display().to_string()),
            other => {
                return Err(err(format!(
                    "pen: upgrade: the listen address {} is not resolved",
                    other.as_ref().map_or_else(String::new, ToString::to_string)
                )));
            }
        }
    };
    let control = match &cfg.control {
        Some(spec) => Some(
            match ControlAddr::parse(spec).map_err(DaemonError::Control)? {
                ControlAddr::Tcp(sa) => Socket::Tcp(sa.to_string()),
                ControlAddr::Unix(p) => Socket::Unix(p.display().to_string()),
            },
        ),
        None => None,
    };
    Ok(upgrade::Wanted { listen, control })
}

/// New pen: connects to the running pen at `path`, receives its sockets and checks them
/// against `cfg`. Any failure is an error naming the cause; the running pen carries on.
pub(crate) fn take_over(cfg: &Config, path: Option<PathBuf>) -> Result<TakenOver, DaemonError> {
    let Some(path) = path else {
        return Err(err(
            "pen: upgrade: no hand-over socket to find the running pen: give the same -p PIDFILE (or upgrade_socket PATH) as the running pen",
        ));
    };
    let want = wanted(cfg)?;
    let fail = |what: &str| {
        let what = format!("pen: upgrade: {what} (upgrade socket {})", path.display());
        move |e: io::Error| DaemonError::Io { what, source: e }
    };
    let s = UnixStream::connect(&path).map_err(fail(
        "cannot reach the running pen; is one running with the same -p or upgrade_socket?",
    ))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(fail("socket"))?;
    let mut buf = vec![0u8; upgrade::MAX_HEADER + 1];
    let (mut n, fds) = handover::recv_with_fds(&s, &mut buf)
        .map_err(fail("cannot receive the listening sockets"))?;
    // The header is one message; a stream socket may still split it.
    while n > 0 && n <= upgrade::MAX_HEADER && buf[..n].last() != Some(&b'\n') {
        let (m, more) = handover::recv_with_fds(&s, &mut buf[n..])
            .map_err(fail("cannot receive the listening sockets"))?;
        drop(more);
        if m == 0 {
            break;
        }
        n += m;
    }
    let refuse = |s: &UnixStream, why: &str| {
        let _ = (&*s).write_all(format!("error: {why}\n").as_bytes());
    };
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    let header = Header::decode(&text).map_err(|e| err(format!("pen: upgrade: {e}")))?;
    if header.fd_count() != fds.len() {
        let e = upgrade::HeaderError::FdCount {
            want: header.fd_count(),
            got: fds.len(),
        };
        refuse(&s, &e.to_string());
        return Err(err(format!("pen: upgrade: {e}")));
    }
    let plan = upgrade::check(&header, &want).map_err(|e| {
        refuse(&s, &e.to_string());
        err(format!("pen: upgrade: {e}"))
    })?;
    let mut fds: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut take = |i: Option<usize>| i.and_then(|i| fds.get_mut(i).and_then(Option::take));
    let listener = match (header.find(Role::Listen).map(|(s, _)| s), take(plan.listen)) {
        (Some(Socket::Tcp(_)), Some(fd)) => Some(OpenListener::Tcp(fd.into())),
        (Some(Socket::Udp(_)), Some(fd)) => Some(OpenListener::Udp(fd.into())),
        (Some(Socket::Unix(_)), Some(fd)) => Some(OpenListener::Unix(fd.into())),
        _ => None,
    };
    let control = match (
        header.find(Role::Control).map(|(s, _)| s),
        take(plan.control),
    ) {
        (Some(Socket::Tcp(_)), Some(fd)) => Some(StdListener::Tcp(fd.into())),
        (Some(Socket::Unix(_)), Some(fd)) => Some(StdListener::Unix(fd.into())),
        _ => None,
    };
    let handover = take(plan.handover).map(UnixListener::from);
    let xdp = take(plan.xdp);
    for l in [&listener].into_iter().flatten() {
        match l {
            OpenListener::Tcp(t) => t.set_nonblocking(true),
            OpenListener::Udp(u) => u.set_nonblocking(true),
            OpenListener::Unix(u) => u.set_nonblocking(true),
            #[cfg(target_os = "linux")]
            OpenListener::Dsr(_) => Ok(()),
        }
        .map_err(fail("socket"))?;
    }
    tracing::info!(
        "upgrade: took over {} socket(s) from pen {}",
        header.fd_count(),
        header.pid
    );
    Ok(TakenOver {
        old_pid: header.pid,
        listener,
        control,
        handover,
        xdp,
        stream: s,
    })
}

/// New pen, serving: writes the pid file (kept open since before the privileges were
/// dropped; `None`: no `-p`; written before `ready` so that the old pen, which removes it at
/// exit only if it still names itself, leaves it), says `ready` and waits for `stopped`.
pub(crate) async fn announce(
    stream: UnixStream,
    old_pid: u32,
    pid_file: Option<(PathBuf, std::fs::File)>,
) {
    if let Some((path, mut f)) = pid_file {
        let text = format!("{}\n", std::process::id());
        let w = f.set_len(0).and_then(|()| {
            use std::io::Seek;
            f.seek(io::SeekFrom::Start(0))?;
            f.write_all(text.as_bytes())
        });
        if let Err(e) = w {
            tracing::error!("upgrade: cannot write pid file {}: {e}", path.display());
        }
    }
    let r = tokio::task::spawn_blocking(move || -> io::Result<()> {
        (&stream).write_all(upgrade::ready_line(std::process::id()).as_bytes())?;
        stream.set_read_timeout(Some(STOPPED_WAIT))?;
        let mut line = String::new();
        BufReader::new(&stream).take_line(&mut line)?;
        if line != upgrade::STOPPED {
            return Err(io::Error::other(format!(
                "pen {old_pid} did not confirm that it stopped accepting (got {:?})",
                line.trim_end()
            )));
        }
        Ok(())
    })
    .await;
    match r {
        Ok(Ok(())) => tracing::info!("upgrade: pen {old_pid} stopped accepting; this pen serves"),
        Ok(Err(e)) => tracing::warn!("upgrade: {e}"),
        Err(e) => tracing::warn!("upgrade: {e}"),
    }
}

/// Old pen at exit: the pid file is removed only if it still names this process (after an
/// upgrade it names the new pen).
pub(crate) fn remove_pid_file_if_mine(path: &Path) {
    if let Ok(text) = std::fs::read_to_string(path)
        && upgrade::pid_file_names(&text, std::process::id())
    {
        let _ = std::fs::remove_file(path);
    }
}

/// Whether the balancer has nothing left to finish: no open TCP connection, no live UDP flow.
pub(crate) fn drained(
    state: &crate::proxy::SharedState,
    conns: &crate::proxy::tcp::ConnTable,
) -> bool {
    let udp = crate::proxy::lock(state).io.udp_table.clone();
    conns.is_empty() && udp.is_none_or(|t| t.with_table(crate::proxy::udp::FlowTable::is_empty))
}
