//! Box counting: the occupied cells of a grid of side δ, a cheap companion of the nets
//! (docs/definitions.md §3).

use crate::cover::Real;
use crate::error::{Error, Result};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use rayon::prelude::*;
use rustc_hash::{FxHashMap, FxHasher};
use std::hash::Hasher;

/// Occupied cells of the grid of side δ (cells `⌊x / δ⌋` in every coordinate), per δ.
///
/// The points are read in chunks (each chunk's cells hashed in parallel, then added to one set per
/// δ, the scales in parallel), with `interrupt` asked between chunks; the count does not depend on
/// the chunks or threads.
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
    if points.len() / dim > u32::MAX as usize {
        return Err(Error::invalid("points", "more than 2^32 - 1 rows"));
    }
    let pool = pool(n_threads)?;
    let mut occupied: Vec<CellSet> = deltas.iter().map(|&delta| CellSet::new(delta)).collect();
    let rows = points.len() / dim;
    let chunk = chunk_len(8 * dim * deltas.len(), n_threads);
    run_chunked(&pool, rows, chunk, interrupt, |range| {
        occupied.par_iter_mut().for_each(|cells| {
            let hashes: Vec<u64> = points[range.start * dim..range.end * dim]
                .par_chunks(dim)
                .map(|point| cells.hash(point))
                .collect();
            for (row, hash) in range.clone().zip(hashes) {
                cells.insert(points, dim, row as u32, hash);
            }
        });
    })?;
    Ok(occupied.iter().map(CellSet::len).collect())
}

/// The occupied cells of one scale, each held as the first row that fell in it: 16 bytes a cell
/// and no allocation of its own (a set of index vectors took 500 bytes a cell at 64 coordinates,
/// and seconds to free once it held millions).
struct CellSet {
    delta: f64,
    /// The first row of each cell, by the hash of the cell's indices.
    first: FxHashMap<u64, u32>,
    /// Further cells whose indices hash as an earlier one's (distinct cells, so counted).
    collided: FxHashMap<u64, Vec<u32>>,
}

impl CellSet {
    fn new(delta: f64) -> Self {
        CellSet {
            delta,
            first: FxHashMap::default(),
            collided: FxHashMap::default(),
        }
    }

    fn len(&self) -> usize {
        self.first.len() + self.collided.values().map(Vec::len).sum::<usize>()
    }

    fn index(&self, v: impl Real) -> i64 {
        (v.to_f64() / self.delta).floor() as i64
    }

    fn hash<T: Real>(&self, point: &[T]) -> u64 {
        let mut hasher = FxHasher::default();
        for &v in point {
            hasher.write_i64(self.index(v));
        }
        hasher.finish()
    }

    /// Adds the cell of `row` unless a row already held is in the same cell.
    fn insert<T: Real>(&mut self, points: &[T], dim: usize, row: u32, hash: u64) {
        let point = |r: u32| &points[r as usize * dim..(r as usize + 1) * dim];
        let same = |r: u32| {
            point(r)
                .iter()
                .zip(point(row))
                .all(|(&a, &b)| self.index(a) == self.index(b))
        };
        let Some(&held) = self.first.get(&hash) else {
            self.first.insert(hash, row);
            return;
        };
        if same(held) {
            return;
        }
        let others = self.collided.get(&hash).map_or(&[][..], Vec::as_slice);
        if !others.iter().any(|&r| same(r)) {
            self.collided.entry(hash).or_default().push(row);
        }
    }
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

    #[test]
    fn cells_whose_hashes_collide_are_still_told_apart() {
        // every row given the same hash: the count must come from comparing cells alone
        let points: Vec<f64> = (0..600)
            .flat_map(|r| {
                [
                    ((r * 7919) % 23) as f64 / 3.0 - 4.0,
                    ((r * 104_729) % 17) as f64 / 3.0 - 3.0,
                ]
            })
            .collect();
        let mut cells = CellSet::new(0.5);
        for row in 0..600 {
            cells.insert(&points, 2, row, 42);
        }
        let mut keys: Vec<Vec<i64>> = points
            .chunks(2)
            .map(|p| p.iter().map(|v| (v / 0.5).floor() as i64).collect())
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert!(keys.len() > 50);
        assert_eq!(cells.len(), keys.len());
    }
}
