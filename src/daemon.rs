//! Wires configuration, listeners, signals and the proxy together.
