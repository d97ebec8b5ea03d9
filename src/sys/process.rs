//! The process: daemonizing, `-j` chroot, the `-u` user switch and the one capability kept
//! across it, the descriptor limit, random bytes, syslog. `nix` wherever it offers a safe call.

use std::io;
use std::path::Path;

use nix::unistd::{ForkResult, Gid, Uid};

fn os(e: nix::errno::Errno) -> io::Error {
    io::Error::from(e)
}

/// Whether the effective user is root.
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `SIGPIPE` ignored: a write to a closed connection is an `EPIPE` error, not process death.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: SIG_IGN installs no handler, so no signal-safety requirement applies; the old
    // disposition is discarded.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// The signals pen handles (SIGTERM, SIGINT, SIGHUP, SIGUSR1).
fn handled_signals() -> nix::sys::signal::SigSet {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
    ] {
        set.add(s);
    }
    set
}

/// Holds back the signals pen handles on the calling thread (and every thread it starts
/// later): one that arrives before the handlers are installed waits, instead of killing the
/// process by its default action. Called before the pid file is written, so a supervisor that
/// signals as soon as it reads the pid file is never too early.
pub(crate) fn hold_handled_signals() -> io::Result<()> {
    handled_signals().thread_block().map_err(io::Error::from)
}

/// Lets the held signals through on the calling thread, once their handlers are installed;
/// any that arrived meanwhile is delivered now.
pub(crate) fn release_handled_signals() -> io::Result<()> {
    handled_signals().thread_unblock().map_err(io::Error::from)
}

/// Detaches from the terminal: fork (the parent exits 0 at once), setsid, stdin and stdout to
/// `/dev/null`; stderr stays. Must run before any thread exists.
pub(crate) fn daemonize() -> io::Result<()> {
    // SAFETY: the caller runs this before starting any thread (the tokio runtime is created
    // later), so the child's copy of the single thread holds no lock another thread owned.
    match unsafe { nix::unistd::fork() } {
        Err(e) => return Err(io::Error::new(os(e).kind(), format!("fork failed: {e}"))),
        Ok(ForkResult::Parent { .. }) => {
            // SAFETY: _exit in the parent skips destructors and atexit handlers that would
            // touch the descriptors the child now shares.
            unsafe { libc::_exit(0) }
        }
        Ok(ForkResult::Child) => {}
    }
    // Failure (already a group leader) is harmless.
    let _ = nix::unistd::setsid();
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| io::Error::new(e.kind(), format!("cannot open /dev/null: {e}")))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| {
        io::Error::new(
            os(e).kind(),
            format!("cannot redirect stdin to /dev/null: {e}"),
        )
    })?;
    nix::unistd::dup2_stdout(&null).map_err(|e| {
        io::Error::new(
            os(e).kind(),
            format!("cannot redirect stdout to /dev/null: {e}"),
        )
    })?;
    Ok(())
}

/// `chroot(dir)` then `chdir("/")`.
pub(crate) fn chroot(dir: &Path) -> io::Result<()> {
    nix::unistd::chroot(dir).map_err(os)?;
    nix::unistd::chdir("/").map_err(os)
}

/// The uid and gid of user `name` from the password database; `None` when there is no such
/// user (or the name contains a NUL byte).
pub(crate) fn lookup_user(name: &str) -> io::Result<Option<(u32, u32)>> {
    let user = nix::unistd::User::from_name(name).map_err(os)?;
    Ok(user.map(|u| (u.uid.as_raw(), u.gid.as_raw())))
}

/// Drops the supplementary groups, then switches gid and uid (gid first: after setuid it could
/// no longer be changed).
pub(crate) fn switch_user(uid: u32, gid: u32) -> io::Result<()> {
    nix::unistd::setgroups(&[]).map_err(os)?;
    nix::unistd::setgid(Gid::from_raw(gid)).map_err(os)?;
    nix::unistd::setuid(Uid::from_raw(uid)).map_err(os)
}

/// `prctl(PR_SET_KEEPCAPS, on)`: whether the permitted capabilities survive a switch away from
/// uid 0 (this thread).
pub(crate) fn set_keep_caps(on: bool) -> io::Result<()> {
    nix::sys::prctl::set_keepcaps(on).map_err(os)
}

