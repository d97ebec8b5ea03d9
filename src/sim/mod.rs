//! pen-lab's traffic model and the whole-balancer simulation.
//!
//! - [`trace`]: a capture (pcap/pcapng) as UDP flows and TCP sessions (pure).
//! - [`filter`]: a BPF filter (libpcap, offline) that selects the trace's frames.
//! - [`mapping`]: original client addresses → a lab pool, servers → pen's listen address.
//! - [`balance`]: the trace through the daemon's own selection core and UDP flow table, in
//!   virtual time, with scheduled events.
//! - [`synth`]: synthetic captures (DNS population, HTTP keep-alive, SYN scan) with no private data.
//! - [`report`]: the simulation as markdown, JSON and an SVG chart.
pub mod balance;
pub mod filter;
pub mod mapping;
pub mod report;
pub mod synth;
pub mod trace;
