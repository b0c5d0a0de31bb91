//! Exact enumeration of the dataset-wide routing patterns one linear router can realise
//! (definitions §2), for one layer without attention, where the router sees the raw tokens.
//!
//! A pattern assigns each token t a k-subset S_t; it is realisable iff the linear system
//! `(w_a − w_b)·x̃_t >= 1` for every t, a ∈ S_t, b ∉ S_t is feasible (x̃ = (x, 1); strict
//! inequalities become `>= 1` by scaling, since patterns do not change when the router is scaled).
//! Translation invariance lets us fix `w_0 = 0`, leaving `(M − 1)(D + 1)` free variables.
//!
//! Depth-first search over tokens: a node is a feasible prefix; each child adds one token's
//! constraints to the parent's LP, warm-started by the dual simplex of `microlp` (pure Rust, the
//! default solver behind good_lp, maintained, no system library to install). The top of the tree is
//! expanded breadth-first into many subtrees that are searched in parallel; the patterns come out in a
//! fixed (colex-lexicographic) order whatever the thread count.

use crate::error::{Error, Result};
use crate::parallel::{pool, Interrupt};
use crate::routing::subsets;
use microlp::{ComparisonOp, LinearExpr, OptimizationDirection, Problem, Solution, Variable};
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[derive(Debug, Clone, PartialEq)]
pub struct ExactPatterns {
    pub count: u64,
    /// `count × tokens` colex ranks, in search order, when requested.
    pub patterns: Option<Vec<u32>>,
}

struct Search<'a> {
    experts: usize,
    top_k: usize,
    d_model: usize,
    tokens: &'a [f64],
    /// `C(M, k) × k` subsets, colex order.
    subsets: Vec<u32>,
    /// Variable of `w_j[c]` for j >= 1 at `(j − 1) * (D + 1) + c`.
    variables: Vec<Variable>,
    max_patterns: u64,
    keep: bool,
    found: AtomicU64,
    overflow: AtomicBool,
    /// Set by the calling thread when the interrupt check fires; every node looks at it.
    cancelled: AtomicBool,
}

struct Node {
    prefix: Vec<u32>,
    solution: Solution,
}

impl Search<'_> {
    fn n_tokens(&self) -> usize {
        self.tokens.len() / self.d_model
    }

    /// The parent's LP with the constraints of token `t` routed to subset number `rank`.
    fn child(&self, parent: &Solution, t: usize, rank: usize) -> Option<Solution> {
        let (k, d) = (self.top_k, self.d_model);
        let chosen = &self.subsets[rank * k..(rank + 1) * k];
        let x = &self.tokens[t * d..(t + 1) * d];
        let mut solution = parent.clone();
        for &a in chosen {
            for b in (0..self.experts as u32).filter(|b| !chosen.contains(b)) {
                let mut expr = LinearExpr::empty();
                for (j, sign) in [(a as usize, 1.0), (b as usize, -1.0)] {
                    if j == 0 {
                        continue; // w_0 = 0
                    }
                    let base = (j - 1) * (d + 1);
                    for (c, &value) in x.iter().enumerate() {
                        expr.add(self.variables[base + c], sign * value);
                    }
                    expr.add(self.variables[base + d], sign);
                }
                solution = match solution.add_constraint(expr, ComparisonOp::Ge, 1.0) {
                    Ok(next) => next,
                    Err(_) => return None,
                };
            }
        }
        Some(solution)
    }

    fn count_leaf(&self, prefix: &[u32], out: &mut Vec<u32>) {
        let total = self.found.fetch_add(1, Ordering::Relaxed) + 1;
        if total > self.max_patterns {
            self.overflow.store(true, Ordering::Relaxed);
        }
        if self.keep {
            out.extend_from_slice(prefix);
        }
    }

    fn depth_first(&self, node: Node, out: &mut Vec<u32>) {
        if self.overflow.load(Ordering::Relaxed) || self.cancelled.load(Ordering::Relaxed) {
            return;
        }
        let t = node.prefix.len();
        if t == self.n_tokens() {
            self.count_leaf(&node.prefix, out);
            return;
        }
        for rank in 0..self.subsets.len() / self.top_k {
            if let Some(solution) = self.child(&node.solution, t, rank) {
                let mut prefix = node.prefix.clone();
                prefix.push(rank as u32);
                self.depth_first(Node { prefix, solution }, out);
            }
        }
    }
}

