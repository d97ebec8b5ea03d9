//! The penctl command language: one pure parser shared by `-o`/`-O`, `-F` files, HUP reload and
//! the control socket.
pub mod command;
