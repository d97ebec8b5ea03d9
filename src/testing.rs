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

/// xorshift64: a small deterministic generator for the unit tests' random inputs (seed it
/// with a non-zero value and print the seed on failure).
#[derive(Debug, Clone)]
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() & 0xFF) as u8
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> usize {
        (self.next_u64() % n) as usize
    }
}
