//! Parameter sampling: θ in the box `[−B, B]^P` from a named distribution, one independent stream
//! per sample index.
//!
//! Row `s` depends only on `(seed, s)`: it is what makes any sub-range regenerable and every result
//! independent of thread count and chunking (streams are keyed to work units, never to threads).
//!
//! Any θ in the box is a member of the class, so every distribution gives valid nets (§7); they
//! differ in how fast the nets approach the class. Uniform θ is bell-shaped after the forward pass
//! (sums and products of coordinates), so distributions with mass near the faces reach the image's
//! extremes far sooner.

use crate::error::{allocate, Error, Result};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use crate::spec::MoeSpec;
use rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

/// Values that replace sampled coordinates: `(offset, values)` writes `θ[offset..offset+len]`.
pub type Pinned = Vec<(usize, Vec<f64>)>;

/// How one sample's coordinates are drawn. Every sampler consumes exactly one draw of the row's
/// stream per coordinate, so pinning a block never moves the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampler {
    /// Each coordinate uniform in `[−B, B)`.
    Uniform,
    /// Each coordinate `−B cos(πu)`, u uniform: the arcsine law, density `1/(π√(B² − x²))`,
    /// half its mass within `0.29 B` of a face.
    Arcsine,
    /// Per sample a face rate ρ uniform in [0, 1); each coordinate sits on a face `±B` (either
    /// sign) with probability ρ and is uniform otherwise: from near-uniform rows to corners.
    Faces,
    /// Each sample is drawn by one of the three above, chosen by a hash of `(seed, index)`:
    /// uniform 1/6, arcsine 1/6, faces 2/3. A sample drawn uniformly equals the `Uniform` sample
    /// of the same index.
    Mixture,
}

