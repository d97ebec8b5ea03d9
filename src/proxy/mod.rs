//! The data path (tokio). Thin: every decision comes from `select`.
