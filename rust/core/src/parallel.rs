//! Thread pools and the chunk loop that makes long calls interruptible.
//!
//! Every parallel call builds its own rayon pool and joins its threads when done. That costs tens
//! of microseconds per call and buys two things: `n_threads` is honoured exactly, and no thread
//! outlives a call, so a process forked afterwards never inherits a pool whose threads are gone
//! (and a leak checker never finds a half-exited worker still holding its allocations).

use crate::error::{Error, Result};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Asked between chunks, on the calling thread: `true` stops the computation with
/// [`Error::Interrupted`]. The Python glue checks for pending signals (Ctrl-C) here.
pub type Interrupt<'a> = &'a mut dyn FnMut() -> bool;

/// An interrupt check that never stops; for Rust callers and tests.
pub fn never() -> impl FnMut() -> bool {
    || false
}

/// A rayon pool whose threads are joined when it is dropped. rayon's own pool only asks its threads
/// to exit on drop; they finish on their own time, after the call that used them has returned.
pub struct Pool {
    pool: Option<rayon::ThreadPool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Pool {
    type Target = rayon::ThreadPool;
    fn deref(&self) -> &rayon::ThreadPool {
        self.pool.as_ref().expect("the pool lives until Pool is dropped")
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.pool.take()); // tells the threads to exit once idle; they are idle between calls
        for thread in self.threads.drain(..) {
            // A worker that panicked has already reported it through `install`.
            let _ = thread.join();
        }
    }
}

pub fn pool(n_threads: usize) -> Result<Pool> {
    if n_threads == 0 {
        return Err(Error::invalid("n_threads", "must be >= 1"));
    }
    let mut threads = Vec::with_capacity(n_threads);
    let built = rayon::ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .spawn_handler(|thread| {
            let handle = std::thread::Builder::new()
                .name(format!("moecover-{}", thread.index()))
                .spawn(move || thread.run())?;
            threads.push(handle);
            Ok(())
        })
        .build();
    match built {
        Ok(pool) => Ok(Pool {
            pool: Some(pool),
            threads,
        }),
        // Threads spawned before the failure exit on their own once the half-built pool is gone.
        Err(e) => Err(Error::ThreadPool(e.to_string())),
    }
}

/// Runs `work` over `0..total` in consecutive ranges of `chunk` items inside `pool`, asking
/// `interrupt` before each range. Results must not depend on `chunk`: callers key all randomness
/// and all output positions to item indices.
pub fn run_chunked(
    pool: &Pool,
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

/// Runs `work` inside `pool` in one piece, while this thread asks `interrupt` every 50 ms and
/// raises `stop` (which `work` reads between its steps) once it says yes. For work of many short
/// steps: entering a pool from outside costs a hand-over between threads (about 10 µs on a VM),
/// so one entry per call, not per step (on the nets' blocks of 2048 points, 4 % of one thread's
/// time). `interrupt` stays on this thread, which is where Python runs its signal handlers.
///
/// Once `interrupt` has said yes the result is [`Error::Interrupted`], even when the work finished
/// its last step in the meantime: the check has consumed the signal (Python's handler ran and its
/// exception waits in the glue), so a result of `Ok` would lose the user's Ctrl-C. Callers undo
/// the work's effects on any error, as they do for an interrupt between steps.
pub fn run_watched<T: Send>(
    pool: &Pool,
    interrupt: Interrupt,
    work: impl FnOnce(&AtomicBool) -> Result<T> + Send,
) -> Result<T> {
    const POLL: Duration = Duration::from_millis(50);
    let stop = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let caller = std::thread::current();
    let mut result = None;
    pool.in_place_scope(|scope| {
        scope.spawn(|_| {
            let _finished = Finished(&done, caller);
            result = Some(work(&stop));
        });
        while !done.load(Ordering::Acquire) {
            std::thread::park_timeout(POLL);
            if !done.load(Ordering::Acquire) && !stop.load(Ordering::Relaxed) && interrupt() {
                stop.store(true, Ordering::Relaxed);
            }
        }
    });
    let result = result.expect("the scope ends after its job");
    if stop.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    result
}

/// Tells `run_watched`'s calling thread that the work is over when dropped, so also when the work
/// panics: the caller then leaves its loop and the scope passes the panic on, where a flag set
/// after the work would leave the caller waiting for ever.
struct Finished<'a>(&'a AtomicBool, std::thread::Thread);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
        self.1.unpark();
    }
}

/// Items per chunk so that one chunk is about `budget` units of work across all threads: large
/// enough to keep every thread busy, small enough that Ctrl-C is answered well within a second.
pub fn chunk_len(cost_per_item: usize, n_threads: usize) -> usize {
    const BUDGET_PER_THREAD: usize = 1 << 24; // ~10-50 ms of scalar floating point work
    (BUDGET_PER_THREAD * n_threads / cost_per_item.max(1)).max(4 * n_threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn run_watched_returns_the_work_and_stops_it_once_interrupted() {
        let pool = pool(2).expect("pool");
        assert_eq!(run_watched(&pool, &mut never(), |_| Ok(6 * 7)), Ok(42));

        // Work that runs until told to stop (at most 20 s): the third question stops it.
        let mut asked = 0;
        let mut third = || {
            asked += 1;
            asked == 3
        };
        let start = Instant::now();
        let mut steps = 0u64;
        let stopped = run_watched(&pool, &mut third, |stop| {
            while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(1));
                steps += 1;
            }
            Ok(steps)
        });
        assert_eq!(stopped, Err(Error::Interrupted));
        let took = start.elapsed();
        assert_eq!(asked, 3, "no question after the stop");

        // A panic in the work reaches the caller (as a panic, which the glue turns into an
        // exception) instead of leaving it waiting.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_watched(&pool, &mut never(), |_| -> Result<u8> { panic!("a bug in the work") })
        }));
        assert!(panicked.is_err());
        assert!(
            took >= Duration::from_millis(100) && took < Duration::from_secs(2),
            "{took:?}, {steps} steps"
        );
    }

    /// The interrupt check says yes while the work, which never looks at `stop`, finishes: the
    /// call must still report the interrupt (the check consumed the user's Ctrl-C).
    #[test]
    fn an_interrupt_during_the_last_step_is_not_lost() {
        let pool = pool(1).expect("pool");
        let result = run_watched(&pool, &mut || true, |_| {
            std::thread::sleep(Duration::from_millis(120)); // two polls of 50 ms
            Ok(5)
        });
        assert_eq!(result, Err(Error::Interrupted));
    }
}
