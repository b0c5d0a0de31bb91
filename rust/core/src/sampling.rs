//! Parameter sampling: θ uniform in the box `[−B, B)^P`, one independent stream per sample index.
//!
//! Row `s` depends only on `(seed, s)`: it is what makes any sub-range regenerable and every result
//! independent of thread count and chunking (streams are keyed to work units, never to threads).

use crate::error::{allocate, Error, Result};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use crate::spec::MoeSpec;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// Values that replace sampled coordinates: `(offset, values)` writes `θ[offset..offset+len]`.
pub type Pinned = Vec<(usize, Vec<f64>)>;

/// SplitMix64's finaliser: a bijection on u64 that scatters nearby inputs.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The generator of sample `index` under `seed`. The 256-bit state is the SplitMix64 sequence
/// started from a hash of `(seed, index)`, so distinct pairs get unrelated streams.
pub fn row_rng(seed: u64, index: u64) -> Xoshiro256PlusPlus {
    let mut state = mix64(seed ^ 0x6d6f_6563_6f76_6572).wrapping_add(mix64(index));
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        chunk.copy_from_slice(&mix64(state).to_le_bytes());
    }
    Xoshiro256PlusPlus::from_seed(bytes)
}

/// Fills `theta` with sample `index`: uniform coordinates in `[−bound, bound)`, then the pinned
/// blocks. Pinned coordinates still consume their draws, so pinning a block leaves every other
/// coordinate exactly as it was without the pin.
pub fn sample_row(seed: u64, index: u64, bound: f64, pinned: &Pinned, theta: &mut [f64]) {
    let mut rng = row_rng(seed, index);
    for value in theta.iter_mut() {
        // The top 53 bits as a uniform double in [0, 1): exact, and the same on every platform.
        let unit = (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        *value = bound * (2.0 * unit - 1.0);
    }
    for (offset, values) in pinned {
        theta[*offset..*offset + values.len()].copy_from_slice(values);
    }
}

/// Sample indices `start .. start + m` must all exist (they key each sample's random stream).
pub(crate) fn check_range(start: u64, m: usize) -> Result<()> {
    if start.checked_add(m as u64).is_none() {
        return Err(Error::invalid(
            "start",
            format!("start + m = {start} + {m} exceeds the 2^64 sample indices of a seed"),
        ));
    }
    Ok(())
}

pub(crate) fn check_pinned(spec: &MoeSpec, pinned: &Pinned) -> Result<()> {
    let total = spec.total_params();
    for (offset, values) in pinned {
        if offset.checked_add(values.len()).is_none_or(|end| end > total) {
            return Err(Error::invalid(
                "pinned",
                format!("block at offset {offset} runs past P = {total}"),
            ));
        }
    }
    Ok(())
}

/// Samples `start .. start + m` of `seed` as an `m × P` row-major matrix.
pub fn sample_params(
    spec: &MoeSpec,
    seed: u64,
    start: u64,
    m: usize,
    pinned: &Pinned,
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<Vec<f64>> {
    check_pinned(spec, pinned)?;
    check_range(start, m)?;
    let p = spec.total_params();
    let mut params: Vec<f64> = allocate("m", &[m, p])?;
    if m == 0 || p == 0 {
        return Ok(params);
    }
    let pool = pool(n_threads)?;
    run_chunked(&pool, m, chunk_len(4 * p, n_threads), interrupt, |rows| {
        params[rows.start * p..rows.end * p]
            .par_chunks_mut(p)
            .enumerate()
            .for_each(|(i, theta)| sample_row(seed, start + (rows.start + i) as u64, spec.param_bound, pinned, theta));
    })?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_stay_in_the_box_and_look_uniform() {
        let mut theta = vec![0.0; 100_000];
        sample_row(7, 3, 2.5, &Vec::new(), &mut theta);
        assert!(theta.iter().all(|&v| (-2.5..2.5).contains(&v)));
        let mean = theta.iter().sum::<f64>() / theta.len() as f64;
        // Uniform on [−2.5, 2.5): sd 2.5/√3 ≈ 1.44, so the mean of 10^5 is within 0.02 at 4.4σ.
        assert!(mean.abs() < 0.02, "mean {mean}");
        let below = theta.iter().filter(|&&v| v < 0.0).count() as f64 / theta.len() as f64;
        assert!((below - 0.5).abs() < 0.01, "fraction below 0: {below}");
    }

    #[test]
    fn rows_depend_on_seed_and_index_only() {
        let draw = |seed, index| {
            let mut theta = vec![0.0; 8];
            sample_row(seed, index, 1.0, &Vec::new(), &mut theta);
            theta
        };
        assert_eq!(draw(1, 5), draw(1, 5));
        assert_ne!(draw(1, 5), draw(1, 6));
        assert_ne!(draw(1, 5), draw(2, 5));
    }

    #[test]
    fn pinning_overwrites_only_its_block() {
        let mut free = vec![0.0; 10];
        let mut pinned = vec![0.0; 10];
        sample_row(3, 9, 1.0, &Vec::new(), &mut free);
        sample_row(3, 9, 1.0, &vec![(4, vec![7.0, 8.0])], &mut pinned);
        assert_eq!(&pinned[4..6], &[7.0, 8.0]);
        assert_eq!(&pinned[..4], &free[..4]);
        assert_eq!(&pinned[6..], &free[6..]);
    }
}
