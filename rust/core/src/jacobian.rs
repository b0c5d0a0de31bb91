//! Exact Jacobians `∂f_θ(x_i)_c / ∂θ` of the forward pass (docs/definitions.md §6), by a reverse
//! pass written against a recording of the forward pass.
//!
//! The forward pass here is written for clarity, not speed: it records, per layer, every
//! intermediate the reverse pass needs (attention's queries, keys, values and weights, the router
//! scores, the chosen experts and their gates, each chosen expert's output and hidden
//! pre-activations). Attention is computed in its four-matrix form, so its values equal
//! [`crate::forward`]'s (which folds `W_Q W_Kᵀ` for one head) up to rounding, not bit for bit.
//! One reverse pass per output coordinate gives one row of the Jacobian: for the scalar readout,
//! one reverse pass per input.
//!
//! Off a set of measure zero (a top-k tie between a chosen and an unchosen expert, or a ReLU at 0)
//! the class is real-analytic in θ and the Jacobian exists. [`BOUNDARY_TOLERANCE`] decides when a
//! θ is reported as on that set: the derivative there is the one-sided one the pass takes.

use crate::error::{allocate, reserve, Error, Result};
use crate::forward::{exp, select_top_k};
use crate::parallel::{chunk_len, pool, run_chunked, Interrupt};
use crate::routing::RankTable;
use crate::spec::{Block, ExpertKind, Gate, MoeSpec, Readout};
use rayon::prelude::*;

/// A θ is on a boundary when, on some token, the lowest chosen router score and the highest
/// unchosen one differ by at most this fraction of `max(1, |a|, |b|)`, or a ReLU pre-activation of
/// a chosen expert is within this fraction of `max(1, |terms|)` of 0 on a token the outputs
/// depend on (under the scalar and token-0 readouts, not the last layer's other tokens).
pub const BOUNDARY_TOLERANCE: f64 = 1e-9;

/// Values `(m, n, o)`, routes `(m, n, layers, seq_len)`, the Jacobian `(m, n·o, P)` with rows in
/// the order of the values and columns in θ's layout order, and a boundary flag per θ.
#[derive(Debug, Clone, PartialEq)]
pub struct Jacobians {
    pub values: Vec<f64>,
    pub routes: Vec<u32>,
    pub matrix: Vec<f64>,
    pub on_boundary: Vec<bool>,
}

/// What the reverse pass needs of one layer.
struct LayerRecord {
    /// The block's input H, `ℓ × D`.
    h: Vec<f64>,
    /// Attention: `Q, K, V` (`ℓ × D`), the weights per head (`heads × ℓ × ℓ`), the concatenated
    /// heads `C` (`ℓ × D`) and the output `Attn(H)`.
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    weights: Vec<f64>,
    context: Vec<f64>,
    attn: Vec<f64>,
    /// The mixture's input (`Y` or `H`), `ℓ × D`.
    z: Vec<f64>,
    /// Router scores `ℓ × M`; the full softmax of them (for `full_softmax`), `ℓ × M`.
    scores: Vec<f64>,
    probs: Vec<f64>,
    /// Per token the chosen experts (ascending) and their gates, `ℓ × k`.
    chosen: Vec<usize>,
    gates: Vec<f64>,
    /// Per token and place the expert's output `E_j(z_t)` (`ℓ × k × D`) and hidden
    /// pre-activations (`ℓ × k × h`, mlp experts).
    outputs: Vec<f64>,
    pre: Vec<f64>,
    /// For θ (mlp experts): the largest ℓ1 norm of a row of the layer's `W1` and the largest
    /// `|b1|`, which bound every hidden unit's magnitude (see [`mixture`]).
    hidden_bound: (f64, f64),
}

/// Scratch for one thread: a record per layer, the final activations, the top-k choice's
/// buffers and the reverse pass's.
pub struct Workspace {
    layers: Vec<LayerRecord>,
    out: Vec<f64>,
    routing: Routing,
    /// ∂f/∂H of the current block's output and input, and of the sequential form's Y.
    d_out: Vec<f64>,
    d_in: Vec<f64>,
    d_branch: Vec<f64>,
    scratch: Scratch,
    /// The instruction set the pass is compiled for (the widest the CPU has).
    simd: pulp::Arch,
}

/// The buffers of one token's top-k choice.
struct Routing {
    ranks: RankTable,
    top_scores: Vec<f64>,
    top_experts: Vec<f64>,
    selected: Vec<usize>,
}

/// The reverse pass's buffers for one branch: attention's ∂C, ∂Q, ∂K, ∂V and one query's ∂weights;
/// one token's ∂scores, ∂gates and an expert's ∂hidden.
struct Scratch {
    d_context: Vec<f64>,
    d_q: Vec<f64>,
    d_k: Vec<f64>,
    d_v: Vec<f64>,
    d_weights: Vec<f64>,
    d_scores: Vec<f64>,
    d_gates: Vec<f64>,
    d_hidden: Vec<f64>,
    /// Per (layer, expert), whether the current row's reverse pass has reached the expert; and
    /// whether the row is zeroed block by block as the pass first writes it (the rank
    /// certificate reads only the blocks a row reached) rather than whole.
    reached: Vec<bool>,
    zero_when_reached: bool,
}

impl Workspace {
    pub fn new(spec: &MoeSpec) -> Self {
        let (l, d, m, k, h) = (spec.seq_len, spec.d_model, spec.experts, spec.top_k, spec.expert_hidden);
        let heads = spec.heads.max(1);
        let record = || LayerRecord {
            h: vec![0.0; l * d],
            q: vec![0.0; l * d],
            k: vec![0.0; l * d],
            v: vec![0.0; l * d],
            weights: vec![0.0; heads * l * l],
            context: vec![0.0; l * d],
            attn: vec![0.0; l * d],
            z: vec![0.0; l * d],
            scores: vec![0.0; l * m],
            probs: vec![0.0; l * m],
            chosen: vec![0; l * k],
            gates: vec![0.0; l * k],
            outputs: vec![0.0; l * k * d],
            pre: vec![0.0; l * k * h],
            hidden_bound: (0.0, 0.0),
        };
        Workspace {
            layers: (0..spec.layers).map(|_| record()).collect(),
            out: vec![0.0; l * d],
            routing: Routing {
                ranks: RankTable::new(spec.experts, spec.top_k),
                top_scores: vec![0.0; k],
                top_experts: vec![0.0; k],
                selected: vec![0; k],
            },
            d_out: vec![0.0; l * d],
            d_in: vec![0.0; l * d],
            d_branch: vec![0.0; l * d],
            scratch: Scratch {
                d_context: vec![0.0; l * d],
                d_q: vec![0.0; l * d],
                d_k: vec![0.0; l * d],
                d_v: vec![0.0; l * d],
                d_weights: vec![0.0; l],
                d_scores: vec![0.0; m],
                d_gates: vec![0.0; k],
                d_hidden: vec![0.0; h],
                reached: vec![false; spec.layers * m],
                zero_when_reached: false,
            },
            simd: pulp::Arch::new(),
        }
    }
}

