//! The forward pass of one MoE Transformer `f_θ` on one input `X` (MATH.md §1).
//!
//! Written for tiny widths (D, h, ℓ ≤ tens): plain loops over reused buffers, no allocation per
//! call. Everything is computed in a fixed order, so a given (θ, X) gives the same bits anywhere.

use crate::routing::RankTable;
use crate::spec::{Block, ExpertKind, Gate, MoeSpec, Readout};

/// Scratch buffers for one thread; build once with [`Workspace::new`] and reuse across calls.
pub struct Workspace {
    pub(crate) ranks: RankTable,
    h: Vec<f64>,
    y: Vec<f64>,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    context: Vec<f64>,
    attn: Vec<f64>,
    moe: Vec<f64>,
    attention_weights: Vec<f64>,
    scores: Vec<f64>,
    /// The top-k scores, highest first, and their experts, ascending (see [`select_top_k`]).
    top_scores: Vec<f64>,
    top_experts: Vec<f64>,
    pub(crate) selected: Vec<usize>,
    gates: Vec<f64>,
    hidden: Vec<f64>,
    /// Per layer, for one head: `W_Q W_Kᵀ` then `W_V W_O` (D × D each), set by [`prepare`].
    pub(crate) folded: Vec<f64>,
}

impl Workspace {
    pub fn new(spec: &MoeSpec) -> Self {
        let hd = spec.seq_len * spec.d_model;
        Workspace {
            ranks: RankTable::new(spec.experts, spec.top_k),
            h: vec![0.0; hd],
            y: vec![0.0; hd],
            q: vec![0.0; hd],
            k: vec![0.0; hd],
            v: vec![0.0; hd],
            context: vec![0.0; hd],
            attn: vec![0.0; hd],
            moe: vec![0.0; hd],
            attention_weights: vec![0.0; spec.seq_len],
            scores: vec![0.0; spec.experts],
            top_scores: vec![0.0; spec.top_k],
            top_experts: vec![0.0; spec.top_k],
            selected: vec![0; spec.top_k],
            gates: Vec::with_capacity(spec.top_k),
            hidden: vec![0.0; spec.expert_hidden],
            folded: vec![
                0.0;
                if spec.heads == 1 {
                    2 * spec.layers * spec.d_model * spec.d_model
                } else {
                    0
                }
            ],
        }
    }
}

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

/// `out = a · W` for `a` (rows × D) and `W` (D × D) row-major.
#[inline(always)]
fn matmul_square(a: &[f64], w: &[f64], d: usize, out: &mut [f64]) {
    for (row, out_row) in a.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        out_row.fill(0.0);
        for (&a_i, w_row) in row.iter().zip(w.chunks_exact(d)) {
            for (o, &w_ic) in out_row.iter_mut().zip(w_row) {
                *o += a_i * w_ic;
            }
        }
    }
}

/// In-place softmax with the maximum subtracted first, so no exponent overflows.
fn softmax(values: &mut [f64]) {
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut total = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        total += *v;
    }
    for v in values.iter_mut() {
        *v /= total;
    }
}

