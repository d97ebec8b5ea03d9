//! pen-lab: builds network topologies out of Linux namespaces, runs pen and real clients and
//! backends in them, captures traffic with libpcap and asserts on the captured frames.
pub mod backends;
pub mod capture;
pub mod decode;
pub mod netns;
pub mod node;
pub mod topology;
pub mod traffic;
pub mod expect;
pub mod scenario;
pub mod report;
pub mod runner;