impl Sampler {
    pub const NAMES: [&'static str; 4] = ["uniform", "arcsine", "faces", "mixture"];

    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "uniform" => Ok(Sampler::Uniform),
            "arcsine" => Ok(Sampler::Arcsine),
            "faces" => Ok(Sampler::Faces),
            "mixture" => Ok(Sampler::Mixture),
            other => Err(Error::invalid(
                "sampler",
                format!("expected one of {:?}, got {other:?}", Sampler::NAMES),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Sampler::Uniform => "uniform",
            Sampler::Arcsine => "arcsine",
            Sampler::Faces => "faces",
            Sampler::Mixture => "mixture",
        }
    }

    /// The plain sampler that draws sample `index` (itself unless this is the mixture).
    pub fn component(self, seed: u64, index: u64) -> Sampler {
        match self {
            Sampler::Mixture => match mix64(keyed(seed, index, 0x6d69_7874)) % 6 {
                0 => Sampler::Uniform,
                1 => Sampler::Arcsine,
                _ => Sampler::Faces,
            },
            plain => plain,
        }
    }
}

/// A hash of `(seed, index)` for per-sample choices made outside the row's stream.
fn keyed(seed: u64, index: u64, salt: u64) -> u64 {
    mix64(seed ^ salt).wrapping_add(mix64(index ^ salt.rotate_left(32)))
}

/// The top 53 bits as a uniform double in [0, 1): exact, and the same on every platform.
fn unit(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

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

/// Fills `theta` with sample `index` drawn by `sampler` in `[−bound, bound]`, then the pinned
/// blocks. Pinned coordinates still consume their draws, so pinning a block leaves every other
/// coordinate exactly as it was without the pin.
pub fn sample_row(seed: u64, index: u64, bound: f64, sampler: Sampler, pinned: &Pinned, theta: &mut [f64]) {
    let mut rng = row_rng(seed, index);
    match sampler.component(seed, index) {
        Sampler::Uniform | Sampler::Mixture => {
            for value in theta.iter_mut() {
                *value = bound * (2.0 * unit(rng.next_u64()) - 1.0);
            }
        }
        Sampler::Arcsine => {
            for value in theta.iter_mut() {
                *value = -bound * (std::f64::consts::PI * unit(rng.next_u64())).cos();
            }
        }
        Sampler::Faces => {
            let rate = unit(keyed(seed, index, 0x6661_6365));
            for value in theta.iter_mut() {
                let u = unit(rng.next_u64());
                *value = if u < rate {
                    if u < 0.5 * rate {
                        -bound
                    } else {
                        bound
                    }
                } else {
                    bound * (2.0 * (u - rate) / (1.0 - rate) - 1.0)
                };
            }
        }
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
#[allow(clippy::too_many_arguments)]
pub fn sample_params(
    spec: &MoeSpec,
    seed: u64,
    start: u64,
    m: usize,
    sampler: Sampler,
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
            .for_each(|(i, theta)| {
                sample_row(
                    seed,
                    start + (rows.start + i) as u64,
                    spec.param_bound,
                    sampler,
                    pinned,
                    theta,
                )
            });
    })?;
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_stay_in_the_box_and_look_uniform() {
        let mut theta = vec![0.0; 100_000];
        sample_row(7, 3, 2.5, Sampler::Uniform, &Vec::new(), &mut theta);
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
            sample_row(seed, index, 1.0, Sampler::Uniform, &Vec::new(), &mut theta);
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
        for sampler in [Sampler::Uniform, Sampler::Arcsine, Sampler::Faces, Sampler::Mixture] {
            sample_row(3, 9, 1.0, sampler, &Vec::new(), &mut free);
            sample_row(3, 9, 1.0, sampler, &vec![(4, vec![7.0, 8.0])], &mut pinned);
            assert_eq!(&pinned[4..6], &[7.0, 8.0]);
            assert_eq!(&pinned[..4], &free[..4]);
            assert_eq!(&pinned[6..], &free[6..]);
        }
    }

    /// The laws the samplers are documented to follow, checked on their moments and face mass.
    #[test]
    fn samplers_follow_their_laws() {
        let draw = |sampler, index| {
            let mut theta = vec![0.0; 100_000];
            sample_row(5, index, 2.0, sampler, &Vec::new(), &mut theta);
            theta
        };
        // Arcsine on [−2, 2]: E x² = B²/2 = 2 (uniform: B²/3 = 4/3); P(|x| > B cos(π/4)) = 1/2.
        let arcsine = draw(Sampler::Arcsine, 0);
        assert!(arcsine.iter().all(|v| v.abs() <= 2.0));
        let second = arcsine.iter().map(|v| v * v).sum::<f64>() / 1e5;
        assert!((second - 2.0).abs() < 0.02, "E x² = {second}");
        let outer = arcsine
            .iter()
            .filter(|v| v.abs() > 2.0 * std::f64::consts::FRAC_1_SQRT_2)
            .count();
        assert!((outer as f64 / 1e5 - 0.5).abs() < 0.01, "outer fraction {outer}");
        // Faces: a fraction ρ of the coordinates exactly on a face, ρ the row's own rate.
        for index in 0..20 {
            let row = draw(Sampler::Faces, index);
            let rate = unit(keyed(5, index, 0x6661_6365));
            let on_face = row.iter().filter(|v| v.abs() == 2.0).count() as f64 / 1e5;
            assert!((on_face - rate).abs() < 0.01, "rate {rate}, on faces {on_face}");
            assert!(row.iter().all(|v| v.abs() <= 2.0));
        }
        // Mixture: the components in proportions 1 : 1 : 4, and the uniform ones unchanged.
        let mut counts = [0usize; 3];
        for index in 0..3000 {
            let component = Sampler::Mixture.component(5, index);
            counts[match component {
                Sampler::Uniform => 0,
                Sampler::Arcsine => 1,
                _ => 2,
            }] += 1;
        }
        assert!(
            (420..580).contains(&counts[0]) && (420..580).contains(&counts[1]),
            "{counts:?}"
        );
        assert!((1900..2100).contains(&counts[2]), "{counts:?}");
        let index = (0..)
            .find(|&i| Sampler::Mixture.component(5, i) == Sampler::Uniform)
            .expect("some sample is uniform");
        assert_eq!(draw(Sampler::Mixture, index), draw(Sampler::Uniform, index));
    }

    #[test]
    fn sampler_names_round_trip() {
        for name in Sampler::NAMES {
            assert_eq!(Sampler::from_name(name).expect("a known name").name(), name);
        }
        assert!(Sampler::from_name("gauss").is_err());
    }
}
