//! Keeps the purity contract of `src/lib.rs` true: every module its module doc lists under
//! "Pure:" is scanned (its code outside `#[cfg(test)] mod tests`), and a use of the runtime,
//! sockets, files, clocks, randomness, threads, locks, callbacks, logging, or of an IO module
//! of the crate (`proxy`, `daemon`, `sys`, `link`, `reqlog`, `ctl::server`) fails here with
//! its file and line. A few pure items still live in IO modules; they are listed in
//! [`ALLOWED_ITEMS`] by full path, with why, and an entry nothing uses fails the test too.
//!
//! To fix a failure: take the value as a parameter (time as `now`, open connections as
//! `state::OpenConns`, ...), return the IO to do as a value (`ctl::reply::Action`), or move the
//! code to the shell.

use std::path::{Path, PathBuf};

/// Words and paths a pure module may not use, each with what it stands for.
const FORBIDDEN: &[(&str, &str)] = &[
    ("tokio", "the async runtime"),
    ("mio", "the event loop"),
    ("TcpStream", "a socket"),
    ("TcpListener", "a socket"),
    ("UdpSocket", "a socket"),
    ("UnixStream", "a socket"),
    ("UnixListener", "a socket"),
    ("UnixDatagram", "a socket"),
    ("socket2", "sockets"),
    ("libc", "system calls"),
    ("nix", "system calls"),
    ("std::fs", "files"),
    ("File", "files"),
    ("OpenOptions", "files"),
    ("Instant", "a clock (take `now` as a parameter)"),
    ("SystemTime", "a clock (take the time as a parameter)"),
    ("UNIX_EPOCH", "a clock (take the time as a parameter)"),
    ("rand", "a random number generator"),
    ("getrandom", "a random number generator"),
    ("std::thread", "threads"),
    ("std::process", "the process"),
    ("std::env", "the environment"),
    ("stdin", "standard streams"),
    ("stdout", "standard streams"),
    ("stderr", "standard streams"),
    ("println", "standard output"),
    ("eprintln", "standard error"),
    ("print", "standard output"),
    ("eprint", "standard error"),
    ("tracing", "logging (return what to log)"),
    ("Mutex", "a lock"),
    ("RwLock", "a lock"),
    ("AtomicU64", "shared counters"),
    ("AtomicUsize", "shared counters"),
    ("AtomicBool", "shared flags"),
    ("dyn Fn", "a callback (return an action instead)"),
    ("crate::proxy", "the data path (IO)"),
    ("crate::daemon", "the daemon (IO)"),
    ("crate::sys", "the kernel layer (IO)"),
    ("crate::link", "the frame drivers (IO)"),
    ("crate::reqlog", "the request log (IO)"),
    ("crate::ctl::server", "the control socket (IO)"),
];

/// Items of IO modules that pure modules may name: pure functions and plain data that live
/// beside the IO code for now. Full paths, as the pure module must write them.
const ALLOWED_ITEMS: &[(&str, &str)] = &[
    (
        "crate::proxy::udp::UdpStatus",
        "the UDP table as last published: plain data built by the pure flow table",
    ),
    (
        "crate::proxy::udp::UdpStats",
        "the UDP table's counters: plain data",
    ),
    (
        "crate::proxy::resources::Shortage",
        "the local-resource error counter: pure, unit-tested in proxy::resources",
    ),
    (
        "crate::proxy::resources::ProcessStats",
        "the process figures: plain data (the metrics endpoint reads them)",
    ),
    (
        "crate::link::dsr::backends_from",
        "the engine's view of the balancer: a pure function",
    ),
    (
        "crate::reqlog::LogTarget",
        "the `-l` target and its parser: pure",
    ),
];

/// The modules that must be listed as pure (so that the list cannot shrink to pass).
const REQUIRED_PURE: &[&str] = &[
    "acl",
    "cli",
    "config",
    "ctl::apply",
    "ctl::command",
    "ctl::reply",
    "engine",
    "health",
    "select",
    "state",
    "stats",
    "upgrade",
];

/// The modules listed under "Pure:" in `lib.rs`'s module doc (`//! - [`name`]: ...`).
fn pure_modules(lib_rs: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_pure = false;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            continue;
        };
        let doc = doc.trim();
        if doc == "Pure:" {
            in_pure = true;
        } else if doc.ends_with(':') && !doc.starts_with('-') {
            in_pure = false;
        } else if in_pure
            && let Some(rest) = doc.strip_prefix("- [`")
            && let Some((name, _)) = rest.split_once("`]")
        {
            out.push(name.to_string());
        }
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source files of module `name` (`ctl::reply` → `src/ctl/reply.rs` and everything under
/// `src/ctl/reply/`), without the unit-test files (`tests.rs`).
fn module_files(src: &Path, name: &str) -> Vec<PathBuf> {
    let rel: PathBuf = name.split("::").collect();
    let mut files = Vec::new();
    let file = src.join(&rel).with_extension("rs");
    if file.is_file() {
        files.push(file);
    }
    let dir = src.join(&rel);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    files.retain(|f| f.file_name().is_none_or(|n| n != "tests.rs"));
    files
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `text` with its comments and the contents of its string and character literals blanked
/// out (newlines kept, so line numbers stay right).
fn blank_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    blank(&mut out, ' ');
                    i += 1;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    blank(&mut out, ' ');
                    i += 1;
                    if depth == 0 {
                        blank(&mut out, ' ');
                        i += 1;
                        break;
                    }
                }
                blank(&mut out, chars[i]);
                i += 1;
            }
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && !out.ends_with(is_ident) {
            // Raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push_str("\"\"");
            j += 1;
            while j < chars.len() {
                if chars[j] == '"' && (1..=hashes).all(|k| chars.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                blank(&mut out, chars[j]);
                j += 1;
            }
            i = j;
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    blank(&mut out, ch);
                }
                i += 1;
            }
            out.push('"');
            i += 1;
        } else if c == '\'' && next == Some('\\') {
            // An escaped character literal.
            out.push_str("' '");
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            out.push_str("' '");
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The code of `text` that the contract covers: up to its `#[cfg(test)] mod tests`, without
/// comments and literals. (line number, code).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let code = blank_comments_and_literals(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if t == "#[cfg(test)]"
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        if !t.is_empty() {
            out.push((i + 1, line.to_string()));
        }
    }
    out
}

