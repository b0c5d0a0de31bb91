//! The forward pass on a batch of inputs at once, in SIMD lanes.
//!
//! A batch of up to 32 inputs runs side by side, stored feature-major: every activation is
//! `[feature][token][lane]`, so each step of the pass is one operation applied across the lanes,
//! which the compiler vectorises. Each lane sees exactly the operations of the one-input pass, in
//! the same order (sums start at -0.0 and run over the index in ascending order, as `Iterator::sum`
//! does), so an input's values and routes are the same bits whichever batch or lane it ran in,
//! and the same as [`one::forward`]'s (a test checks it on every option).
//! What differs per lane (the top-k choice, the rank, the gates) is done lane by lane; the experts
//! then run once per expert over the tokens routed to it, gathered into lanes of their own.
//! A few inputs go through [`one::forward`], one at a time: with most lanes idle, the lanes
//! cost more than they save.

use super::{
    gate_weights, one, readout, router_scores, run_layers, select_top_k, softmax, Activations, Branch, Layers,
};
use crate::spec::{ExpertKind, MoeSpec};

/// The most inputs that run side by side.
const LANES: usize = 32;

/// Scratch buffers for one thread; build once with [`Workspace::new`] and reuse across calls.
pub struct Workspace {
    /// `[feature][token][lane]` activations, `d_model × seq_len × LANES` each.
    act: Activations,
    /// One query token's attention weights, `[key token][lane]`.
    attention_weights: Vec<f64>,
    /// One token's router scores, `[expert][lane]`.
    scores: Vec<f64>,
    /// One token's top-k scores in ascending order of expert, `[place][lane]`, and the highest.
    top_scores: Vec<f64>,
    highest: Vec<f64>,
    /// Every token's top-k experts, ascending, and their gates: `[token][place][lane]`.
    top_experts: Vec<f64>,
    gates: Vec<f64>,
    /// The `(token · LANES + lane)` slots routed to each expert and their gates, expert by expert:
    /// expert j's `routed_len[j]` entries start at `routed_start[j]`.
    routed_slots: Vec<usize>,
    routed_gates: Vec<f64>,
    routed_start: Vec<usize>,
    routed_len: Vec<usize>,
    /// One expert's inputs gathered from its slots, `[feature][entry]`, and its hidden layer.
    gathered: Vec<f64>,
    hidden: Vec<f64>,
    sums: Vec<f64>,
    /// The one-input pass's workspace: small batches, the per-θ products of [`prepare`], and the
    /// rank table and one lane's experts for ranking.
    one: one::Workspace,
    /// False when the lane buffers would be too large (`MAX_LANE_SCRATCH`): every input then
    /// runs alone, and the lane buffers are empty.
    in_lanes: bool,
    /// Whether the routes' colex ranks are computed in the lanes ([`colex_ranks`], exact when
    /// `M^k < 2^53`) rather than looked up lane by lane.
    ranks_in_lanes: bool,
    /// The vector instructions the pass is compiled for, chosen at run time (see [`forward_batch`]).
    simd: pulp::Arch,
}

/// The most values the lane buffers of one thread may hold (16 MiB): classes with inputs so large
/// that the lanes would need more run one input at a time (where the lanes would not pay anyway:
/// the work per input is then large).
const MAX_LANE_SCRATCH: usize = 1 << 21;

impl Workspace {
    pub fn new(spec: &MoeSpec) -> Self {
        let (l, d, h, k, m) = (spec.seq_len, spec.d_model, spec.expert_hidden, spec.top_k, spec.experts);
        // every size is at most 2^16 (MoeSpec::new), so these products cannot overflow
        let lane_values = (9 * d + h + 4 * k + 2) * l * LANES + (m + k) * LANES;
        let in_lanes = lane_values <= MAX_LANE_SCRATCH;
        let slots = if in_lanes { l * LANES } else { 0 };
        let activation = d * slots;
        Workspace {
            in_lanes,
            act: Activations::new(activation),
            attention_weights: vec![0.0; slots],
            scores: vec![0.0; if in_lanes { m * LANES } else { 0 }],
            top_scores: vec![0.0; if in_lanes { k * LANES } else { 0 }],
            highest: vec![0.0; if in_lanes { LANES } else { 0 }],
            top_experts: vec![0.0; spec.top_k * slots],
            gates: vec![0.0; spec.top_k * slots],
            routed_slots: vec![0; spec.top_k * slots],
            routed_gates: vec![0.0; spec.top_k * slots],
            routed_start: vec![0; spec.experts],
            routed_len: vec![0; spec.experts],
            gathered: vec![0.0; activation],
            hidden: vec![0.0; spec.expert_hidden * slots],
            sums: vec![0.0; slots],
            one: one::Workspace::new(spec),
            ranks_in_lanes: (m as f64).powi(k as i32) < 2f64.powi(53),
            simd: pulp::Arch::new(),
        }
    }

