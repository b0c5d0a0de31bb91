//! Batched, multithreaded evaluation of many parameter samples on one set of inputs.
//!
//! Work is split over samples: each sample's outputs occupy their own rows, each sample's θ comes
//! from its own keyed stream, so the result is the same bits for any thread count or chunking.

use crate::error::{allocate, Error, Result};
use crate::forward::{flops_per_input, forward_batch, prepare, Workspace};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use crate::sampling::{check_pinned, check_range, sample_row, Pinned, Sampler};
use crate::spec::MoeSpec;
use rayon::prelude::*;

/// Values `(m, n, output_dim)` and routes `(m, n, layers, seq_len)`, flat row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub values: Vec<f64>,
    pub routes: Vec<u32>,
}

/// Where a sample's θ comes from.
enum Source<'a> {
    /// Rows of a given `(m, P)` matrix.
    Given(&'a [f64]),
    /// Drawn from `(seed, start + s)`, with pinned blocks.
    Sampled {
        seed: u64,
        start: u64,
        sampler: Sampler,
        pinned: &'a Pinned,
    },
}

fn check_inputs(spec: &MoeSpec, inputs: &[f64]) -> Result<usize> {
    let per = spec.input_len();
    if !inputs.len().is_multiple_of(per) {
        return Err(Error::invalid(
            "inputs",
            format!("length {} is not a multiple of seq_len * d_model = {per}", inputs.len()),
        ));
    }
    Ok(inputs.len() / per)
}

