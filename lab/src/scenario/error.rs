//! Validation errors: `file: key.path: message`, all of them per file.

use std::fmt;

/// One validation error: `file: key.path: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: String,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

/// All errors found in one file.
#[derive(Clone, Debug)]
pub struct ScenarioErrors(pub Vec<ScenarioError>);

impl fmt::Display for ScenarioErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioErrors {}

/// Collects errors while walking the file.
pub(super) struct Errs {
    pub(super) file: String,
    pub(super) list: Vec<ScenarioError>,
}

impl Errs {
    pub(super) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.list.push(ScenarioError {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        });
    }
}