/// `out = a · W` for `a` (rows × D) and `W` (D × D) row-major.
#[inline(always)]
fn matmul(a: &[f64], w: &[f64], d: usize, out: &mut [f64]) {
    for (row, out_row) in a.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        out_row.fill(0.0);
        for (&a_i, w_row) in row.iter().zip(w.chunks_exact(d)) {
            for (o, &w_ic) in out_row.iter_mut().zip(w_row) {
                *o += a_i * w_ic;
            }
        }
    }
}

/// The reverse of `out = a · W`: `dW += aᵀ d_out` into `grad_w`, and `d_a += d_out Wᵀ`.
#[inline(always)]
fn matmul_reverse(a: &[f64], w: &[f64], d: usize, d_out: &[f64], grad_w: &mut [f64], d_a: &mut [f64]) {
    for ((row, d_row), da_row) in a
        .chunks_exact(d)
        .zip(d_out.chunks_exact(d))
        .zip(d_a.chunks_exact_mut(d))
    {
        if is_zero(d_row) {
            continue;
        }
        for (i, (&a_i, w_row)) in row.iter().zip(w.chunks_exact(d)).enumerate() {
            let mut sum = 0.0;
            for (c, (&dout, &w_ic)) in d_row.iter().zip(w_row).enumerate() {
                grad_w[i * d + c] += a_i * dout;
                sum += dout * w_ic;
            }
            da_row[i] += sum;
        }
    }
}

/// The width known at compile time (`compile_time` > 0), else the spec's: the pass is generic in
/// `d_model` (D) and `expert_hidden` (H), 0 meaning "read it from the spec".
#[inline(always)]
fn fixed(compile_time: usize, run_time: usize) -> usize {
    debug_assert!(compile_time == 0 || compile_time == run_time);
    if compile_time > 0 {
        compile_time
    } else {
        run_time
    }
}

/// Whether every entry is ±0. The reverse pass skips the tokens whose incoming gradient is zero
/// (for the scalar and token-0 readouts, all but one in the last block): their terms would add
/// zeros only.
#[inline(always)]
fn is_zero(values: &[f64]) -> bool {
    values.iter().all(|&v| v == 0.0)
}

/// The softmax of each row of `values` (rows of `width`), in place. All the exponentials are taken
/// in one loop apart from the rows' maxima and sums, so that they vectorise (each row's sum is in
/// the same order as a row at a time).
#[inline(always)]
fn softmax_rows(values: &mut [f64], width: usize) {
    for row in values.chunks_exact_mut(width) {
        let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        row.iter_mut().for_each(|v| *v -= max);
    }
    values.iter_mut().for_each(|v| *v = exp(*v));
    for row in values.chunks_exact_mut(width) {
        let total: f64 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= total);
    }
}

#[inline(always)]
fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= BOUNDARY_TOLERANCE * a.abs().max(b.abs()).max(1.0)
}

/// `Attn(H)` in its four-matrix form, recorded. `W` is one head's width where known at compile time
/// (0: d_model / heads from the spec).
#[inline(always)]
fn attention<const D: usize, const W: usize>(spec: &MoeSpec, theta: &[f64], layer: usize, r: &mut LayerRecord) {
    let (l, d) = (spec.seq_len, fixed(D, spec.d_model));
    let dd = d * d;
    let [wq, wk, wv, wo] = spec.offsets(layer).attn;
    matmul(&r.h, &theta[wq..wq + dd], d, &mut r.q);
    matmul(&r.h, &theta[wk..wk + dd], d, &mut r.k);
    matmul(&r.h, &theta[wv..wv + dd], d, &mut r.v);
    let width = fixed(W, d / spec.heads);
    let scale = 1.0 / (width as f64).sqrt();
    for head in 0..spec.heads {
        let cols = head * width..(head + 1) * width;
        let weights = &mut r.weights[head * l * l..(head + 1) * l * l];
        for (t, row) in weights.chunks_exact_mut(l).enumerate() {
            for (u, w) in row.iter_mut().enumerate() {
                let dot: f64 = r.q[t * d..][cols.clone()]
                    .iter()
                    .zip(&r.k[u * d..][cols.clone()])
                    .map(|(a, b)| a * b)
                    .sum();
                *w = dot * scale;
            }
        }
        softmax_rows(weights, l);
        for (t, weights) in weights.chunks_exact(l).enumerate() {
            for c in cols.clone() {
                r.context[t * d + c] = (0..l).map(|u| weights[u] * r.v[u * d + c]).sum();
            }
        }
    }
    matmul(&r.context, &theta[wo..wo + dd], d, &mut r.attn);
}

/// One token's top-k experts into `ws.selected`, ascending, as [`select_top_k`] chooses them (equal
/// scores keep the lower expert first); returns the lowest chosen score and the highest other one
/// (`-∞` if none), the margin the boundary test reads. Written for one token: the lane form's
/// compare-and-select costs more here. Scores with a NaN go through [`select_top_k`] itself.
#[inline(always)]
fn top_k(scores: &[f64], k: usize, ws: &mut Routing) -> (f64, f64) {
    let (top, selected) = (&mut ws.top_scores[..k], &mut ws.selected[..k]);
    if scores.iter().any(|s| s.is_nan()) {
        let mut highest = [0.0];
        select_top_k::<1>(scores, k, top, &mut ws.top_experts, &mut highest);
        for (s, &j) in selected.iter_mut().zip(ws.top_experts.iter()) {
            *s = j as usize;
        }
        let lowest_chosen = top.iter().copied().fold(f64::INFINITY, f64::min);
        let highest_other = (0..scores.len())
            .filter(|j| !selected.contains(j))
            .map(|j| scores[j])
            .fold(f64::NEG_INFINITY, f64::max);
        return (lowest_chosen, highest_other);
    }
    // the kept scores in descending order; a score enters above the first that is strictly lower,
    // and every score that does not stay (never entered, or pushed out) is an "other"
    let mut highest_other = f64::NEG_INFINITY;
    for (j, &score) in scores.iter().enumerate() {
        let mut place = j.min(k);
        if place == k {
            if score <= top[k - 1] {
                highest_other = highest_other.max(score);
                continue;
            }
            highest_other = highest_other.max(top[k - 1]);
            place = k - 1;
        }
        while place > 0 && score > top[place - 1] {
            top[place] = top[place - 1];
            selected[place] = selected[place - 1];
            place -= 1;
        }
        top[place] = score;
        selected[place] = j;
    }
    let lowest_chosen = top[k - 1];
    selected.sort_unstable();
    (lowest_chosen, highest_other)
}

