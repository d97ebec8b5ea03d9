//! Engine benchmarks (filled in below as the engine lands).
fn main() {}
