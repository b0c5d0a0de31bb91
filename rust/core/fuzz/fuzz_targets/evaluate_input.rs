//! Spec validation and evaluation input checks on arbitrary options, parameter and input
//! buffers: every call returns an error or a result of the promised shape, never panics.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use moecover_core::evaluate::{evaluate, evaluate_sampled};
use moecover_core::parallel::never;
use moecover_core::sampling::Sampler;
use moecover_core::{MoeSpec, SpecOptions};

const NAMES: [&str; 13] = [
    "mlp",
    "linear",
    "constant",
    "renormalized_softmax",
    "full_softmax",
    "uniform",
    "sequential",
    "parallel",
    "scalar",
    "token0",
    "all",
    "",
    "bogus",
];

fn size(u: &mut Unstructured) -> Result<i64> {
    // mostly small, sometimes anything (negative, zero, enormous)
    if u.ratio(7u8, 8u8)? {
        Ok(i64::from(u.int_in_range(0u8..=5)?))
    } else {
        u.arbitrary()
    }
}

fn check(u: &mut Unstructured) -> Result<()> {
    let name = |u: &mut Unstructured| -> Result<&'static str> { u.choose(&NAMES).copied() };
    let options = SpecOptions {
        layers: size(u)?,
        experts: size(u)?,
        top_k: size(u)?,
        d_model: size(u)?,
        seq_len: size(u)?,
        heads: size(u)?,
        expert: name(u)?,
        expert_hidden: size(u)?,
        gate: name(u)?,
        block: name(u)?,
        readout: name(u)?,
        param_bound: u.arbitrary()?,
    };
    let Ok(spec) = MoeSpec::new(&options) else {
        return Ok(());
    };
    assert!(spec.top_k <= spec.experts && spec.top_k >= 1);
    if spec.total_params() > 4096 {
        return Ok(()); // valid but too slow to evaluate under the fuzzer
    }
    let params: Vec<f64> = (0..u.int_in_range(0..=3 * spec.total_params() + 1)?)
        .map(|_| u.arbitrary())
        .collect::<Result<_>>()?;
    let inputs: Vec<f64> = (0..u.int_in_range(0..=3 * spec.input_len() + 1)?)
        .map(|_| u.arbitrary())
        .collect::<Result<_>>()?;
    let shapes_ok = params.len().is_multiple_of(spec.total_params()) && inputs.len().is_multiple_of(spec.input_len());
    match evaluate(&spec, &params, &inputs, 1, &mut never()) {
        Ok(out) => {
            assert!(shapes_ok);
            let (m, n) = (params.len() / spec.total_params(), inputs.len() / spec.input_len());
            assert_eq!(out.values.len(), m * n * spec.output_dim());
            assert_eq!(out.routes.len(), m * n * spec.routes_per_input());
            assert!(out.routes.iter().all(|&r| u64::from(r) < spec.patterns_per_token()));
        }
        Err(_) => assert!(!shapes_ok || inputs.iter().chain(&params).any(|v| !v.is_finite())),
    }
    let m = u.int_in_range(0usize..=3)?;
    if let Ok(out) = evaluate_sampled(
        &spec,
        &inputs,
        u.arbitrary()?,
        u.arbitrary()?,
        m,
        Sampler::Mixture,
        &Vec::new(),
        2,
        &mut never(),
    ) {
        assert_eq!(
            out.values.len(),
            m * (inputs.len() / spec.input_len()) * spec.output_dim()
        );
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = check(&mut Unstructured::new(data));
});
