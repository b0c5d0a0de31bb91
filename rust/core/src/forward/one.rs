//! The forward pass of one MoE Transformer `f_θ` on one input `X`, `[token][feature]`.
//!
//! Written for tiny widths (D, h, ℓ ≤ tens): plain loops over reused buffers, no allocation per
//! call. Everything is computed in a fixed order, so a given (θ, X) gives the same bits anywhere.

use super::{gate_weights, readout, router_scores, run_layers, select_top_k, softmax, Activations, Branch, Layers};
use crate::routing::RankTable;
use crate::spec::{ExpertKind, MoeSpec};

/// Scratch buffers for one thread; build once with [`Workspace::new`] and reuse across calls.
pub struct Workspace {
    pub(crate) ranks: RankTable,
    act: Activations,
    attention_weights: Vec<f64>,
    scores: Vec<f64>,
    /// The top-k experts, ascending, and their scores (see [`select_top_k`]).
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
        Workspace {
            ranks: RankTable::new(spec.experts, spec.top_k),
            act: Activations::new(spec.seq_len * spec.d_model),
            attention_weights: vec![0.0; spec.seq_len],
            scores: vec![0.0; spec.experts],
            top_scores: vec![0.0; spec.top_k],
            top_experts: vec![0.0; spec.top_k],
            selected: vec![0; spec.top_k],
            gates: vec![0.0; spec.top_k],
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

/// `Attn(H) = concat_h softmax_rows(Q_h K_hᵀ / √d_h) V_h · W_O`, written into `ws.act.attn`.
#[inline(always)]
fn attention<const D: usize>(spec: &MoeSpec, theta: &[f64], layer: usize, input: &[f64], ws: &mut Workspace) {
    let (l, d) = (spec.seq_len, d_model::<D>(spec));
    let dd = d * d;
    if spec.heads == 1 {
        return attention_one_head(l, d, layer, input, ws);
    }
    let [wq, wk, wv, wo] = spec.offsets(layer).attn;
    matmul_square(input, &theta[wq..wq + dd], d, &mut ws.act.q);
    matmul_square(input, &theta[wk..wk + dd], d, &mut ws.act.k);
    matmul_square(input, &theta[wv..wv + dd], d, &mut ws.act.v);
    let width = d / spec.heads;
    let scale = 1.0 / (width as f64).sqrt();
    for head in 0..spec.heads {
        let cols = head * width..(head + 1) * width;
        for t in 0..l {
            let q_t = &ws.act.q[t * d..][cols.clone()];
            for u in 0..l {
                let k_u = &ws.act.k[u * d..][cols.clone()];
                let dot: f64 = q_t.iter().zip(k_u).map(|(a, b)| a * b).sum();
                ws.attention_weights[u] = dot * scale;
            }
            softmax::<1>(&mut ws.attention_weights);
            let context = &mut ws.act.context[t * d..][cols.clone()];
            context.fill(0.0);
            for u in 0..l {
                let p = ws.attention_weights[u];
                for (c, &v) in context.iter_mut().zip(&ws.act.v[u * d..][cols.clone()]) {
                    *c += p * v;
                }
            }
        }
    }
    matmul_square(&ws.act.context, &theta[wo..wo + dd], d, &mut ws.act.attn);
}

/// One head, with the per-θ products of [`prepare`]: scores `(x_t A) · x_u / √D` with
/// `A = W_Q W_Kᵀ`, output `Σ_u p_tu (x_u B)` with `B = W_V W_O`. Two D × D products per token
/// instead of four (the same function; the rounding differs from the four-product form only in the
/// last bits).
#[inline(always)]
fn attention_one_head(l: usize, d: usize, layer: usize, input: &[f64], ws: &mut Workspace) {
    let dd = d * d;
    let (a, b) = ws.folded[2 * layer * dd..2 * (layer + 1) * dd].split_at(dd);
    matmul_square(input, a, d, &mut ws.act.q);
    matmul_square(input, b, d, &mut ws.act.v);
    let scale = 1.0 / (d as f64).sqrt();
    for t in 0..l {
        let qa_t = &ws.act.q[t * d..(t + 1) * d];
        for (u, x_u) in input.chunks_exact(d).enumerate() {
            let dot: f64 = qa_t.iter().zip(x_u).map(|(a, b)| a * b).sum();
            ws.attention_weights[u] = dot * scale;
        }
        softmax::<1>(&mut ws.attention_weights);
        let out = &mut ws.act.attn[t * d..(t + 1) * d];
        out.fill(0.0);
        for (u, vb_u) in ws.act.v.chunks_exact(d).enumerate() {
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

/// `MoE(Z)_t = Σ_{j∈S_t} g_{t,j} E_j(z_t)` for every token, into `ws.act.moe`; the colex rank of each
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
        router_scores::<1>(weight, bias, d, |c| &z[c..c + 1], &mut ws.scores);
        let mut highest = [0.0];
        select_top_k::<1>(
            &ws.scores,
            spec.top_k,
            &mut ws.top_scores,
            &mut ws.top_experts,
            &mut highest,
        );
        for (s, &j) in ws.selected.iter_mut().zip(&ws.top_experts) {
            *s = j as usize;
        }
        routes[t] = ws.ranks.rank(&ws.selected);
        // The largest selected score (the overall maximum) is the softmax shift.
        gate_weights::<1>(spec.gate, &ws.scores, &ws.top_scores, &highest, &mut ws.gates);
        let out = &mut ws.act.moe[t * d..(t + 1) * d];
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
    ws.act.h.copy_from_slice(x);
    let mut pass = OneInput::<D, H> {
        spec,
        theta,
        ws,
        routes,
    };
    run_layers(spec, &mut pass);
    let h = &pass.ws.act.h;
    readout(spec, values, |t, c| h[t * d_model::<D>(spec) + c]);
}

/// The branches of a block on one input, `[token][feature]` (see [`run_layers`]).
struct OneInput<'a, const D: usize, const H: usize> {
    spec: &'a MoeSpec,
    theta: &'a [f64],
    ws: &'a mut Workspace,
    routes: &'a mut [u32],
}

impl<const D: usize, const H: usize> Layers for OneInput<'_, D, H> {
    #[inline(always)]
    fn activations(&mut self) -> &mut Activations {
        &mut self.ws.act
    }

    #[inline(always)]
    fn size(&self) -> usize {
        self.spec.seq_len * d_model::<D>(self.spec)
    }

    #[inline(always)]
    fn attention(&mut self, layer: usize, input: Branch) {
        let x = self.ws.act.take(input);
        attention::<D>(self.spec, self.theta, layer, &x, self.ws);
        self.ws.act.put(input, x);
    }

    #[inline(always)]
    fn mixture(&mut self, layer: usize, input: Branch) {
        let l = self.spec.seq_len;
        let x = self.ws.act.take(input);
        mixture::<D, H>(
            self.spec,
            self.theta,
            layer,
            &x,
            self.ws,
            &mut self.routes[layer * l..(layer + 1) * l],
        );
        self.ws.act.put(input, x);
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
