//! Exact greedy ℓ∞ nets at many scales (MATH.md §3), streamed in chunks.
//!
//! The net is the sequential scan: point s opens a centre iff no earlier centre lies within δ,
//! else it joins the earliest centre within δ. Distances are taken in the input's precision and
//! a distance of exactly δ covers (closed balls).
//!
//! Speed comes from three exact devices, none of which changes the answer:
//! - a hash grid on a few coordinates: `d(x, c) <= δ` in ℓ∞ implies `|x_j − c_j| <= δ` for every
//!   coordinate j, so only the cells next to a point's own can hold a covering centre. Each centre
//!   is listed under every cell around its own (3^axes lists): centres are few and queries many,
//!   so a query costs one lookup and one scan of an ascending list. The axes are the most
//!   independent coordinates of a sample (`choose_axes`). `cells.rs` keeps the lists;
//! - a sketch: the same implication on 8 telling coordinates per centre, in f32 (with a bound that
//!   allows for the rounding of f64 input, `Real::sketch_bound`), kept contiguous and small enough
//!   to stay in cache, rejects most candidates before their full row is read;
//! - blocks: for a block of points, the earliest covering centre among those opened *before* the
//!   block is found in parallel; the points left uncovered are then resolved in order against the
//!   centres opened inside the block. Old centres precede new ones, so this is the sequential net.
//!
//! The candidate tests (sketch and full row) run in code compiled for the CPU's widest vector
//! instructions, AVX2 where present, chosen at run time (`ScaleNet::first_within`).
//!
//! Scales are independent, so they run in parallel with each other as well.

use crate::error::{human_bytes, Error, Result};
use crate::parallel::{pool, run_watched, Interrupt};
use rayon::prelude::*;
use std::sync::atomic::Ordering;

mod cells;
use cells::{CellKey, Cells, GRID_AXES};

/// The input precisions the engine works in.
pub trait Real: Copy + PartialOrd + Send + Sync + std::fmt::Debug + 'static {
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
    fn abs_diff(self, other: Self) -> Self;
    fn is_finite(self) -> bool;
    /// A coordinate in a sketch (see `SketchTest`).
    fn to_sketch(self) -> f32;
    /// The bound of the sketch test at scale `delta`, as `(base, slope)`: for a point's coordinate
    /// `p` (in f32) the test is `|fl32(p − s)| <= τ = fl32(base + slope |p|)`, which must hold
    /// whenever the point and a centre whose sketch holds `s` are within `delta` in the input's
    /// precision on this coordinate (`SketchTest::lane` handles |p| beyond `SKETCH_LIMIT`).
    fn sketch_bound(delta: Self) -> (f32, f32);
}

/// Beyond this, a sketch coordinate (or the bound) makes the sketch test pass: a centre within δ
/// of such a point may overflow f32.
const SKETCH_LIMIT: f32 = 1e37;

impl Real for f32 {
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    fn from_f64(value: f64) -> Self {
        value as f32
    }
    #[inline(always)] // into `first_within`'s copy for each instruction set
    fn abs_diff(self, other: Self) -> Self {
        (self - other).abs()
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
    fn to_sketch(self) -> f32 {
        self
    }
    /// The test itself: `|fl32(x − c)| <= δ` is the definition.
    fn sketch_bound(delta: Self) -> (f32, f32) {
        (delta, 0.0)
    }
}

impl Real for f64 {
    fn to_f64(self) -> f64 {
        self
    }
    fn from_f64(value: f64) -> Self {
        value
    }
    #[inline(always)] // into `first_within`'s copy for each instruction set
    fn abs_diff(self, other: Self) -> Self {
        (self - other).abs()
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
    fn to_sketch(self) -> f32 {
        self as f32 // to nearest; beyond f32::MAX, infinite
    }
    /// If `|fl64(x − c)| <= δ` then `|x − c| <= δ' = δ(1 + 2^-52)`, so `|c| <= |x| + δ'`. Rounding
    /// x and c to f32 (p and s) moves each by at most `2^-24` of itself (plus `2^-150` below the
    /// normal range), and the f32 difference by `2^-24` of itself, so
    /// `|fl32(p − s)| <= R = (δ' + 2^-24 (2|x| + δ') + 2^-149)(1 + 2^-24)`. With base
    /// `B >= δ(1 + 2^-20) + 2^-124` (rounded to f32, so within `2^-24` of that) and slope `2^-21`
    /// (exact), `τ = fl32(B + 2^-21 |p|)` exceeds R: `|x| <= (|p| + 2^-150)(1 + 2^-23)`, so the
    /// slope term covers four times the `|x|` term of R, B covers δ' with room for every relative
    /// rounding, and `2^-124` every absolute one. A base beyond `SKETCH_LIMIT` is infinite: every
    /// test passes.
    fn sketch_bound(delta: Self) -> (f32, f32) {
        let base = (delta * (1.0 + 2f64.powi(-20)) + 2f64.powi(-124)) as f32;
        let base = if base <= SKETCH_LIMIT { base } else { f32::INFINITY };
        (base, 2f32.powi(-21))
    }
}

/// `max_j |a_j − b_j| <= delta`, deciding eight coordinates at a time: within a group of eight
/// the test has no branch, so the compiler turns it into packed compares; between groups it stops
/// at the first that exceeds δ. A NaN or infinite value is never within δ of anything (`<=` is
/// false on a NaN), so a point holding one is never covered: the scan checks for finiteness only
/// the points no centre covers, not every point.
#[inline(always)] // into `first_within`'s copy for each instruction set
pub fn within<T: Real>(a: &[T], b: &[T], delta: T) -> bool {
    const LANES: usize = 8;
    let (mut groups_a, mut groups_b) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (ga, gb) in (&mut groups_a).zip(&mut groups_b) {
        let mut near = true;
        for lane in 0..LANES {
            near &= ga[lane].abs_diff(gb[lane]) <= delta;
        }
        if !near {
            return false;
        }
    }
    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());
    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)
}