/// `MoE(Z)`, recorded, into `out`; each token's colex rank into `routes`. Returns whether some
/// token sits on a boundary. Every token is routed, but only the first `read` tokens' experts are
/// evaluated: the others' `out` is left zero (the last layer's tokens no output reads).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn mixture<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    layer: usize,
    r: &mut LayerRecord,
    ws: &mut Routing,
    out: &mut [f64],
    routes: &mut [u32],
    read: usize,
) -> bool {
    let (d, m, k, h) = (
        fixed(D, spec.d_model),
        spec.experts,
        spec.top_k,
        fixed(H, spec.expert_hidden),
    );
    let offsets = spec.offsets(layer);
    let weight = &theta[offsets.router_weight..offsets.router_bias];
    let bias = &theta[offsets.router_bias..offsets.experts];
    let size = spec.expert_params();
    let mut boundary = false;
    for (t, z) in r.z.chunks_exact(d).enumerate() {
        let scores = &mut r.scores[t * m..(t + 1) * m];
        for ((s, row), &b) in scores.iter_mut().zip(weight.chunks_exact(d)).zip(bias) {
            *s = row.iter().zip(z).map(|(w, x)| w * x).sum::<f64>() + b;
        }
        let (lowest_chosen, highest_other) = top_k(scores, k, ws);
        routes[t] = ws.ranks.rank(&ws.selected);
        if k < m {
            boundary |= near(lowest_chosen, highest_other);
        }
        let chosen = &mut r.chosen[t * k..(t + 1) * k];
        chosen.copy_from_slice(&ws.selected);
        if spec.gate == Gate::RenormalizedSoftmax {
            let gates = &mut r.gates[t * k..(t + 1) * k];
            gates.iter_mut().zip(chosen.iter()).for_each(|(g, &j)| *g = scores[j]);
        }
    }
    // every token's gates at once (their exponentials in one loop)
    match spec.gate {
        Gate::Uniform => r.gates.fill(1.0 / k as f64),
        Gate::RenormalizedSoftmax => softmax_rows(&mut r.gates, k),
        Gate::FullSoftmax => {
            r.probs.copy_from_slice(&r.scores);
            softmax_rows(&mut r.probs, m);
            for ((gates, chosen), probs) in r
                .gates
                .chunks_exact_mut(k)
                .zip(r.chosen.chunks_exact(k))
                .zip(r.probs.chunks_exact(m))
            {
                gates.iter_mut().zip(chosen).for_each(|(g, &j)| *g = probs[j]);
            }
        }
    }
    out[read * d..].fill(0.0);
    for (t, z) in r.z.chunks_exact(d).take(read).enumerate() {
        let chosen = &r.chosen[t * k..(t + 1) * k];
        let gates = &r.gates[t * k..(t + 1) * k];
        // a hidden unit's magnitude Σ|w_c z_c| + |b| is at most ‖w‖₁·max|z_c| + |b| (twice that
        // covers the rounding of both sides), so a pre-activation above TOLERANCE times it is
        // no tie, and the exact test below is needed only under this screen
        let z_max = z.iter().fold(0.0f64, |acc, x| acc.max(x.abs()));
        let (row_norm, bias) = r.hidden_bound;
        let screen = BOUNDARY_TOLERANCE * (2.0 * (row_norm * z_max + bias)).max(1.0);
        let out_t = &mut out[t * d..(t + 1) * d];
        out_t.fill(0.0);
        for p in 0..k {
            let j = chosen[p];
            let params = &theta[offsets.experts + j * size..][..size];
            let e = &mut r.outputs[(t * k + p) * d..(t * k + p + 1) * d];
            match spec.expert {
                ExpertKind::Constant => e.copy_from_slice(&params[..d]),
                ExpertKind::Linear => {
                    let (a, bias) = params.split_at(d * d);
                    for ((e_r, row), &b) in e.iter_mut().zip(a.chunks_exact(d)).zip(bias) {
                        *e_r = row.iter().zip(z).map(|(w, x)| w * x).sum::<f64>() + b;
                    }
                }
                ExpertKind::Mlp => {
                    let (w1, rest) = params.split_at(h * d);
                    let (b1, rest) = rest.split_at(h);
                    let (w2, b2) = rest.split_at(d * h);
                    let pre = &mut r.pre[(t * k + p) * h..(t * k + p + 1) * h];
                    for ((a, row), &b) in pre.iter_mut().zip(w1.chunks_exact(d)).zip(b1) {
                        *a = row.iter().zip(z).map(|(w, x)| w * x).sum::<f64>() + b;
                        // the exact magnitude only where the screen cannot rule a tie out
                        if a.abs() <= screen {
                            let magnitude = row.iter().zip(z).map(|(w, x)| (w * x).abs()).sum::<f64>() + b.abs();
                            boundary |= a.abs() <= BOUNDARY_TOLERANCE * magnitude.max(1.0);
                        }
                    }
                    for ((e_r, row), &b) in e.iter_mut().zip(w2.chunks_exact(h)).zip(&b2[..d]) {
                        *e_r = row.iter().zip(pre.iter()).map(|(w, a)| w * a.max(0.0)).sum::<f64>() + b;
                    }
                }
            }
            for (o, &e_r) in out_t.iter_mut().zip(e.iter()) {
                *o += gates[p] * e_r;
            }
        }
    }
    boundary
}

/// The forward pass of θ on one input `x`, recorded in `ws`; the last block's H in `ws.out` (on
/// the tokens the readout reads: the others lack their experts' part), the routes of every token
/// into `routes`. Returns whether θ is on a boundary for this input.
#[inline(always)]
fn record<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    x: &[f64],
    ws: &mut Workspace,
    routes: &mut [u32],
) -> bool {
    let l = spec.seq_len;
    let Workspace {
        layers, out, routing, ..
    } = ws;
    let mut boundary = false;
    layers[0].h.copy_from_slice(x);
    for layer in 0..spec.layers {
        let (done, rest) = layers.split_at_mut(layer + 1);
        let r = &mut done[layer];
        // one head's width is d_model: known at compile time where D is
        match spec.heads {
            0 => r.attn.fill(0.0),
            1 => attention::<D, D>(spec, theta, layer, r),
            _ => attention::<D, 0>(spec, theta, layer, r),
        }
        match spec.block {
            Block::Sequential => {
                for ((z, &h), &a) in r.z.iter_mut().zip(&r.h).zip(&r.attn) {
                    *z = h + a;
                }
            }
            Block::Parallel => r.z.copy_from_slice(&r.h),
        }
        let layer_routes = &mut routes[layer * l..(layer + 1) * l];
        // the outputs read the last layer's token 0 only, unless the readout is every token: the
        // other tokens' experts there change no output (nor the Jacobian), so they are skipped,
        // and a ReLU tie in them is no boundary
        let read = match spec.readout {
            Readout::Scalar | Readout::Token0 if layer + 1 == spec.layers => 1,
            _ => l,
        };
        boundary |= mixture::<D, H>(spec, theta, layer, r, routing, out, layer_routes, read);
        // the block's output: H' = Y + MoE(Y) (sequential) or H + Attn(H) + MoE(H) (parallel)
        for (i, o) in out.iter_mut().enumerate() {
            *o += match spec.block {
                Block::Sequential => r.z[i],
                Block::Parallel => r.h[i] + r.attn[i],
            };
        }
        if let Some(next) = rest.first_mut() {
            next.h.copy_from_slice(out);
        }
    }
    boundary
}

