//! pen-lab: builds network topologies out of Linux namespaces, runs pen and real clients and
//! backends in them, captures traffic with libpcap and asserts on the captured frames.
pub mod backends;
pub mod bench;
pub mod capture;
pub mod decode;
pub mod expect;
pub mod fault;
pub mod inject;
pub mod netns;
pub mod node;
pub mod owner;
pub mod replay;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod topology;
pub mod traffic;