    /// The same workspace with the pass compiled for `simd` instead of the best the CPU has
    /// (the tests compare the portable build with the dispatched one).
    pub fn with_instruction_set(mut self, simd: pulp::Arch) -> Self {
        self.simd = simd;
        self
    }
}

/// `out += a · x`, lane by lane.
#[inline(always)]
fn axpy(out: &mut [f64], a: f64, x: &[f64]) {
    for (o, &x) in out.iter_mut().zip(x) {
        *o += x * a;
    }
}

/// `out = input · W` for activations `[D][rest]` (each feature a plane of `rest` values) and `W`
/// (D × D) row-major: `out[c] = Σ_i input[i] · W[i, c]`, summed over ascending i from 0.
#[inline(always)]
fn matmul_planes(input: &[f64], w: &[f64], d: usize, out: &mut [f64]) {
    let plane = input.len() / d;
    for (c, out_c) in out[..input.len()].chunks_exact_mut(plane).enumerate() {
        out_c.fill(0.0);
        for (i, input_i) in input.chunks_exact(plane).enumerate() {
            axpy(out_c, w[i * d + c], input_i);
        }
    }
}

/// `out[lane] = Σ_c a[c][lane] · b[c][lane]` over the given feature rows (a sum from -0.0).
#[inline(always)]
fn dot_lanes<'a>(pairs: impl Iterator<Item = (&'a [f64], &'a [f64])>, out: &mut [f64]) {
    out.fill(-0.0);
    for (a, b) in pairs {
        for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
            *o += a * b;
        }
    }
}

/// The lanes of token `t` in an activation plane.
#[inline(always)]
fn token<const W: usize>(plane: &[f64], t: usize) -> &[f64] {
    &plane[t * W..(t + 1) * W]
}

/// One query token's attention output in one feature: `out = Σ_u p[u] · v[u]` lane by lane
/// (from 0, ascending key token u), for weights `[u][lane]` and values `[u][lane]` of that feature.
#[inline(always)]
fn attend<const W: usize>(weights: &[f64], values: &[f64], out: &mut [f64]) {
    out.fill(0.0);
    for (u, p) in weights.chunks_exact(W).enumerate() {
        for ((o, &p), &v) in out.iter_mut().zip(p).zip(token::<W>(values, u)) {
            *o += p * v;
        }
    }
}

/// `Attn(H) = concat_h softmax_rows(Q_h K_hᵀ / √d_h) V_h · W_O`, written into `ws.attn`.
#[inline(always)]
fn attention<const W: usize>(spec: &MoeSpec, theta: &[f64], layer: usize, input: &[f64], ws: &mut Workspace) {
    let (l, d) = (spec.seq_len, spec.d_model);
    if spec.heads == 1 {
        return attention_one_head::<W>(l, d, layer, input, ws);
    }
    let dd = d * d;
    let plane = l * W;
    let [wq, wk, wv, wo] = spec.offsets(layer).attn;
    matmul_planes(input, &theta[wq..wq + dd], d, &mut ws.act.q);
    matmul_planes(input, &theta[wk..wk + dd], d, &mut ws.act.k);
    matmul_planes(input, &theta[wv..wv + dd], d, &mut ws.act.v);
    let width = d / spec.heads;
    let scale = 1.0 / (width as f64).sqrt();
    for head in 0..spec.heads {
        let cols = head * width..(head + 1) * width;
        for t in 0..l {
            for (u, weights) in ws.attention_weights[..l * W].chunks_exact_mut(W).enumerate() {
                let pairs = cols.clone().map(|c| {
                    (
                        token::<W>(&ws.act.q[c * plane..], t),
                        token::<W>(&ws.act.k[c * plane..], u),
                    )
                });
                dot_lanes(pairs, weights);
                weights.iter_mut().for_each(|w| *w *= scale);
            }
            softmax::<W>(&mut ws.attention_weights[..l * W]);
            for c in cols.clone() {
                let out = &mut ws.act.context[c * plane + t * W..][..W];
                attend::<W>(&ws.attention_weights[..l * W], &ws.act.v[c * plane..], out);
            }
        }
    }
    matmul_planes(&ws.act.context[..d * plane], &theta[wo..wo + dd], d, &mut ws.act.attn);
}

