//! The request log, `-l file|host:port` (reference §16), as C Pen writes it.
//!
//! - `-l file`: one line per logged request: `client_ip unix_time server_ip first-line`, where
//!   the first line is cut at `\r`/`\n` and at 100 bytes, non-ASCII bytes shown as `.`.
//! - `-l host:port` (contains `:` and does not start with `/`): one UDP datagram per request
//!   to penlogd: `+ client_ip server_ip first-line\n`, at most 1024 bytes.
//!
//! The formatting ([`LogTarget::parse`], [`file_line`], [`net_line`]) is pure; [`RequestLog`]
//! is the small IO part (an append-mode file or a UDP socket), reopened on SIGHUP and by the
//! `log` command. Deliberate difference: C Pen logs every chunk read from a client; pen-rs logs
//! the first chunk of each connection (one line per connection: the request line of HTTP/1.0
//! or the first request of a keep-alive connection), and control characters are shown as `.`
//! too so that a line of the log is always one line.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::PathBuf;
use std::sync::Mutex;

/// How many bytes of the request a file log line keeps (C Pen's `KEEP_MAX`).
pub const KEEP_MAX: usize = 100;
/// Size of a penlogd datagram, newline included (C Pen's buffer).
pub const NET_LINE_MAX: usize = 1024;

/// Why a request log target is not valid or could not be opened. Displays one line naming
/// the target; the OS error is kept as `source()`.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("-l expects a file name or host:port of penlogd, got an empty string")]
    Empty,
    #[error(
        "bad penlogd address {given:?}: expected host:port with a port 0-65535 (or a file name without ':')"
    )]
    BadPort { given: String },
    #[error("bad penlogd address {given:?}: the host is missing")]
    NoHost { given: String },
    #[error("cannot open request log {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot resolve penlogd host {host:?}: {source}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("penlogd host {host:?} has no address")]
    NoAddress { host: String },
    #[error("cannot open a UDP socket for penlogd {to}: {source}")]
    Socket {
        to: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Where `-l` sends the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    File(PathBuf),
    /// penlogd's address, `host:port` (resolved when the log is opened).
    Net {
        host: String,
        port: u16,
    },
}

impl LogTarget {
    /// C Pen's rule: a value containing `:` and not starting with `/` is `host:port` for
    /// penlogd, anything else a file name.
    pub fn parse(s: &str) -> Result<LogTarget, LogError> {
        if s.is_empty() {
            return Err(LogError::Empty);
        }
        if s.starts_with('/') || !s.contains(':') {
            return Ok(LogTarget::File(PathBuf::from(s)));
        }
        let (host, port) = s.rsplit_once(':').unwrap_or((s, ""));
        let port: u16 = port.parse().map_err(|_| LogError::BadPort {
            given: s.to_string(),
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(LogError::NoHost {
                given: s.to_string(),
            });
        }
        Ok(LogTarget::Net {
            host: host.to_string(),
            port,
        })
    }
}

/// The request's first line: up to `max` bytes, cut at `\r` or `\n`.
fn first_line(chunk: &[u8], max: usize) -> String {
    chunk
        .iter()
        .take(max)
        .take_while(|&&b| b != b'\r' && b != b'\n')
        .map(|&b| {
            if b == b'\t' || (0x20..0x7f).contains(&b) {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect()
}

/// One line of the file log, newline included: `client unix_time server request`.
pub fn file_line(client: &str, unix_time: u64, server: &str, chunk: &[u8]) -> String {
    format!(
        "{client} {unix_time} {server} {}\n",
        first_line(chunk, KEEP_MAX)
    )
}

/// One penlogd datagram: `+ client server request\n`, at most [`NET_LINE_MAX`] bytes.
pub fn net_line(client: &str, server: &str, chunk: &[u8]) -> Vec<u8> {
    let mut line = format!("+ {client} {server} ").into_bytes();
    line.truncate(NET_LINE_MAX - 1);
    let room = NET_LINE_MAX - 1 - line.len();
    line.extend(first_line(chunk, room).into_bytes());
    line.push(b'\n');
    line
}

#[derive(Debug)]
enum Sink {
    File(Mutex<File>),
    Net { socket: UdpSocket, to: SocketAddr },
}

/// An open request log. Writes never block the data path for long: the file is opened in
/// append mode (one `write` per line), the UDP socket is non-blocking and a full socket buffer
/// drops the line.
#[derive(Debug)]
pub struct RequestLog {
    target: LogTarget,
    sink: Sink,
}

impl RequestLog {
    /// Opens (creates, appends to) the file or resolves penlogd's address and opens a socket.
    pub fn open(target: &LogTarget) -> Result<RequestLog, LogError> {
        let sink = match target {
            LogTarget::File(p) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| LogError::Open {
                        path: p.clone(),
                        source,
                    })?;
                Sink::File(Mutex::new(f))
            }
            LogTarget::Net { host, port } => {
                let to = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|source| LogError::Resolve {
                        host: host.clone(),
                        source,
                    })?
                    .next()
                    .ok_or_else(|| LogError::NoAddress { host: host.clone() })?;
                let bind: SocketAddr = if to.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
                };
                let socket = UdpSocket::bind(bind)
                    .and_then(|s| s.set_nonblocking(true).map(|()| s))
                    .map_err(|source| LogError::Socket { to, source })?;
                Sink::Net { socket, to }
            }
        };
        Ok(RequestLog {
            target: target.clone(),
            sink,
        })
    }