/// The readout's coordinate `c` as an index into the last block's H (`ℓ × D`).
#[inline(always)]
fn readout_index(spec: &MoeSpec, c: usize) -> usize {
    match spec.readout {
        Readout::Scalar => 0,
        Readout::Token0 | Readout::All => c,
    }
}

// Index loops: each step reads three or four arrays at related indices, as the formulas do.
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
/// The reverse of `Attn(H)`: `d_attn` (∂f/∂Attn(H)) into the gradient `grad` and `d_h += ∂f/∂H`.
/// `W` as in [`attention`].
#[inline(always)]
fn attention_reverse<const D: usize, const W: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    layer: usize,
    r: &LayerRecord,
    d_attn: &[f64],
    ws: &mut Scratch,
    grad: &mut [f64],
    d_h: &mut [f64],
) {
    let (l, d) = (spec.seq_len, fixed(D, spec.d_model));
    let dd = d * d;
    let [wq, wk, wv, wo] = spec.offsets(layer).attn;
    ws.d_context.fill(0.0);
    matmul_reverse(
        &r.context,
        &theta[wo..wo + dd],
        d,
        d_attn,
        &mut grad[wo..wo + dd],
        &mut ws.d_context,
    );
    ws.d_q.fill(0.0);
    ws.d_k.fill(0.0);
    ws.d_v.fill(0.0);
    let width = fixed(W, d / spec.heads);
    let scale = 1.0 / (width as f64).sqrt();
    for head in 0..spec.heads {
        let cols = head * width..(head + 1) * width;
        for t in 0..l {
            if is_zero(&ws.d_context[t * d..][cols.clone()]) {
                continue;
            }
            let weights = &r.weights[(head * l + t) * l..(head * l + t + 1) * l];
            // context_t = Σ_u p_u v_u: ∂p_u = d_context_t · v_u, ∂v_u += p_u d_context_t
            for u in 0..l {
                let mut dot = 0.0;
                for c in cols.clone() {
                    dot += ws.d_context[t * d + c] * r.v[u * d + c];
                    ws.d_v[u * d + c] += weights[u] * ws.d_context[t * d + c];
                }
                ws.d_weights[u] = dot;
            }
            // softmax: ∂s_u = p_u (∂p_u − Σ_u' p_u' ∂p_u')
            let mean: f64 = weights.iter().zip(ws.d_weights.iter()).map(|(p, dp)| p * dp).sum();
            for u in 0..l {
                let d_score = weights[u] * (ws.d_weights[u] - mean) * scale;
                for c in cols.clone() {
                    ws.d_q[t * d + c] += d_score * r.k[u * d + c];
                    ws.d_k[u * d + c] += d_score * r.q[t * d + c];
                }
            }
        }
    }
    matmul_reverse(&r.h, &theta[wq..wq + dd], d, &ws.d_q, &mut grad[wq..wq + dd], d_h);
    matmul_reverse(&r.h, &theta[wk..wk + dd], d, &ws.d_k, &mut grad[wk..wk + dd], d_h);
    matmul_reverse(&r.h, &theta[wv..wv + dd], d, &ws.d_v, &mut grad[wv..wv + dd], d_h);
}

#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
/// The reverse of `MoE(Z)`: `d_moe` (∂f/∂MoE(Z)) into the gradient `grad` and `d_z += ∂f/∂Z`.
#[inline(always)]
fn mixture_reverse<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    layer: usize,
    r: &LayerRecord,
    d_moe: &[f64],
    ws: &mut Scratch,
    grad: &mut [f64],
    d_z: &mut [f64],
) {
    let (d, m, k, h) = (
        fixed(D, spec.d_model),
        spec.experts,
        spec.top_k,
        fixed(H, spec.expert_hidden),
    );
    let offsets = spec.offsets(layer);
    let size = spec.expert_params();
    for (t, z) in r.z.chunks_exact(d).enumerate() {
        let d_out = &d_moe[t * d..(t + 1) * d];
        if is_zero(d_out) {
            continue;
        }
        let d_zt = &mut d_z[t * d..(t + 1) * d];
        let chosen = &r.chosen[t * k..(t + 1) * k];
        let gates = &r.gates[t * k..(t + 1) * k];
        for p in 0..k {
            let j = chosen[p];
            let start = offsets.experts + j * size;
            let params = &theta[start..start + size];
            let g_params = &mut grad[start..start + size];
            let reached = &mut ws.reached[layer * m + j];
            if !*reached {
                *reached = true;
                if ws.zero_when_reached {
                    g_params.fill(0.0);
                }
            }
            let e = &r.outputs[(t * k + p) * d..(t * k + p + 1) * d];
            ws.d_gates[p] = d_out.iter().zip(e).map(|(a, b)| a * b).sum();
            let gate = gates[p];
            match spec.expert {
                ExpertKind::Constant => {
                    for (g, &dy) in g_params[..d].iter_mut().zip(d_out) {
                        *g += gate * dy;
                    }
                }
                ExpertKind::Linear => {
                    let (a, _) = params.split_at(d * d);
                    for (row, &dy) in d_out.iter().enumerate() {
                        let de = gate * dy;
                        for c in 0..d {
                            g_params[row * d + c] += de * z[c];
                            d_zt[c] += de * a[row * d + c];
                        }
                        g_params[d * d + row] += de;
                    }
                }
                ExpertKind::Mlp => {
                    let (w1, rest) = params.split_at(h * d);
                    let (_, rest) = rest.split_at(h);
                    let (w2, _) = rest.split_at(d * h);
                    let pre = &r.pre[(t * k + p) * h..(t * k + p + 1) * h];
                    let (gw1, rest) = g_params.split_at_mut(h * d);
                    let (gb1, rest) = rest.split_at_mut(h);
                    let (gw2, gb2) = rest.split_at_mut(d * h);
                    ws.d_hidden.fill(0.0);
                    for (row, &dy) in d_out.iter().enumerate() {
                        let de = gate * dy;
                        for u in 0..h {
                            gw2[row * h + u] += de * pre[u].max(0.0);
                            ws.d_hidden[u] += de * w2[row * h + u];
                        }
                        gb2[row] += de;
                    }
                    for u in 0..h {
                        let d_pre = if pre[u] > 0.0 { ws.d_hidden[u] } else { 0.0 };
                        for c in 0..d {
                            gw1[u * d + c] += d_pre * z[c];
                            d_zt[c] += d_pre * w1[u * d + c];
                        }
                        gb1[u] += d_pre;
                    }
                }
            }
        }
        // the gates' dependence on the router scores
        ws.d_scores.fill(0.0);
        let weighted: f64 = gates.iter().zip(ws.d_gates.iter()).map(|(g, dg)| g * dg).sum();
        match spec.gate {
            Gate::Uniform => continue,
            Gate::RenormalizedSoftmax => {
                for p in 0..k {
                    ws.d_scores[chosen[p]] = gates[p] * (ws.d_gates[p] - weighted);
                }
            }
            Gate::FullSoftmax => {
                let probs = &r.probs[t * m..(t + 1) * m];
                for (s, &prob) in ws.d_scores.iter_mut().zip(probs) {
                    *s = -prob * weighted;
                }
                for p in 0..k {
                    ws.d_scores[chosen[p]] += gates[p] * ws.d_gates[p];
                }
            }
        }
        // scores s = W_r z + b_r
        let weight = &theta[offsets.router_weight..offsets.router_bias];
        for (j, &ds) in ws.d_scores.iter().enumerate() {
            for c in 0..d {
                grad[offsets.router_weight + j * d + c] += ds * z[c];
                d_zt[c] += ds * weight[j * d + c];
            }
            grad[offsets.router_bias + j] += ds;
        }
    }
}