/// One head, with the per-θ products of [`prepare`]: scores `(x_t A) · x_u / √D` with
/// `A = W_Q W_Kᵀ`, output `Σ_u p_tu (x_u B)` with `B = W_V W_O`. Two D × D products per token
/// instead of four (the same function; the rounding differs from the four-product form only in the
/// last bits).
#[inline(always)]
fn attention_one_head<const W: usize>(l: usize, d: usize, layer: usize, input: &[f64], ws: &mut Workspace) {
    let dd = d * d;
    let plane = l * W;
    let (a, b) = ws.one.folded[2 * layer * dd..2 * (layer + 1) * dd].split_at(dd);
    matmul_planes(input, a, d, &mut ws.act.q);
    matmul_planes(input, b, d, &mut ws.act.v);
    let scale = 1.0 / (d as f64).sqrt();
    for t in 0..l {
        for (u, weights) in ws.attention_weights[..l * W].chunks_exact_mut(W).enumerate() {
            let pairs = (0..d).map(|c| {
                (
                    token::<W>(&ws.act.q[c * plane..], t),
                    token::<W>(&input[c * plane..], u),
                )
            });
            dot_lanes(pairs, weights);
            weights.iter_mut().for_each(|w| *w *= scale);
        }
        softmax::<W>(&mut ws.attention_weights[..l * W]);
        for c in 0..d {
            let out = &mut ws.act.attn[c * plane + t * W..][..W];
            attend::<W>(&ws.attention_weights[..l * W], &ws.act.v[c * plane..], out);
        }
    }
}

/// The per-θ work of a forward pass (see [`one::prepare`]), done once before evaluating θ on
/// many inputs. [`forward_batch`] needs it.
pub fn prepare(spec: &MoeSpec, theta: &[f64], ws: &mut Workspace) {
    one::prepare(spec, theta, &mut ws.one);
}

/// Router scores, the top-k choice, its colex rank and the gates of every token of the first
/// `lanes` lanes; then each expert's list of the tokens routed to it (`ws.routed_*`).
#[inline(always)]
fn route<const W: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    layer: usize,
    input: &[f64],
    lanes: usize,
    ws: &mut Workspace,
    routes: &mut [u32],
) {
    let (l, d, k, m) = (spec.seq_len, spec.d_model, spec.top_k, spec.experts);
    let plane = l * W;
    let offsets = spec.offsets(layer);
    let weight = &theta[offsets.router_weight..offsets.router_bias];
    let bias = &theta[offsets.router_bias..offsets.experts];
    for t in 0..l {
        router_scores::<W>(
            weight,
            bias,
            d,
            |c| token::<W>(&input[c * plane..], t),
            &mut ws.scores[..m * W],
        );
        let experts = &mut ws.top_experts[t * k * W..(t + 1) * k * W];
        select_top_k::<W>(&ws.scores[..m * W], k, &mut ws.top_scores, experts, &mut ws.highest);
        let route_of = |lane: usize| lane * spec.routes_per_input() + layer * l + t;
        if ws.ranks_in_lanes {
            let ranks = colex_ranks::<W>(experts);
            for (lane, &rank) in ranks.iter().enumerate().take(lanes) {
                routes[route_of(lane)] = rank as u32;
            }
        } else {
            for lane in 0..lanes {
                for (place, s) in ws.one.selected.iter_mut().enumerate() {
                    *s = experts[place * W + lane] as usize;
                }
                routes[route_of(lane)] = ws.one.ranks.rank(&ws.one.selected);
            }
        }

        // The highest score of each lane is the softmax shift.
        let gates = &mut ws.gates[t * k * W..(t + 1) * k * W];
        gate_weights::<W>(
            spec.gate,
            &ws.scores[..m * W],
            &ws.top_scores[..k * W],
            &ws.highest[..W],
            gates,
        );
    }
    // Each expert's routed tokens, by a counting sort of the choices (token, then lane order).
    ws.routed_len.fill(0);
    for experts in ws.top_experts[..l * k * W].chunks_exact(W) {
        for &j in &experts[..lanes] {
            ws.routed_len[j as usize] += 1;
        }
    }
    let mut start = 0;
    for (first, &len) in ws.routed_start.iter_mut().zip(&ws.routed_len) {
        *first = start;
        start += len;
    }
    ws.routed_len.fill(0);
    for (i, (experts, gates)) in ws.top_experts[..l * k * W]
        .chunks_exact(W)
        .zip(ws.gates[..l * k * W].chunks_exact(W))
        .enumerate()
    {
        let t = i / k;
        for lane in 0..lanes {
            let j = experts[lane] as usize;
            let entry = ws.routed_start[j] + ws.routed_len[j];
            ws.routed_slots[entry] = t * W + lane;
            ws.routed_gates[entry] = gates[lane];
            ws.routed_len[j] += 1;
        }
    }
}