/// `Attn(H) = concat_h softmax_rows(Q_h K_hᵀ / √d_h) V_h · W_O`, written into `ws.attn`.
#[inline(always)]
fn attention<const D: usize>(spec: &MoeSpec, theta: &[f64], layer: usize, input: &[f64], ws: &mut Workspace) {
    let (l, d) = (spec.seq_len, d_model::<D>(spec));
    let dd = d * d;
    if spec.heads == 1 {
        return attention_one_head(l, d, layer, input, ws);
    }
    let [wq, wk, wv, wo] = spec.offsets(layer).attn;
    matmul_square(input, &theta[wq..wq + dd], d, &mut ws.q);
    matmul_square(input, &theta[wk..wk + dd], d, &mut ws.k);
    matmul_square(input, &theta[wv..wv + dd], d, &mut ws.v);
    let width = d / spec.heads;
    let scale = 1.0 / (width as f64).sqrt();
    for head in 0..spec.heads {
        let cols = head * width..(head + 1) * width;
        for t in 0..l {
            let q_t = &ws.q[t * d..][cols.clone()];
            for u in 0..l {
                let k_u = &ws.k[u * d..][cols.clone()];
                let dot: f64 = q_t.iter().zip(k_u).map(|(a, b)| a * b).sum();
                ws.attention_weights[u] = dot * scale;
            }
            softmax(&mut ws.attention_weights);
            let context = &mut ws.context[t * d..][cols.clone()];
            context.fill(0.0);
            for u in 0..l {
                let p = ws.attention_weights[u];
                for (c, &v) in context.iter_mut().zip(&ws.v[u * d..][cols.clone()]) {
                    *c += p * v;
                }
            }
        }
    }
    matmul_square(&ws.context, &theta[wo..wo + dd], d, &mut ws.attn);
}

/// One head, with the per-θ products of [`prepare`]: scores `(x_t A) · x_u / √D` with
/// `A = W_Q W_Kᵀ`, output `Σ_u p_tu (x_u B)` with `B = W_V W_O`. Two D × D products per token
/// instead of four (the same function; the rounding differs from the four-product form only in the
/// last bits).
#[inline(always)]
fn attention_one_head(l: usize, d: usize, layer: usize, input: &[f64], ws: &mut Workspace) {
    let dd = d * d;
    let (a, b) = ws.folded[2 * layer * dd..2 * (layer + 1) * dd].split_at(dd);
    matmul_square(input, a, d, &mut ws.q);
    matmul_square(input, b, d, &mut ws.v);
    let scale = 1.0 / (d as f64).sqrt();
    for t in 0..l {
        let qa_t = &ws.q[t * d..(t + 1) * d];
        for (u, x_u) in input.chunks_exact(d).enumerate() {
            let dot: f64 = qa_t.iter().zip(x_u).map(|(a, b)| a * b).sum();
            ws.attention_weights[u] = dot * scale;
        }
        softmax(&mut ws.attention_weights);
        let out = &mut ws.attn[t * d..(t + 1) * d];
        out.fill(0.0);
        for (u, vb_u) in ws.v.chunks_exact(d).enumerate() {
            let p = ws.attention_weights[u];
            for (o, &v) in out.iter_mut().zip(vb_u) {
                *o += p * v;
            }
        }
    }
}

/// The per-θ work of a forward pass, done once before evaluating θ on many inputs: for one head,
/// `W_Q W_Kᵀ` and `W_V W_O` of every layer (see [`attention_one_head`]). [`forward`] needs it.
pub fn prepare(spec: &MoeSpec, theta: &[f64], ws: &mut Workspace) {
    if spec.heads != 1 {
        return;
    }
    let d = spec.d_model;
    let dd = d * d;
    for layer in 0..spec.layers {
        let [wq, wk, wv, wo] = spec.offsets(layer).attn;
        let (a, b) = ws.folded[2 * layer * dd..2 * (layer + 1) * dd].split_at_mut(dd);
        for i in 0..d {
            for j in 0..d {
                let q_i = &theta[wq + i * d..wq + (i + 1) * d];
                let k_j = &theta[wk + j * d..wk + (j + 1) * d];
                a[i * d + j] = q_i.iter().zip(k_j).map(|(x, y)| x * y).sum();
            }
        }
        matmul_square(&theta[wv..wv + dd], &theta[wo..wo + dd], d, b);
    }
}

