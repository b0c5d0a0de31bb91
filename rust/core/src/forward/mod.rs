//! The forward pass `f_θ(X)` of the MoE Transformer of docs/definitions.md §1, in two layouts that
//! give the same bits:
//! - [`one`]: one input at a time, `[token][feature]` (for a few inputs, and the reference);
//! - [`lanes`]: up to 32 inputs side by side in SIMD lanes, `[feature][token][lane]`.
//!
//! What does not depend on the layout lives here, written once for `W` lanes (the one-input pass
//! is `W = 1`): the layer loop with its residual forms, the router scores, the top-k choice, the
//! gate weights, the softmax and the readout. Each runs the same operations in the same order in
//! every lane, so an input's values and routes are the same bits whichever pass or lane it ran in.

pub mod exp;
pub mod lanes;
pub mod one;

use crate::spec::{Block, Gate, MoeSpec, Readout};
pub use exp::exp;

pub use lanes::{forward_batch, prepare, Workspace};

/// Rough floating-point operations of one forward pass, for sizing work chunks.
pub fn flops_per_input(spec: &MoeSpec) -> usize {
    let (l, d) = (spec.seq_len, spec.d_model);
    let attention = if spec.heads > 0 {
        8 * l * d * d + 4 * l * l * d
    } else {
        0
    };
    let moe = l * (2 * spec.experts * d + 2 * spec.top_k * spec.expert_params());
    spec.layers * (attention + moe) + 1
}

/// The activations of a pass, each the same length in its own layout: the block's input `h`, the
/// sequential form's `y = h + Attn(h)`, attention's query/key/value/context scratch, and the two
/// branch outputs `attn` and `moe`.
pub(crate) struct Activations {
    pub h: Vec<f64>,
    pub y: Vec<f64>,
    pub q: Vec<f64>,
    pub k: Vec<f64>,
    pub v: Vec<f64>,
    pub context: Vec<f64>,
    pub attn: Vec<f64>,
    pub moe: Vec<f64>,
}

impl Activations {
    pub fn new(len: usize) -> Self {
        Activations {
            h: vec![0.0; len],
            y: vec![0.0; len],
            q: vec![0.0; len],
            k: vec![0.0; len],
            v: vec![0.0; len],
            context: vec![0.0; len],
            attn: vec![0.0; len],
            moe: vec![0.0; len],
        }
    }
}

/// Which activation a branch reads: the block's input `h`, or `y = h + Attn(h)`.
#[derive(Clone, Copy)]
pub(crate) enum Branch {
    H,
    Y,
}

/// The two branches of a block in one layout. Each reads `h` or `y` (the first `size` values of
/// [`Activations`]) and writes its output: `attention` into `attn`, `mixture` into `moe` (and the
/// routes of the layer).
pub(crate) trait Layers {
    fn activations(&mut self) -> &mut Activations;
    /// How many values of each activation are in use.
    fn size(&self) -> usize;
    fn attention(&mut self, layer: usize, input: Branch);
    fn mixture(&mut self, layer: usize, input: Branch);
}

/// Every block of the class, with the residual form of the spec:
/// sequential `Y = H + Attn(H)`, `H' = Y + MoE(Y)`; parallel `H' = H + Attn(H) + MoE(H)`.
#[inline(always)]
pub(crate) fn run_layers(spec: &MoeSpec, pass: &mut impl Layers) {
    let with_attention = spec.heads > 0;
    let size = pass.size();
    for layer in 0..spec.layers {
        if with_attention {
            pass.attention(layer, Branch::H);
        }
        match spec.block {
            Block::Sequential => {
                let a = pass.activations();
                a.y[..size].copy_from_slice(&a.h[..size]);
                if with_attention {
                    for (y, attn) in a.y[..size].iter_mut().zip(&a.attn[..size]) {
                        *y += attn;
                    }
                }
                pass.mixture(layer, Branch::Y);
                let a = pass.activations();
                for ((h, y), m) in a.h[..size].iter_mut().zip(&a.y[..size]).zip(&a.moe[..size]) {
                    *h = y + m;
                }
            }
            Block::Parallel => {
                pass.mixture(layer, Branch::H);
                let a = pass.activations();
                for (i, h) in a.h[..size].iter_mut().enumerate() {
                    let attn = if with_attention { a.attn[i] } else { 0.0 };
                    *h = *h + attn + a.moe[i];
                }
            }
        }
    }
}