fn run(
    spec: &MoeSpec,
    inputs: &[f64],
    m: usize,
    source: Source,
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<Evaluation> {
    let n = check_inputs(spec, inputs)?;
    let (o, r, p) = (spec.output_dim(), spec.routes_per_input(), spec.total_params());
    let mut values: Vec<f64> = allocate("m", &[m, n, o])?;
    let mut routes: Vec<u32> = allocate("m", &[m, n, r])?;
    if m == 0 || n == 0 {
        return Ok(Evaluation { values, routes });
    }
    let pool = pool(n_threads)?;
    let chunk = chunk_len(n * flops_per_input(spec) + p, n_threads);
    let source = &source;
    run_chunked(&pool, m, chunk, interrupt, |samples| {
        let values = &mut values[samples.start * n * o..samples.end * n * o];
        let routes = &mut routes[samples.start * n * r..samples.end * n * r];
        values
            .par_chunks_mut(n * o)
            .zip(routes.par_chunks_mut(n * r))
            .enumerate()
            .for_each_init(
                || (Workspace::new(spec), vec![0.0; p]),
                |(ws, theta), (i, (sample_values, sample_routes))| {
                    let s = samples.start + i;
                    let theta: &[f64] = match source {
                        Source::Given(params) => &params[s * p..(s + 1) * p],
                        Source::Sampled {
                            seed,
                            start,
                            sampler,
                            pinned,
                        } => {
                            sample_row(*seed, start + s as u64, spec.param_bound, *sampler, pinned, theta);
                            theta
                        }
                    };
                    prepare(spec, theta, ws);
                    forward_batch(spec, theta, inputs, ws, sample_values, sample_routes);
                },
            );
    })?;
    Ok(Evaluation { values, routes })
}

/// Evaluates every row of `params` (`m × P`) on every input (`n × seq_len × d_model`).
pub fn evaluate(
    spec: &MoeSpec,
    params: &[f64],
    inputs: &[f64],
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<Evaluation> {
    let p = spec.total_params();
    if !params.len().is_multiple_of(p) {
        return Err(Error::invalid(
            "params",
            format!("length {} is not a multiple of P = {p}", params.len()),
        ));
    }
    run(
        spec,
        inputs,
        params.len() / p,
        Source::Given(params),
        n_threads,
        interrupt,
    )
}

/// Evaluates samples `start .. start + m` of `seed` without materialising their parameters.
/// Equal, bit for bit, to `evaluate(spec, sample_params(spec, seed, start, m, sampler, pinned), inputs)`.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_sampled(
    spec: &MoeSpec,
    inputs: &[f64],
    seed: u64,
    start: u64,
    m: usize,
    sampler: Sampler,
    pinned: &Pinned,
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<Evaluation> {
    check_pinned(spec, pinned)?;
    check_range(start, m)?;
    run(
        spec,
        inputs,
        m,
        Source::Sampled {
            seed,
            start,
            sampler,
            pinned,
        },
        n_threads,
        interrupt,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::never;
    use crate::sampling::sample_params;
    use crate::spec::SpecOptions;

    fn spec() -> MoeSpec {
        MoeSpec::new(&SpecOptions {
            layers: 2,
            experts: 5,
            top_k: 2,
            d_model: 4,
            seq_len: 3,
            heads: 2,
            ..Default::default()
        })
        .expect("valid")
    }

    fn inputs(n: usize, spec: &MoeSpec) -> Vec<f64> {
        (0..n * spec.input_len())
            .map(|i| ((i * 37 % 101) as f64 / 50.0) - 1.0)
            .collect()
    }

    #[test]
    fn sampled_equals_materialised_for_any_threads_and_start() {
        let spec = spec();
        let x = inputs(7, &spec);
        let pinned = vec![(spec.offsets(0).router_bias, vec![0.5; 5])];
        let params = sample_params(&spec, 11, 0, 300, Sampler::Mixture, &pinned, 1, &mut never()).expect("ok");
        let reference = evaluate(&spec, &params, &x, 1, &mut never()).expect("ok");
        for threads in [1, 2, 3] {
            let sampled =
                evaluate_sampled(&spec, &x, 11, 0, 300, Sampler::Mixture, &pinned, threads, &mut never()).expect("ok");
            assert_eq!(sampled, reference, "threads = {threads}");
        }
        let tail = evaluate_sampled(&spec, &x, 11, 200, 100, Sampler::Mixture, &pinned, 2, &mut never()).expect("ok");
        let (o, r) = (spec.output_dim() * 7, spec.routes_per_input() * 7);
        assert_eq!(tail.values, reference.values[200 * o..]);
        assert_eq!(tail.routes, reference.routes[200 * r..]);
    }

    #[test]
    fn interrupt_stops_before_the_first_chunk() {
        let spec = spec();
        let x = inputs(3, &spec);
        let result = evaluate_sampled(&spec, &x, 1, 0, 10, Sampler::Mixture, &Vec::new(), 1, &mut || true);
        assert_eq!(result, Err(Error::Interrupted));
    }

    #[test]
    fn mismatched_lengths_are_errors_not_panics() {
        let spec = spec();
        let x = inputs(2, &spec);
        assert!(matches!(
            evaluate(&spec, &[0.0; 3], &x, 1, &mut never()),
            Err(Error::InvalidArgument { argument: "params", .. })
        ));
        assert!(matches!(
            evaluate(&spec, &[], &x[..5], 1, &mut never()),
            Err(Error::InvalidArgument { argument: "inputs", .. })
        ));
        let pinned = vec![(spec.total_params() - 1, vec![0.0; 2])];
        assert!(matches!(
            sample_params(&spec, 0, 0, 1, Sampler::Mixture, &pinned, 1, &mut never()),
            Err(Error::InvalidArgument { argument: "pinned", .. })
        ));
        // found by the evaluate_input fuzz target: start + m past 2^64 overflowed a sample index
        for m in [2, 1 << 20] {
            assert!(matches!(
                evaluate_sampled(
                    &spec,
                    &x,
                    0,
                    u64::MAX,
                    m,
                    Sampler::Mixture,
                    &Vec::new(),
                    2,
                    &mut never()
                ),
                Err(Error::InvalidArgument { argument: "start", .. })
            ));
            assert!(matches!(
                sample_params(
                    &spec,
                    0,
                    u64::MAX - 1,
                    m,
                    Sampler::Mixture,
                    &Vec::new(),
                    1,
                    &mut never()
                ),
                Err(Error::InvalidArgument { argument: "start", .. })
            ));
        }
        assert!(evaluate_sampled(
            &spec,
            &x,
            0,
            u64::MAX - 1,
            1,
            Sampler::Mixture,
            &Vec::new(),
            1,
            &mut never()
        )
        .is_ok());
        // sizes that fit usize but no machine's memory: an error naming m, not an abort
        assert!(matches!(
            sample_params(&spec, 0, 0, 1 << 50, Sampler::Mixture, &Vec::new(), 1, &mut never()),
            Err(Error::TooLarge { argument: "m", .. })
        ));
        assert!(matches!(
            evaluate_sampled(&spec, &x, 0, 0, 1 << 58, Sampler::Mixture, &Vec::new(), 1, &mut never()),
            Err(Error::TooLarge { argument: "m", .. } | Error::InvalidArgument { argument: "m", .. })
        ));
    }
}
