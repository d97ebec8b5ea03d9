//! The penctl command language: one pure parser shared by `-o`/`-O`, `-F` files, HUP reload and
//! the control socket.
//!
//! - [`command`]: parse a line into a [`command::Command`] and print it back.
//! - [`apply`]: apply a command (or a config file's text) to a [`crate::config::Config`];
//!   write a config back out as commands.
pub mod apply;
pub mod command;
pub mod reply;
pub mod server;
