//! Test support shared by the unit tests and the integration tests under `tests/` (not part of
//! pen's interface).

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails the calling test (never skips it) when not running as root: privileged tests run as
/// root in CI, and a test that returned early when it could not do its job would pass without
/// testing anything. `why` says what needs root, e.g. "sets IP_TRANSPARENT".
pub fn require_root(why: &str) {
    assert!(
        is_root(),
        "this test {why}: it needs root (run the tests as root, e.g. `sudo -E cargo test`); it fails rather than skip"
    );
}