/// Counts (and optionally lists) the realisable dataset-wide patterns of `tokens` (`N × d_model`,
/// row-major) under a linear top-`top_k` router over `experts` experts.
#[allow(clippy::too_many_arguments)]
pub fn exact_patterns(
    experts: usize,
    top_k: usize,
    d_model: usize,
    tokens: &[f64],
    max_patterns: u64,
    return_patterns: bool,
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<ExactPatterns> {
    if d_model == 0 || !tokens.len().is_multiple_of(d_model) {
        return Err(Error::invalid("inputs", "length is not a multiple of d_model"));
    }
    let table = subsets(experts as u32, top_k)?;
    let mut problem = Problem::new(OptimizationDirection::Minimize);
    let variables = (0..(experts - 1) * (d_model + 1))
        .map(|_| problem.add_var(0.0, (f64::NEG_INFINITY, f64::INFINITY)))
        .collect();
    let root = problem
        .solve()
        .map_err(|e| Error::invalid("inputs", format!("LP solver failed at the root: {e}")))?;
    let search = Search {
        experts,
        top_k,
        d_model,
        tokens,
        subsets: table,
        variables,
        max_patterns,
        keep: return_patterns,
        found: AtomicU64::new(0),
        overflow: AtomicBool::new(false),
        cancelled: AtomicBool::new(false),
    };
    let n_tokens = search.n_tokens();
    let pool = pool(n_threads)?;

    // Breadth-first until there are enough subtrees to share among the threads.
    let mut frontier = vec![Node {
        prefix: Vec::new(),
        solution: root,
    }];
    let wanted = 64 * n_threads;
    while frontier.len() < wanted && frontier.first().is_some_and(|n| n.prefix.len() < n_tokens) {
        if interrupt() {
            return Err(Error::Interrupted);
        }
        let t = frontier[0].prefix.len();
        let expanded: Vec<Vec<Node>> = pool.install(|| {
            frontier
                .par_iter()
                .map(|node| {
                    (0..search.subsets.len() / top_k)
                        .filter_map(|rank| {
                            search.child(&node.solution, t, rank).map(|solution| {
                                let mut prefix = node.prefix.clone();
                                prefix.push(rank as u32);
                                Node { prefix, solution }
                            })
                        })
                        .collect()
                })
                .collect()
        });
        frontier = expanded.into_iter().flatten().collect();
    }

    // One subtree can search for seconds, so the search runs on a worker thread while this (the
    // calling) thread polls the interrupt check and raises `cancelled`, which every node reads.
    let search = &search;
    let parts = std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            pool.install(|| {
                frontier
                    .into_par_iter()
                    .map(|node| {
                        let mut out = Vec::new();
                        search.depth_first(node, &mut out);
                        out
                    })
                    .collect::<Vec<Vec<u32>>>()
            })
        });
        while !worker.is_finished() {
            if interrupt() {
                search.cancelled.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        worker.join()
    })
    .map_err(|_| Error::ThreadPool("the pattern search panicked".into()))?;
    if search.cancelled.load(Ordering::Relaxed) {
        return Err(Error::Interrupted);
    }
    if search.overflow.load(Ordering::Relaxed) {
        return Err(Error::invalid(
            "max_patterns",
            format!("more than {max_patterns} realisable patterns; raise max_patterns to enumerate them"),
        ));
    }
    let patterns: Vec<u32> = parts.into_iter().flatten().collect();
    Ok(ExactPatterns {
        count: search.found.load(Ordering::Relaxed),
        patterns: return_patterns.then_some(patterns),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::never;
    use crate::routing::binomial;

    fn gaussian_like(n: usize, d: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..n * d)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn two_experts_give_covers_count() {
        for (n, d) in [(4, 1), (6, 2), (7, 3), (9, 2)] {
            let tokens = gaussian_like(n, d, (n * 10 + d) as u64);
            let cover: u64 = 2 * (0..=d as u64).map(|i| binomial(n as u64 - 1, i)).sum::<u64>();
            for threads in [1, 2] {
                let exact = exact_patterns(2, 1, d, &tokens, 1_000_000, false, threads, &mut never()).expect("ok");
                assert_eq!(exact.count, cover, "N = {n}, D = {d}");
            }
        }
    }

    #[test]
    fn patterns_are_listed_in_the_same_order_for_any_thread_count() {
        let tokens = gaussian_like(6, 2, 3);
        let one = exact_patterns(3, 1, 2, &tokens, 1_000_000, true, 1, &mut never()).expect("ok");
        let two = exact_patterns(3, 1, 2, &tokens, 1_000_000, true, 2, &mut never()).expect("ok");
        assert_eq!(one, two);
        assert_eq!(one.patterns.as_ref().map(|p| p.len() as u64), Some(one.count * 6));
    }

    #[test]
    fn too_many_patterns_is_an_error() {
        let tokens = gaussian_like(8, 2, 4);
        let result = exact_patterns(3, 1, 2, &tokens, 10, false, 2, &mut never());
        assert!(matches!(
            result,
            Err(Error::InvalidArgument {
                argument: "max_patterns",
                ..
            })
        ));
    }
}
