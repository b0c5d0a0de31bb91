//! Exact greedy ℓ∞ nets at many scales (docs/definitions.md §3), streamed in chunks.
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
//!   independent coordinates of a sample (`axes.rs`). `cells.rs` keeps the lists;
//! - a sketch: the same implication on 8 telling coordinates per centre, in f32 (with a bound that
//!   allows for the rounding of f64 input, `Real::sketch_bound`), kept contiguous and small enough
//!   to stay in cache, rejects most candidates before their full row is read;
//! - blocks: for a block of points, the earliest covering centre among those opened *before* the
//!   block is found in parallel; the points left uncovered are then resolved in order against the
//!   centres opened inside the block. Old centres precede new ones, so this is the sequential net.
//!
//! The candidate tests (sketch and full row) run in code compiled for the CPU's widest vector
//! instructions, AVX2 where present, chosen at run time (`scale.rs`).
//!
//! Scales are independent, so they run in parallel with each other as well.
//!
//! The pieces, one file each:
//! - `sketch.rs`: the exact tests of a candidate (`within`, the f32 sketch and its proof);
//! - `axes.rs`: which coordinates the grid and the sketches use;
//! - `cells.rs`: each grid cell's list of candidate centres, in a hash map or an array;
//! - `scale.rs`: the net at one scale, block by block, with the instruction-set dispatch;
//! - `stream.rs`: [`MultiNet`], every scale over a stream of chunks, with rollback on failure;
//! - `grouped.rs`: [`GroupedNets`], a net per routing pattern, the union bound's measurement.

mod axes;
mod cells;
mod grouped;
mod scale;
mod sketch;
mod stream;

pub use grouped::GroupedNets;

use crate::error::{Error, Result};

/// Every scale finite and > 0 (the nets' and the grouped nets' common check).
fn check_deltas(deltas: &[f64]) -> Result<()> {
    match deltas.iter().find(|d| !(d.is_finite() && **d > 0.0)) {
        Some(bad) => Err(Error::invalid(
            "deltas",
            format!("every scale must be finite and > 0, got {bad}"),
        )),
        None => Ok(()),
    }
}
pub use sketch::{within, Real};
pub use stream::MultiNet;

/// Points for the tests of every piece: quantised, so that exact ties at δ occur.
#[cfg(test)]
mod tests {
    pub(super) fn lcg_points(m: usize, dim: usize, seed: u64) -> Vec<f64> {
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

    /// binary, so ties at δ occur), some negative, one coordinate constant and two equal.
    pub(super) fn correlated_points(rows: usize) -> Vec<f64> {
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
}
