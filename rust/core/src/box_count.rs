//! Box counting: the occupied cells of a grid of side δ, a cheap companion of the nets
//! (docs/definitions.md §3).

use crate::cover::Real;
use crate::error::{Error, Result};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use rayon::prelude::*;
use rustc_hash::FxHashSet;

/// Occupied cells of the grid of side δ (cells `⌊x / δ⌋` in every coordinate), per δ.
///
/// The points are read in chunks (each chunk's cells found in parallel and added to one set per
/// δ), with `interrupt` asked between chunks; the count does not depend on the chunks or threads.
pub fn box_count<T: Real>(
    points: &[T],
    dim: usize,
    deltas: &[f64],
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<Vec<usize>> {
    if dim == 0 || !points.len().is_multiple_of(dim) {
        return Err(Error::invalid("points", "length is not a multiple of dim"));
    }
    if let Some(bad) = deltas.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
        return Err(Error::invalid(
            "deltas",
            format!("every scale must be finite and > 0, got {bad}"),
        ));
    }
    let pool = pool(n_threads)?;
    let mut occupied: Vec<FxHashSet<Vec<i64>>> = deltas.iter().map(|_| FxHashSet::default()).collect();
    let rows = points.len() / dim;
    let chunk = chunk_len(8 * dim * deltas.len(), n_threads);
    run_chunked(&pool, rows, chunk, interrupt, |range| {
        let block = &points[range.start * dim..range.end * dim];
        // Scales in parallel with each other, and each scale's cells found in parallel too.
        occupied.par_iter_mut().zip(deltas).for_each(|(cells, &delta)| {
            let keys: Vec<Vec<i64>> = block
                .par_chunks(dim)
                .map(|p| p.iter().map(|v| (v.to_f64() / delta).floor() as i64).collect())
                .collect();
            cells.extend(keys);
        });
    })?;
    Ok(occupied.iter().map(FxHashSet::len).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::never;

    #[test]
    fn box_count_counts_cells() {
        // cells of side 1 of 0.5, 0.7, 1.2, -0.1 (1-D): {0, 0, 1, -1} -> 3
        assert_eq!(
            box_count(&[0.5, 0.7, 1.2, -0.1], 1, &[1.0, 10.0], 1, &mut never()).expect("ok"),
            vec![3, 2]
        );
    }

    #[test]
    fn the_count_does_not_depend_on_threads_and_an_interrupt_stops_it() {
        // 3-D points on a lattice of step 0.25 in [-2, 2)^3, against distinct rows of the floors
        let points: Vec<f64> = (0..4096 * 3).map(|i| ((i * 7919) % 16) as f64 / 4.0 - 2.0).collect();
        let deltas = [1.0, 0.5, 0.3];
        let expected: Vec<usize> = deltas
            .iter()
            .map(|&delta| {
                let mut keys: Vec<Vec<i64>> = points
                    .chunks(3)
                    .map(|p| p.iter().map(|v| (v / delta).floor() as i64).collect())
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                keys.len()
            })
            .collect();
        for threads in [1, 2] {
            assert_eq!(
                box_count(&points, 3, &deltas, threads, &mut never()).expect("ok"),
                expected
            );
        }
        assert_eq!(box_count(&points, 3, &[1.0], 1, &mut || true), Err(Error::Interrupted));
    }
}