/// The gradient of the last block's H at index `index` with respect to θ, into `grad` (length P,
/// zeroed here: whole, or only the blocks the pass reaches if `ws.scratch.zero_when_reached`),
/// from the recording in `ws`; `ws.scratch.reached` says which experts it reached.
#[inline(always)]
fn reverse<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    ws: &mut Workspace,
    index: usize,
    grad: &mut [f64],
) {
    if ws.scratch.zero_when_reached {
        // attention and router of every layer now; each expert's block when first reached
        for layer in 0..spec.layers {
            grad[layer * spec.layer_params()..spec.offsets(layer).experts].fill(0.0);
        }
    } else {
        grad.fill(0.0);
    }
    ws.scratch.reached.fill(false);
    let Workspace {
        layers,
        d_out,
        d_in,
        d_branch,
        scratch,
        ..
    } = ws;
    d_out.fill(0.0);
    d_out[index] = 1.0;
    for layer in (0..spec.layers).rev() {
        let r = &layers[layer];
        match spec.block {
            Block::Sequential => {
                // H' = Y + MoE(Y), Y = H + Attn(H)
                d_branch.copy_from_slice(d_out);
                mixture_reverse::<D, H>(spec, theta, layer, r, d_out, scratch, grad, d_branch);
                d_in.copy_from_slice(d_branch);
            }
            Block::Parallel => {
                // H' = H + Attn(H) + MoE(H)
                d_in.copy_from_slice(d_out);
                mixture_reverse::<D, H>(spec, theta, layer, r, d_out, scratch, grad, d_in);
            }
        }
        // ∂f/∂Attn(H): that of Y (sequential) or of the block's output (parallel); one head's
        // width is d_model, known at compile time where D is
        let d_attn = match spec.block {
            Block::Sequential => &*d_branch,
            Block::Parallel => &*d_out,
        };
        match spec.heads {
            0 => {}
            1 => attention_reverse::<D, D>(spec, theta, layer, r, d_attn, scratch, grad, d_in),
            _ => attention_reverse::<D, 0>(spec, theta, layer, r, d_attn, scratch, grad, d_in),
        }
        std::mem::swap(d_out, d_in);
    }
}

/// Per layer, θ's [`LayerRecord::hidden_bound`] (mlp experts; nothing to bound otherwise).
fn bound_hidden_units(spec: &MoeSpec, theta: &[f64], ws: &mut Workspace) {
    if spec.expert != ExpertKind::Mlp {
        return;
    }
    let (d, h, size) = (spec.d_model, spec.expert_hidden, spec.expert_params());
    for (layer, record) in ws.layers.iter_mut().enumerate() {
        let experts = &theta[spec.offsets(layer).experts..][..spec.experts * size];
        let (mut row_norm, mut bias) = (0.0f64, 0.0f64);
        for params in experts.chunks_exact(size) {
            let (w1, rest) = params.split_at(h * d);
            for row in w1.chunks_exact(d) {
                row_norm = row_norm.max(row.iter().map(|w| w.abs()).sum());
            }
            bias = rest[..h].iter().fold(bias, |acc, b| acc.max(b.abs()));
        }
        record.hidden_bound = (row_norm, bias);
    }
}

/// Values, routes, Jacobian rows and the boundary flag of θ on every input.
#[inline(always)]
fn jacobian_of_one<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    inputs: &[f64],
    ws: &mut Workspace,
    out: JacobianOfOne<'_>,
) -> bool {
    let (o, r, p) = (spec.output_dim(), spec.routes_per_input(), spec.total_params());
    bound_hidden_units(spec, theta, ws);
    let JacobianOfOne {
        values,
        routes,
        matrix,
        mut reached_rows,
    } = out;
    ws.scratch.zero_when_reached = reached_rows.is_some();
    let words = (inputs.len() / spec.input_len() * o).div_ceil(64);
    let mut boundary = false;
    for (i, x) in inputs.chunks_exact(spec.input_len()).enumerate() {
        boundary |= record::<D, H>(spec, theta, x, ws, &mut routes[i * r..(i + 1) * r]);
        for c in 0..o {
            let (index, row) = (readout_index(spec, c), i * o + c);
            values[row] = ws.out[index];
            reverse::<D, H>(spec, theta, ws, index, &mut matrix[row * p..(row + 1) * p]);
            if let Some(reached_rows) = reached_rows.as_deref_mut() {
                for (slot, _) in ws.scratch.reached.iter().enumerate().filter(|(_, &reached)| reached) {
                    reached_rows[slot * words + row / 64] |= 1 << (row % 64);
                }
            }
        }
    }
    boundary
}

/// [`jacobian_of_one`] compiled for the workspace's instruction set.
fn jacobian_of_theta(
    spec: &MoeSpec,
    theta: &[f64],
    inputs: &[f64],
    ws: &mut Workspace,
    out: JacobianOfOne<'_>,
) -> bool {
    let simd = ws.simd;
    simd.dispatch(OneTheta {
        spec,
        theta,
        inputs,
        ws,
        out,
    })
}

/// One θ's [`jacobian_of_one`], as `pulp` dispatches it: the whole pass compiled for the CPU's
/// widest instructions (no fused multiply-add: Rust never contracts, so the bits are the same).
struct OneTheta<'a, 'b> {
    spec: &'a MoeSpec,
    theta: &'a [f64],
    inputs: &'a [f64],
    ws: &'a mut Workspace,
    out: JacobianOfOne<'b>,
}

impl pulp::WithSimd for OneTheta<'_, '_> {
    type Output = bool;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> bool {
        let OneTheta {
            spec,
            theta,
            inputs,
            ws,
            out,
        } = self;
        // the common widths compiled as constants (their loops unrolled into whole registers)
        match (spec.d_model, spec.expert_hidden) {
            (4, 8) => jacobian_of_one::<4, 8>(spec, theta, inputs, ws, out),
            (2, 2) => jacobian_of_one::<2, 2>(spec, theta, inputs, ws, out),
            _ => jacobian_of_one::<0, 0>(spec, theta, inputs, ws, out),
        }
    }
}

