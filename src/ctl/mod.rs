//! The penctl command language: one pure parser shared by `-o`/`-O`, `-F` files, HUP reload and
//! the control socket.
//!
//! - [`command`]: parse a line into a [`command::Command`] and print it back.
//! - [`apply`]: apply a command (or a config file's text) to a [`crate::config::Config`];
//!   write a config back out as commands.
//! - [`reply`]: run a command against the running state ([`crate::state::State`]: config,
//!   balancer, counters; the open connections come in as data) and format C Pen's reply; the
//!   follow-up actions for the IO layer (close a connection, tell the servers changed, write a
//!   file, reopen the listener or the log, ...). Pure.
//! - [`server`]: the control socket, config-file re-reads (SIGHUP, `include`), SIGUSR1 reports
//!   and the Prometheus endpoint; performs the actions `reply` returns. IO.
pub mod apply;
pub mod command;
pub mod reply;
pub(crate) mod server;
