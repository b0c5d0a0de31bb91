//! The greedy net at one scale: a block of points at a time, the candidates of each point found in
//! the grid's cells and tested in code compiled for the CPU's widest vector instructions.

use super::axes::Axes;
use super::cells::{CellKey, Cells, GRID_AXES};
use super::sketch::{all_finite, within, Real, SketchTest, SKETCH};
use rayon::prelude::*;

/// Candidates whose sketches are tested together (see `ScaleNet::first_within`).
const BATCH: usize = 4;
/// Beyond this many cells from the origin, rounding in `x / cell` could move a point by more than
/// `CELL_SLACK` of a cell (2 × 2^36 × 2^-53 < 10^-4 holds here); such points are kept out of the
/// grid ("wild") and compared with every centre.
pub(super) const MAX_CELL_INDEX: f64 = (1u64 << 36) as f64;
/// Cells are a little wider than δ so that rounding in `x / cell` can never hide a centre at
/// distance exactly δ (the neighbourhood test is then conservative, never wrong).
pub(super) const CELL_SLACK: f64 = 1e-4;

/// The tail of an ascending list holding the ids >= `from`. Centres opened since `from` are few
/// (they opened within the current block); counting them from the end touches only them, where a
/// binary search would miss the cache at every step of a long list.
fn opened_since(list: &[u32], from: u32) -> &[u32] {
    let newer = if from == 0 {
        list.len()
    } else {
        list.iter().rev().take_while(|&&c| c >= from).count()
    };
    &list[list.len() - newer..]
}

/// The net at one scale.
pub(super) struct ScaleNet<T: Real> {
    pub(super) delta: T,
    /// 1 / cell side. The side is a little more than δ (see `CELL_SLACK`), which also absorbs the
    /// rounding of multiplying by the inverse instead of dividing.
    pub(super) inverse_cell: f64,
    /// Per grid cell, the centres that may cover a point in it.
    pub(super) cells: Cells,
    pub(super) centres: Vec<T>,
    /// Per centre its `SKETCH` most telling coordinates in f32, contiguous: small enough to stay
    /// in cache, so most candidates are rejected without touching their full row.
    pub(super) sketches: Vec<[f32; SKETCH]>,
    /// See `Real::sketch_bound`.
    pub(super) sketch_bound: (f32, f32),
    /// The widest vector instructions this CPU has, detected once (see `first_within`).
    pub(super) simd: pulp::Arch,
    pub(super) opened_at: Vec<u64>,
    pub(super) assignment: Option<Vec<i64>>,
    /// Per centre: has a point other than its own been assigned to it (Good–Turing's f1 counts
    /// the centres where not)?
    pub(super) shared: Vec<bool>,
    /// Centres that became shared since the last `MultiNet::mark`, to undo on a roll-back.
    pub(super) shared_since_mark: Vec<u32>,
}

impl<T: Real> ScaleNet<T> {
    fn key(&self, point: &[T], axes: &Axes) -> Option<CellKey> {
        let mut key = [0i32; GRID_AXES];
        for (k, &axis) in key.iter_mut().zip(&axes.grid) {
            let scaled = point[axis].to_f64() * self.inverse_cell;
            if scaled.abs() > MAX_CELL_INDEX {
                return None;
            }
            // floor(scaled), without a call to libm's floor (this runs once per point and axis).
            let truncated = scaled as i64;
            let index = truncated - i64::from(truncated as f64 > scaled);
            // Keys wrap to 32 bits (small keys hash and compare faster): cells 2^32 apart share a
            // key, which only adds candidates, all compared exactly, and neighbours modulo 2^32
            // are still found as neighbours (`open` lists them with wrapping offsets).
            *k = index as i32;
        }
        Some(key)
    }

    #[inline(always)] // into `first_within`'s copy for each instruction set
    fn centre(&self, index: u32, dim: usize) -> &[T] {
        let start = index as usize * dim;
        &self.centres[start..start + dim]
    }

    /// The earliest centre with index >= `from` within δ of `point`.
    fn earliest_covering(&self, point: &[T], axes: &Axes, from: u32) -> Option<u32> {
        let sketch = SketchTest::new(point, &axes.sketch, self.sketch_bound);
        let Some(key) = self.key(point, axes) else {
            if !all_finite(point) {
                return None; // never covered (see `within`); spares a comparison with every centre
            }
            let all: Vec<u32> = (from..self.opened_at.len() as u32).collect();
            return self.first_within(point, &sketch, &all);
        };
        // Every centre is listed in all the cells around its own, so one lookup finds every
        // candidate, in opening order.
        let in_grid = self
            .cells
            .list(&key)
            .and_then(|list| self.first_within(point, &sketch, opened_since(list, from)));
        let wild = opened_since(self.cells.wild(), from);
        if wild.is_empty() {
            return in_grid;
        }
        let before = in_grid.map_or(wild.len(), |c| wild.partition_point(|&w| w < c));
        self.first_within(point, &sketch, &wild[..before]).or(in_grid)
    }

    /// The first of `candidates` within δ of `point`, in code compiled for the widest vector
    /// instructions the CPU has (`pulp` picks AVX2 where there is one: a sketch test is then one
    /// compare of eight f32, a group of `within` two compares of four f64). The tests are exact
    /// in any instruction set, so the answer never depends on the CPU.
    fn first_within(&self, point: &[T], sketch: &SketchTest, candidates: &[u32]) -> Option<u32> {
        self.simd.dispatch(FirstWithin {
            net: self,
            point,
            sketch,
            candidates,
        })
    }

