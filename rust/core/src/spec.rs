//! The MoE function class of definitions §1: its options, parameter counts and the flat parameter layout.

use crate::error::{Error, Result};
use crate::routing::binomial;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertKind {
    Constant,
    Linear,
    Mlp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Softmax over the k selected scores (Mixtral).
    RenormalizedSoftmax,
    /// Softmax over all M scores, selected ones kept without renormalising (Switch, GShard).
    FullSoftmax,
    /// Each selected expert weighs 1/k.
    Uniform,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// `Y = H + Attn(H)`, `H' = Y + MoE(Y)`.
    Sequential,
    /// `H' = H + Attn(H) + MoE(H)` (the paper's Definition 3.1).
    Parallel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readout {
    /// `H_L[0, 0]`.
    Scalar,
    /// `H_L[0, :]`.
    Token0,
    /// `H_L` flattened row-major.
    All,
}

impl ExpertKind {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            "mlp" => Ok(Self::Mlp),
            _ => Err(Error::invalid(
                "expert",
                format!("unknown expert kind {name:?}; expected 'constant', 'linear' or 'mlp'"),
            )),
        }
    }
}

impl Gate {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "renormalized_softmax" => Ok(Self::RenormalizedSoftmax),
            "full_softmax" => Ok(Self::FullSoftmax),
            "uniform" => Ok(Self::Uniform),
            _ => Err(Error::invalid(
                "gate",
                format!("unknown gate {name:?}; expected 'renormalized_softmax', 'full_softmax' or 'uniform'"),
            )),
        }
    }
}

impl Block {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "sequential" => Ok(Self::Sequential),
            "parallel" => Ok(Self::Parallel),
            _ => Err(Error::invalid(
                "block",
                format!("unknown block form {name:?}; expected 'sequential' or 'parallel'"),
            )),
        }
    }
}

impl Readout {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "scalar" => Ok(Self::Scalar),
            "token0" => Ok(Self::Token0),
            "all" => Ok(Self::All),
            _ => Err(Error::invalid(
                "readout",
                format!("unknown readout {name:?}; expected 'scalar', 'token0' or 'all'"),
            )),
        }
    }
}

/// One named block of the flat parameter vector θ (row-major).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamBlock {
    /// `layers.{layer}.{kind}[.{expert}].{tensor}`, built from the fields below.
    pub name: String,
    pub layer: usize,
    /// `"attn"`, `"router"` or `"experts"`.
    pub kind: &'static str,
    /// The expert's index, for `kind == "experts"`.
    pub expert: Option<usize>,
    /// The tensor within its part: `wq`…`wo`, `weight`, `bias`, `value`, `w1`, `b1`, `w2`, `b2`.
    pub tensor: &'static str,
    pub shape: Vec<usize>,
    pub offset: usize,
    pub size: usize,
}

/// Where each block of one layer starts in θ; precomputed so the forward pass does no bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerOffsets {
    /// `wq, wk, wv, wo` starts; only meaningful when `heads >= 1`.
    pub attn: [usize; 4],
    pub router_weight: usize,
    pub router_bias: usize,
    /// Start of expert 0; expert j starts at `experts + j * expert_size`.
    pub experts: usize,
}

/// A validated MoE class. Build it with [`MoeSpec::new`]; fields are read-only afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeSpec {
    pub layers: usize,
    pub experts: usize,
    pub top_k: usize,
    pub d_model: usize,
    pub seq_len: usize,
    pub heads: usize,
    pub expert: ExpertKind,
    pub expert_hidden: usize,
    pub gate: Gate,
    pub block: Block,
    pub readout: Readout,
    pub param_bound: f64,
    layer_offsets: Vec<LayerOffsets>,
    n_patterns: u64,
}

/// The options of a class as the user names them; [`MoeSpec::new`] validates them.
#[derive(Debug, Clone)]
pub struct SpecOptions<'a> {
    pub layers: i64,
    pub experts: i64,
    pub top_k: i64,
    pub d_model: i64,
    pub seq_len: i64,
    pub heads: i64,
    pub expert: &'a str,
    pub expert_hidden: i64,
    pub gate: &'a str,
    pub block: &'a str,
    pub readout: &'a str,
    pub param_bound: f64,
}

