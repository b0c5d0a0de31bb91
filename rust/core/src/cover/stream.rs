//! `MultiNet`: greedy nets at many scales over a stream of points, fed in chunks, each chunk
//! scanned in blocks inside one entry of the thread pool, and rolled back whole if it fails.

use super::axes::{choose_axes, Axes};
use super::cells::Cells;
use super::scale::{ScaleNet, CELL_SLACK};
use super::sketch::{first_non_finite, Real};
use crate::error::{human_bytes, Error, Result};
use crate::parallel::{pool, run_watched, Interrupt};
use rayon::prelude::*;
use std::sync::atomic::Ordering;

/// Points per block: large enough to share the work among threads, small enough that the
/// in-block resolution (sequential) stays short and Ctrl-C is answered quickly.
const BLOCK: usize = 2048;

/// Greedy nets at several scales over a stream of points of fixed dimension.
pub struct MultiNet<T: Real> {
    dim: usize,
    scales: Vec<ScaleNet<T>>,
    axes: Option<Axes>,
    n_points: u64,
    memory_limit: usize,
    grid_axes: usize,
}

/// The state of a `MultiNet` before an `add`, to return to if the `add` fails.
struct Mark {
    n_points: u64,
    axes_chosen: bool,
    net_sizes: Vec<usize>,
}

impl<T: Real> MultiNet<T> {
    /// Nets at `deltas` (any order; each finite and > 0) for points of dimension `dim`.
    /// `keep_assignment` records each point's centre (memory O(points)); otherwise memory is
    /// O(net size × dim).
    pub fn new(deltas: &[f64], dim: usize, keep_assignment: bool) -> Result<Self> {
        if deltas.is_empty() {
            return Err(Error::invalid("deltas", "needs at least one scale"));
        }
        super::check_deltas(deltas)?;
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
                shared: Vec::new(),
                shared_since_mark: Vec::new(),
            })
            .collect();
        Ok(MultiNet {
            dim,
            scales,
            axes: None,
            n_points: 0,
            memory_limit: usize::MAX,
            grid_axes: usize::MAX,
        })
    }

    /// Hashes the grid on at most `axes` coordinates (of the 3 it would choose at most). Each
    /// centre is listed under 3^axes cells: fewer axes hold less memory per centre and compare
    /// more candidates per query, the better trade for many small nets (`GroupedNets`).
    pub(super) fn with_grid_axes(mut self, axes: usize) -> Self {
        self.grid_axes = axes;
        self
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
        let before = self.mark();
        let scanned = run_watched(&pool, interrupt, |stop| {
            self.scan(points, &|| stop.load(Ordering::Relaxed))
        });
        self.rolled_back_on_error(before, scanned)
    }

    /// `add` inside the caller's thread pool, asking `stopped` between blocks: for nets that are
    /// one part of a larger parallel scan (`GroupedNets`), and for tests that interrupt at a
    /// chosen block.
    pub(super) fn add_in_current_pool(&mut self, points: &[T], stopped: &(dyn Fn() -> bool + Sync)) -> Result<()> {
        let before = self.mark();
        let scanned = self.scan(points, stopped);
        self.rolled_back_on_error(before, scanned)
    }

    /// `result`, after returning the nets to `before` if it is an error (a NaN, the memory limit,
    /// an interrupt, however late).
    fn rolled_back_on_error(&mut self, before: Mark, result: Result<()>) -> Result<()> {
        if result.is_err() {
            self.roll_back(before);
        }
        result
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
                let mut axes = choose_axes(block, dim);
                axes.grid.truncate(self.grid_axes);
                self.axes = Some(axes);
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

    /// What `roll_back` restores (and the start of each scale's log of newly shared centres).
    fn mark(&mut self) -> Mark {
        for scale in &mut self.scales {
            scale.shared_since_mark.clear();
        }
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

    /// Per scale: the size the net had after the first `points` points (the greedy scan is
    /// sequential, so it is the number of centres opened before then). With `points` at m/2,
    /// m/4, … it gives the rarefaction curve of one stream at no extra cost.
    pub fn net_sizes_at(&self, points: u64) -> Vec<usize> {
        self.scales
            .iter()
            .map(|s| s.opened_at.partition_point(|&i| i < points))
            .collect()
    }

    /// Per scale: the centres that no other point has joined (Good–Turing's f1, whose ratio to
    /// the points scanned estimates the mass the sampler has not yet reached).
    pub fn singletons(&self) -> Vec<usize> {
        self.scales.iter().map(ScaleNet::singletons).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cover::tests::{correlated_points, lcg_points};
    use crate::parallel::never;

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
            let mut members = vec![0usize; centres.len()];
            for &c in &assignment {
                members[c as usize] += 1;
            }
            let alone = members.iter().filter(|&&k| k == 1).count();
            assert_eq!(net.singletons()[s], alone, "{context} delta {delta}: singletons");
            // the net after the first j points is the sequential net of those points
            let m = assignment.len();
            for j in [1, m / 2] {
                let (first, _) = sequential_net(&points[..j * dim], dim, delta);
                assert_eq!(
                    net.net_sizes_at(j as u64)[s],
                    first.len(),
                    "{context} delta {delta}: at {j}"
                );
            }
        }
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

    /// Points scanned, centres and assignment per scale, singletons per scale.
    type State = (u64, Vec<Vec<u64>>, Vec<Vec<i64>>, Vec<usize>);

    /// Everything a caller can see of the nets.
    fn state(net: &MultiNet<f64>) -> State {
        let scales = 0..net.scales.len();
        (
            net.n_points(),
            scales.clone().map(|s| net.centres(s).to_vec()).collect(),
            scales.map(|s| net.assignment(s).expect("kept").to_vec()).collect(),
            net.singletons(),
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
        let interrupted = pool(1)
            .expect("pool")
            .install(|| net.add_in_current_pool(tail, &third_block));
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
}
