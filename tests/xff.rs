//! `-H` through a real pen on loopback: X-Forwarded-For / X-Forwarded-Proto on every request of
//! a connection however it is split, pipelined and keep-alive requests, an existing header
//! appended to, and non-HTTP or oversized traffic passed through byte for byte.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{Listen, Pen, STEP};

/// An HTTP/1.1 keep-alive backend: for every request it records the head it received and
/// answers with that head as the body.
struct EchoHeads {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
}

impl EchoHeads {
    fn start() -> EchoHeads {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let h = heads.clone();
        thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let h = h.clone();
                thread::spawn(move || serve_heads(conn, &h));
            }
        });
        EchoHeads { addr, heads }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

fn serve_heads(mut conn: TcpStream, heads: &Mutex<Vec<String>>) {
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf: Vec<u8> = Vec::new();
    let mut tmp = [0u8; 4096];
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            match conn.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < end + 4 + len {
            match conn.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..end + 4 + len);
        heads.lock().unwrap().push(head.clone());
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{head}",
            head.len()
        );
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// Reads one `Content-Length` response and returns its body.
fn read_response(s: &mut impl Read) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "connection closed mid-head");
        buf.push(b[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

fn pen_h(backend: SocketAddr, extra: &[&str]) -> (Pen, u16) {
    let be = backend.to_string();
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["127.0.0.1:0", be.as_str()]);
    let pen = Pen::start(&args, Listen::Reported);
    let port = pen.port();
    (pen, port)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

fn count(h: &str, needle: &str) -> usize {
    h.matches(needle).count()
}

#[test]
fn xff_is_added_to_every_keepalive_request_however_it_is_split() {
    let be = EchoHeads::start();
    let (_pen, port) = pen_h(be.addr, &["-H"]);
    let mut s = connect(port);
    let req = b"PUT /one HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello";
    // Split inside the request line, inside a field name and inside the blank line.
    for part in [&req[..3], &req[3..22], &req[22..48], &req[48..]] {
        s.write_all(part).unwrap();
        thread::sleep(Duration::from_millis(30));
    }
    let body = read_response(&mut s);
    assert_eq!(count(&body, "X-Forwarded-For: 127.0.0.1\r\n"), 1, "{body}");
    assert_eq!(count(&body, "X-Forwarded-Proto: http\r\n"), 1, "{body}");
    s.write_all(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let body = read_response(&mut s);
    assert!(body.starts_with("OPTIONS * HTTP/1.1\r\n"), "{body}");
    assert_eq!(count(&body, "X-Forwarded-For: 127.0.0.1\r\n"), 1, "{body}");
    assert_eq!(be.heads().len(), 2);
}

#[test]
fn pipelined_requests_in_one_write_each_get_xff_once() {
    let be = EchoHeads::start();
    let (_pen, port) = pen_h(be.addr, &["-H"]);
    let mut s = connect(port);
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 24\r\n\r\nGET /fake HTTP/1.1\r\n\r\n\r\n\
          DELETE /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .unwrap();
    let bodies: Vec<String> = (0..3).map(|_| read_response(&mut s)).collect();
    for (b, path) in bodies.iter().zip(["GET /1", "POST /2", "DELETE /3"]) {
        assert!(b.starts_with(path), "{b}");
        assert_eq!(count(b, "X-Forwarded-For: 127.0.0.1\r\n"), 1, "{b}");
    }
    let heads = be.heads();
    assert_eq!(heads.len(), 3, "{heads:?}");
    assert!(heads.iter().all(|h| !h.contains("/fake")));
}

#[test]
fn existing_xff_gets_the_client_appended_and_proto_is_pens() {
    let be = EchoHeads::start();
    let (_pen, port) = pen_h(be.addr, &["-O", "http"]);
    let mut s = connect(port);
    s.write_all(
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .unwrap();
    let body = read_response(&mut s);
    assert!(
        body.contains("X-Forwarded-For: 203.0.113.9, 127.0.0.1\r\n"),
        "{body}"
    );
    assert!(body.contains("X-Forwarded-Proto: http\r\n"), "{body}");
    assert!(!body.contains("https"), "{body}");
}

#[test]
fn without_h_requests_pass_unchanged() {
    let be = EchoHeads::start();
    let (_pen, port) = pen_h(be.addr, &[]);
    let mut s = connect(port);
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut s), "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
}

/// A raw echo backend (not HTTP): everything read is written back.
fn raw_echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for conn in l.incoming().flatten() {
            thread::spawn(move || {
                let mut r = conn.try_clone().unwrap();
                let mut w = conn;
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// Sends `data`, half-closes, and reads everything back.
fn roundtrip(port: u16, data: &[u8]) -> Vec<u8> {
    let mut s = connect(port);
    let mut w = s.try_clone().unwrap();
    let data = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&data).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

#[test]
fn binary_traffic_passes_through_h_byte_for_byte() {
    let (_pen, port) = pen_h(raw_echo(), &["-H"]);
    let mut x: u32 = 12345;
    let data: Vec<u8> = (0..1_000_000)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            (x >> 16) as u8
        })
        .collect();
    assert!(roundtrip(port, &data) == data, "binary data was altered");
}

#[test]
fn oversized_request_head_passes_through_untouched() {
    let (_pen, port) = pen_h(raw_echo(), &["-H"]);
    let mut req = b"GET / HTTP/1.1\r\nCookie: ".to_vec();
    req.extend(std::iter::repeat_n(b'c', 100_000));
    req.extend_from_slice(b"\r\n\r\nGET /next HTTP/1.1\r\n\r\n");
    assert!(roundtrip(port, &req) == req, "oversized head was altered");
}

#[test]
fn truncated_request_head_is_forwarded_at_eof() {
    let (_pen, port) = pen_h(raw_echo(), &["-H"]);
    let part = b"GET / HTTP/1.1\r\nHost: a\r\n";
    assert_eq!(roundtrip(port, part), part);
}

#[test]
fn unix_socket_client_is_forwarded_as_unknown() {
    use std::os::unix::net::UnixStream;
    let be = EchoHeads::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pen.sock");
    let listen = path.display().to_string();
    let backend = be.addr.to_string();
    let _pen = Pen::start(&["-H", &listen, &backend], Listen::Unix(path.clone()));
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let body = read_response(&mut s);
    assert!(body.contains("X-Forwarded-For: unknown\r\n"), "{body}");
}

#[test]
fn ipv6_client_address_is_written_without_brackets() {
    let be = EchoHeads::start();
    let backend = be.addr.to_string();
    let pen = Pen::start(&["-H", "[::1]:0", &backend], Listen::Reported);
    let port = pen.port();
    let mut s = TcpStream::connect(("::1", port)).unwrap();
    s.set_read_timeout(Some(STEP)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let body = read_response(&mut s);
    assert!(body.contains("X-Forwarded-For: ::1\r\n"), "{body}");
}