/// The colex rank `Σ_p C(e_p, p + 1)` of each lane's ascending experts (`[place][lane]`),
/// computed in f64 lane by lane, each binomial as `e (e−1) ⋯ (e−p) / (p+1)!`. Exact where
/// `M^k < 2^53` ([`Workspace::new`] checks): every product is then an integer below 2^53, each
/// quotient is the integer binomial, and the sum is below C(M, k) < 2^32.
#[inline(always)]
fn colex_ranks<const W: usize>(experts: &[f64]) -> [f64; W] {
    let mut ranks = [0.0; W];
    let mut factorial = 1.0;
    for (p, place) in experts.chunks_exact(W).enumerate() {
        factorial *= (p + 1) as f64;
        for (rank, &e) in ranks.iter_mut().zip(place) {
            let mut product = e;
            for q in 1..=p {
                product *= e - q as f64;
            }
            *rank += product / factorial;
        }
    }
    ranks
}

/// `MoE(Z)_t = Σ_{j∈S_t} g_{t,j} E_j(z_t)` for every token of every lane, into `ws.moe`; the colex
/// rank of each token's expert set into `routes` (lane-major, `routes_per_input` per lane).
///
/// Expert by expert in ascending order, so each token's terms are added in the order of the
/// one-input pass (ascending expert index, from 0).
#[inline(always)]
fn mixture<const W: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    layer: usize,
    input: &[f64],
    lanes: usize,
    ws: &mut Workspace,
    routes: &mut [u32],
) {
    route::<W>(spec, theta, layer, input, lanes, ws, routes);
    let (l, d, h) = (spec.seq_len, spec.d_model, spec.expert_hidden);
    let plane = l * W;
    let slots = plane;
    let expert_size = spec.expert_params();
    let experts_start = spec.offsets(layer).experts;
    ws.act.moe[..d * plane].fill(0.0);
    for j in 0..spec.experts {
        let n = ws.routed_len[j];
        if n == 0 {
            continue;
        }
        let params = &theta[experts_start + j * expert_size..][..expert_size];
        let slot_of = &ws.routed_slots[ws.routed_start[j]..][..n];
        let gate_of = &ws.routed_gates[ws.routed_start[j]..][..n];
        if spec.expert == ExpertKind::Constant {
            for (c, &value) in params[..d].iter().enumerate() {
                for (&slot, &gate) in slot_of.iter().zip(gate_of) {
                    ws.act.moe[c * plane + slot] += gate * value;
                }
            }
            continue;
        }
        // gather the routed tokens' inputs: gathered[c][entry]
        for c in 0..d {
            let from = &input[c * plane..(c + 1) * plane];
            for (g, &slot) in ws.gathered[c * slots..][..n].iter_mut().zip(slot_of) {
                *g = from[slot];
            }
        }
        let routed = Routed {
            slots: slot_of,
            gates: gate_of,
            stride: slots,
        };
        if spec.expert == ExpertKind::Linear {
            let (weight, bias) = params.split_at(d * d);
            routed.add_affine(
                weight,
                &bias[..d],
                &ws.gathered,
                &mut ws.sums,
                &mut ws.act.moe[..d * plane],
            );
        } else {
            let (w1, rest) = params.split_at(h * d);
            let (b1, rest) = rest.split_at(h);
            let (w2, b2) = rest.split_at(d * h);
            routed.add_mlp(
                [w1, b1, w2, &b2[..d]],
                &ws.gathered,
                &mut ws.hidden,
                &mut ws.act.moe[..d * plane],
            );
        }
    }
}

/// The tokens routed to one expert: their slots (`token · W + lane`) and gates.
struct Routed<'a> {
    slots: &'a [usize],
    gates: &'a [f64],
    /// The distance between features in the gathered buffers.
    stride: usize,
}