    /// The body of `first_within`, inlined into its copy for each instruction set. The sketches
    /// of `BATCH` candidates are tested before any branch: whether a sketch passes is as good as
    /// random, and one mispredicted branch per batch costs less than one per candidate.
    #[inline(always)]
    fn first_within_inlined(&self, point: &[T], sketch: &SketchTest, candidates: &[u32]) -> Option<u32> {
        for batch in candidates.chunks(BATCH) {
            let mut near = 0u32;
            for (k, &c) in batch.iter().enumerate() {
                near |= u32::from(sketch.passes(&self.sketches[c as usize])) << k;
            }
            while near != 0 {
                let c = batch[near.trailing_zeros() as usize];
                if within(point, self.centre(c, point.len()), self.delta) {
                    return Some(c);
                }
                near &= near - 1;
            }
        }
        None
    }

    fn open(&mut self, point: &[T], axes: &Axes, index: u64) -> u32 {
        let id = self.opened_at.len() as u32;
        self.cells.insert(self.key(point, axes), axes.grid.len(), id);
        self.centres.extend_from_slice(point);
        self.sketches.push(axes.sketch.map(|axis| point[axis].to_sketch()));
        self.opened_at.push(index);
        self.shared.push(false);
        id
    }

    /// Centres with no point but their own (Good–Turing's f1).
    pub(super) fn singletons(&self) -> usize {
        self.shared.iter().filter(|&&shared| !shared).count()
    }

    /// Forgets every centre from `size` on and every assignment from point `n_points` on. Ids
    /// are appended in ascending order, so the newer ones are the tail of each list.
    pub(super) fn truncate(&mut self, size: usize, n_points: u64) {
        self.cells.truncate(size as u32);
        let dim = self.centres.len().checked_div(self.opened_at.len()).unwrap_or(0);
        self.centres.truncate(size * dim);
        self.sketches.truncate(size);
        self.opened_at.truncate(size);
        self.shared.truncate(size);
        for &centre in &self.shared_since_mark {
            if let Some(shared) = self.shared.get_mut(centre as usize) {
                *shared = false;
            }
        }
        self.shared_since_mark.clear();
        if let Some(assignment) = self.assignment.as_mut() {
            assignment.truncate(n_points as usize);
        }
    }

    /// Bytes held, as the allocator sees them: the cells (see `Cells::memory_bytes`; when δ is
    /// small they outweigh the centres' coordinates), the flat arrays at their lengths (their
    /// unused capacity is never written, so never resident).
    pub(super) fn memory_bytes(&self) -> usize {
        let flat = self.centres.len() * std::mem::size_of::<T>()
            + std::mem::size_of_val(&self.sketches[..])
            + 9 * self.opened_at.len()
            + 4 * self.shared_since_mark.len()
            + self.assignment.as_ref().map_or(0, |a| 8 * a.len());
        self.cells.memory_bytes() + flat
    }

    /// Adds a block of points whose first has global index `first_index`. Returns the first row
    /// holding a NaN or infinite value, if any, and then the net must be rolled back (see
    /// `MultiNet::add`). Such a row is never within δ of a centre (see `within`), so it is found
    /// among the rows that would open one, which are the only rows checked.
    pub(super) fn add_block(&mut self, block: &[T], dim: usize, axes: &Axes, first_index: u64) -> Option<usize> {
        let old = self.opened_at.len() as u32;
        let covered_by_old: Vec<Option<u32>> = if old == 0 {
            vec![None; block.len() / dim]
        } else {
            block
                .par_chunks(dim)
                .with_min_len(64)
                .map(|p| self.earliest_covering(p, axes, 0))
                .collect()
        };
        for (i, (point, found)) in block.chunks(dim).zip(covered_by_old).enumerate() {
            let covering = match found {
                Some(c) => Some(c),
                None if !all_finite(point) => return Some(i),
                None => self.earliest_covering(point, axes, old),
            };
            let centre = match covering {
                Some(c) => {
                    if !self.shared[c as usize] {
                        self.shared[c as usize] = true;
                        self.shared_since_mark.push(c);
                    }
                    c
                }
                None => self.open(point, axes, first_index + i as u64),
            };
            if let Some(assignment) = self.assignment.as_mut() {
                assignment.push(i64::from(centre));
            }
        }
        // An array over the cells' box may cost at most twice the centres' coordinates, so the
        // nets' memory stays O(net size × dim).
        self.cells
            .use_array(axes.grid.len(), 2 * self.centres.len() * std::mem::size_of::<T>());
        None
    }
}

/// A call of `ScaleNet::first_within`, as `pulp` dispatches it: `with_simd` is compiled once per
/// instruction set, with everything it calls inlined.
struct FirstWithin<'a, T: Real> {
    net: &'a ScaleNet<T>,
    point: &'a [T],
    sketch: &'a SketchTest,
    candidates: &'a [u32],
}

impl<T: Real> pulp::WithSimd for FirstWithin<'_, T> {
    type Output = Option<u32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Option<u32> {
        self.net.first_within_inlined(self.point, self.sketch, self.candidates)
    }
}
