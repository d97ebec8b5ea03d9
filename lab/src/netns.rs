//! Network-namespace primitives shared by the lab IO layer.
//!
//! `setns()` changes only the calling thread (see `../shared/lab-notes.md`, pitfall 1), so every
//! operation that must happen inside a namespace runs on a fresh `std::thread` that enters the
//! namespace, does its work (creates a socket, a netlink handle, a pcap handle, reads
//! `/proc/thread-self/net/...`, writes `/proc/sys/...`) and exits. File descriptors keep the
//! namespace they were created in, so they can be handed back to any thread afterwards.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Directory where named network namespaces are bind-mounted (same as `ip netns`).
pub const NETNS_DIR: &str = "/run/netns";

/// Path of the bind mount of namespace `ns`.
pub fn ns_path(ns: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(ns)
}

/// Rejects namespace names that could escape `/run/netns` or confuse tools.
pub fn validate_ns_name(ns: &str) -> Result<()> {
    if ns.is_empty()
        || ns.len() > 200
        || ns == "."
        || ns == ".."
        || !ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!(
            "invalid network namespace name {ns:?}: expected 1-200 characters from [A-Za-z0-9._-], not \".\" or \"..\""
        );
    }
    Ok(())
}

/// Opens the namespace file of `ns` (the handle `setns` takes).
pub fn open_ns(ns: &str) -> Result<File> {
    validate_ns_name(ns)?;
    let path = ns_path(ns);
    File::open(&path).with_context(|| {
        format!(
            "cannot open network namespace {ns:?} ({}): does it exist (created by this Topology)?",
            path.display()
        )
    })
}

/// Moves the calling thread into the namespace open as `ns_file`.
///
/// Only call this on a thread that is thrown away afterwards (or from `pre_exec`).
pub fn enter(ns_file: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the fd; it affects the calling thread only.
    let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Runs `f` on a fresh thread that has entered namespace `ns`, and returns its result.
///
/// Anything `f` creates (sockets, netlink, pcap handles) lives in `ns` even after the thread
/// exits; threads that `f` spawns inherit `ns` too.
pub fn in_netns<F, T>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let file = open_ns(ns)?;
    let name = ns.to_string();
    let thread = std::thread::Builder::new()
        .name(format!("netns-{}", short(ns)))
        .spawn(move || -> Result<T> {
            enter(&file).with_context(|| format!("setns into network namespace {name:?}"))?;
            Ok(f())
        })
        .with_context(|| format!("spawning a thread for network namespace {ns:?}"))?;
    match thread.join() {
        Ok(r) => r,
        Err(_) => bail!("the thread working inside network namespace {ns:?} panicked"),
    }
}

fn short(ns: &str) -> String {
    // Thread names are limited to 15 bytes by the kernel; keep the distinctive tail.
    let start = ns.len().saturating_sub(8);
    ns.get(start..).unwrap_or(ns).to_string()
}

/// Identity (device, inode) of a namespace file, comparable with `/proc/PID/ns/net`.
pub fn ns_identity(path: &Path) -> Result<(u64, u64)> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot stat namespace file {}", path.display()))?;
    Ok((meta.dev(), meta.ino()))
}

/// Names of the named namespaces that start with `prefix` (sorted).
pub fn list_netns(prefix: &str) -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot list {NETNS_DIR}")),
    };
    let mut out = Vec::new();
    for entry in dir {
        let entry = entry.with_context(|| format!("cannot list {NETNS_DIR}"))?;
        if let Some(name) = entry.file_name().to_str()
            && name.starts_with(prefix)
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// PIDs (other than this process) whose network namespace is one of `idents`.
pub fn pids_in_namespaces(idents: &[(u64, u64)]) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let path = Path::new("/proc").join(pid.to_string()).join("ns/net");
        if let Ok(meta) = std::fs::metadata(&path)
            && idents.contains(&(meta.dev(), meta.ino()))
        {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

/// Sends SIGTERM to each PID, waits up to `grace` for them to go away, then SIGKILLs the rest.
/// Returns the PIDs that were signalled.
pub fn terminate_pids(pids: &[u32], grace: Duration) -> Vec<u32> {
    let me = std::process::id();
    let pids: Vec<u32> = pids.iter().copied().filter(|&p| p != me && p > 1).collect();
    for &pid in &pids {
        send_signal(pid, libc::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && pids.iter().any(|&p| pid_alive(p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for &pid in &pids {
        if pid_alive(pid) {
            send_signal(pid, libc::SIGKILL);
        }
    }
    pids
}

/// Sends `sig` to `pid` (errors such as "no such process" are ignored).
pub fn send_signal(pid: u32, sig: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 1 {
        return;
    }
    // SAFETY: kill(2) with a positive pid signals exactly that process.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// True while `/proc/PID` exists and the process is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // The state follows the last ')' (the command name may contain spaces or parens).
            let state = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 1..))
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_cannot_escape_run_netns() {
        assert!(validate_ns_name("penlab-3f2a1c-client").is_ok());
        assert!(validate_ns_name("a.b_c").is_ok());
        for bad in ["", ".", "..", "a/b", "../etc", "a b", "a\0b"] {
            assert!(validate_ns_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn in_netns_names_a_missing_namespace() {
        let err = in_netns("penlab-does-not-exist-xyz", || ()).unwrap_err();
        assert!(format!("{err:#}").contains("penlab-does-not-exist-xyz"));
    }

    #[test]
    fn own_process_is_never_reported_or_signalled() {
        let me = std::process::id();
        let ident = ns_identity(Path::new("/proc/self/ns/net")).unwrap();
        assert!(!pids_in_namespaces(&[ident]).contains(&me));
        assert!(terminate_pids(&[me, 1, 0], Duration::ZERO).is_empty());
    }
}