/// The forbidden uses in `text`: (line number, the word or path, what it stands for). A
/// pattern matches as whole words; an allowed item matches as its full path.
fn violations(text: &str, used_allowed: &mut Vec<&'static str>) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (n, code) in code_lines(text) {
        // Allowed items are taken out first (whole paths only).
        let mut code = code;
        for (item, _) in ALLOWED_ITEMS {
            let mut from = 0;
            while let Some(pos) = code[from..].find(item) {
                let at = from + pos;
                let mut end = at + item.len();
                let before_ok = !code[..at].ends_with(|c: char| is_ident(c) || c == ':');
                let after_ok = !code[end..].starts_with(is_ident);
                if before_ok && after_ok {
                    // The item's own items (`LogTarget::parse`, `LogTarget::File`) go with it.
                    while code[end..].starts_with("::")
                        && code[end + 2..].starts_with(|c: char| is_ident(c))
                    {
                        end += 2;
                        end += code[end..]
                            .find(|c: char| !is_ident(c))
                            .unwrap_or(code.len() - end);
                    }
                    code.replace_range(at..end, " ");
                    if !used_allowed.contains(item) {
                        used_allowed.push(item);
                    }
                    from = at + 1;
                } else {
                    from = end;
                }
            }
        }
        for (word, why) in FORBIDDEN {
            let mut from = 0;
            while let Some(pos) = code[from..].find(word) {
                let at = from + pos;
                let end = at + word.len();
                let before_ok = !code[..at].ends_with(is_ident);
                let after_ok = !code[end..].starts_with(is_ident);
                if before_ok && after_ok {
                    out.push((n, (*word).to_string(), (*why).to_string()));
                    break;
                }
                from = end;
            }
        }
    }
    out
}

#[test]
fn the_scanner_finds_forbidden_uses_in_code_only() {
    let mut used = Vec::new();
    let text = "\
// tokio in a comment is fine
use std::net::SocketAddr;
use tokio::net::TcpStream;
let t = std::time::Instant::now();
use crate::proxy::Shared;
use crate::proxy::udp::UdpStatus;
use crate::proxy::udp::{FlowTable, UdpStatus};
let x = my_tokio_thing(); // tokio
let p = \"print to stdout with tokio\"; let q = '\"'; let r = r#\"File \"x\" \"#; /* File */
let t = crate::reqlog::LogTarget::File(p); let u = crate::proxy::udp::UdpStatusX;
#[cfg(test)]
mod tests {
    use tokio::runtime::Runtime;
}
";
    let found: Vec<(usize, String)> = violations(text, &mut used)
        .into_iter()
        .map(|(n, w, _)| (n, w))
        .collect();
    assert_eq!(
        found,
        vec![
            (3, "tokio".to_string()),
            (3, "TcpStream".to_string()),
            (4, "Instant".to_string()),
            (5, "crate::proxy".to_string()),
            // A grouped import is not the allowed item's full path.
            (7, "crate::proxy".to_string()),
            // An allowed item is a whole path, not a prefix.
            (10, "crate::proxy".to_string()),
        ]
    );
    assert_eq!(
        used,
        vec!["crate::proxy::udp::UdpStatus", "crate::reqlog::LogTarget"]
    );
}

#[test]
fn the_pure_list_is_read_from_the_module_doc() {
    let lib = "//! Pure:\n//! - [`acl`]: lists.\n//! - [`ctl::reply`]: replies;\n//!   more text.\n//!\n//! IO:\n//! - [`proxy`]: data path.\n";
    assert_eq!(pure_modules(lib), vec!["acl", "ctl::reply"]);
}

#[test]
fn the_modules_listed_as_pure_use_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = root.join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("src/lib.rs");
    let pure = pure_modules(&lib);
    for m in REQUIRED_PURE {
        assert!(
            pure.iter().any(|p| p == m),
            "{m} is not listed under \"Pure:\" in src/lib.rs (listed: {pure:?})"
        );
    }
    let mut used = Vec::new();
    let mut problems = Vec::new();
    let mut scanned = 0;
    for m in &pure {
        let files = module_files(&src, m);
        assert!(
            !files.is_empty(),
            "module {m} listed as pure in src/lib.rs has no source file under src/"
        );
        for f in files {
            let rel = f
                .strip_prefix(root)
                .expect("under the crate")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&f).expect("a readable source file");
            scanned += 1;
            for (n, word, why) in violations(&text, &mut used) {
                problems.push(format!("{rel}:{n}: `{word}` ({why})"));
            }
        }
    }
    assert!(scanned >= 20, "scanned only {scanned} files");
    assert!(
        problems.is_empty(),
        "modules listed as pure in src/lib.rs use IO; pass the value in, return the action, \
         or move the code to a shell:\n{}",
        problems.join("\n")
    );
    let stale: Vec<&str> = ALLOWED_ITEMS
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| !used.contains(i))
        .collect();
    assert!(
        stale.is_empty(),
        "allowed items no pure module uses any more (remove them from ALLOWED_ITEMS): {stale:?}"
    );
}