/// The output slices of one θ.
struct JacobianOfOne<'a> {
    values: &'a mut [f64],
    routes: &'a mut [u32],
    matrix: &'a mut [f64],
    /// For the rank certificate: per (layer, expert), a bit per row of `matrix` set when the row
    /// reached the expert (`rows.div_ceil(64)` words each, cleared by the caller). Given, each row
    /// is zeroed only on the blocks it reaches, and its other experts' entries are left as they
    /// were; absent, rows are zeroed whole.
    reached_rows: Option<&'a mut [u64]>,
}

/// The Jacobians of every row of `params` (`m × P`) on every input (`n × seq_len × d_model`),
/// multithreaded over θ; the same bits for any thread count.
pub fn jacobian(
    spec: &MoeSpec,
    params: &[f64],
    inputs: &[f64],
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<Jacobians> {
    let (o, r, p) = (spec.output_dim(), spec.routes_per_input(), spec.total_params());
    check_shapes(spec, params, inputs)?;
    let (m, n) = (params.len() / p, inputs.len() / spec.input_len());
    let mut values: Vec<f64> = allocate("params", &[m, n, o])?;
    let mut routes: Vec<u32> = allocate("params", &[m, n, r])?;
    let mut matrix: Vec<f64> = allocate("params", &[m, n, o, p])?;
    let mut on_boundary = vec![false; m];
    if m == 0 || n == 0 {
        return Ok(Jacobians {
            values,
            routes,
            matrix,
            on_boundary,
        });
    }
    let pool = pool(n_threads)?;
    let cost = n * o * (p + 4 * crate::forward::flops_per_input(spec));
    run_chunked(&pool, m, chunk_len(cost, n_threads), interrupt, |samples| {
        let range = samples.start..samples.end;
        values[range.start * n * o..range.end * n * o]
            .par_chunks_mut(n * o)
            .zip(routes[range.start * n * r..range.end * n * r].par_chunks_mut(n * r))
            .zip(matrix[range.start * n * o * p..range.end * n * o * p].par_chunks_mut(n * o * p))
            .zip(on_boundary[range.clone()].par_iter_mut())
            .enumerate()
            .for_each_init(
                || Workspace::new(spec),
                |ws, (i, (((values, routes), matrix), boundary))| {
                    let s = range.start + i;
                    let theta = &params[s * p..(s + 1) * p];
                    let out = JacobianOfOne {
                        values,
                        routes,
                        matrix,
                        reached_rows: None,
                    };
                    *boundary = jacobian_of_theta(spec, theta, inputs, ws, out);
                },
            );
    })?;
    Ok(Jacobians {
        values,
        routes,
        matrix,
        on_boundary,
    })
}

/// Per θ: its routes, whether it is on a boundary, and whether its Jacobian (restricted to the
/// free columns) is certified to have full row rank ([`crate::rank`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RankCertificates {
    pub routes: Vec<u32>,
    pub on_boundary: Vec<bool>,
    pub full_row_rank: Vec<bool>,
}

/// For every row θ of `params`: the Jacobian on `inputs`, in a buffer each thread reuses (nothing
/// of size m·n·P is allocated), and whether its columns in `free` (blocks of θ's layout, not
/// overlapping) certainly have full row rank at the threshold `rtol · σ_1`. The functional
/// dimension's fast path: a θ certified here has rank n·o on every prefix of the inputs, and only
/// the others need their Jacobian returned and factorised. The same bits for any thread count.
pub fn certify_full_row_rank(
    spec: &MoeSpec,
    params: &[f64],
    inputs: &[f64],
    free: &[std::ops::Range<usize>],
    rtol: f64,
    n_threads: usize,
    interrupt: Interrupt,
) -> Result<RankCertificates> {
    let (o, r, p) = (spec.output_dim(), spec.routes_per_input(), spec.total_params());
    check_shapes(spec, params, inputs)?;
    if let Some(bad) = free.iter().find(|b| b.start > b.end || b.end > p) {
        return Err(Error::invalid("free", format!("block {bad:?} is not within 0..{p}")));
    }
    if !(rtol > 0.0 && rtol < 1.0) {
        return Err(Error::invalid("rtol", format!("must be in (0, 1), got {rtol}")));
    }
    let (m, n) = (params.len() / p, inputs.len() / spec.input_len());
    let mut routes: Vec<u32> = allocate("params", &[m, n, r])?;
    let mut on_boundary = vec![false; m];
    let mut full_row_rank = vec![false; m];
    if m == 0 || n == 0 {
        return Ok(RankCertificates {
            routes,
            on_boundary,
            full_row_rank,
        });
    }
    // one Jacobian and one Gram matrix per thread, checked (reserved, not written) before the work
    let _: Vec<f64> = reserve("inputs", &[n_threads.max(1), n * o, p + n * o])?;
    // the free columns cut where an expert's parameters begin and end, so that each piece's rows
    // are known from the reverse pass: every row (attention, router) or the rows that reached
    // its expert, and a row's entries of the experts it did not reach are never read
    let (pieces, owners) = pieces_by_expert(spec, free);
    let words = (n * o).div_ceil(64);
    let every_row: Vec<u64> = (0..words)
        .map(|w| match (n * o - 64 * w).min(64) {
            64 => u64::MAX,
            bits => (1u64 << bits) - 1,
        })
        .collect();
    let pool = pool(n_threads)?;
    let cost = n * o * (p + n * o + 4 * crate::forward::flops_per_input(spec));
    run_chunked(&pool, m, chunk_len(cost, n_threads), interrupt, |samples| {
        let range = samples.start..samples.end;
        routes[range.start * n * r..range.end * n * r]
            .par_chunks_mut(n * r)
            .zip(on_boundary[range.clone()].par_iter_mut())
            .zip(full_row_rank[range.clone()].par_iter_mut())
            .enumerate()
            .for_each_init(
                || {
                    let buffers = (vec![0.0; n * o], vec![0.0; n * o * p]);
                    let masks = (
                        vec![0u64; spec.layers * spec.experts * words],
                        vec![0u64; pieces.len() * words],
                    );
                    (
                        Workspace::new(spec),
                        buffers,
                        masks,
                        crate::rank::GramScratch::new(n * o),
                    )
                },
                |(ws, (values, matrix), (reached, masks), gram), (i, ((routes, boundary), certified))| {
                    let s = range.start + i;
                    let theta = &params[s * p..(s + 1) * p];
                    reached.fill(0);
                    let out = JacobianOfOne {
                        values,
                        routes,
                        matrix,
                        reached_rows: Some(reached),
                    };
                    *boundary = jacobian_of_theta(spec, theta, inputs, ws, out);
                    for (mask, owner) in masks.chunks_exact_mut(words).zip(&owners) {
                        mask.copy_from_slice(match owner {
                            Some(slot) => &reached[slot * words..(slot + 1) * words],
                            None => &every_row,
                        });
                    }
                    *certified = crate::rank::full_row_rank_given_rows(matrix, n * o, p, &pieces, masks, rtol, gram);
                },
            );
    })?;
    Ok(RankCertificates {
        routes,
        on_boundary,
        full_row_rank,
    })
}

