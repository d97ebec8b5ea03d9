//! Scenario files: TOML → validated model. Needs no root: `pen-lab check` runs all of this.
//!
//! Two layers: the serde structs mirror the file (`Scenario`, `Host`, ...), and
//! [`Scenario::plan`] turns them into a [`Plan`] with every address parsed, every reference
//! resolved and every expectation compiled. The runner builds the plan twice: once before the
//! topology exists (MAC references get a placeholder, which is also what `check` does) and once
//! after, with the real MACs.
//!
//! - `syntax`: the file, as written (serde structs);
//! - `refs`: `{NAME}`, `{ip.HOST}`, `{mac.HOST}` references;
//! - `plan`: the validated plan the runner executes;
//! - `validate` and `steps`: file → plan, collecting every error (`error`);
//! - `discover`: finding scenario files by name.

mod discover;
mod error;
mod plan;
mod refs;
mod steps;
mod syntax;
mod validate;

pub use discover::*;
pub use error::*;
pub use plan::*;
pub use refs::*;
pub use steps::*;
pub use syntax::*;
pub use validate::*;