/// Routed entries taken a vector's worth at a time by [`Routed::add_mlp`].
const BLOCK: usize = 8;

impl Routed<'_> {
    /// `moe[c][slot_e] += gate_e · (W2 relu(W1 x_e + b1) + b2)[c]` for every routed entry e, with
    /// `x` gathered feature-major (`[c][entry]`, features `stride` apart, each row readable up to
    /// the next multiple of [`BLOCK`] entries). The entries go [`BLOCK`] at a time, their hidden
    /// units kept in `hidden` (`[unit][BLOCK]`, in cache) between the two layers. Each sum starts at
    /// -0.0 and runs in ascending order, as in the one-input pass.
    #[inline(always)]
    fn add_mlp(&self, [w1, b1, w2, b2]: [&[f64]; 4], x: &[f64], hidden: &mut [f64], moe: &mut [f64]) {
        let n = self.slots.len();
        let (d, h) = (b2.len(), b1.len());
        let plane = moe.len() / d;
        let hidden = &mut hidden.as_chunks_mut::<BLOCK>().0[..h];
        for first in (0..n).step_by(BLOCK) {
            for ((unit, row), &bias) in hidden.iter_mut().zip(w1.chunks_exact(d)).zip(b1) {
                let mut sum = [-0.0; BLOCK];
                for (c, &w) in row.iter().enumerate() {
                    for (s, &v) in sum.iter_mut().zip(&x[c * self.stride + first..][..BLOCK]) {
                        *s += w * v;
                    }
                }
                for (u, s) in unit.iter_mut().zip(sum) {
                    *u = (s + bias).max(0.0);
                }
            }
            let count = (n - first).min(BLOCK);
            let (slots, gates) = (&self.slots[first..][..count], &self.gates[first..][..count]);
            for ((row, &bias), out) in w2.chunks_exact(h).zip(b2).zip(moe.chunks_exact_mut(plane)) {
                let mut sum = [-0.0; BLOCK];
                for (&w, unit) in row.iter().zip(hidden.iter()) {
                    for (s, &u) in sum.iter_mut().zip(unit) {
                        *s += w * u;
                    }
                }
                for ((&slot, &gate), &s) in slots.iter().zip(gates).zip(&sum) {
                    out[slot] += gate * (s + bias);
                }
            }
        }
    }

    /// `moe[c][slot_e] += gate_e · (Σ_a rows[c, a] · x[a][e] + bias[c])` for every routed entry e,
    /// with `x` gathered feature-major (`[a][entry]`, features `stride` apart).
    #[inline(always)]
    fn add_affine(&self, rows: &[f64], bias: &[f64], x: &[f64], sums: &mut [f64], moe: &mut [f64]) {
        let n = self.slots.len();
        let width = rows.len() / bias.len();
        let plane = moe.len() / bias.len();
        let sums = &mut sums[..n];
        for ((row, &b), out) in rows.chunks_exact(width).zip(bias).zip(moe.chunks_exact_mut(plane)) {
            sums.fill(-0.0);
            for (a, &w) in row.iter().enumerate() {
                for (s, &x) in sums.iter_mut().zip(&x[a * self.stride..][..n]) {
                    *s += w * x;
                }
            }
            for ((&slot, &gate), &s) in self.slots.iter().zip(self.gates).zip(sums.iter()) {
                out[slot] += gate * (s + b);
            }
        }
    }
}

/// Evaluates `f_θ` on any number of inputs (`n × seq_len × d_model`, row-major): writes each
/// readout into `values` (`n × output_dim`) and each routing pattern, layer-major (`layers ×
/// seq_len` colex ranks per input), into `routes`. Call [`prepare`] with this θ and workspace first
/// (once per θ, however many inputs follow).
///
/// The whole pass is compiled once per instruction set `pulp` knows (portable, AVX2, AVX-512) and
/// the workspace's is run: the lane loops then use the CPU's widest vectors. The bits do not
/// depend on the choice: every operation is the same IEEE operation in the same order (Rust never
/// fuses a multiply and an add on its own, and `forward::exp` is plain IEEE operations), which a test
/// checks.
pub fn forward_batch(
    spec: &MoeSpec,
    theta: &[f64],
    inputs: &[f64],
    ws: &mut Workspace,
    values: &mut [f64],
    routes: &mut [u32],
) {
    let simd = ws.simd;
    simd.dispatch(Batch {
        spec,
        theta,
        inputs,
        ws,
        values,
        routes,
    });
}