/// `out += gate · E_j(z)`, accumulated in place (no intermediate buffer).
#[inline(always)]
fn add_expert<const D: usize, const H: usize>(
    spec: &MoeSpec,
    params: &[f64],
    z: &[f64],
    gate: f64,
    hidden: &mut [f64],
    out: &mut [f64],
) {
    let (d, h) = (d_model::<D>(spec), expert_hidden::<H>(spec));
    match spec.expert {
        ExpertKind::Constant => {
            for (o, &c) in out.iter_mut().zip(&params[..d]) {
                *o += gate * c;
            }
        }
        ExpertKind::Linear => {
            let (weight, bias) = params.split_at(d * d);
            for ((o, row), &b) in out.iter_mut().zip(weight.chunks_exact(d)).zip(bias) {
                *o += gate * (row.iter().zip(z).map(|(w, x)| w * x).sum::<f64>() + b);
            }
        }
        ExpertKind::Mlp => {
            let (w1, rest) = params.split_at(h * d);
            let (b1, rest) = rest.split_at(h);
            let (w2, b2) = rest.split_at(d * h);
            for ((a, row), &b) in hidden.iter_mut().zip(w1.chunks_exact(d)).zip(b1) {
                *a = (row.iter().zip(z).map(|(w, x)| w * x).sum::<f64>() + b).max(0.0);
            }
            for ((o, row), &b) in out.iter_mut().zip(w2.chunks_exact(h)).zip(&b2[..d]) {
                *o += gate * (row.iter().zip(hidden.iter()).map(|(w, a)| w * a).sum::<f64>() + b);
            }
        }
    }
}

/// Per lane, the `k` highest of one token's router scores (`[expert][lane]`, `W` lanes; the
/// one-input pass uses one lane): their scores into
/// `top_scores` (`[place][lane]`, highest first) and their experts, ascending, into `top_experts`.
///
/// Each expert in turn is carried down the kept list and enters at the first place whose score is
/// strictly lower; everything below moves down one place and the last falls off. So equal scores
/// keep the lower expert first, as MATH.md §1 requires, and every lane always ends with `k`
/// distinct experts (even if a score is NaN, which MATH.md leaves undefined). Written as a
/// compare-and-select over lanes: no branch depends on a score.
#[inline(always)]
pub(crate) fn select_top_k<const W: usize>(scores: &[f64], k: usize, top_scores: &mut [f64], top_experts: &mut [f64]) {
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
    // the k experts of each lane into ascending order (odd-even transposition sort)
    for pass in 0..k {
        for place in (pass % 2..k.saturating_sub(1)).step_by(2) {
            let (low, high) = top_experts[place..place + 2].split_at_mut(1);
            for (a, b) in low[0].iter_mut().zip(high[0].iter_mut()) {
                let (min, max) = (a.min(*b), a.max(*b));
                *a = min;
                *b = max;
            }
        }
    }
}

/// `MoE(Z)_t = Σ_{j∈S_t} g_{t,j} E_j(z_t)` for every token, into `ws.moe`; the colex rank of each
/// token's expert set into `routes` (length ℓ).
#[inline(always)]
fn mixture<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    layer: usize,
    input: &[f64],
    ws: &mut Workspace,
    routes: &mut [u32],
) {
    let d = d_model::<D>(spec);
    let offsets = spec.offsets(layer);
    let weight = &theta[offsets.router_weight..offsets.router_bias];
    let bias = &theta[offsets.router_bias..offsets.experts];
    let expert_size = spec.expert_params();
    for (t, z) in input.chunks_exact(d).enumerate() {
        for ((s, row), &b) in ws.scores.iter_mut().zip(weight.chunks_exact(d)).zip(bias) {
            *s = row.iter().zip(z).map(|(w, x)| w * x).sum::<f64>() + b;
        }
        select_top_k::<1>(&ws.scores, spec.top_k, &mut ws.top_scores, &mut ws.top_experts);
        for (s, &j) in ws.selected.iter_mut().zip(&ws.top_experts) {
            *s = j as usize;
        }
        routes[t] = ws.ranks.rank(&ws.selected);
        // The largest selected score (the overall maximum) is the softmax shift below.
        let shift = ws.top_scores[0];

        // Gate weights in ascending expert order; each exponential is taken once, and the shift
        // keeps every exponent <= 0, so none overflows.
        ws.gates.clear();
        match spec.gate {
            Gate::Uniform => ws.gates.resize(spec.top_k, 1.0 / spec.top_k as f64),
            Gate::RenormalizedSoftmax | Gate::FullSoftmax => {
                ws.gates
                    .extend(ws.selected.iter().map(|&j| (ws.scores[j] - shift).exp()));
                let normaliser: f64 = if spec.gate == Gate::FullSoftmax {
                    ws.scores.iter().map(|&s| (s - shift).exp()).sum()
                } else {
                    ws.gates.iter().sum()
                };
                let inverse = 1.0 / normaliser;
                for g in ws.gates.iter_mut() {
                    *g *= inverse;
                }
            }
        }
        let out = &mut ws.moe[t * d..(t + 1) * d];
        out.fill(0.0);
        for (&j, &gate) in ws.selected.iter().zip(&ws.gates) {
            let start = offsets.experts + j * expert_size;
            add_expert::<D, H>(spec, &theta[start..start + expert_size], z, gate, &mut ws.hidden, out);
        }
    }
}