impl Default for SpecOptions<'_> {
    fn default() -> Self {
        SpecOptions {
            layers: 1,
            experts: 4,
            top_k: 1,
            d_model: 2,
            seq_len: 1,
            heads: 0,
            expert: "mlp",
            expert_hidden: 4,
            gate: "renormalized_softmax",
            block: "sequential",
            readout: "scalar",
            param_bound: 1.0,
        }
    }
}

/// Sizes beyond this are refused: a class this large has no covering number worth sampling. With
/// the parameter count bounded too (`MAX_PARAMS`), no product of sizes can overflow.
const MAX_SIZE: i64 = 1 << 16;
/// Routes are stored as `u32` colex ranks, so `C(experts, top_k)` must fit.
const MAX_PATTERNS: u64 = u32::MAX as u64;

/// The most parameters a class may have: a θ of 2^48 f64 is 2 PiB, past any machine, and every
/// product of sizes below it fits `usize` with room (the sizes alone, each ≤ 2^16, do not bound the
/// product: layers · experts · d_model · expert_hidden reaches 2^65).
const MAX_PARAMS: u128 = 1 << 48;

/// `layers·(Π_attn + Π_router + experts·Π_exp)` in u128, which no sizes ≤ 2^16 can overflow.
fn checked_total_params(layers: usize, experts: usize, d: usize, h: usize, heads: usize, expert: &str) -> u128 {
    let (layers, experts, d, h) = (layers as u128, experts as u128, d as u128, h as u128);
    let attention = if heads > 0 { 4 * d * d } else { 0 };
    let per_expert = match expert {
        "constant" => d,
        "linear" => d * d + d,
        _ => 2 * d * h + h + d,
    };
    layers * (attention + experts * (d + 1) + experts * per_expert)
}

fn positive(argument: &'static str, value: i64) -> Result<usize> {
    if value < 1 {
        return Err(Error::invalid(argument, format!("must be >= 1, got {value}")));
    }
    if value > MAX_SIZE {
        return Err(Error::invalid(argument, format!("must be <= {MAX_SIZE}, got {value}")));
    }
    Ok(value as usize)
}

impl MoeSpec {
    pub fn new(options: &SpecOptions) -> Result<Self> {
        let layers = positive("layers", options.layers)?;
        let experts = positive("experts", options.experts)?;
        let top_k = positive("top_k", options.top_k)?;
        let d_model = positive("d_model", options.d_model)?;
        let seq_len = positive("seq_len", options.seq_len)?;
        let expert_hidden = positive("expert_hidden", options.expert_hidden)?;
        if options.heads < 0 {
            return Err(Error::invalid(
                "heads",
                format!("must be >= 0 (0 means no attention), got {}", options.heads),
            ));
        }
        let heads = options.heads as usize;
        if heads > 0 && d_model % heads != 0 {
            return Err(Error::invalid(
                "heads",
                format!("d_model = {d_model} is not divisible by heads = {heads}"),
            ));
        }
        if top_k > experts {
            return Err(Error::invalid(
                "top_k",
                format!("top_k = {top_k} exceeds experts = {experts}"),
            ));
        }
        if !(options.param_bound.is_finite() && options.param_bound > 0.0) {
            return Err(Error::invalid(
                "param_bound",
                format!("must be finite and > 0, got {}", options.param_bound),
            ));
        }
        let total = checked_total_params(layers, experts, d_model, expert_hidden, heads, options.expert);
        if total > MAX_PARAMS {
            return Err(Error::invalid(
                "spec",
                format!(
                    "layers·(Π_attn + Π_router + experts·Π_exp) = {total} parameters, more than the 2^48 a θ can hold"
                ),
            ));
        }
        let n_patterns = binomial(experts as u64, top_k as u64);
        if n_patterns > MAX_PATTERNS {
            return Err(Error::invalid(
                "top_k",
                format!("C(experts, top_k) = C({experts}, {top_k}) does not fit the uint32 routing ranks"),
            ));
        }
        let mut spec = MoeSpec {
            layers,
            experts,
            top_k,
            d_model,
            seq_len,
            heads,
            expert: ExpertKind::parse(options.expert)?,
            expert_hidden,
            gate: Gate::parse(options.gate)?,
            block: Block::parse(options.block)?,
            readout: Readout::parse(options.readout)?,
            param_bound: options.param_bound,
            layer_offsets: Vec::new(),
            n_patterns,
        };
        spec.layer_offsets = (0..layers).map(|l| spec.compute_offsets(l)).collect();
        Ok(spec)
    }