/// A point's side of the sketch test: per sketch coordinate, its value and bound in f32 (see
/// `Real::sketch_bound`). In f32 the eight coordinates of a sketch are two packed registers, and
/// two sketches share a cache line.
struct SketchTest {
    point: [f32; SKETCH],
    bound: [f32; SKETCH],
}

impl SketchTest {
    fn new<T: Real>(point: &[T], axes: &Axes, bound: (f32, f32)) -> Self {
        let tests = axes.sketch.map(|axis| Self::lane(point[axis].to_sketch(), bound));
        SketchTest {
            point: tests.map(|(p, _)| p),
            bound: tests.map(|(_, b)| b),
        }
    }

    /// A point's sketch coordinate `p` and its bound τ (see `Real::sketch_bound`). Where `|p|` is
    /// beyond `SKETCH_LIMIT` (or NaN) the test is made to pass: p = 0, τ = ∞ (s is never NaN, and
    /// `within` rejects a NaN point).
    #[inline]
    fn lane(p: f32, (base, slope): (f32, f32)) -> (f32, f32) {
        if p.abs() <= SKETCH_LIMIT {
            (p, base + slope * p.abs())
        } else {
            (0.0, f32::INFINITY)
        }
    }

    /// Whether a centre with this sketch may be within δ: false only if it is not. No branch:
    /// eight packed compares.
    #[inline(always)] // into `first_within`'s copy for each instruction set
    fn passes(&self, sketch: &[f32; SKETCH]) -> bool {
        let mut near = true;
        for ((&p, &s), &bound) in self.point.iter().zip(sketch).zip(&self.bound) {
            near &= (p - s).abs() <= bound;
        }
        near
    }
}

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

/// Whether every value is finite, without an early exit, which the compiler vectorises.
fn all_finite<T: Real>(values: &[T]) -> bool {
    values.iter().fold(true, |finite, v| finite & v.is_finite())
}

/// The position of the first NaN or infinite value, pieces of 2^14 values checked in parallel (in
/// the calling pool).
fn first_non_finite<T: Real>(values: &[T]) -> Option<usize> {
    const BLOCK: usize = 1 << 14;
    values
        .par_chunks(BLOCK)
        .position_first(|block| !all_finite(block))
        .and_then(|b| {
            let start = b * BLOCK;
            values[start..].iter().position(|v| !v.is_finite()).map(|i| start + i)
        })
}

/// Coordinates per centre in its sketch (see `Axes`).
const SKETCH: usize = 8;
/// Candidates whose sketches are tested together (see `ScaleNet::first_within`).
const BATCH: usize = 4;
/// Beyond this many cells from the origin, rounding in `x / cell` could move a point by more than
/// `CELL_SLACK` of a cell (2 × 2^36 × 2^-53 < 10^-4 holds here); such points are kept out of the
/// grid ("wild") and compared with every centre.
const MAX_CELL_INDEX: f64 = (1u64 << 36) as f64;
/// Cells are a little wider than δ so that rounding in `x / cell` can never hide a centre at
/// distance exactly δ (the neighbourhood test is then conservative, never wrong).
const CELL_SLACK: f64 = 1e-4;
/// Points per block: large enough to share the work among threads, small enough that the
/// in-block resolution (sequential) stays short and Ctrl-C is answered quickly.
const BLOCK: usize = 2048;

