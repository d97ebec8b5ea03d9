//! The kernel layer: every `unsafe` of the crate lives here, behind small safe functions.

#[cfg(target_os = "linux")]
pub(crate) mod bpf;