/// One [`forward_batch`] call, as `pulp` dispatches it.
struct Batch<'a> {
    spec: &'a MoeSpec,
    theta: &'a [f64],
    inputs: &'a [f64],
    ws: &'a mut Workspace,
    values: &'a mut [f64],
    routes: &'a mut [u32],
}

impl pulp::WithSimd for Batch<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        let Batch {
            spec,
            theta,
            inputs,
            ws,
            values,
            routes,
        } = self;
        forward_batch_here(spec, theta, inputs, ws, values, routes);
    }
}

/// [`forward_batch`]'s body, inlined into each instruction set's copy.
#[inline(always)]
fn forward_batch_here(
    spec: &MoeSpec,
    theta: &[f64],
    inputs: &[f64],
    ws: &mut Workspace,
    values: &mut [f64],
    routes: &mut [u32],
) {
    let (x_len, o, r) = (spec.input_len(), spec.output_dim(), spec.routes_per_input());
    let n = inputs.len() / x_len;
    assert!(inputs.len() == n * x_len && values.len() == n * o && routes.len() == n * r);
    let mut done = 0;
    while done < n {
        // Lanes pay when most of them are used (measured in benches/README.md): 32 lanes for
        // 20 or more inputs, 16 for 9 or more, 8 for 6 or more, else the one-input pass.
        let take = match n - done {
            _ if !ws.in_lanes => 1,
            rest @ 20.. => rest.min(LANES),
            rest @ 9.. => rest.min(16),
            rest @ 6.. => rest.min(8),
            _ => 1,
        };
        let (x, v, rt) = (
            &inputs[done * x_len..(done + take) * x_len],
            &mut values[done * o..(done + take) * o],
            &mut routes[done * r..(done + take) * r],
        );
        match take {
            1 => one::forward(spec, theta, x, &mut ws.one, v, rt),
            2..=8 => forward_lanes::<8>(spec, theta, x, ws, v, rt),
            ..=16 => forward_lanes::<16>(spec, theta, x, ws, v, rt),
            _ => forward_lanes::<LANES>(spec, theta, x, ws, v, rt),
        }
        done += take;
    }
}

#[inline(always)]
fn forward_lanes<const W: usize>(
    spec: &MoeSpec,
    theta: &[f64],
    inputs: &[f64],
    ws: &mut Workspace,
    values: &mut [f64],
    routes: &mut [u32],
) {
    let (l, d) = (spec.seq_len, spec.d_model);
    let plane = l * W;
    let lanes = inputs.len() / spec.input_len();
    // transpose into [feature][token][lane]; lanes past the batch keep old (finite or not) values,
    // which are computed on but never read out or routed
    for (lane, x) in inputs.chunks_exact(l * d).enumerate() {
        for (t, x_t) in x.chunks_exact(d).enumerate() {
            for (c, &x) in x_t.iter().enumerate() {
                ws.act.h[c * plane + t * W + lane] = x;
            }
        }
    }
    let mut pass = InLanes::<W> {
        spec,
        theta,
        lanes,
        ws,
        routes,
    };
    run_layers(spec, &mut pass);
    let h = &pass.ws.act.h;
    for (lane, out) in values.chunks_exact_mut(spec.output_dim()).take(lanes).enumerate() {
        readout(spec, out, |t, c| h[c * plane + t * W + lane]);
    }
}

/// The branches of a block on `lanes` inputs in `W` lanes, `[feature][token][lane]` (see
/// [`run_layers`]).
struct InLanes<'a, const W: usize> {
    spec: &'a MoeSpec,
    theta: &'a [f64],
    lanes: usize,
    ws: &'a mut Workspace,
    routes: &'a mut [u32],
}

