//! Property tests of the core (proptest): each property is checked against a definition written
//! out here, not against the core's own output.

use moecover_core::cover::MultiNet;
use moecover_core::evaluate::{evaluate, evaluate_sampled};
use moecover_core::parallel::never;
use moecover_core::patterns::count_patterns;
use moecover_core::routing::{binomial, rank, subsets, unrank};
use moecover_core::sampling::{sample_params, Sampler};
use moecover_core::{MoeSpec, SpecOptions};
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn chebyshev(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max)
}

/// definitions §3, literally: scan the points in order; a point farther than δ from every centre
/// so far becomes a centre.
fn sequential_net(points: &[f64], dim: usize, delta: f64) -> Vec<u64> {
    let mut centres: Vec<u64> = Vec::new();
    for (i, p) in points.chunks(dim).enumerate() {
        let covered = centres
            .iter()
            .any(|&c| chebyshev(p, &points[c as usize * dim..(c as usize + 1) * dim]) <= delta);
        if !covered {
            centres.push(i as u64);
        }
    }
    centres
}

/// Points on a coarse lattice (many exact ties at distance δ) or continuous, 1 to 6 coordinates;
/// a quarter of the sets span more than one of the engine's 2048-point blocks (lattice points only,
/// so that the quadratic reference stays fast).
fn point_sets() -> impl Strategy<Value = (usize, Vec<f64>)> {
    let small = (1usize..7, 0usize..300, any::<bool>());
    let large = (1usize..3, 2040usize..4200, Just(true));
    prop_oneof![3 => small, 1 => large].prop_flat_map(|(dim, rows, lattice)| {
        let value = if lattice {
            (-8i32..8).prop_map(|v| f64::from(v) * 0.25).boxed()
        } else {
            (-3.0f64..3.0).boxed()
        };
        (Just(dim), proptest::collection::vec(value, rows * dim))
    })
}