/// `free` cut at the first column of every expert and of every layer, with the expert each piece
/// lies in (`layer · experts + j`; `None` for a layer's attention and router).
fn pieces_by_expert(
    spec: &MoeSpec,
    free: &[std::ops::Range<usize>],
) -> (Vec<std::ops::Range<usize>>, Vec<Option<usize>>) {
    let (per_layer, size) = (spec.layer_params(), spec.expert_params());
    let (mut pieces, mut owners) = (Vec::new(), Vec::new());
    for block in free {
        let mut start = block.start;
        while start < block.end {
            let layer = start / per_layer;
            let experts = spec.offsets(layer).experts;
            let (owner, end) = if start < experts {
                (None, experts)
            } else {
                let j = (start - experts) / size;
                (Some(layer * spec.experts + j), experts + (j + 1) * size)
            };
            let end = end.min(block.end);
            pieces.push(start..end);
            owners.push(owner);
            start = end;
        }
    }
    (pieces, owners)
}

/// `params` a whole number of θ and `inputs` a whole number of inputs.
fn check_shapes(spec: &MoeSpec, params: &[f64], inputs: &[f64]) -> Result<()> {
    let p = spec.total_params();
    if !params.len().is_multiple_of(p) {
        return Err(Error::invalid(
            "params",
            format!("length {} is not a multiple of P = {p}", params.len()),
        ));
    }
    if !inputs.len().is_multiple_of(spec.input_len()) {
        return Err(Error::invalid(
            "inputs",
            format!(
                "length {} is not a multiple of seq_len * d_model = {}",
                inputs.len(),
                spec.input_len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::one;
    use crate::parallel::never;
    use crate::sampling::{sample_row, Sampler};
    use crate::spec::{option_combinations, SpecOptions};

    /// Values and routes of the forward pass (the one [`crate::evaluate`] runs).
    fn forward(spec: &MoeSpec, theta: &[f64], inputs: &[f64]) -> (Vec<f64>, Vec<u32>) {
        let n = inputs.len() / spec.input_len();
        let mut ws = one::Workspace::new(spec);
        one::prepare(spec, theta, &mut ws);
        let (o, r) = (spec.output_dim(), spec.routes_per_input());
        let (mut values, mut routes) = (vec![0.0; n * o], vec![0u32; n * r]);
        for ((x, v), rt) in inputs
            .chunks_exact(spec.input_len())
            .zip(values.chunks_exact_mut(o))
            .zip(routes.chunks_exact_mut(r))
        {
            one::forward(spec, theta, x, &mut ws, v, rt);
        }
        (values, routes)
    }

    /// The one-token top-k equals the lane form's choice, with the margin computed from it, on
    /// scores with many ties, infinities and NaNs.
    #[test]
    fn top_k_chooses_as_the_lane_form() {
        // few values, so that ties are common; NaN in one case in eight
        let palette = [-1.0, 0.0, 0.25, 0.5, 2.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN];
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for case in 0..4000 {
            let m = 1 + case % 9;
            let k = 1 + (case / 9) % m;
            let colours = if case % 8 == 0 {
                palette.len()
            } else {
                palette.len() - 1
            };
            let scores: Vec<f64> = (0..m).map(|_| palette[next() % colours]).collect();
            let mut routing = Routing {
                ranks: RankTable::new(m, k),
                top_scores: vec![0.0; k],
                top_experts: vec![0.0; k],
                selected: vec![0; k],
            };
            let (lowest, other) = top_k(&scores, k, &mut routing);
            let (mut top, mut experts, mut highest) = (vec![0.0; k], vec![0.0; k], [0.0]);
            select_top_k::<1>(&scores, k, &mut top, &mut experts, &mut highest);
            let expected: Vec<usize> = experts.iter().map(|&j| j as usize).collect();
            assert_eq!(routing.selected, expected, "{scores:?} k={k}");
            if !scores.iter().any(|s| s.is_nan()) {
                let min = top.iter().copied().fold(f64::INFINITY, f64::min);
                let max_other = (0..m)
                    .filter(|j| !expected.contains(j))
                    .map(|j| scores[j])
                    .fold(f64::NEG_INFINITY, f64::max);
                assert_eq!((lowest, other), (min, max_other), "{scores:?} k={k}");
            }
        }
    }

    fn options() -> Vec<SpecOptions<'static>> {
        let combinations = option_combinations().into_iter().enumerate();
        combinations
            .map(|(case, (heads, block, gate, expert, readout))| SpecOptions {
                layers: 1 + (case as i64 + 1) % 2,
                experts: 4,
                top_k: 1 + (case as i64 + 1) % 2,
                d_model: 4,
                seq_len: 2,
                heads,
                expert,
                expert_hidden: 3,
                gate,
                block,
                readout,
                param_bound: 1.0,
            })
            .collect()
    }

    /// Central finite differences of the forward pass agree with the reverse pass wherever no
    /// routing pattern changes inside the stencil, on every option; the values are the forward
    /// pass's up to rounding, and its routes exactly.
    #[test]
    fn the_jacobian_equals_central_differences_on_every_option() {
        for (case, options) in options().into_iter().enumerate() {
            let spec = MoeSpec::new(&options).expect("valid");
            let p = spec.total_params();
            let mut theta = vec![0.0; p];
            sample_row(case as u64, 0, 1.0, Sampler::Uniform, &Vec::new(), &mut theta);
            let n = 3;
            let mut inputs = vec![0.0; n * spec.input_len()];
            sample_row(case as u64, 1, 1.0, Sampler::Uniform, &Vec::new(), &mut inputs);
            let found = jacobian(&spec, &theta, &inputs, 1, &mut never()).expect("ok");
            let (values, routes) = forward(&spec, &theta, &inputs);
            assert_eq!(found.routes, routes, "case {case}");
            for (a, b) in found.values.iter().zip(&values) {
                assert!((a - b).abs() <= 1e-12 * (1.0 + b.abs()), "case {case}: {a} vs {b}");
            }
            let step = 1e-6;
            let mut compared = 0;
            for j in 0..p {
                let (mut plus, mut minus) = (theta.clone(), theta.clone());
                plus[j] += step;
                minus[j] -= step;
                let ((f_plus, r_plus), (f_minus, r_minus)) =
                    (forward(&spec, &plus, &inputs), forward(&spec, &minus, &inputs));
                if r_plus != routes || r_minus != routes {
                    continue;
                }
                compared += 1;
                for (row, (a, b)) in f_plus.iter().zip(&f_minus).enumerate() {
                    let difference = (a - b) / (2.0 * step);
                    let exact = found.matrix[row * p + j];
                    assert!(
                        (difference - exact).abs() <= 1e-6 * (1.0 + exact.abs()),
                        "case {case} {spec:?}: row {row}, column {j}: {exact} vs {difference}"
                    );
                }
            }
            assert!(compared > p / 2, "case {case}: only {compared} of {p} columns compared");
        }
    }

    /// The certificate's rows: every nonzero entry of a Jacobian lies in a piece its row reached,
    /// and there the rows the pass zeroed block by block (over stale contents) are the same bits
    /// as the rows zeroed whole.
    #[test]
    fn the_rows_that_reached_an_expert_hold_every_nonzero_entry() {
        for (case, options) in options().into_iter().enumerate() {
            let spec = MoeSpec::new(&options).expect("valid");
            let (p, o) = (spec.total_params(), spec.output_dim());
            let n = 6;
            let mut params = vec![0.0; 3 * p];
            sample_row(case as u64, 0, 1.0, Sampler::Uniform, &Vec::new(), &mut params);
            let mut inputs = vec![0.0; n * spec.input_len()];
            sample_row(case as u64, 1, 1.0, Sampler::Uniform, &Vec::new(), &mut inputs);
            let whole = jacobian(&spec, &params, &inputs, 1, &mut never()).expect("ok");
            let (pieces, owners) = pieces_by_expert(&spec, &[0..p / 3, p / 3..p]);
            assert_eq!(pieces.iter().map(|b| b.len()).sum::<usize>(), p);
            let (rows, words) = (n * o, (n * o).div_ceil(64));
            let mut ws = Workspace::new(&spec);
            let (mut values, mut routes, mut matrix) = (
                vec![0.0; rows],
                vec![0; n * spec.routes_per_input()],
                vec![f64::NAN; rows * p],
            );
            for (theta, expected) in params.chunks_exact(p).zip(whole.matrix.chunks_exact(rows * p)) {
                let mut reached = vec![0u64; spec.layers * spec.experts * words];
                let out = JacobianOfOne {
                    values: &mut values,
                    routes: &mut routes,
                    matrix: &mut matrix,
                    reached_rows: Some(&mut reached),
                };
                jacobian_of_theta(&spec, theta, &inputs, &mut ws, out);
                for (piece, owner) in pieces.iter().zip(&owners) {
                    for row in 0..rows {
                        let used = owner.is_none_or(|slot| reached[slot * words + row / 64] >> (row % 64) & 1 == 1);
                        let columns = row * p + piece.start..row * p + piece.end;
                        if used {
                            let (found, expected) = (&matrix[columns.clone()], &expected[columns]);
                            assert!(
                                found.iter().zip(expected).all(|(a, b)| a.to_bits() == b.to_bits()),
                                "case {case}"
                            );
                        } else {
                            assert!(
                                expected[columns].iter().all(|&v| v == 0.0),
                                "case {case}: row {row}, {piece:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_same_bits_for_any_thread_count() {
        let spec = MoeSpec::new(&SpecOptions {
            layers: 2,
            experts: 5,
            top_k: 2,
            d_model: 4,
            seq_len: 3,
            heads: 1,
            ..Default::default()
        })
        .expect("valid");
        let p = spec.total_params();
        let mut params = vec![0.0; 23 * p];
        for (s, theta) in params.chunks_exact_mut(p).enumerate() {
            sample_row(9, s as u64, 1.0, Sampler::Uniform, &Vec::new(), theta);
        }
        let mut inputs = vec![0.0; 5 * spec.input_len()];
        sample_row(9, 99, 1.0, Sampler::Uniform, &Vec::new(), &mut inputs);
        let one = jacobian(&spec, &params, &inputs, 1, &mut never()).expect("ok");
        let two = jacobian(&spec, &params, &inputs, 2, &mut never()).expect("ok");
        assert_eq!(one, two);
        assert_eq!(
            jacobian(&spec, &params, &inputs, 1, &mut || true),
            Err(Error::Interrupted)
        );
        // the certificates: the Gram test on the returned Jacobians, for any thread count
        let free = [0..p / 2, p / 2..p];
        let certify = |threads| certify_full_row_rank(&spec, &params, &inputs, &free, 1e-9, threads, &mut never());
        let (first, second) = (certify(1).expect("ok"), certify(2).expect("ok"));
        assert_eq!(first, second);
        assert_eq!((first.routes, first.on_boundary), (one.routes, one.on_boundary));
        let rows = 5 * spec.output_dim();
        let mut scratch = crate::rank::GramScratch::new(rows);
        let expected: Vec<bool> = one
            .matrix
            .chunks_exact(rows * p)
            .map(|m| crate::rank::full_row_rank(m, rows, p, &free, 1e-9, &mut scratch))
            .collect();
        assert_eq!(first.full_row_rank, expected);
        assert!(expected.iter().any(|&c| c));
    }

    #[test]
    fn a_relu_tie_is_flagged_where_an_output_depends_on_it() {
        // no attention, one expert with one hidden unit, pre-activation x - 0.5: a tie at x = 0.5
        let spec = |readout| {
            MoeSpec::new(&SpecOptions {
                experts: 1,
                top_k: 1,
                d_model: 1,
                seq_len: 2,
                heads: 0,
                expert: "mlp",
                expert_hidden: 1,
                readout,
                ..Default::default()
            })
            .expect("valid")
        };
        let theta = [0.3, 0.0, 1.0, -0.5, 1.0, 0.0];
        let flagged = |readout, x: [f64; 2]| {
            jacobian(&spec(readout), &theta, &x, 1, &mut never())
                .expect("ok")
                .on_boundary[0]
        };
        // the tie on token 0, which every readout reads
        assert!(flagged("scalar", [0.5, 0.2]) && flagged("token0", [0.5, 0.2]) && flagged("all", [0.5, 0.2]));
        // the tie on token 1 of the last layer: only the readout of every token depends on it
        assert!(!flagged("scalar", [0.2, 0.5]) && !flagged("token0", [0.2, 0.5]) && flagged("all", [0.2, 0.5]));
    }

    #[test]
    fn a_tie_at_the_top_k_boundary_is_flagged() {
        // constant experts, one input: router rows 0 and 1 equal, so experts 0 and 1 tie for top-1
        let spec = MoeSpec::new(&SpecOptions {
            experts: 3,
            top_k: 1,
            d_model: 1,
            expert: "constant",
            ..Default::default()
        })
        .expect("valid");
        let tied = [1.0, 1.0, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let apart = [1.0, 0.5, -1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let both: Vec<f64> = tied.iter().chain(&apart).copied().collect();
        let found = jacobian(&spec, &both, &[0.5], 1, &mut never()).expect("ok");
        assert_eq!(found.on_boundary, vec![true, false]);
    }
}