    /// `Π_attn = 4 D²`, 0 without attention.
    pub fn attn_params(&self) -> usize {
        if self.heads == 0 {
            0
        } else {
            4 * self.d_model * self.d_model
        }
    }

    /// `Π_router = M (D + 1)`.
    pub fn router_params(&self) -> usize {
        self.experts * (self.d_model + 1)
    }

    /// `Π_exp`: parameters of one expert.
    pub fn expert_params(&self) -> usize {
        let (d, h) = (self.d_model, self.expert_hidden);
        match self.expert {
            ExpertKind::Constant => d,
            ExpertKind::Linear => d * d + d,
            ExpertKind::Mlp => 2 * d * h + h + d,
        }
    }

    pub fn layer_params(&self) -> usize {
        self.attn_params() + self.router_params() + self.experts * self.expert_params()
    }

    /// The paper's `N_eff = L_T Π_attn + L_T k Π_exp`.
    pub fn active_params(&self) -> usize {
        self.layers * (self.attn_params() + self.top_k * self.expert_params())
    }

    /// `P = L_T (Π_attn + Π_router + M Π_exp)`, the length of θ.
    pub fn total_params(&self) -> usize {
        self.layers * self.layer_params()
    }

    /// Output width `o` of the readout.
    pub fn output_dim(&self) -> usize {
        match self.readout {
            Readout::Scalar => 1,
            Readout::Token0 => self.d_model,
            Readout::All => self.seq_len * self.d_model,
        }
    }

    /// `C(M, k)`: the number of distinct top-k expert sets of one token.
    pub fn patterns_per_token(&self) -> u64 {
        self.n_patterns
    }

    /// Length of one input `X`: `seq_len * d_model`.
    pub fn input_len(&self) -> usize {
        self.seq_len * self.d_model
    }

    /// Route entries per input: `layers * seq_len`.
    pub fn routes_per_input(&self) -> usize {
        self.layers * self.seq_len
    }

    pub fn offsets(&self, layer: usize) -> &LayerOffsets {
        &self.layer_offsets[layer]
    }

    fn compute_offsets(&self, layer: usize) -> LayerOffsets {
        let base = layer * self.layer_params();
        let dd = self.d_model * self.d_model;
        let attn = [base, base + dd, base + 2 * dd, base + 3 * dd];
        let router_weight = base + self.attn_params();
        let router_bias = router_weight + self.experts * self.d_model;
        LayerOffsets {
            attn,
            router_weight,
            router_bias,
            experts: router_bias + self.experts,
        }
    }

    /// The named blocks of θ in flat order (definitions §1; issue 2 fixes the names).
    pub fn layout(&self) -> Vec<ParamBlock> {
        let (d, h, m) = (self.d_model, self.expert_hidden, self.experts);
        let mut blocks = Vec::new();
        let mut offset = 0;
        let mut push =
            |layer: usize, kind: &'static str, expert: Option<usize>, tensor: &'static str, shape: Vec<usize>| {
                let size = shape.iter().product();
                let name = match expert {
                    Some(j) => format!("layers.{layer}.{kind}.{j}.{tensor}"),
                    None => format!("layers.{layer}.{kind}.{tensor}"),
                };
                blocks.push(ParamBlock {
                    name,
                    layer,
                    kind,
                    expert,
                    tensor,
                    shape,
                    offset,
                    size,
                });
                offset += size;
            };
        for l in 0..self.layers {
            if self.heads > 0 {
                for w in ["wq", "wk", "wv", "wo"] {
                    push(l, "attn", None, w, vec![d, d]);
                }
            }
            push(l, "router", None, "weight", vec![m, d]);
            push(l, "router", None, "bias", vec![m]);
            for j in 0..m {
                let mut expert = |tensor, shape| push(l, "experts", Some(j), tensor, shape);
                match self.expert {
                    ExpertKind::Constant => expert("value", vec![d]),
                    ExpertKind::Linear => {
                        expert("weight", vec![d, d]);
                        expert("bias", vec![d]);
                    }
                    ExpertKind::Mlp => {
                        expert("w1", vec![h, d]);
                        expert("b1", vec![h]);
                        expert("w2", vec![d, h]);
                        expert("b2", vec![d]);
                    }
                }
            }
        }
        blocks
    }
}