/// `D` when it is not 0, else the spec's d_model: [`forward`] instantiates the pass for the small
/// widths so that every loop over D has a trip count known at compile time (unrolled, vectorised).
#[inline(always)]
fn d_model<const D: usize>(spec: &MoeSpec) -> usize {
    if D == 0 {
        spec.d_model
    } else {
        D
    }
}

/// `H` when it is not 0, else the spec's expert_hidden (as [`d_model`]).
#[inline(always)]
fn expert_hidden<const H: usize>(spec: &MoeSpec) -> usize {
    if H == 0 {
        spec.expert_hidden
    } else {
        H
    }
}

/// Evaluates `f_θ(X)`: writes the readout into `values` (length `output_dim`) and the routing
/// pattern, layer-major (`layers × seq_len` colex ranks), into `routes`. Call [`prepare`] with
/// this θ and workspace first (once per θ, however many inputs follow).
pub fn forward(spec: &MoeSpec, theta: &[f64], x: &[f64], ws: &mut Workspace, values: &mut [f64], routes: &mut [u32]) {
    // The same code at each width, the same operations in the same order: the same bits.
    match spec.d_model {
        1 => forward_with_d::<1>(spec, theta, x, ws, values, routes),
        2 => forward_with_d::<2>(spec, theta, x, ws, values, routes),
        3 => forward_with_d::<3>(spec, theta, x, ws, values, routes),
        4 => forward_with_d::<4>(spec, theta, x, ws, values, routes),
        8 => forward_with_d::<8>(spec, theta, x, ws, values, routes),
        _ => forward_with_d::<0>(spec, theta, x, ws, values, routes),
    }
}

fn forward_with_d<const D: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    x: &[f64],
    ws: &mut Workspace,
    values: &mut [f64],
    routes: &mut [u32],
) {
    match spec.expert_hidden {
        2 => forward_at::<D, 2>(spec, theta, x, ws, values, routes),
        4 => forward_at::<D, 4>(spec, theta, x, ws, values, routes),
        8 => forward_at::<D, 8>(spec, theta, x, ws, values, routes),
        16 => forward_at::<D, 16>(spec, theta, x, ws, values, routes),
        _ => forward_at::<D, 0>(spec, theta, x, ws, values, routes),
    }
}

