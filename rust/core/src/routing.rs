//! Routing patterns (definitions §2): colex ranks of top-k expert sets.
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
        // binomial saturates at u64::MAX; a rank that large does not fit, so it is an error
        let term = binomial(u64::from(s), i as u64 + 1);
        total = total
            .checked_add(term)
            .filter(|_| term < u64::MAX)
            .ok_or_else(|| Error::invalid("subset", "its colex rank does not fit in 64 bits"))?;
    }
    Ok(total)
}

/// The subset of size `top_k = out.len()` with the given colex rank, written into `out` (ascending).
/// From the largest element down, `s_i` is the largest s with `C(s, i) <= rank` (the rest of the
/// rank); a binary search over s keeps this O(k log) for any rank, where a linear scan would run
/// for up to 2^32 steps. Errors when an element would not fit in u32 (the rank is too large for k).
pub fn unrank(mut rank: u64, out: &mut [u32]) -> Result<()> {
    let k = out.len();
    let beyond = u64::from(u32::MAX) + 1;
    for i in (1..=k as u64).rev() {
        if binomial(beyond, i) <= rank {
            return Err(Error::invalid(
                "rank",
                format!("rank {rank} of a {k}-subset needs an expert index of 2^32 or more"),
            ));
        }
        // C(s, i) is non-decreasing in s >= i − 1 with C(i − 1, i) = 0 <= rank < C(beyond, i).
        let (mut low, mut high) = (i - 1, beyond);
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if binomial(middle, i) <= rank {
                low = middle;
            } else {
                high = middle;
            }
        }
        rank -= binomial(low, i);
        out[i as usize - 1] = low as u32;
    }
    Ok(())
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
    let mut out: Vec<u32> = crate::error::allocate("top_k", &[count as usize, top_k])?;
    for (r, subset) in out.chunks_exact_mut(top_k).enumerate() {
        unrank(r as u64, subset)?;
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
    fn unrank_is_fast_and_refuses_ranks_past_u32_experts() {
        let mut one = [0u32; 1];
        unrank(u64::from(u32::MAX), &mut one).expect("the largest u32 expert");
        assert_eq!(one, [u32::MAX]);
        // a linear scan would take 2^32 steps for the first and never end for the second
        assert!(unrank(u64::from(u32::MAX) + 1, &mut one).is_err());
        assert!(unrank(u64::MAX, &mut one).is_err());
        let mut three = [0u32; 3];
        let big = [7u32, 1_000_000, 2_000_000]; // C(2·10^6, 3) ≈ 1.3·10^18 < 2^64
        unrank(rank(&big).expect("increasing"), &mut three).expect("fits");
        assert_eq!(three, big);
        assert!(
            rank(&[1, 2, 3_000_000_000, u32::MAX]).is_err(),
            "C(2^32 − 1, 4) > 2^64: no silent saturation"
        );
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
                    unrank(position as u64, &mut out).expect("ranks below C(M, k) unrank");
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
