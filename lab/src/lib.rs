//! pen-lab: builds network topologies out of Linux namespaces, runs pen and real clients and
//! backends in them, captures traffic with libpcap and asserts on the captured frames.
