//! The data path (tokio). Thin: every decision comes from `select`.
//!
//! - [`forward`]: moves bytes between a client and its upstream (splice or copy).
//! - [`sockets`]: listeners and upstream connects with pen's socket options.
pub mod forward;
pub mod sockets;
