//! `-F` config files through a real `pen`: `include` and comments at start-up, fatal bad lines
//! at start-up (naming file and line, also inside an included file), and SIGHUP re-reads that
//! report bad lines, apply the rest and keep open connections.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use common::{Backend, Listen, Pen, STEP, ctl, get, pen_fails, wait_until};

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn port_of(spec: &str) -> &str {
    spec.rsplit_once(':').map_or("", |(_, p)| p)
}

fn hup(pen: &Pen) {
    let pid = i32::try_from(pen.pid()).unwrap();
    // SAFETY: kill(2) on the PID of our own child.
    unsafe { libc::kill(pid, libc::SIGHUP) };
}

#[test]
fn include_and_comments_apply_at_startup() {
    let a = Backend::start("a", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("pen.cfg");
    let inc = dir.path().join("servers.cfg");
    std::fs::write(
        &inc,
        format!(
            "# the servers\nserver 0 address 127.0.0.1 port {}   # a\n",
            port_of(&a.spec)
        ),
    )
    .unwrap();
    std::fs::write(
        &main,
        format!(
            "# pen config\n\nroundrobin # no tracking\nblacklist 12\ninclude {}\n",
            inc.display()
        ),
    )
    .unwrap();
    let m = main.display().to_string();
    let pen = Pen::start(
        &["-u", "root", "-C", "0", "-F", &m, "127.0.0.1:0"],
        Listen::Reported,
    );
    let (lport, cport) = (pen.port(), pen.control_port());
    assert_eq!(get(None, at(lport)).unwrap(), "a");
    assert_eq!(
        ctl(cport, "mode"),
        "no hash roundrobin no stubborn no weight no prio\n"
    );
    assert_eq!(ctl(cport, "blacklist"), "12\n");
}

#[test]
fn bad_line_in_an_included_file_is_fatal_at_startup_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("pen.cfg");
    let inc = dir.path().join("inc.cfg");
    std::fs::write(&inc, "blacklist 3\n\ntimeout soon\n").unwrap();
    std::fs::write(&main, format!("include {}\n", inc.display())).unwrap();
    let m = main.display().to_string();
    let f = pen_fails(&["-f", "-F", &m, "127.0.0.1:0", "127.0.0.1:9"]);
    assert_eq!(f.code, Some(1));
    assert!(
        f.stderr.contains(&format!("{}:3:", inc.display())),
        "expected the included file and line 3 in {:?}",
        f.stderr
    );
    assert!(f.stderr.contains("timeout"), "{}", f.stderr);
}

#[test]
fn missing_config_file_is_fatal_at_startup() {
    let f = pen_fails(&[
        "-f",
        "-F",
        "/nonexistent/pen.cfg",
        "127.0.0.1:0",
        "127.0.0.1:9",
    ]);
    assert_eq!(f.code, Some(1));
    assert!(f.stderr.contains("/nonexistent/pen.cfg"), "{}", f.stderr);
}

#[test]
fn sighup_rereads_the_file_reports_bad_lines_and_applies_the_rest() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pen.cfg");
    std::fs::write(
        &file,
        format!(
            "roundrobin\nserver 0 address 127.0.0.1 port {}\n",
            port_of(&a.spec)
        ),
    )
    .unwrap();
    let f = file.display().to_string();
    let pen = Pen::start(
        &["-u", "root", "-C", "0", "-F", &f, "127.0.0.1:0"],
        Listen::Reported,
    );
    let (lport, cport) = (pen.port(), pen.control_port());
    assert_eq!(get(None, at(lport)).unwrap(), "a");

    // An open connection that must survive the reload.
    let mut open = TcpStream::connect(at(lport)).unwrap();
    open.set_read_timeout(Some(STEP)).unwrap();
    open.write_all(b"GET / HTTP/1.0\r\n").unwrap();

    std::fs::write(
        &file,
        format!(
            "roundrobin\nserver 0 address 127.0.0.1 port {}\nthis is not a command\nserver 1 address localhost port {}\nblacklist 9\n",
            port_of(&b.spec),
            port_of(&a.spec)
        ),
    )
    .unwrap();
    hup(&pen);
    assert!(
        wait_until(|| ctl(cport, "blacklist") == "9\n"),
        "the re-read did not apply; stderr:\n{}",
        pen.stderr()
    );
    let servers = ctl(cport, "servers");
    assert!(
        servers.starts_with(&format!("0 addr 127.0.0.1 port {} ", port_of(&b.spec))),
        "{servers}"
    );
    assert!(
        servers.contains(&format!("port {} ", port_of(&a.spec))),
        "{servers}"
    );
    assert!(
        wait_until(|| pen.stderr().contains(&format!("{f}:3:"))),
        "{}",
        pen.stderr()
    );

    open.write_all(b"\r\n").unwrap();
    let mut reply = String::new();
    open.read_to_string(&mut reply).unwrap();
    assert!(
        reply.ends_with("\r\n\r\na"),
        "connection dropped by the reload: {reply:?}"
    );
    let bodies: Vec<String> = (0..4).map(|_| get(None, at(lport)).unwrap()).collect();
    assert!(bodies.iter().any(|x| x == "b"), "{bodies:?}");
}