fn small_spec() -> impl Strategy<Value = MoeSpec> {
    (1i64..3, 1i64..5, 1i64..4, 1i64..3, 0usize..3, 0usize..4).prop_filter_map(
        "top_k <= experts",
        |(layers, experts, top_k, seq_len, heads, expert)| {
            let expert = ["mlp", "linear", "constant", "mlp"][expert];
            MoeSpec::new(&SpecOptions {
                layers,
                experts,
                top_k,
                d_model: 2,
                seq_len,
                heads: heads as i64,
                expert,
                expert_hidden: 3,
                ..SpecOptions::default()
            })
            .ok()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn rank_and_unrank_are_inverse_and_colex_ordered(experts in 1u32..24, k in 1usize..6) {
        prop_assume!(k as u32 <= experts);
        let all = subsets(experts, k).expect("valid sizes");
        prop_assert_eq!(all.len() as u64, binomial(u64::from(experts), k as u64) * k as u64);
        let mut out = vec![0u32; k];
        let mut previous: Option<Vec<u32>> = None;
        for (r, subset) in all.chunks_exact(k).enumerate() {
            prop_assert!(subset.windows(2).all(|w| w[0] < w[1]) && subset[k - 1] < experts);
            prop_assert_eq!(rank(subset).expect("increasing"), r as u64);
            unrank(r as u64, &mut out).expect("a rank below C(M, k)");
            prop_assert_eq!(&out[..], subset);
            if let Some(before) = &previous {
                // colex: compare from the largest element down
                let later = subset.iter().rev().cmp(before.iter().rev()) == std::cmp::Ordering::Greater;
                prop_assert!(later);
            }
            previous = Some(subset.to_vec());
        }
    }

    #[test]
    fn nets_equal_the_sequential_definition_at_every_scale(
        (dim, points) in point_sets(),
        deltas in proptest::collection::vec(prop_oneof![Just(0.25), Just(0.5), 0.01f64..4.0], 1..4),
        split in 0usize..4200,
        threads in 1usize..3,
    ) {
        let rows = points.len() / dim;
        let mut whole = MultiNet::<f64>::new(&deltas, dim, true).expect("valid");
        whole.add(&points, threads, &mut never()).expect("finite");
        // the same points in two chunks, other thread count: the same nets
        let mut chunked = MultiNet::<f64>::new(&deltas, dim, false).expect("valid");
        let cut = split.min(rows) * dim;
        chunked.add(&points[..cut], 3 - threads, &mut never()).expect("finite");
        chunked.add(&points[cut..], 3 - threads, &mut never()).expect("finite");
        for (s, &delta) in deltas.iter().enumerate() {
            let expected = sequential_net(&points, dim, delta);
            prop_assert_eq!(whole.centres(s), &expected[..]);
            prop_assert_eq!(chunked.centres(s), &expected[..]);
            let centre = |c: u64| &points[c as usize * dim..(c as usize + 1) * dim];
            // packing: centres are pairwise farther than δ
            for (a, &ca) in expected.iter().enumerate() {
                for &cb in &expected[a + 1..] {
                    prop_assert!(chebyshev(centre(ca), centre(cb)) > delta);
                }
            }
            // cover: each point's assigned centre (an index into the net) is within δ and is the
            // earliest such centre
            let assignment = whole.assignment(s).expect("kept");
            prop_assert_eq!(assignment.len(), rows);
            for (i, p) in points.chunks(dim).enumerate() {
                let c = expected[assignment[i] as usize];
                prop_assert!(chebyshev(p, centre(c)) <= delta);
                let earliest = expected.iter().find(|&&e| chebyshev(p, centre(e)) <= delta);
                prop_assert_eq!(earliest, Some(&c));
            }
        }
    }

    #[test]
    fn pattern_counts_equal_distinct_rows_and_prefixes(
        m in 0usize..200, n in 1usize..6, width in 1usize..7, alphabet in 1u32..4,
        seed in any::<u64>(), threads in 1usize..3,
    ) {
        // a small alphabet makes repeated patterns common; a cheap LCG keeps the case reproducible
        let mut state = seed | 1;
        let routes: Vec<u32> = (0..m * n * width)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) as u32) % alphabet
            })
            .collect();
        let counts = count_patterns(&routes, m, n, width, threads, &mut never()).expect("valid");
        let token = |s: usize, i: usize| &routes[(s * n + i) * width..(s * n + i + 1) * width];
        for i in 0..n {
            let distinct: HashSet<&[u32]> = (0..m).map(|s| token(s, i)).collect();
            prop_assert_eq!(counts.per_input[i], distinct.len() as u64);
            let prefixes: HashSet<Vec<&[u32]>> = (0..m).map(|s| (0..=i).map(|j| token(s, j)).collect()).collect();
            prop_assert_eq!(counts.growth[i], prefixes.len() as u64);
        }
        // groups: same id exactly when the whole rows agree, numbered by first appearance
        let mut ids: HashMap<Vec<&[u32]>, u32> = HashMap::new();
        for s in 0..m {
            let row: Vec<&[u32]> = (0..n).map(|i| token(s, i)).collect();
            let next = ids.len() as u32;
            let id = *ids.entry(row).or_insert(next);
            prop_assert_eq!(counts.group[s], id);
        }
    }

    #[test]
    fn evaluation_is_independent_of_threads_and_of_the_sample_range(
        spec in small_spec(), m in 1usize..40, start in 0u64..1000, seed in any::<u64>(), split in 0usize..40,
    ) {
        let inputs: Vec<f64> = (0..3 * spec.input_len()).map(|i| (i as f64 * 0.37).sin()).collect();
        let pinned = Vec::new();
        let params = sample_params(&spec, seed, start, m, Sampler::Mixture, &pinned, 1, &mut never()).expect("valid");
        prop_assert!(params.iter().all(|v| (-spec.param_bound..=spec.param_bound).contains(v)));
        let one = evaluate(&spec, &params, &inputs, 1, &mut never()).expect("valid");
        let two = evaluate_sampled(&spec, &inputs, seed, start, m, Sampler::Mixture, &pinned, 2, &mut never()).expect("valid");
        prop_assert_eq!(one.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        two.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        prop_assert_eq!(&one.routes, &two.routes);
        // samples split..m, regenerated on their own, equal the tail of the whole range
        let cut = split.min(m);
        let tail = sample_params(&spec, seed, start + cut as u64, m - cut, Sampler::Mixture, &pinned, 2, &mut never()).expect("valid");
        prop_assert_eq!(&params[cut * spec.total_params()..], &tail[..]);
        // every route is a valid colex rank of a top_k set of experts
        let patterns = binomial(spec.experts as u64, spec.top_k as u64);
        prop_assert!(one.routes.iter().all(|&r| u64::from(r) < patterns));
    }
}
