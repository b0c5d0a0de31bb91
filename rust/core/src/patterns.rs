//! Counting realised routing patterns (definitions §2) over many samples, exactly.
//!
//! Rows are hashed with full comparison of colliding keys (hash maps keyed by the rows themselves),
//! so counts are exact. Two passes:
//! 1. per input i, an id for each sample's pattern on that input (parallel over inputs);
//! 2. prefix refinement: the dataset-wide id over inputs `0..=i` is the id of the pair
//!    (id over `0..i`, pattern id on input i). Each step yields the growth curve's next value, and
//!    the last step the dataset-wide groups, numbered in order of first appearance.

use crate::error::{Error, Result};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use rayon::prelude::*;
use rustc_hash::FxHashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct PatternCounts {
    /// Distinct patterns per input, length n.
    pub per_input: Vec<u64>,
    /// Dataset-wide group id of each sample, numbered by first appearance, length m.
    pub group: Vec<u32>,
    /// Distinct dataset-wide patterns over the first n' inputs, n' = 1..=n.
    pub growth: Vec<u64>,
}

/// Ids, in order of first appearance, of the keys `row(s)` for s in 0..m, and how many are distinct.
fn first_appearance_ids<K: std::hash::Hash + Eq>(m: usize, row: impl Fn(usize) -> K) -> (Vec<u32>, u64) {
    let mut ids: FxHashMap<K, u32> = FxHashMap::default();
    let out = (0..m)
        .map(|s| {
            let next = ids.len() as u32;
            *ids.entry(row(s)).or_insert(next)
        })
        .collect();
    (out, ids.len() as u64)
}

/// `routes` is `(m, n, width)` row-major with `width = layers × seq_len` ranks per input.
pub fn count_patterns(
    routes: &[u32],
    m: usize,
    n: usize,
    width: usize,
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<PatternCounts> {
    if m.checked_mul(n).and_then(|x| x.checked_mul(width)) != Some(routes.len()) {
        return Err(Error::invalid("routes", "length does not match (m, n, layers·seq_len)"));
    }
    if m > u32::MAX as usize {
        return Err(Error::invalid("routes", "more than 2^32 samples"));
    }
    if m == 0 || n == 0 {
        return Ok(PatternCounts {
            per_input: vec![0; n],
            group: vec![0; if n == 0 { m } else { 0 }],
            growth: vec![0; n],
        });
    }
    let pool = pool(n_threads)?;
    // One input's ids take O(m) hashing; a chunk gives each thread about one input (more when m
    // is small), so Ctrl-C is answered after at most one input's work per thread.
    let chunk = (chunk_len(m, n_threads) / 4).max(n_threads);
    let mut per_input: Vec<(Vec<u32>, u64)> = Vec::with_capacity(n);
    run_chunked(&pool, n, chunk, interrupt, |inputs| {
        per_input.par_extend(inputs.into_par_iter().map(|i| {
            let row = |s: usize| &routes[(s * n + i) * width..(s * n + i + 1) * width];
            if width <= 4 {
                // Up to four 32-bit ranks pack exactly into one u128: a cheaper key to hash.
                first_appearance_ids(m, |s| row(s).iter().fold(0u128, |key, &r| key << 32 | u128::from(r)))
            } else {
                first_appearance_ids(m, row)
            }
        }))
    })?;
    let mut growth = Vec::with_capacity(n);
    let mut group = per_input[0].0.clone();
    growth.push(per_input[0].1);
    let mut sizes: Vec<u32> = Vec::new();
    let mut pairs: FxHashMap<(u32, u32), u32> = FxHashMap::default();
    for (ids, _) in &per_input[1..] {
        if interrupt() {
            return Err(Error::Interrupted);
        }
        // A group of one sample stays alone under every refinement: it needs no hashing, just the
        // next id. Once the groups fragment (quickly, on real routes) almost nothing is hashed.
        let count = *growth.last().unwrap_or(&0) as usize;
        sizes.clear();
        sizes.resize(count, 0);
        for &g in &group {
            sizes[g as usize] += 1;
        }
        pairs.clear();
        let mut next = 0u32;
        for (g, &pattern) in group.iter_mut().zip(ids) {
            *g = if sizes[*g as usize] == 1 {
                next += 1;
                next - 1
            } else {
                *pairs.entry((*g, pattern)).or_insert_with(|| {
                    next += 1;
                    next - 1
                })
            };
        }
        growth.push(u64::from(next));
    }
    Ok(PatternCounts {
        per_input: per_input.iter().map(|(_, count)| *count).collect(),
        group,
        growth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::never;

    #[test]
    fn counts_distinct_rows_prefixes_and_groups() {
        // m = 4 samples, n = 2 inputs, width 1
        // sample 0: [1, 2]; 1: [1, 3]; 2: [1, 2]; 3: [0, 3]
        let routes = [1, 2, 1, 3, 1, 2, 0, 3];
        let counts = count_patterns(&routes, 4, 2, 1, 2, &mut never()).expect("valid");
        assert_eq!(counts.per_input, vec![2, 2]);
        assert_eq!(counts.group, vec![0, 1, 0, 2]);
        assert_eq!(counts.growth, vec![2, 3]);
    }

    #[test]
    fn wrong_length_is_an_error() {
        assert!(count_patterns(&[0; 5], 2, 2, 1, 1, &mut never()).is_err());
    }
}