/// Every combination of the options that change the forward pass's code path, for the tests that
/// compare two implementations on all of them: (heads, block, gate, expert, readout).
#[cfg(test)]
pub(crate) fn option_combinations() -> Vec<(i64, &'static str, &'static str, &'static str, &'static str)> {
    let mut all = Vec::new();
    for heads in [0, 1, 2] {
        for block in ["sequential", "parallel"] {
            for gate in ["uniform", "renormalized_softmax", "full_softmax"] {
                for (expert, readout) in [
                    ("constant", "all"),
                    ("linear", "token0"),
                    ("mlp", "scalar"),
                    ("mlp", "all"),
                ] {
                    all.push((heads, block, gate, expert, readout));
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_parameter_count_past_2_48_is_refused_not_wrapped() {
        // once 44 314: layers 58201 · experts 62494 · (2 · 40532 · 62562 + …) wrapped around 2^64
        let options = SpecOptions {
            layers: 58201,
            experts: 62494,
            d_model: 40532,
            expert_hidden: 62562,
            ..SpecOptions::default()
        };
        match MoeSpec::new(&options) {
            Err(Error::InvalidArgument { argument, message }) => {
                assert_eq!(argument, "spec");
                assert!(message.contains("2^48"), "{message}");
            }
            other => panic!("expected an error, got {:?}", other.map(|s| s.total_params())),
        }
    }
    use super::*;

    fn spec(options: SpecOptions) -> MoeSpec {
        MoeSpec::new(&options).expect("valid spec")
    }

    #[test]
    fn layout_tiles_theta_and_matches_offsets() {
        for expert in ["constant", "linear", "mlp"] {
            for heads in [0, 1, 2] {
                let s = spec(SpecOptions {
                    layers: 2,
                    experts: 3,
                    d_model: 4,
                    heads,
                    expert,
                    expert_hidden: 5,
                    ..Default::default()
                });
                let layout = s.layout();
                let mut next = 0;
                for block in &layout {
                    assert_eq!(block.offset, next, "{}", block.name);
                    next += block.size;
                }
                assert_eq!(next, s.total_params());
                for l in 0..2 {
                    let find = |name: String| layout.iter().find(|b| b.name == name).expect("block exists").offset;
                    let o = s.offsets(l);
                    assert_eq!(o.router_weight, find(format!("layers.{l}.router.weight")));
                    assert_eq!(o.router_bias, find(format!("layers.{l}.router.bias")));
                    let first = if expert == "constant" {
                        "value"
                    } else if expert == "linear" {
                        "weight"
                    } else {
                        "w1"
                    };
                    assert_eq!(o.experts, find(format!("layers.{l}.experts.0.{first}")));
                    if heads > 0 {
                        assert_eq!(o.attn[3], find(format!("layers.{l}.attn.wo")));
                    }
                }
            }
        }
    }

    #[test]
    fn parameter_counts_follow_math_md() {
        // D = 3, h = 2, M = 4, k = 2, L = 2, attention: Π_attn = 36, Π_exp = 2·3·2 + 2 + 3 = 17,
        // Π_router = 16; N_eff = 2·36 + 2·2·17 = 140; P = 2·(36 + 16 + 4·17) = 240.
        let s = spec(SpecOptions {
            layers: 2,
            experts: 4,
            top_k: 2,
            d_model: 3,
            heads: 1,
            expert_hidden: 2,
            ..Default::default()
        });
        assert_eq!(s.active_params(), 140);
        assert_eq!(s.total_params(), 240);
    }

    #[test]
    fn invalid_options_name_their_argument() {
        let cases: Vec<(SpecOptions, &str)> = vec![
            (
                SpecOptions {
                    top_k: 5,
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SpecOptions {
                    d_model: 3,
                    heads: 2,
                    ..Default::default()
                },
                "heads",
            ),
            (
                SpecOptions {
                    layers: 0,
                    ..Default::default()
                },
                "layers",
            ),
            (
                SpecOptions {
                    expert: "moe",
                    ..Default::default()
                },
                "expert",
            ),
            (
                SpecOptions {
                    gate: "softmax",
                    ..Default::default()
                },
                "gate",
            ),
            (
                SpecOptions {
                    param_bound: f64::NAN,
                    ..Default::default()
                },
                "param_bound",
            ),
            (
                SpecOptions {
                    experts: 64,
                    top_k: 16,
                    ..Default::default()
                },
                "top_k",
            ),
        ];
        for (options, name) in cases {
            match MoeSpec::new(&options) {
                Err(Error::InvalidArgument { argument, .. }) => assert_eq!(argument, name),
                other => panic!("expected an error naming {name}, got {other:?}"),
            }
        }
    }
}
