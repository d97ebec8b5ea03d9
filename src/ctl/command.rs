//! penctl commands: parse and display. Pure.
