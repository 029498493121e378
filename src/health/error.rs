//! [`RegisterError`]: why a check could not be registered.

use std::fmt;

use super::registry::MAX_CHECK_NAME_LEN;

/// Why a check could not be registered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterError {
    /// The name is empty, longer than [`MAX_CHECK_NAME_LEN`] or holds a
    /// character outside `[A-Za-z0-9._-]` (names become URL path segments).
    InvalidName(String),
    /// `ping` and `shutdown` are built in.
    Reserved(String),
    /// A check of that name is already registered for this probe.
    Duplicate(String),
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterError::InvalidName(n) => write!(
                f,
                "invalid health check name {n:?}: use 1 to {MAX_CHECK_NAME_LEN} characters of [A-Za-z0-9._-]"
            ),
            RegisterError::Reserved(n) => write!(f, "health check name {n:?} is built in"),
            RegisterError::Duplicate(n) => write!(f, "health check {n:?} is already registered"),
        }
    }
}

// No `source`: every variant is about the name itself, with no underlying cause.
impl std::error::Error for RegisterError {}
