//! The one error type of the core. The Python glue maps each variant to its own exception.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum Error {
    /// A user-supplied value is out of its domain. `argument` names it as the Python API does.
    #[error("{argument}: {message}")]
    InvalidArgument { argument: &'static str, message: String },
    /// A computation would need more memory than its limit; `argument` names what to change.
    #[error("{argument}: {message}")]
    TooLarge { argument: &'static str, message: String },
    /// The interrupt check between chunks asked the computation to stop (Ctrl-C in Python).
    #[error("interrupted")]
    Interrupted,
    /// Building the worker thread pool failed.
    #[error("thread pool: {0}")]
    ThreadPool(String),
}

impl Error {
    pub fn invalid(argument: &'static str, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            argument,
            message: message.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