fn forward_at<const D: usize, const H: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    x: &[f64],
    ws: &mut Workspace,
    values: &mut [f64],
    routes: &mut [u32],
) {
    let l = spec.seq_len;
    ws.h.copy_from_slice(x);
    for layer in 0..spec.layers {
        let layer_routes = &mut routes[layer * l..(layer + 1) * l];
        let with_attention = spec.heads > 0;
        if with_attention {
            let h = std::mem::take(&mut ws.h);
            attention::<D>(spec, theta, layer, &h, ws);
            ws.h = h;
        }
        match spec.block {
            Block::Sequential => {
                // Y = H + Attn(H); H' = Y + MoE(Y)
                ws.y.copy_from_slice(&ws.h);
                if with_attention {
                    for (y, a) in ws.y.iter_mut().zip(&ws.attn) {
                        *y += a;
                    }
                }
                let y = std::mem::take(&mut ws.y);
                mixture::<D, H>(spec, theta, layer, &y, ws, layer_routes);
                for ((h, y), m) in ws.h.iter_mut().zip(&y).zip(&ws.moe) {
                    *h = y + m;
                }
                ws.y = y;
            }
            Block::Parallel => {
                // H' = H + Attn(H) + MoE(H)
                let h = std::mem::take(&mut ws.h);
                mixture::<D, H>(spec, theta, layer, &h, ws, layer_routes);
                ws.h = h;
                for (i, h) in ws.h.iter_mut().enumerate() {
                    let attn = if with_attention { ws.attn[i] } else { 0.0 };
                    *h = *h + attn + ws.moe[i];
                }
            }
        }
    }
    match spec.readout {
        Readout::Scalar => values[0] = ws.h[0],
        Readout::Token0 => values.copy_from_slice(&ws.h[..d_model::<D>(spec)]),
        Readout::All => values.copy_from_slice(&ws.h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SpecOptions;

    #[test]
    fn constant_experts_with_uniform_gate_add_the_mean_of_the_selected_constants() {
        // One layer, no attention, D = 1, M = 3, k = 2, uniform gate: H' = x + (c_a + c_b)/2
        // with {a, b} the two highest router scores w_j x + b_j.
        let spec = MoeSpec::new(&SpecOptions {
            experts: 3,
            top_k: 2,
            d_model: 1,
            expert: "constant",
            gate: "uniform",
            ..Default::default()
        })
        .expect("valid");
        // router weight [1, 0, -1], bias [0, 0.5, 0], constants [10, 20, 40]
        let theta = [1.0, 0.0, -1.0, 0.0, 0.5, 0.0, 10.0, 20.0, 40.0];
        let mut ws = Workspace::new(&spec);
        prepare(&spec, &theta, &mut ws);
        let (mut value, mut route) = ([0.0], [0u32]);
        // x = 2: scores [2, 0.5, -2] -> {0, 1}, colex rank 0
        forward(&spec, &theta, &[2.0], &mut ws, &mut value, &mut route);
        assert_eq!((value[0], route[0]), (2.0 + 15.0, 0));
        // x = -2: scores [-2, 0.5, 2] -> {1, 2}, rank C(1,1) + C(2,2) = 2
        forward(&spec, &theta, &[-2.0], &mut ws, &mut value, &mut route);
        assert_eq!((value[0], route[0]), (-2.0 + 30.0, 2));
        // x = 0.5: scores [0.5, 0.5, -0.5] tie -> {0, 1}
        forward(&spec, &theta, &[0.5], &mut ws, &mut value, &mut route);
        assert_eq!((value[0], route[0]), (0.5 + 15.0, 0));
    }

    #[test]
    fn tied_scores_go_to_the_lower_expert() {
        let spec = MoeSpec::new(&SpecOptions {
            experts: 3,
            top_k: 1,
            d_model: 1,
            expert: "constant",
            ..Default::default()
        })
        .expect("valid");
        // All router scores 0: expert 0 wins; the gate of the one selected expert is 1.
        let theta = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0];
        let mut ws = Workspace::new(&spec);
        prepare(&spec, &theta, &mut ws);
        let (mut value, mut route) = ([0.0], [9u32]);
        forward(&spec, &theta, &[0.25], &mut ws, &mut value, &mut route);
        assert_eq!((value[0], route[0]), (1.25, 0));
    }
}