/// The readout of the last block's `H` into `out` (length `output_dim`), where `at(t, c)` is
/// token t's feature c: `scalar` H[0, 0], `token0` H[0, :], `all` H flattened row-major.
#[inline(always)]
pub(crate) fn readout(spec: &MoeSpec, out: &mut [f64], at: impl Fn(usize, usize) -> f64) {
    let d = spec.d_model;
    match spec.readout {
        Readout::Scalar => out[0] = at(0, 0),
        Readout::Token0 => out.iter_mut().enumerate().for_each(|(c, v)| *v = at(0, c)),
        Readout::All => out.iter_mut().enumerate().for_each(|(i, v)| *v = at(i / d, i % d)),
    }
}

/// One token's router scores `s_j = W_r[j] · z + b_r[j]` in `W` lanes, into `scores`
/// (`[expert][lane]`), where `feature(c)` is the token's feature c across the lanes (`d` features;
/// a constant where the caller's width is one, so the loop unrolls). Each sum starts
/// at -0.0 and runs over ascending c, as `Iterator::sum` does.
#[inline(always)]
pub(crate) fn router_scores<'a, const W: usize>(
    weight: &[f64],
    bias: &[f64],
    d: usize,
    feature: impl Fn(usize) -> &'a [f64],
    scores: &mut [f64],
) {
    for ((lanes, row), &b) in scores.chunks_exact_mut(W).zip(weight.chunks_exact(d)).zip(bias) {
        lanes.fill(-0.0);
        for (c, &w) in row.iter().enumerate() {
            for (s, &x) in lanes.iter_mut().zip(feature(c)) {
                *s += w * x;
            }
        }
        lanes.iter_mut().for_each(|s| *s += b);
    }
}

/// Per lane, the `k` highest of one token's router scores (`[expert][lane]`, `W` lanes): their
/// experts, ascending, into `top_experts` (`[place][lane]`), their scores in the same order into
/// `top_scores`, and the highest score into `highest` (`[lane]`).
///
/// Each expert in turn is carried down the kept list and enters at the first place whose score is
/// strictly lower; everything below moves down one place and the last falls off. So equal scores
/// keep the lower expert first, as the definition requires, and every lane always ends with `k`
/// distinct experts (even if a score is NaN, which the definition leaves undefined). Written as a
/// compare-and-select over lanes: no branch depends on a score.
#[inline(always)]
pub(crate) fn select_top_k<const W: usize>(
    scores: &[f64],
    k: usize,
    top_scores: &mut [f64],
    top_experts: &mut [f64],
    highest: &mut [f64],
) {
    let (top_scores, top_experts) = (top_scores.as_chunks_mut::<W>().0, top_experts.as_chunks_mut::<W>().0);
    for (j, score) in scores.as_chunks::<W>().0.iter().enumerate() {
        // One lane: skip a score that cannot enter. The kept scores that are not NaN are in
        // descending order, so one that is <= the last kept (not NaN) is <= all of them.
        if W == 1 && j >= k && (score[0] <= top_scores[k - 1][0] || score[0].is_nan()) {
            continue;
        }
        let mut carried_score = *score;
        let mut carried_expert = [j as f64; W];
        // all ones in a lane once its carried entry has entered the list (then everything moves)
        let mut moving = [0u64; W];
        let kept = j.min(k);
        for (place_score, place_expert) in top_scores.iter_mut().zip(top_experts.iter_mut()).take(kept) {
            for lane in 0..W {
                let enter = moving[lane] | 0u64.wrapping_sub(u64::from(carried_score[lane] > place_score[lane]));
                let swap = |a: &mut f64, b: &mut f64| {
                    let (x, y) = (a.to_bits(), b.to_bits());
                    *a = f64::from_bits((y & enter) | (x & !enter));
                    *b = f64::from_bits((x & enter) | (y & !enter));
                };
                swap(&mut place_score[lane], &mut carried_score[lane]);
                swap(&mut place_expert[lane], &mut carried_expert[lane]);
                moving[lane] = enter;
            }
        }
        if kept < k {
            top_scores[kept] = carried_score;
            top_experts[kept] = carried_expert;
        }
    }
    highest[..W].copy_from_slice(&top_scores[0]);
    // the k experts of each lane, with their scores, into ascending order of expert (odd-even
    // transposition sort)
    for pass in 0..k {
        for place in (pass % 2..k.saturating_sub(1)).step_by(2) {
            let (low, high) = top_experts[place..place + 2].split_at_mut(1);
            let (low_score, high_score) = top_scores[place..place + 2].split_at_mut(1);
            for lane in 0..W {
                let (a, b) = (low[0][lane], high[0][lane]);
                let (sa, sb) = (low_score[0][lane], high_score[0][lane]);
                // selects written on the bits, as above (a `bool` select of f64 here was
                // miscompiled for AVX-512: the scores kept stale values)
                let swap = 0u64.wrapping_sub(u64::from(a > b));
                let pick = |keep: f64, other: f64| f64::from_bits((other.to_bits() & swap) | (keep.to_bits() & !swap));
                low[0][lane] = pick(a, b);
                high[0][lane] = pick(b, a);
                low_score[0][lane] = pick(sa, sb);
                high_score[0][lane] = pick(sb, sa);
            }
        }
    }
}

