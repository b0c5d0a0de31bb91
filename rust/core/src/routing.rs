//! Routing patterns (MATH.md §2): colex ranks of top-k expert sets.
//!
//! A k-subset `s_1 < … < s_k` of `{0, …, M−1}` has rank `Σ_i C(s_i, i)` (i from 1), its position in
//! colexicographic order. Ranks are what `evaluate` stores per token, so patterns compare as integers.

use crate::error::{Error, Result};

/// `C(n, r)`, saturating at `u64::MAX` instead of overflowing.
pub fn binomial(n: u64, r: u64) -> u64 {
    if r > n {
        return 0;
    }
    let r = r.min(n - r);
    let mut value: u128 = 1;
    for i in 0..r {
        // Exact at every step: value * (n - i) is divisible by (i + 1) after the multiplication.
        value = value * u128::from(n - i) / u128::from(i + 1);
        if value > u128::from(u64::MAX) {
            return u64::MAX;
        }
    }
    value as u64
}

/// Colex rank of a strictly increasing subset.
pub fn rank(subset: &[u32]) -> Result<u64> {
    let mut total: u64 = 0;
    for (i, &s) in subset.iter().enumerate() {
        if i > 0 && subset[i - 1] >= s {
            return Err(Error::invalid("subset", "must be strictly increasing expert indices"));
        }
        total = total.saturating_add(binomial(u64::from(s), i as u64 + 1));
    }
    Ok(total)
}

/// The subset of size `top_k` with the given colex rank, written into `out` (ascending).
/// Greedy from the largest element: `s_k` is the largest s with `C(s, k) <= rank`.
pub fn unrank(mut rank: u64, out: &mut [u32]) {
    let k = out.len();
    for i in (1..=k).rev() {
        let mut s = i as u64 - 1; // C(i−1, i) = 0 is always <= rank
        while binomial(s + 1, i as u64) <= rank {
            s += 1;
        }
        rank -= binomial(s, i as u64);
        out[i - 1] = s as u32;
    }
}

/// Every `top_k`-subset of `0..experts` in colex order, flat (`C(experts, top_k) × top_k`).
pub fn subsets(experts: u32, top_k: usize) -> Result<Vec<u32>> {
    let count = binomial(u64::from(experts), top_k as u64);
    if top_k == 0 || top_k > experts as usize || count > u64::from(u32::MAX) {
        return Err(Error::invalid(
            "top_k",
            format!("need 1 <= top_k <= experts and C(experts, top_k) < 2^32, got C({experts}, {top_k})"),
        ));
    }
    let mut out = vec![0u32; count as usize * top_k];
    for (r, subset) in out.chunks_exact_mut(top_k).enumerate() {
        unrank(r as u64, subset);
    }
    Ok(out)
}

/// A table of `C(n, r)` for `n < experts`, `r <= top_k`, so the forward pass ranks in O(k).
#[derive(Debug, Clone)]
pub struct RankTable {
    top_k: usize,
    table: Vec<u32>,
}

impl RankTable {
    /// Valid when `C(experts, top_k)` fits in `u32` (checked by `MoeSpec::new`).
    pub fn new(experts: usize, top_k: usize) -> Self {
        let mut table = vec![0u32; experts * (top_k + 1)];
        for n in 0..experts {
            for r in 0..=top_k {
                table[n * (top_k + 1) + r] = binomial(n as u64, r as u64).min(u64::from(u32::MAX)) as u32;
            }
        }
        RankTable { top_k, table }
    }

    /// Colex rank of an ascending subset of size `top_k`.
    #[inline]
    pub fn rank(&self, ascending: &[usize]) -> u32 {
        ascending
            .iter()
            .enumerate()
            .map(|(i, &s)| self.table[s * (self.top_k + 1) + i + 1])
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subsets_in_colex_order(m: u32, k: usize) -> Vec<Vec<u32>> {
        // All k-subsets, sorted colex: compare by the largest element first.
        let mut all = Vec::new();
        for mask in 0u32..(1 << m) {
            if mask.count_ones() as usize == k {
                all.push((0..m).filter(|b| mask >> b & 1 == 1).collect::<Vec<_>>());
            }
        }
        all.sort_by(|a, b| a.iter().rev().cmp(b.iter().rev()));
        all
    }

    #[test]
    fn rank_is_position_in_colex_order_and_unrank_inverts_it() {
        for m in 1..=12u32 {
            for k in 1..=m as usize {
                let all = subsets_in_colex_order(m, k);
                assert_eq!(all.len() as u64, binomial(u64::from(m), k as u64));
                let table = RankTable::new(m as usize, k);
                let mut out = vec![0u32; k];
                for (position, subset) in all.iter().enumerate() {
                    assert_eq!(rank(subset).expect("increasing"), position as u64);
                    let as_usize: Vec<usize> = subset.iter().map(|&s| s as usize).collect();
                    assert_eq!(table.rank(&as_usize) as usize, position);
                    unrank(position as u64, &mut out);
                    assert_eq!(&out, subset);
                }
            }
        }
    }

    #[test]
    fn subsets_lists_colex_order() {
        assert_eq!(subsets(4, 2).expect("valid"), vec![0, 1, 0, 2, 1, 2, 0, 3, 1, 3, 2, 3]);
        assert!(subsets(3, 4).is_err());
    }

    #[test]
    fn binomial_matches_pascal_and_saturates() {
        assert_eq!(binomial(10, 3), 120);
        assert_eq!(binomial(3, 5), 0);
        assert_eq!(binomial(64, 32), 1_832_624_140_942_590_534);
        assert_eq!(binomial(200, 100), u64::MAX);
    }
}
