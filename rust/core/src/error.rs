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

/// A zeroed vector of `factors.iter().product()` elements, for sizes that come from the user: a
/// product that overflows, or an allocation the system refuses, is an error naming `argument`
/// (Python sees a MemoryError) instead of an abort of the whole process.
pub fn allocate<T: Clone + Default>(argument: &'static str, factors: &[usize]) -> Result<Vec<T>> {
    let mut out = reserve(argument, factors)?;
    // the product does not overflow: `reserve` checked it
    out.resize(factors.iter().product(), T::default());
    Ok(out)
}

/// An empty vector with room for exactly `factors.iter().product()` elements, the same errors as
/// [`allocate`]'s; nothing is written, so its pages are not touched (a check of memory that a
/// call's workers will need).
pub fn reserve<T>(argument: &'static str, factors: &[usize]) -> Result<Vec<T>> {
    let len = factors
        .iter()
        .try_fold(1usize, |acc, &f| acc.checked_mul(f))
        .ok_or_else(|| Error::invalid(argument, "output size overflows the address space"))?;
    let mut out = Vec::new();
    out.try_reserve_exact(len).map_err(|_| Error::TooLarge {
        argument,
        message: format!(
            "could not allocate {len} elements of {} bytes ({})",
            std::mem::size_of::<T>(),
            human_bytes(len.saturating_mul(std::mem::size_of::<T>()))
        ),
    })?;
    Ok(out)
}

/// Bytes as MiB below 1 GiB, as GiB from there, for messages.
pub fn human_bytes(bytes: usize) -> String {
    let mib = bytes as f64 / f64::from(1u32 << 20);
    if mib >= 1024.0 {
        format!("{:.3} GiB", mib / 1024.0)
    } else {
        format!("{mib:.3} MiB")
    }
}