/// Reduces this thread's capabilities to CAP_NET_ADMIN, effective and permitted (`capset(2)`,
/// `_LINUX_CAPABILITY_VERSION_3`).
pub(crate) fn retain_only_cap_net_admin() -> io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_ADMIN: u32 = 12;
    let header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // Version 3 takes two 32-bit words per set; CAP_NET_ADMIN is in the first.
    let data = [
        CapData {
            effective: 1 << CAP_NET_ADMIN,
            permitted: 1 << CAP_NET_ADMIN,
            inheritable: 0,
        },
        CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset(2) reads the header and the two-element data array, both live locals of
    // the layout the kernel expects for _LINUX_CAPABILITY_VERSION_3; pid 0 = this thread.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header as *const CapHeader, data.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The `RLIMIT_NOFILE` limits: (soft, hard).
pub(crate) fn nofile_limit() -> io::Result<(u64, u64)> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).map_err(os)
}

/// Sets the `RLIMIT_NOFILE` limits.
pub(crate) fn set_nofile_limit(soft: u64, hard: u64) -> io::Result<()> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard)
        .map_err(os)
}

/// Clock ticks per second (`_SC_CLK_TCK`), `None` when unknown.
pub(crate) fn clock_ticks() -> Option<u64> {
    let v = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    u64::try_from(v).ok()
}

/// The page size in bytes, `None` when unknown.
pub(crate) fn page_size() -> Option<u64> {
    let v = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok()??;
    u64::try_from(v).ok()
}

/// Whether this process may create files in `dir` (`access(W_OK | X_OK)`, real ids).
pub(crate) fn can_write_dir(dir: &Path) -> io::Result<()> {
    use nix::unistd::AccessFlags;
    nix::unistd::access(dir, AccessFlags::W_OK | AccessFlags::X_OK).map_err(os)
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`, which we own.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    Ok(())
}

/// One message to syslog (facility user, level info), tagged `pen`; NUL bytes become spaces.
pub(crate) fn syslog_info(line: &str) {
    syslog(libc::LOG_INFO, line);
}

/// One message to syslog at `priority` (LOG_ERR..LOG_DEBUG; anything else is sent as
/// LOG_DEBUG), facility user, tagged `pen` with the pid; NUL bytes become spaces.
pub(crate) fn syslog(priority: i32, line: &str) {
    let Ok(msg) = std::ffi::CString::new(line.replace('\0', " ")) else {
        return;
    };
    let priority = if (libc::LOG_EMERG..=libc::LOG_DEBUG).contains(&priority) {
        priority
    } else {
        libc::LOG_DEBUG
    };
    // SAFETY: openlog keeps the pointer to the ident, which is a 'static C string literal;
    // syslog gets a constant "%s" format and a valid NUL-terminated argument.
    unsafe {
        libc::openlog(c"pen".as_ptr(), libc::LOG_PID, libc::LOG_USER);
        libc::syslog(priority, c"%s".as_ptr(), msg.as_ptr());
    }
}

/// Test support: fails (never skips) when the test is not run as root, naming what needs it.
#[cfg(test)]
pub(crate) fn require_root(what: &str) {
    crate::testing::require_root(&format!("uses {what}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_looked_up_in_the_password_database() {
        assert_eq!(lookup_user("root").unwrap(), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-pen-rs").unwrap(), None);
        assert_eq!(lookup_user("nul\0byte").unwrap(), None);
    }

    #[test]
    fn limits_sizes_and_random_bytes_are_read() {
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft > 0 && soft <= hard);
        assert!(clock_ticks().is_some_and(|t| t > 0));
        assert!(page_size().is_some_and(|p| p >= 4096));
        let (mut a, mut b) = ([0u8; 16], [0u8; 16]);
        random_bytes(&mut a).unwrap();
        random_bytes(&mut b).unwrap();
        assert_ne!(a, b);
        can_write_dir(&std::env::temp_dir()).unwrap();
        assert!(can_write_dir(Path::new("/no/such/dir")).is_err());
    }
}