    pub fn target(&self) -> &LogTarget {
        &self.target
    }

    /// Logs one request: `chunk` is the first data the client sent.
    pub fn log(&self, client: &str, server: &str, unix_time: u64, chunk: &[u8]) -> io::Result<()> {
        match &self.sink {
            Sink::File(f) => {
                let line = file_line(client, unix_time, server, chunk);
                let mut f = f.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                f.write_all(line.as_bytes())
            }
            Sink::Net { socket, to } => {
                match socket.send_to(&net_line(client, server, chunk), to) {
                    Ok(_) => Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

/// The request log in force (one per process): the control plane installs it (`-l`, `log X`,
/// `no log`, SIGHUP), the data path reads it for each connection.
static CURRENT: std::sync::RwLock<Option<std::sync::Arc<RequestLog>>> =
    std::sync::RwLock::new(None);

/// The request log in force, if any.
pub fn current() -> Option<std::sync::Arc<RequestLog>> {
    CURRENT
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone()
}

/// Replaces the request log in force (`None` turns logging off).
pub fn install(log: Option<RequestLog>) {
    *CURRENT
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = log.map(std::sync::Arc::new);
}

/// Opens `target` (C Pen's `-l` syntax) and installs it; `None` turns logging off.
pub fn reopen(target: Option<&str>) -> Result<(), LogError> {
    match target {
        None => {
            install(None);
            Ok(())
        }
        Some(t) => {
            let log = RequestLog::open(&LogTarget::parse(t)?)?;
            install(Some(log));
            Ok(())
        }
    }
}

/// How long [`log_first_request`] waits for the client's first bytes before it gives up on
/// logging this connection (the bytes are forwarded either way).
pub const FIRST_REQUEST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The address of a backend as the log shows it (IP address, or the Unix socket path).
pub fn backend_text(addr: &crate::config::BackendAddr) -> String {
    match addr {
        crate::config::BackendAddr::Inet(sa) => sa.ip().to_string(),
        crate::config::BackendAddr::Unix(p) => p.display().to_string(),
    }
}

/// Waits until the client has sent something (logged with a peek: the bytes stay in the
/// socket for the forwarder) or the server speaks first (then nothing is logged: the protocol
/// is server-first), at most [`FIRST_REQUEST_WAIT`]. Only TCP clients can be peeked; Unix
/// socket clients are not logged.
pub async fn log_first_request(
    log: &RequestLog,
    client: &crate::proxy::forward::Stream,
    server: &crate::proxy::forward::Stream,
    client_text: &str,
    server_text: &str,
) {
    use crate::proxy::forward::Stream;
    let Stream::Tcp(c) = client else { return };
    let server_speaks = async {
        match server {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    };
    let mut buf = [0u8; NET_LINE_MAX];
    let peeked = tokio::time::timeout(FIRST_REQUEST_WAIT, async {
        tokio::select! {
            biased;
            r = c.peek(&mut buf) => r.ok(),
            _ = server_speaks => None,
        }
    })
    .await;
    let Ok(Some(n)) = peeked else { return };
    if n == 0 {
        return;
    }
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if let Err(e) = log.log(
        client_text,
        server_text,
        unix_time,
        buf.get(..n).unwrap_or(&[]),
    ) {
        tracing::warn!("request log: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_with_colon_is_penlogd_unless_absolute_path() {
        assert_eq!(
            LogTarget::parse("127.0.0.1:10000").unwrap(),
            LogTarget::Net {
                host: "127.0.0.1".into(),
                port: 10000
            }
        );
        assert_eq!(
            LogTarget::parse("/var/log/pen:1.log").unwrap(),
            LogTarget::File("/var/log/pen:1.log".into())
        );
        assert_eq!(
            LogTarget::parse("pen.log").unwrap(),
            LogTarget::File("pen.log".into())
        );
        let e = LogTarget::parse("host:http").unwrap_err();
        assert!(
            matches!(&e, LogError::BadPort { given } if given == "host:http"),
            "{e:?}"
        );
        assert!(e.to_string().contains("host:http"), "{e}");
        assert!(matches!(LogTarget::parse(""), Err(LogError::Empty)));
        assert!(matches!(
            LogTarget::parse(":80"),
            Err(LogError::NoHost { .. })
        ));
    }

    #[test]
    fn file_line_keeps_first_line_up_to_100_bytes() {
        let l = file_line(
            "10.0.0.1",
            1234,
            "10.0.0.2",
            b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
        );
        assert_eq!(l, "10.0.0.1 1234 10.0.0.2 GET / HTTP/1.0\n");
        let long = vec![b'a'; 300];
        let l = file_line("c", 1, "s", &long);
        assert_eq!(l.len(), "c 1 s \n".len() + KEEP_MAX);
    }

    #[test]
    fn non_ascii_and_control_bytes_become_dots() {
        let l = file_line("c", 1, "s", b"GET /\xc3\xa9\x01 x\n");
        assert_eq!(l, "c 1 s GET /... x\n");
    }

    #[test]
    fn net_line_has_plus_prefix_and_is_bounded() {
        assert_eq!(net_line("c", "s", b"GET /\r\n"), b"+ c s GET /\n".to_vec());
        let big = vec![b'x'; 5000];
        let l = net_line("c", "s", &big);
        assert_eq!(l.len(), NET_LINE_MAX);
        assert_eq!(l.last(), Some(&b'\n'));
    }

    #[test]
    fn file_log_appends_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("req.log");
        let log = RequestLog::open(&LogTarget::File(p.clone())).unwrap();
        log.log("1.2.3.4", "5.6.7.8", 10, b"GET /a HTTP/1.1\r\n")
            .unwrap();
        log.log("1.2.3.4", "5.6.7.8", 11, b"HEAD /b HTTP/1.1\r\n")
            .unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "1.2.3.4 10 5.6.7.8 GET /a HTTP/1.1\n1.2.3.4 11 5.6.7.8 HEAD /b HTTP/1.1\n"
        );
    }

    async fn pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn first_request_is_logged_and_left_in_the_socket() {
        use crate::proxy::forward::Stream;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("req.log");
        let log = RequestLog::open(&LogTarget::File(p.clone())).unwrap();
        let (mut client_side, pen_client) = pair().await;
        let (_server_side, pen_server) = pair().await;
        client_side
            .write_all(b"GET /x HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let (c, s) = (Stream::Tcp(pen_client), Stream::Tcp(pen_server));
        log_first_request(&log, &c, &s, "1.1.1.1", "2.2.2.2").await;
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(
            text.starts_with("1.1.1.1 ") && text.ends_with(" 2.2.2.2 GET /x HTTP/1.0\n"),
            "{text:?}"
        );
        let Stream::Tcp(mut c) = c else {
            unreachable!()
        };
        let mut buf = [0u8; 6];
        c.read_exact(&mut buf).await.unwrap();
        assert_eq!(
            &buf, b"GET /x",
            "the request is still there for the forwarder"
        );
    }

    #[tokio::test]
    async fn server_first_protocols_are_not_waited_for() {
        use crate::proxy::forward::Stream;
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("req.log");
        let log = RequestLog::open(&LogTarget::File(p.clone())).unwrap();
        let (_client_side, pen_client) = pair().await;
        let (mut server_side, pen_server) = pair().await;
        server_side.write_all(b"220 smtp ready\r\n").await.unwrap();
        let (c, s) = (Stream::Tcp(pen_client), Stream::Tcp(pen_server));
        let t = std::time::Instant::now();
        log_first_request(&log, &c, &s, "1.1.1.1", "2.2.2.2").await;
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
    }

    #[test]
    fn net_log_sends_one_datagram_per_request() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let port = rx.local_addr().unwrap().port();
        let log = RequestLog::open(&LogTarget::Net {
            host: "127.0.0.1".into(),
            port,
        })
        .unwrap();
        log.log("1.2.3.4", "5.6.7.8", 10, b"GET /a HTTP/1.1\r\n")
            .unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"+ 1.2.3.4 5.6.7.8 GET /a HTTP/1.1\n");
    }
}
