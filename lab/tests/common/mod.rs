//! What every pen-lab test binary shares: the one root check.
//!
//! A privileged test calls [`require_root`] first. When not root it FAILS with the reason and
//! the way to run it; it never returns early, passes or skips (CI runs `cargo test` as root).
//! `tests/hygiene.rs` keeps this true: no other test file asks for the euid or skips.

use std::path::Path;

/// Whether this process runs as root (for a test that runs either way, e.g. as `nobody`
/// when it can drop to it).
#[allow(dead_code)] // each test binary compiles this module; not all of them ask.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Fails the calling test unless it runs as root and network namespaces can be made;
/// `why` says what the test needs root for.
#[allow(dead_code)] // each test binary compiles this module; not all of them need root.
pub fn require_root(why: &str) {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root ({why}) and fails without it (euid is {euid}); run `cargo test` as root, as CI does"
    );
    assert!(
        Path::new("/run/netns").is_dir() || std::fs::create_dir_all("/run/netns").is_ok(),
        "this test needs network namespaces ({why}), but /run/netns cannot be created here"
    );
}
