//! pen-lab's traffic model and the whole-balancer simulation.
//!
//! - [`trace`]: a capture (pcap/pcapng) as UDP flows and TCP sessions (pure).
pub mod trace;
