//! systemd readiness notification (sd_notify(3), without libsystemd): one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path, or `@name` for the
//! abstract namespace). Without `$NOTIFY_SOCKET` (not started by systemd with `Type=notify`)
//! every call does nothing.
//!
//! pen sends `READY=1` once it listens and serves, `RELOADING=1` with `MONOTONIC_USEC=` when
//! SIGHUP arrives and `READY=1` again once the re-read is applied, and `STOPPING=1` on exit.
//! The message texts are pure functions ([`ready`], [`reloading`], [`stopping`]); [`send`] is
//! the IO. A failed send is logged once at debug level and otherwise ignored: readiness is a
//! courtesy to the service manager, never a reason to stop balancing.

use std::io;
use std::os::unix::net::UnixDatagram;

/// `READY=1` with a `STATUS=` line for `systemctl status`.
pub fn ready(status: &str) -> String {
    format!("READY=1\nSTATUS={}", one_line(status))
}

/// `RELOADING=1` with the monotonic time in microseconds (systemd 253+ wants it to tell this
/// reload from an earlier one; older versions ignore it).
pub fn reloading(monotonic_usec: u64) -> String {
    format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading")
}

/// `STOPPING=1`.
pub fn stopping() -> String {
    "STOPPING=1\nSTATUS=stopping".to_string()
}

/// A value never spans lines (a newline would start a new, bogus assignment).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// Where `$NOTIFY_SOCKET` points: a filesystem path or an abstract name (`@name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Path(std::path::PathBuf),
    Abstract(Vec<u8>),
}

/// Parses a `$NOTIFY_SOCKET` value: `/path` or `@abstract`; anything else (empty, relative)
/// is rejected with a message naming it, as sd_notify does.
pub fn parse_target(value: &std::ffi::OsStr) -> Result<Target, String> {
    use std::os::unix::ffi::OsStrExt;
    let b = value.as_bytes();
    match b.first() {
        Some(b'/') => Ok(Target::Path(value.into())),
        Some(b'@') if b.len() > 1 => Ok(Target::Abstract(b[1..].to_vec())),
        _ => Err(format!(
            "NOTIFY_SOCKET={:?}: expected an absolute path or @abstract-name",
            value
        )),
    }
}

/// Sends `message` to `$NOTIFY_SOCKET`; `Ok(false)` when the variable is not set.
pub fn send_to_env(message: &str) -> io::Result<bool> {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = parse_target(&value).map_err(io::Error::other)?;
    send(&target, message)?;
    Ok(true)
}

/// One datagram to `target`.
pub fn send(target: &Target, message: &str) -> io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    match target {
        Target::Path(p) => sock.send_to(message.as_bytes(), p)?,
        Target::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(message.as_bytes(), &addr)?
        }
    };
    Ok(())
}

/// [`send_to_env`] for the daemon: failures go to the debug log, nothing else.
pub fn notify(message: &str) {
    if let Err(e) = send_to_env(message) {
        tracing::debug!("sd_notify {:?}: {e}", message.lines().next().unwrap_or(""));
    }
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd's `MONOTONIC_USEC=` refers to.
pub fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1_000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn messages_follow_sd_notify() {
        assert_eq!(
            ready("listening on 127.0.0.1:80"),
            "READY=1\nSTATUS=listening on 127.0.0.1:80"
        );
        assert_eq!(ready("a\nb"), "READY=1\nSTATUS=a b");
        assert!(reloading(42).starts_with("RELOADING=1\nMONOTONIC_USEC=42\n"));
        assert!(stopping().starts_with("STOPPING=1"));
    }

    #[test]
    fn targets_are_paths_or_abstract_names() {
        assert_eq!(
            parse_target(OsStr::new("/run/systemd/notify")),
            Ok(Target::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_target(OsStr::new("@pen/notify")),
            Ok(Target::Abstract(b"pen/notify".to_vec()))
        );
        for bad in ["", "@", "relative/path"] {
            let e = parse_target(OsStr::new(bad)).unwrap_err();
            assert!(
                e.contains("NOTIFY_SOCKET") && e.contains("absolute path"),
                "{e}"
            );
        }
    }

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        send(&Target::Path(p.clone()), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("pen-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(&Target::Abstract(name.into_bytes()), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(monotonic_usec() > 0);
    }
}
