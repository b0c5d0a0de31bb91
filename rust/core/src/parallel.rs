//! Thread pools and the chunk loop that makes long calls interruptible.
//!
//! Every parallel call builds its own rayon pool and drops it when done. That costs tens of
//! microseconds per call and buys two things: `n_threads` is honoured exactly, and no pool survives
//! a call, so a process forked afterwards never inherits a pool whose threads are gone.

use crate::error::{Error, Result};
use std::ops::Range;

/// Asked between chunks, on the calling thread: `true` stops the computation with
/// [`Error::Interrupted`]. The Python glue checks for pending signals (Ctrl-C) here.
pub type Interrupt<'a> = &'a mut dyn FnMut() -> bool;

/// An interrupt check that never stops; for Rust callers and tests.
pub fn never() -> impl FnMut() -> bool {
    || false
}

pub fn pool(n_threads: usize) -> Result<rayon::ThreadPool> {
    if n_threads == 0 {
        return Err(Error::invalid("n_threads", "must be >= 1"));
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(|i| format!("moecover-{i}"))
        .build()
        .map_err(|e| Error::ThreadPool(e.to_string()))
}

/// Runs `work` over `0..total` in consecutive ranges of `chunk` items inside `pool`, asking
/// `interrupt` before each range. Results must not depend on `chunk`: callers key all randomness
/// and all output positions to item indices.
pub fn run_chunked(
    pool: &rayon::ThreadPool,
    total: usize,
    chunk: usize,
    interrupt: Interrupt,
    mut work: impl FnMut(Range<usize>) + Send,
) -> Result<()> {
    let chunk = chunk.max(1);
    let mut start = 0;
    while start < total {
        if interrupt() {
            return Err(Error::Interrupted);
        }
        let end = (start + chunk).min(total);
        pool.install(|| work(start..end));
        start = end;
    }
    Ok(())
}

/// Items per chunk so that one chunk is about `budget` units of work across all threads: large
/// enough to keep every thread busy, small enough that Ctrl-C is answered well within a second.
pub fn chunk_len(cost_per_item: usize, n_threads: usize) -> usize {
    const BUDGET_PER_THREAD: usize = 1 << 24; // ~10-50 ms of scalar floating point work
    (BUDGET_PER_THREAD * n_threads / cost_per_item.max(1)).max(4 * n_threads)
}
