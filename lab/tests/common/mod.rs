//! What every pen-lab test binary shares: the one root check.
//!
//! A privileged test calls [`require_root`] first. When not root it FAILS with the reason and
//! the way to run it; it never returns early, passes or skips (CI runs `cargo test` as root).
//! `tests/hygiene.rs` keeps this true: no other test file asks for the euid or skips.

// Each test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use pen_lab::scenario::{ScenarioErrors, parse_str};

/// The repository root (scenarios/, captures/ and the workspace are below it).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("lab/ has a parent directory")
        .to_path_buf()
}

/// The validation errors of a scenario text (one per line); panics when it is valid.
pub fn errors(text: &str) -> String {
    match parse_str(text, "scenarios/x.toml").and_then(|s| s.plan("scenarios/x.toml", "x", None)) {
        Ok(_) => panic!("expected validation errors for:\n{text}"),
        Err(ScenarioErrors(v)) => v
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Whether this process runs as root (for a test that runs either way, e.g. as `nobody`
/// when it can drop to it).
pub fn is_root() -> bool {
    pen::testing::is_root()
}

/// Fails the calling test unless it runs as root and network namespaces can be made;
/// `why` says what the test needs root for.
pub fn require_root(why: &str) {
    pen::testing::require_root(&format!("needs root ({why})"));
    assert!(
        Path::new("/run/netns").is_dir() || std::fs::create_dir_all("/run/netns").is_ok(),
        "this test needs network namespaces ({why}), but /run/netns cannot be created here"
    );
}