/// One token's gate weights in `W` lanes, `[place][lane]`, from the chosen experts' scores
/// `chosen_scores` (`[place][lane]`, from [`select_top_k`]), all router `scores` (`[expert][lane]`,
/// for the full softmax) and the highest score per lane, `shift`. Each exponential is taken once,
/// and with the shift every exponent is <= 0, so none overflows. Normalisers are sums from -0.0 in
/// ascending order.
#[inline(always)]
pub(crate) fn gate_weights<const W: usize>(
    gate: Gate,
    scores: &[f64],
    chosen_scores: &[f64],
    shift: &[f64],
    gates: &mut [f64],
) {
    let k = gates.len() / W;
    match gate {
        Gate::Uniform => gates.fill(1.0 / k as f64),
        Gate::RenormalizedSoftmax | Gate::FullSoftmax => {
            for (gate, score) in gates.chunks_exact_mut(W).zip(chosen_scores.chunks_exact(W)) {
                for ((g, &s), &m) in gate.iter_mut().zip(score).zip(shift) {
                    *g = exp(s - m);
                }
            }
            let mut normaliser = [-0.0; W];
            if gate == Gate::FullSoftmax {
                for score in scores.chunks_exact(W) {
                    for ((total, &s), &m) in normaliser.iter_mut().zip(score).zip(shift) {
                        *total += exp(s - m);
                    }
                }
            } else {
                for gate in gates.chunks_exact(W) {
                    for (total, &g) in normaliser.iter_mut().zip(gate) {
                        *total += g;
                    }
                }
            }
            for gate in gates.chunks_exact_mut(W) {
                for (g, &total) in gate.iter_mut().zip(&normaliser) {
                    *g *= 1.0 / total;
                }
            }
        }
    }
}

/// Softmax over the rows of `weights` (`[row][lane]`), lane by lane, with each lane's maximum
/// subtracted first so that no exponent overflows.
#[inline(always)]
pub(crate) fn softmax<const W: usize>(weights: &mut [f64]) {
    let mut max = [f64::NEG_INFINITY; W];
    let mut total = [0.0; W];
    for row in weights.chunks_exact(W) {
        for (m, &w) in max.iter_mut().zip(row) {
            *m = m.max(w);
        }
    }
    for row in weights.chunks_exact_mut(W) {
        for ((w, &m), t) in row.iter_mut().zip(&max).zip(&mut total) {
            *w = exp(*w - m);
            *t += *w;
        }
    }
    for row in weights.chunks_exact_mut(W) {
        for (w, &t) in row.iter_mut().zip(&total) {
            *w /= t;
        }
    }
}

impl Activations {
    /// Moves the branch's input out (so that a branch can read it while writing the others).
    pub fn take(&mut self, branch: Branch) -> Vec<f64> {
        std::mem::take(match branch {
            Branch::H => &mut self.h,
            Branch::Y => &mut self.y,
        })
    }

    /// Puts back what [`Activations::take`] moved out.
    pub fn put(&mut self, branch: Branch, values: Vec<f64>) {
        *match branch {
            Branch::H => &mut self.h,
            Branch::Y => &mut self.y,
        } = values;
    }
}