impl<const W: usize> Layers for InLanes<'_, W> {
    #[inline(always)]
    fn activations(&mut self) -> &mut Activations {
        &mut self.ws.act
    }

    #[inline(always)]
    fn size(&self) -> usize {
        self.spec.d_model * self.spec.seq_len * W
    }

    #[inline(always)]
    fn attention(&mut self, layer: usize, input: Branch) {
        let size = self.size();
        let x = self.ws.act.take(input);
        attention::<W>(self.spec, self.theta, layer, &x[..size], self.ws);
        self.ws.act.put(input, x);
    }

    #[inline(always)]
    fn mixture(&mut self, layer: usize, input: Branch) {
        let size = self.size();
        let x = self.ws.act.take(input);
        mixture::<W>(
            self.spec,
            self.theta,
            layer,
            &x[..size],
            self.lanes,
            self.ws,
            self.routes,
        );
        self.ws.act.put(input, x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampling::{sample_row, Sampler};
    use crate::spec::{option_combinations, SpecOptions};

    /// Values and routes of `n` inputs through [`forward_batch`] in batches of `batch`, and one at
    /// a time through [`one::forward`].
    fn both_ways(spec: &MoeSpec, theta: &[f64], inputs: &[f64], batch: usize) -> [(Vec<u64>, Vec<u32>); 2] {
        let n = inputs.len() / spec.input_len();
        let (o, r) = (spec.output_dim(), spec.routes_per_input());
        let mut ws = Workspace::new(spec);
        prepare(spec, theta, &mut ws);
        let (mut values, mut routes) = (vec![0.0; n * o], vec![0u32; n * r]);
        for ((x, v), rt) in inputs
            .chunks(batch * spec.input_len())
            .zip(values.chunks_mut(batch * o))
            .zip(routes.chunks_mut(batch * r))
        {
            forward_batch(spec, theta, x, &mut ws, v, rt);
        }
        let mut one = one::Workspace::new(spec);
        one::prepare(spec, theta, &mut one);
        let (mut values_one, mut routes_one) = (vec![0.0; n * o], vec![0u32; n * r]);
        for ((x, v), rt) in inputs
            .chunks_exact(spec.input_len())
            .zip(values_one.chunks_exact_mut(o))
            .zip(routes_one.chunks_exact_mut(r))
        {
            one::forward(spec, theta, x, &mut one, v, rt);
        }
        let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect();
        [(bits(values), routes), (bits(values_one), routes_one)]
    }

    #[test]
    fn every_input_gets_the_bits_of_the_one_input_pass_in_any_batch() {
        for (case, (heads, block, gate, expert, readout)) in option_combinations().into_iter().enumerate() {
            let case = case as u64 + 1;
            let spec = MoeSpec::new(&SpecOptions {
                layers: 1 + (case % 2) as i64,
                experts: 5,
                top_k: 1 + (case % 3) as i64,
                d_model: 4,
                seq_len: 3,
                heads,
                expert,
                expert_hidden: 3,
                gate,
                block,
                readout,
                param_bound: 1.5,
            })
            .expect("valid");
            let mut theta = vec![0.0; spec.total_params()];
            sample_row(case, 0, spec.param_bound, Sampler::Uniform, &Vec::new(), &mut theta);
            // experts 0 and 1 of layer 0 get the same router row: their scores tie
            // exactly on every token, and the tie must go to expert 0
            let router = spec.offsets(0);
            let d = spec.d_model;
            theta.copy_within(router.router_weight..router.router_weight + d, router.router_weight + d);
            theta[router.router_bias + 1] = theta[router.router_bias];
            let n = 37;
            let mut inputs = vec![0.0; n * spec.input_len()];
            sample_row(case, 1, 2.0, Sampler::Uniform, &Vec::new(), &mut inputs);
            // exact ties between router scores: a repeated input, and a zero input
            inputs.copy_within(0..spec.input_len(), 5 * spec.input_len());
            inputs[7 * spec.input_len()..8 * spec.input_len()].fill(0.0);
            for batch in [1, 5, 7, 13, 14, 17, 22, 28, 37] {
                let [lanes, one] = both_ways(&spec, &theta, &inputs, batch);
                assert_eq!(lanes, one, "case {case} {spec:?}, batches of {batch}");
            }
        }
    }

    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        // the portable build against each vector instruction set this CPU has
        let mut sets = vec![pulp::Arch::new()];
        #[cfg(target_arch = "x86_64")]
        sets.extend(pulp::x86::V3::try_new().map(pulp::Arch::V3));
        for (case, (heads, block, gate, expert, readout)) in option_combinations().into_iter().enumerate() {
            let case = case as u64 + 7;
            let spec = MoeSpec::new(&SpecOptions {
                layers: 2,
                experts: 6,
                top_k: 1 + (case % 3) as i64,
                d_model: 4,
                seq_len: 2,
                heads,
                expert,
                expert_hidden: 5,
                gate,
                block,
                readout,
                param_bound: 1.0,
            })
            .expect("valid");
            let mut theta = vec![0.0; spec.total_params()];
            sample_row(case, 0, spec.param_bound, Sampler::Uniform, &Vec::new(), &mut theta);
            // batches of 32 and 16 lanes, of 32 and 8, and of 32 lanes and one input at a time
            for n in [45, 39, 35] {
                let mut inputs = vec![0.0; n * spec.input_len()];
                sample_row(case, 1, 2.0, Sampler::Uniform, &Vec::new(), &mut inputs);
                let run = |simd: pulp::Arch| {
                    let mut ws = Workspace::new(&spec).with_instruction_set(simd);
                    prepare(&spec, &theta, &mut ws);
                    let (mut values, mut routes) = (
                        vec![0.0; n * spec.output_dim()],
                        vec![0u32; n * spec.routes_per_input()],
                    );
                    forward_batch(&spec, &theta, &inputs, &mut ws, &mut values, &mut routes);
                    (values.into_iter().map(f64::to_bits).collect::<Vec<_>>(), routes)
                };
                let portable = run(pulp::Arch::Scalar);
                for &simd in &sets {
                    assert_eq!(run(simd), portable, "case {case} {spec:?}, {simd:?}, {n} inputs");
                }
            }
        }
    }

    #[test]
    fn ranks_looked_up_where_the_lanes_cannot_compute_them_exactly() {
        // 20^18 > 2^53: the lanes' f64 binomials would not be exact, so ranks come from the table
        let spec = MoeSpec::new(&SpecOptions {
            layers: 2,
            experts: 20,
            top_k: 18,
            d_model: 3,
            seq_len: 2,
            heads: 1,
            ..Default::default()
        })
        .expect("valid");
        assert!(!Workspace::new(&spec).ranks_in_lanes);
        let small = MoeSpec::new(&SpecOptions::default()).expect("valid");
        assert!(Workspace::new(&small).ranks_in_lanes);
        let mut theta = vec![0.0; spec.total_params()];
        sample_row(5, 0, 1.0, Sampler::Uniform, &Vec::new(), &mut theta);
        let mut inputs = vec![0.0; 32 * spec.input_len()];
        sample_row(5, 1, 1.0, Sampler::Uniform, &Vec::new(), &mut inputs);
        let [lanes, one] = both_ways(&spec, &theta, &inputs, 32);
        assert_eq!(lanes, one);
        assert!(lanes.1.iter().all(|&rank| rank < 190), "C(20, 18) = 190 patterns");
    }

    #[test]
    fn classes_with_large_inputs_run_one_input_at_a_time_in_little_memory() {
        let spec = MoeSpec::new(&SpecOptions {
            d_model: 256,
            seq_len: 256,
            experts: 2,
            ..Default::default()
        })
        .expect("valid");
        let ws = Workspace::new(&spec);
        assert!(!ws.in_lanes && ws.act.h.is_empty() && ws.gathered.is_empty());
        let small = MoeSpec::new(&SpecOptions::default()).expect("valid");
        assert!(Workspace::new(&small).in_lanes);
        let mut theta = vec![0.0; spec.total_params()];
        sample_row(1, 0, 1.0, Sampler::Uniform, &Vec::new(), &mut theta);
        let mut inputs = vec![0.0; 30 * spec.input_len()];
        sample_row(1, 1, 1.0, Sampler::Uniform, &Vec::new(), &mut inputs);
        let [batched, one] = both_ways(&spec, &theta, &inputs, 30);
        assert_eq!(batched, one);
    }

    #[test]
    fn overflowing_activations_give_the_same_bits_and_valid_routes() {
        // θ near f64::MAX overflows to inf and NaN: no panic, k distinct experts, the same bits
        let spec = MoeSpec::new(&SpecOptions {
            layers: 2,
            experts: 6,
            top_k: 3,
            d_model: 2,
            seq_len: 2,
            heads: 1,
            param_bound: 1e300,
            ..Default::default()
        })
        .expect("valid");
        let mut theta = vec![0.0; spec.total_params()];
        sample_row(3, 0, spec.param_bound, Sampler::Uniform, &Vec::new(), &mut theta);
        let mut inputs = vec![0.0; 20 * spec.input_len()];
        sample_row(3, 1, 1e300, Sampler::Uniform, &Vec::new(), &mut inputs);
        let [lanes, one] = both_ways(&spec, &theta, &inputs, 20);
        assert!(
            lanes.0.iter().any(|&v| f64::from_bits(v).is_nan()),
            "the case should overflow"
        );
        assert_eq!(lanes, one);
        assert!(lanes.1.iter().all(|&rank| rank < 20), "C(6, 3) = 20 patterns");
    }
}
