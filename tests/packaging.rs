//! Packaging files that must not drift from the programs: the hand-written man pages and
//! completions of `pen` and `penctl` (every option of `pen --help`, every penctl command),
//! man pages rendering without warnings, the generated pages of `pen-sim`, and the systemd
//! unit passing `systemd-analyze verify`. The `.deb` itself is built and checked by
//! `scripts/check-deb.sh` (called from `scripts/test.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// The options `pen --help` lists (`-C`, `-d`, ...), in roff spelling (`\-C`).
fn pen_help_options() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_pen"))
        .arg("--help")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let opts: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  -"))
        .filter_map(|r| r.chars().next())
        .filter(|c| c.is_ascii_alphabetic())
        .map(|c| format!("-{c}"))
        .collect();
    assert!(opts.len() > 30, "pen --help listed only {opts:?}:\n{text}");
    opts
}

/// Every penctl command word: the first word (after `no`) of each sample line of the command
/// parser's round-trip test, which covers every command form.
fn penctl_commands() -> Vec<String> {
    let src = read("src/ctl/command.rs");
    let start = src
        .find("const SAMPLES: &[&str] = &[")
        .expect("SAMPLES in src/ctl/command.rs");
    let end = start + src[start..].find("];").unwrap();
    let mut words: Vec<String> = src[start..end]
        .split('"')
        .skip(1)
        .step_by(2)
        .filter_map(|line| {
            let mut w = line.split_whitespace();
            match w.next()? {
                "no" => w.next().map(str::to_string),
                first => Some(first.to_string()),
            }
        })
        .collect();
    words.sort();
    words.dedup();
    assert!(words.len() > 50, "only {words:?}");
    words
}

/// The heading lines of a page's `.TP` entries (the line after each `.TP`).
fn entries(page: &str) -> Vec<&str> {
    let lines: Vec<&str> = page.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .map(|w| w[1])
        .collect()
}

#[test]
fn pen_1_and_the_completions_have_every_option_of_pen_help() {
    let page = read("docs/man/pen.1");
    let bash = read("packaging/completions/pen.bash");
    let zsh = read("packaging/completions/_pen");
    for o in pen_help_options() {
        let roff = format!("\\fB\\{o}\\fR");
        assert!(
            entries(&page).iter().any(|e| e.starts_with(&roff)),
            "docs/man/pen.1 has no entry {roff} for {o}"
        );
        assert!(
            bash.split(|ch: char| ch.is_whitespace() || ch == '"')
                .any(|w| w == o),
            "pen.bash lacks {o}"
        );
        assert!(
            zsh.contains(&format!("'{o}[")) || zsh.contains(&format!("'*{o}[")),
            "_pen lacks {o}"
        );
    }
}

#[test]
fn penctl_1_and_the_completions_have_every_command() {
    let page = read("docs/man/penctl.1");
    let texts = [
        (
            "packaging/completions/penctl.bash",
            read("packaging/completions/penctl.bash"),
        ),
        (
            "packaging/completions/_penctl",
            read("packaging/completions/_penctl"),
        ),
        (
            "packaging/completions/pen.bash",
            read("packaging/completions/pen.bash"),
        ),
    ];
    for c in penctl_commands() {
        assert!(
            entries(&page)
                .iter()
                .any(|e| e.contains(&format!("\\fB{c}\\fR"))
                    || e.contains(&format!("\\fB[no] {c}\\fR"))),
            "docs/man/penctl.1 has no entry for the command {c}"
        );
        for (name, text) in &texts {
            assert!(
                text.split(|ch: char| ch.is_whitespace() || ch == '(' || ch == ')' || ch == '"')
                    .any(|w| w == c),
                "{name} does not complete the command {c}"
            );
        }
    }
    for o in ["--each", "--same", "--version"] {
        let roff = o.replace('-', "\\-");
        assert!(
            entries(&page).iter().any(|e| e.contains(&roff)),
            "penctl.1 has no entry for {o}"
        );
    }
}

/// `man --warnings -l PAGE` prints nothing on stderr and something on stdout.
fn assert_renders(page: &Path) {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .output()
        .expect("man (man-db) not found: scripts/install-deps.sh installs it");
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "man -l {}: {warnings}",
        page.display()
    );
    assert!(
        warnings.trim().is_empty(),
        "man --warnings -l {}:\n{warnings}",
        page.display()
    );
    assert!(
        out.stdout.len() > 500,
        "{} rendered almost nothing",
        page.display()
    );
}

#[test]
fn the_man_pages_render_without_warnings() {
    assert_renders(&repo("docs/man/pen.1"));
    assert_renders(&repo("docs/man/penctl.1"));
}

#[test]
fn pen_sim_writes_its_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_pen-sim"))
        .arg("gen-docs")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success());
    for p in [
        "pen-sim.1",
        "pen-sim-balance.1",
        "pen-sim-trace.1",
        "pen-sim-gen.1",
    ] {
        assert_renders(&dir.path().join(p));
    }
    let page = std::fs::read_to_string(dir.path().join("pen-sim-balance.1")).unwrap();
    assert!(
        page.contains("\\-\\-pen") && page.contains("\\-\\-event"),
        "{page}"
    );
    let bash = std::fs::read_to_string(dir.path().join("pen-sim")).unwrap();
    assert!(bash.contains("balance") && bash.contains("--event"));
    assert!(dir.path().join("_pen-sim").exists());
    // Without a directory: a usage error naming what is expected.
    let out = Command::new(env!("CARGO_BIN_EXE_pen-sim"))
        .arg("gen-docs")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected an output directory"));
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let unit = read("packaging/pen-rs@.service");
    for want in [
        "Type=notify",
        "EnvironmentFile=/etc/pen-rs/%i.conf",
        "ExecStart=/usr/bin/pen -f $PEN_ARGS",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.contains(want), "pen-rs@.service lacks {want}");
    }
    // Every mode keeps the capability it needs: DSR (AF_PACKET) CAP_NET_RAW, transparent
    // (IP_TRANSPARENT) CAP_NET_ADMIN, ports < 1024, -u and -j.
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet");
    for c in [
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_SYS_CHROOT",
    ] {
        assert!(
            caps.split_whitespace().any(|w| w == c),
            "bounding set lacks {c}"
        );
    }
    let families = unit
        .lines()
        .find_map(|l| l.strip_prefix("RestrictAddressFamilies="))
        .expect("RestrictAddressFamilies");
    for f in ["AF_INET", "AF_INET6", "AF_UNIX", "AF_PACKET", "AF_NETLINK"] {
        assert!(
            families.split_whitespace().any(|w| w == f),
            "{f} not allowed"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("pen-rs@check.service");
    std::fs::write(
        &copy,
        unit.replace(
            "ExecStart=/usr/bin/pen ",
            &format!("ExecStart={} ", env!("CARGO_BIN_EXE_pen")),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze not found: scripts/install-deps.sh installs systemd");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify:\n{text}"
    );
}