/// The net at one scale.
struct ScaleNet<T: Real> {
    delta: T,
    /// 1 / cell side. The side is a little more than δ (see `CELL_SLACK`), which also absorbs the
    /// rounding of multiplying by the inverse instead of dividing.
    inverse_cell: f64,
    /// Per grid cell, the centres that may cover a point in it.
    cells: Cells,
    centres: Vec<T>,
    /// Per centre its `SKETCH` most telling coordinates in f32, contiguous: small enough to stay
    /// in cache, so most candidates are rejected without touching their full row.
    sketches: Vec<[f32; SKETCH]>,
    /// See `Real::sketch_bound`.
    sketch_bound: (f32, f32),
    /// The widest vector instructions this CPU has, detected once (see `first_within`).
    simd: pulp::Arch,
    opened_at: Vec<u64>,
    assignment: Option<Vec<i64>>,
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
        let sketch = SketchTest::new(point, axes, self.sketch_bound);
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
        id
    }

    /// Forgets every centre from `size` on and every assignment from point `n_points` on. Ids
    /// are appended in ascending order, so the newer ones are the tail of each list.
    fn truncate(&mut self, size: usize, n_points: u64) {
        self.cells.truncate(size as u32);
        let dim = self.centres.len().checked_div(self.opened_at.len()).unwrap_or(0);
        self.centres.truncate(size * dim);
        self.sketches.truncate(size);
        self.opened_at.truncate(size);
        if let Some(assignment) = self.assignment.as_mut() {
            assignment.truncate(n_points as usize);
        }
    }

    /// Bytes held, as the allocator sees them: the cells (see `Cells::memory_bytes`; when δ is
    /// small they outweigh the centres' coordinates), the flat arrays at their lengths (their
    /// unused capacity is never written, so never resident).
    fn memory_bytes(&self) -> usize {
        let flat = self.centres.len() * std::mem::size_of::<T>()
            + std::mem::size_of_val(&self.sketches[..])
            + 8 * self.opened_at.len()
            + self.assignment.as_ref().map_or(0, |a| 8 * a.len());
        self.cells.memory_bytes() + flat
    }

    /// Adds a block of points whose first has global index `first_index`. Returns the first row
    /// holding a NaN or infinite value, if any, and then the net must be rolled back (see
    /// `MultiNet::add`). Such a row is never within δ of a centre (see `within`), so it is found
    /// among the rows that would open one, which are the only rows checked.
    fn add_block(&mut self, block: &[T], dim: usize, axes: &Axes, first_index: u64) -> Option<usize> {
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
            let centre = match found {
                Some(c) => c,
                None if !all_finite(point) => return Some(i),
                None => match self.earliest_covering(point, axes, old) {
                    Some(c) => c,
                    None => self.open(point, axes, first_index + i as u64),
                },
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

/// Greedy nets at several scales over a stream of points of fixed dimension.
pub struct MultiNet<T: Real> {
    dim: usize,
    scales: Vec<ScaleNet<T>>,
    axes: Option<Axes>,
    n_points: u64,
    memory_limit: usize,
}

/// The state of a `MultiNet` before an `add`, to return to if the `add` fails.
struct Mark {
    n_points: u64,
    axes_chosen: bool,
    net_sizes: Vec<usize>,
}

/// The coordinates a net looks at before a full comparison: `grid` (at most `GRID_AXES`) hash the
/// cells, `sketch` (at most `SKETCH`, beginning with `grid`) are copied per centre for a first test.
#[derive(Clone, Debug)]
struct Axes {
    grid: Vec<usize>,
    sketch: [usize; SKETCH],
}

/// Picks coordinates one at a time, each the one with the most variance left once those already
/// picked are regressed out (a pivoted Cholesky factorisation of the sample covariance; ties to the
/// lower index), until nothing is left; then, while the sketch has room, the widest remaining ones.
/// Outputs of a model are strongly correlated, and the coordinates with the largest spread often
/// carry the same direction twice: a grid on those prunes little. Any choice gives the same nets;
/// this only decides how many candidate centres a query compares in full.
fn choose_axes<T: Real>(points: &[T], dim: usize) -> Axes {
    // A sample of rows: at most 1024, and at most 2^22 values, whatever the dimension.
    let rows = (points.len() / dim).min(1024).min((1 << 22) / dim).max(1);
    // Column-major and centred: column j is coordinate j over the sample.
    let mut columns: Vec<Vec<f64>> = (0..dim)
        .map(|j| {
            let column: Vec<f64> = (0..rows).map(|i| points[i * dim + j].to_f64()).collect();
            let mean = column.iter().sum::<f64>() / rows as f64;
            column.into_iter().map(|v| v - mean).collect()
        })
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let variances: Vec<f64> = columns.iter().map(|c| dot(c, c)).collect();
    let widest_first = |candidates: &mut dyn Iterator<Item = (f64, usize)>| {
        candidates.fold((0.0, usize::MAX), |best, c| if c.0 > best.0 { c } else { best })
    };
    let wanted = SKETCH.min(dim);
    let mut picked: Vec<usize> = Vec::with_capacity(wanted);
    while picked.len() < wanted {
        let (variance, pivot) = widest_first(&mut columns.iter().enumerate().map(|(j, c)| (dot(c, c), j)));
        // Nothing left, or only the rounding noise of the directions already picked.
        if pivot == usize::MAX || variance <= 1e-12 * variances[picked.first().copied().unwrap_or(pivot)] {
            break;
        }
        picked.push(pivot);
        let column = std::mem::replace(&mut columns[pivot], vec![0.0; rows]);
        for other in columns.iter_mut() {
            let coefficient = dot(&column, other) / variance;
            other.iter_mut().zip(&column).for_each(|(v, p)| *v -= coefficient * p);
        }
    }
    let grid = picked[..picked.len().min(GRID_AXES)].to_vec();
    while picked.len() < wanted {
        let pivot = widest_first(&mut (0..dim).filter(|j| !picked.contains(j)).map(|j| (variances[j], j))).1;
        // All the rest are constant: any of them will do.
        picked.push(if pivot == usize::MAX {
            (0..dim).find(|j| !picked.contains(j)).unwrap_or(0)
        } else {
            pivot
        });
    }
    // Fewer than `SKETCH` coordinates: repeat the first (the test is the same, and a sketch of
    // fixed width compiles to straight-line code).
    let sketch = std::array::from_fn(|i| picked.get(i).copied().unwrap_or(picked[0]));
    Axes { grid, sketch }
}

impl<T: Real> MultiNet<T> {
    /// Nets at `deltas` (any order; each finite and > 0) for points of dimension `dim`.
    /// `keep_assignment` records each point's centre (memory O(points)); otherwise memory is
    /// O(net size × dim).
    pub fn new(deltas: &[f64], dim: usize, keep_assignment: bool) -> Result<Self> {
        if deltas.is_empty() {
            return Err(Error::invalid("deltas", "needs at least one scale"));
        }
        if let Some(bad) = deltas.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
            return Err(Error::invalid(
                "deltas",
                format!("every scale must be finite and > 0, got {bad}"),
            ));
        }
        if dim == 0 {
            return Err(Error::invalid("dim", "points need at least one coordinate"));
        }
        let scales = deltas
            .iter()
            .map(|&delta| ScaleNet {
                delta: T::from_f64(delta),
                inverse_cell: 1.0 / (delta * (1.0 + CELL_SLACK)),
                cells: Cells::default(),
                centres: Vec::new(),
                sketches: Vec::new(),
                sketch_bound: T::sketch_bound(T::from_f64(delta)),
                simd: pulp::Arch::new(),
                opened_at: Vec::new(),
                assignment: keep_assignment.then(Vec::new),
            })
            .collect();
        Ok(MultiNet {
            dim,
            scales,
            axes: None,
            n_points: 0,
            memory_limit: usize::MAX,
        })
    }

    /// Stops `add` with [`Error::TooLarge`] once the nets would hold more than `bytes`: how
    /// large a net grows depends on the data, so this is checked as it grows, after each block.
    pub fn with_memory_limit(mut self, bytes: usize) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// Bytes held by the nets (see `ScaleNet::memory_bytes`): what the allocator holds for them,
    /// up to its bookkeeping.
    pub fn memory_bytes(&self) -> usize {
        self.scales.iter().map(ScaleNet::memory_bytes).sum()
    }

    /// Scans `points` (row-major, `len = rows × dim`) after everything added before.
    ///
    /// On any error (a NaN or infinite value, the memory limit, an interrupt) the nets are left
    /// exactly as they were before the call, so a stream can go on with the next chunk.
    pub fn add(&mut self, points: &[T], n_threads: usize, interrupt: Interrupt) -> Result<()> {
        if !points.len().is_multiple_of(self.dim) {
            return Err(Error::invalid(
                "points",
                format!("length {} is not a multiple of dim = {}", points.len(), self.dim),
            ));
        }
        if points.is_empty() {
            return Ok(());
        }
        let pool = pool(n_threads)?;
        run_watched(&pool, interrupt, |stop| {
            self.add_in_pool(points, &|| stop.load(Ordering::Relaxed))
        })
    }

    /// `add`, run inside the pool, asking `stopped` between blocks; rolls back on any error.
    fn add_in_pool(&mut self, points: &[T], stopped: &(dyn Fn() -> bool + Sync)) -> Result<()> {
        let before = self.mark();
        let scanned = self.scan(points, stopped);
        if scanned.is_err() {
            self.roll_back(before);
        }
        scanned
    }

    /// The blocks of `points` in order, stopping between blocks once `stopped` says so. Rows are
    /// checked finite only where they would open a centre (see `add_block`), except the first
    /// block, which `choose_axes` samples.
    fn scan(&mut self, points: &[T], stopped: &(dyn Fn() -> bool + Sync)) -> Result<()> {
        let dim = self.dim;
        for (b, block) in points.chunks(BLOCK * dim).enumerate() {
            if stopped() {
                return Err(Error::Interrupted);
            }
            let bad_row = |row: usize| {
                Error::invalid(
                    "points",
                    format!("row {} holds a NaN or infinite value", b * BLOCK + row),
                )
            };
            if self.axes.is_none() {
                // `choose_axes` reads a sample of the first block: check it all first.
                if let Some(position) = first_non_finite(block) {
                    return Err(bad_row(position / dim));
                }
                self.axes = Some(choose_axes(block, dim));
            }
            let axes = self.axes.clone().expect("chosen above");
            let first = self.n_points;
            // A bad row is one no centre covers, so every scale stops at the same first bad row;
            // all are then rolled back by `add`.
            let bad_rows: Vec<Option<usize>> = self
                .scales
                .par_iter_mut()
                .map(|scale| scale.add_block(block, dim, &axes, first))
                .collect();
            if let Some(row) = bad_rows.into_iter().flatten().min() {
                return Err(bad_row(row));
            }
            self.n_points += (block.len() / dim) as u64;
            let held = self.memory_bytes();
            if held > self.memory_limit {
                return Err(Error::TooLarge {
                    argument: "deltas",
                    message: format!(
                        "the nets hold {:?} centres (about {}) after {} points, more than the limit of {}; \
                         use fewer or larger scales, or fewer points",
                        self.net_sizes(),
                        human_bytes(held),
                        self.n_points,
                        human_bytes(self.memory_limit)
                    ),
                });
            }
        }
        Ok(())
    }

    /// What `roll_back` restores.
    fn mark(&self) -> Mark {
        Mark {
            n_points: self.n_points,
            axes_chosen: self.axes.is_some(),
            net_sizes: self.net_sizes(),
        }
    }

    fn roll_back(&mut self, to: Mark) {
        if !to.axes_chosen {
            self.axes = None;
        }
        for (scale, &size) in self.scales.iter_mut().zip(&to.net_sizes) {
            scale.truncate(size, to.n_points);
        }
        self.n_points = to.n_points;
    }

    /// The same nets, with the candidate tests run in the instruction set `simd` instead of the
    /// widest one the CPU has.
    #[cfg(test)]
    fn with_instruction_set(mut self, simd: pulp::Arch) -> Self {
        for scale in &mut self.scales {
            scale.simd = simd;
        }
        self
    }

    pub fn n_points(&self) -> u64 {
        self.n_points
    }

    pub fn net_sizes(&self) -> Vec<usize> {
        self.scales.iter().map(|s| s.opened_at.len()).collect()
    }

    /// Global indices of the points that opened the centres of scale `scale`, in opening order.
    pub fn centres(&self, scale: usize) -> &[u64] {
        &self.scales[scale].opened_at
    }

    /// Each point's centre (index into `centres`) at scale `scale`, when kept.
    pub fn assignment(&self, scale: usize) -> Option<&[i64]> {
        self.scales[scale].assignment.as_deref()
    }

    /// Per scale: the fraction of the last 10 % of the points (at least one) that opened a centre;
    /// NaN before any point.
    pub fn tail_discovery(&self) -> Vec<f64> {
        let m = self.n_points;
        let tail = m.div_ceil(10);
        self.scales
            .iter()
            .map(|s| {
                if m == 0 {
                    return f64::NAN;
                }
                let opened = s.opened_at.iter().rev().take_while(|&&i| i >= m - tail).count();
                opened as f64 / tail as f64
            })
            .collect()
    }
}

/// Occupied cells of the grid of side δ (cells `⌊x / δ⌋` in every coordinate), per δ.
pub fn box_count<T: Real>(points: &[T], dim: usize, deltas: &[f64], n_threads: usize) -> Result<Vec<usize>> {
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
    Ok(pool.install(|| {
        deltas
            .par_iter()
            .map(|&delta| {
                let mut keys: Vec<Vec<i64>> = points
                    .chunks(dim)
                    .map(|p| p.iter().map(|v| (v.to_f64() / delta).floor() as i64).collect())
                    .collect();
                keys.par_sort_unstable();
                keys.dedup();
                keys.len()
            })
            .collect()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::never;
    use proptest::prelude::*;

    /// A finite f64 of any sign with its exponent anywhere in `exponents` (f32's subnormal range
    /// is below 2^-126, its largest values near 2^128).
    fn spread(exponents: std::ops::Range<i32>) -> impl Strategy<Value = f64> {
        (1.0f64..2.0, exponents, any::<bool>()).prop_map(|(m, e, neg)| if neg { -m } else { m } * 2f64.powi(e))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 20_000, max_global_rejects: 20_000, ..ProptestConfig::default() })]

        /// The f32 sketch of a f64 net is only a filter: it must pass every centre within δ, at
        /// any magnitude of the coordinates and of δ, for ties at exactly δ, across f32's
        /// subnormal range and its overflow.
        #[test]
        fn the_f32_sketch_never_rejects_a_centre_within_delta(
            x in spread(-170..140),
            delta in spread(-170..140),
            step in prop_oneof![Just(1.0), Just(-1.0), -1.0f64..=1.0],
        ) {
            let delta = delta.abs();
            let c = x + step * delta;
            prop_assume!(c.is_finite() && (x - c).abs() <= delta);
            let (p, bound) = SketchTest::lane(x.to_sketch(), f64::sketch_bound(delta));
            prop_assert!((p - c.to_sketch()).abs() <= bound, "x {x:e} c {c:e} δ {delta:e}: p {p:e} τ {bound:e}");
            // f32 input: the test is the definition itself, up to SKETCH_LIMIT (beyond, it passes).
            let (x32, c32, delta32) = (x as f32, c as f32, delta as f32);
            if x32.is_finite() && c32.is_finite() {
                let (p, bound) = SketchTest::lane(x32.to_sketch(), f32::sketch_bound(delta32));
                let passes = (p - c32.to_sketch()).abs() <= bound;
                let within = (x32 - c32).abs() <= delta32;
                let expected = if x32.abs() <= SKETCH_LIMIT { within } else { true };
                prop_assert_eq!(passes, expected);
            }
        }
    }

    #[test]
    fn a_non_finite_coordinate_passes_the_sketch_and_fails_the_full_test() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let (p, bound) = SketchTest::lane(bad.to_sketch(), f64::sketch_bound(1.0));
            assert!((p - 0.5f64.to_sketch()).abs() <= bound);
            assert!(!within(&[bad; 9], &[0.5; 9], 1.0) && !within(&[bad], &[0.5], 1.0));
        }
    }

    /// The definition, literally: O(m × net) comparisons.
    fn sequential_net(points: &[f64], dim: usize, delta: f64) -> (Vec<u64>, Vec<i64>) {
        let mut centres: Vec<usize> = Vec::new();
        let mut assignment = Vec::new();
        for (i, p) in points.chunks(dim).enumerate() {
            let hit = centres.iter().position(|&c| {
                p.iter()
                    .zip(&points[c * dim..(c + 1) * dim])
                    .all(|(a, b)| (a - b).abs() <= delta)
            });
            match hit {
                Some(c) => assignment.push(c as i64),
                None => {
                    assignment.push(centres.len() as i64);
                    centres.push(i);
                }
            }
        }
        (centres.into_iter().map(|c| c as u64).collect(), assignment)
    }

    /// The nets at every scale are the sequential definition's: centres and assignment.
    fn assert_sequential(net: &MultiNet<f64>, points: &[f64], dim: usize, deltas: &[f64], context: &str) {
        for (s, &delta) in deltas.iter().enumerate() {
            let (centres, assignment) = sequential_net(points, dim, delta);
            assert_eq!(net.centres(s), &centres[..], "{context} delta {delta}");
            assert_eq!(
                net.assignment(s).expect("kept"),
                &assignment[..],
                "{context} delta {delta}"
            );
        }
    }

    fn lcg_points(m: usize, dim: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..m * dim)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // quantised so that exact ties at δ occur
                ((state >> 40) % 64) as f64 / 16.0
            })
            .collect()
    }

    #[test]
    fn nets_past_the_memory_limit_stop_with_too_large() {
        let points: Vec<f64> = (0..3 * 5000).map(|i| i as f64).collect(); // 5000 distinct points, dim 3
        let mut nets = MultiNet::<f64>::new(&[0.5, 0.25], 3, false)
            .expect("valid")
            .with_memory_limit(100_000);
        let error = nets
            .add(&points, 1, &mut never())
            .expect_err("5000 centres per scale exceed 100 kB");
        assert!(matches!(error, Error::TooLarge { argument: "deltas", .. }), "{error:?}");
        // a generous limit changes nothing
        let mut roomy = MultiNet::<f64>::new(&[0.5, 0.25], 3, false)
            .expect("valid")
            .with_memory_limit(1 << 30);
        roomy.add(&points, 1, &mut never()).expect("fits");
        assert_eq!(roomy.net_sizes(), vec![5000, 5000]);
        assert!(roomy.memory_bytes() >= 2 * 5000 * 3 * 8);
    }

    #[test]
    fn equals_the_sequential_definition_for_any_threads_and_chunks() {
        for (dim, m) in [(1, 3000), (2, 5000), (5, 4000)] {
            let points = lcg_points(m, dim, dim as u64);
            let deltas = [0.25, 0.5, 1.0, 1.5];
            for threads in [1, 2] {
                let mut net = MultiNet::<f64>::new(&deltas, dim, true).expect("valid");
                for chunk in points.chunks(977 * dim) {
                    net.add(chunk, threads, &mut never()).expect("ok");
                }
                assert_sequential(&net, &points, dim, &deltas, &format!("dim {dim}"));
            }
        }
    }

    /// The portable code (which a CPU with AVX2 never runs otherwise) and the widest this CPU
    /// has give the sequential net, in dimensions with and without a remainder after `within`'s
    /// groups of eight, and the same nets in f32.
    #[test]
    fn every_instruction_set_gives_the_sequential_net() {
        for (dim, m) in [(3, 3000), (8, 3000), (19, 2000)] {
            let points = lcg_points(m, dim, 7 + dim as u64);
            let deltas = [0.25, 0.5, 1.5, 2.0];
            let single: Vec<f32> = points.iter().map(|&x| x as f32).collect(); // exact: multiples of 1/16
            let mut f32_nets = Vec::new();
            for simd in [pulp::Arch::Scalar, pulp::Arch::new()] {
                let mut net = MultiNet::<f64>::new(&deltas, dim, true)
                    .expect("valid")
                    .with_instruction_set(simd);
                net.add(&points, 2, &mut never()).expect("ok");
                assert_sequential(&net, &points, dim, &deltas, &format!("{simd:?} dim {dim}"));
                let mut net = MultiNet::<f32>::new(&deltas, dim, true)
                    .expect("valid")
                    .with_instruction_set(simd);
                net.add(&single, 2, &mut never()).expect("ok");
                let state =
                    (0..deltas.len()).map(|s| (net.centres(s).to_vec(), net.assignment(s).map(<[i64]>::to_vec)));
                f32_nets.push(state.collect::<Vec<_>>());
            }
            assert_eq!(f32_nets[0], f32_nets[1], "f32 dim {dim}");
        }
    }

    /// `rows` points in R^12 that are integer combinations of 3 quantised coordinates (exact in
    /// binary, so ties at δ occur), some negative, one coordinate constant and two equal.
    fn correlated_points(rows: usize) -> Vec<f64> {
        const MIX: [[f64; 3]; 12] = [
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [0.0, 2.0, -1.0],
            [-1.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [2.0, -2.0, 1.0],
            [0.0, 1.0, 1.0],
            [-2.0, 0.0, 1.0],
            [1.0, 1.0, 1.0],
            [0.0, -1.0, 2.0],
            [1.0, -1.0, 0.0],
            [0.0, 0.0, -2.0],
        ];
        lcg_points(rows, 3, 11)
            .chunks(3)
            .flat_map(|z| MIX.iter().map(move |a| a[0] * z[0] + a[1] * z[1] + a[2] * z[2] - 3.0))
            .collect()
    }

    #[test]
    fn grid_axes_follow_the_independent_directions() {
        let points = correlated_points(2000);
        let axes = choose_axes(&points, 12);
        // Three independent directions: three grid axes, never the duplicate pair 0/1 together,
        // never the constant coordinate 4; the sketch holds 8 distinct coordinates.
        assert_eq!(axes.grid.len(), 3, "{axes:?}");
        assert!(!(axes.grid.contains(&0) && axes.grid.contains(&1)), "{axes:?}");
        assert!(!axes.grid.contains(&4), "{axes:?}");
        assert_eq!(&axes.sketch[..3], &axes.grid[..]);
        let mut distinct = axes.sketch.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{axes:?}");
        // Constant points: no grid axis, a sketch all the same.
        let constant = vec![1.5; 12 * 100];
        let axes = choose_axes(&constant, 12);
        assert!(axes.grid.is_empty());
        assert_eq!(axes.sketch.len(), 8);
    }

    #[test]
    fn correlated_points_in_twelve_coordinates_give_the_sequential_net() {
        let points = correlated_points(4000);
        let deltas = [0.5, 1.0, 2.5];
        for threads in [1, 2] {
            let mut net = MultiNet::<f64>::new(&deltas, 12, true).expect("valid");
            for chunk in points.chunks(1500 * 12) {
                net.add(chunk, threads, &mut never()).expect("ok");
            }
            for (s, &delta) in deltas.iter().enumerate() {
                let (centres, assignment) = sequential_net(&points, 12, delta);
                assert!(
                    centres.len() > 10 && centres.len() < 4000,
                    "delta {delta}: {}",
                    centres.len()
                );
                assert_eq!(net.centres(s), &centres[..], "delta {delta}");
                assert_eq!(net.assignment(s).expect("kept"), &assignment[..]);
            }
        }
    }

    #[test]
    fn far_from_the_origin_and_tiny_scales_give_the_sequential_net() {
        // Points q quanta (q = 0 … 63) from a base, covered at scales of a few quanta: cell indices
        // around 2^32 (keys wrap to 0) and around 2^31 (keys wrap from i32::MAX to i32::MIN), with
        // ties at exactly δ between neighbouring cells across the wrap.
        let quantum = (-20f64).exp2();
        let cells_per_unit = 1.0 / (quantum * (1.0 + CELL_SLACK));
        for base in [4096.0, ((31f64).exp2() - 30.0) / cells_per_unit] {
            let base = (base / quantum).round() * quantum;
            let points: Vec<f64> = lcg_points(3000, 2, 5)
                .iter()
                .map(|v| base + v * 16.0 * quantum)
                .collect();
            let deltas = [quantum, 2.5 * quantum, 7.0 * quantum];
            let mut net = MultiNet::<f64>::new(&deltas, 2, true).expect("valid");
            net.add(&points, 2, &mut never()).expect("ok");
            assert_sequential(&net, &points, 2, &deltas, &format!("base {base}"));
        }
    }

    /// Everything a caller can see of the nets.
    fn state(net: &MultiNet<f64>) -> (u64, Vec<Vec<u64>>, Vec<Vec<i64>>) {
        let scales = 0..net.scales.len();
        (
            net.n_points(),
            scales.clone().map(|s| net.centres(s).to_vec()).collect(),
            scales.map(|s| net.assignment(s).expect("kept").to_vec()).collect(),
        )
    }

    #[test]
    fn a_failed_add_leaves_the_nets_as_they_were() {
        // Failures in the third block of a chunk (blocks of BLOCK points), after two blocks have
        // opened centres: a NaN, an interrupt, the memory limit. Each must leave the nets as they
        // were, cell lists included: the good points added afterwards give the sequential net.
        let dim = 3;
        let deltas = [0.25, 1.0];
        let points = lcg_points(1000 + 3 * BLOCK, dim, 7);
        let (head, tail) = points.split_at(1000 * dim);
        let fresh = |limit: usize| {
            let mut net = MultiNet::<f64>::new(&deltas, dim, true)
                .expect("valid")
                .with_memory_limit(limit);
            net.add(head, 2, &mut never()).expect("ok");
            net
        };
        let mut net = fresh(usize::MAX);
        let before = state(&net);

        let mut poisoned = tail.to_vec();
        poisoned[(2 * BLOCK + 5) * dim + 1] = f64::NAN;
        poisoned[(2 * BLOCK + 1500) * dim] = f64::INFINITY; // the error names the first bad row
        let error = net.add(&poisoned, 2, &mut never()).expect_err("NaN");
        assert!(error.to_string().contains(&format!("row {}", 2 * BLOCK + 5)), "{error}");
        assert_eq!(state(&net), before);

        // `add` asks Python every 50 ms; `add_in_pool` is what it runs, with the answer read between
        // blocks: here an interrupt before the third block.
        let blocks = std::sync::atomic::AtomicUsize::new(0);
        let third_block = || blocks.fetch_add(1, Ordering::Relaxed) == 2;
        let interrupted = pool(1).expect("pool").install(|| net.add_in_pool(tail, &third_block));
        assert!(matches!(interrupted, Err(Error::Interrupted)));
        assert_eq!(state(&net), before);

        let mut full = fresh(usize::MAX);
        full.add(&tail[..BLOCK * dim], 1, &mut never()).expect("ok");
        let mut limited = fresh(full.memory_bytes() + 1);
        assert!(matches!(
            limited.add(tail, 1, &mut never()),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(state(&limited), before);

        // The failures came after the tail had opened centres at the finer scale.
        assert!(full.centres(0).len() > before.1[0].len());
        for mut net in [net, limited.with_memory_limit(usize::MAX)] {
            net.add(tail, 2, &mut never()).expect("ok");
            assert_sequential(&net, &points, dim, &deltas, "after the failures");
        }
    }

    #[test]
    fn lists_moved_into_an_array_give_the_same_nets_and_roll_back() {
        // A quantised cube in three coordinates, each row repeated 16 times (dim 48): dense
        // enough that at δ = 0.5 the lists move from the map into an array part-way (`use_array`).
        let dim = 48;
        let points: Vec<f64> = lcg_points(12_000, 3, 9)
            .chunks(3)
            .flat_map(|row| row.repeat(16))
            .collect();
        let (head, tail) = points.split_at(8000 * dim);
        let deltas = [0.25, 0.5];
        let mut net = MultiNet::<f64>::new(&deltas, dim, true).expect("valid");
        for chunk in head.chunks(977 * dim) {
            net.add(chunk, 2, &mut never()).expect("ok");
        }
        assert!(
            net.scales.iter().any(|s| s.cells.uses_array()),
            "no scale moved its lists"
        );
        let before = state(&net);
        let mut poisoned = tail.to_vec();
        *poisoned.last_mut().expect("not empty") = f64::NAN;
        assert!(net.add(&poisoned, 2, &mut never()).is_err());
        assert_eq!(state(&net), before);
        net.add(tail, 1, &mut never()).expect("ok");
        assert_sequential(&net, &points, dim, &deltas, "lists in an array");
    }

    #[test]
    fn bad_scales_and_points_are_errors() {
        assert!(MultiNet::<f64>::new(&[], 2, false).is_err());
        assert!(MultiNet::<f64>::new(&[0.0], 2, false).is_err());
        assert!(MultiNet::<f64>::new(&[f64::NAN], 2, false).is_err());
        let mut net = MultiNet::<f64>::new(&[1.0], 2, false).expect("valid");
        assert!(net.add(&[0.0, f64::NAN], 1, &mut never()).is_err());
        assert!(net.add(&[0.0, 1.0, 2.0], 1, &mut never()).is_err());
    }

    #[test]
    fn box_count_counts_cells() {
        // cells of side 1 of 0.5, 0.7, 1.2, -0.1 (1-D): {0, 0, 1, -1} -> 3
        assert_eq!(
            box_count(&[0.5, 0.7, 1.2, -0.1], 1, &[1.0, 10.0], 1).expect("ok"),
            vec![3, 2]
        );
    }
}
