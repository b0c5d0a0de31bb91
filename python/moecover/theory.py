"""What theory predicts for a class: the paper's bounds and rates, the alternatives of definitions §4,
and a published empirical MoE scaling law. All logarithms are natural; entropies are in nats.

The paper is "Generalization and Scaling Laws for Mixture-of-Experts Transformers" (M. Zoubeirou a
Mayaki, 2026; its formulas are restated in docs/definitions.md). Its N_eff, N and N_active (which its reviewers find ambiguous) are
all taken here as the active parameter count N_eff = L_T Π_attn + L_T k Π_exp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import check_bytes, check_inputs, check_spec, positive_int
from ._evaluate import evaluate, sample_params
from ._rng import RngLike, derive_seeds, resolve_seed
from ._spec import MoESpec

__all__ = [
    "GeneralizationBound",
    "LipschitzEstimate",
    "approximation_rate",
    "data_dependent_log_covering",
    "estimate_lipschitz",
    "ambient_dimension",
    "exact_routing_term",
    "functional_slope",
    "generalization_bound",
    "jmsl_chinchilla_form",
    "jmsl_loss",
    "optimal_active_params",
    "optimal_error_exponent",
    "paper_log_covering",
    "paper_slope",
    "parametric_log_covering",
    "parametric_slope",
    "routing_term",
    "used_params",
    "used_params_per_pattern",
]

Pinned = Union[Mapping[str, Any], Iterable[str], None]
FloatOrArray = Union[float, NDArray[np.float64]]


def _real(argument: str, value: ArrayLike) -> NDArray[np.float64]:
    """`value` as float64, if it is a real number or an array of them: strings, bools and complex
    numbers are refused rather than converted."""
    array = np.asarray(value)
    if array.dtype == np.bool_ or array.dtype.kind not in "iuf":
        raise TypeError(f"{argument}: expected a real number or an array of them, got {type(value).__name__}"
                        + (f" of dtype {array.dtype}" if isinstance(value, np.ndarray) else ""))
    return array.astype(np.float64)


def _positive(argument: str, value: ArrayLike) -> NDArray[np.float64]:
    array = _real(argument, value)
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"{argument}: must be finite and > 0, got {value!r}")
    return array


def _positive_number(argument: str, value: ArrayLike) -> float:
    """One finite number > 0 (an array of them is refused, naming the argument)."""
    array = _positive(argument, value)
    if array.ndim != 0:
        raise TypeError(f"{argument}: expected one number, got an array of shape {array.shape}")
    return float(array)


def _lipschitz(value: ArrayLike) -> float:
    lip = _real("lipschitz", value)
    if lip.ndim != 0 or not (math.isfinite(float(lip)) and float(lip) >= 0):
        raise ValueError(f"lipschitz: must be one finite number >= 0, got {value!r}")
    return float(lip)


def _out(array: NDArray[np.float64]) -> FloatOrArray:
    return float(array) if array.ndim == 0 else array


# B·Lip/δ is a ratio of floats: 0.7/0.07 is 10.000000000000002, and an estimated Lipschitz constant
# of 1 comes out as 1 ± 1e-12. A ratio within this relative distance of an integer counts as it.
_CEIL_TOLERANCE = 1e-9


def _cells_per_axis(ratio: NDArray[np.float64]) -> NDArray[np.float64]:
    """max(1, ⌈ratio⌉), robust to rounding just above an integer."""
    return np.maximum(1.0, np.ceil(ratio * (1.0 - _CEIL_TOLERANCE)))


def _log_cells(scale: float, delta: NDArray[np.float64]) -> NDArray[np.float64]:
    """log max(1, ⌈scale/δ⌉), exact where the ratio overflows (δ = 1e-310): past 2^52 the ceiling
    changes nothing a float can hold, and log(scale) − log(δ) is finite where scale/δ is not."""
    with np.errstate(over="ignore", divide="ignore"):
        ratio = scale / delta
    huge = ~(ratio < 2.0**52)
    safe = np.where(huge, 1.0, ratio)
    return np.where(huge, math.log(scale) - np.log(delta) if scale > 0 else 0.0, np.log(_cells_per_axis(safe)))


def _pinned_names(spec: MoESpec, pinned: Pinned) -> set[str]:
    names = set(pinned.keys() if isinstance(pinned, Mapping) else (pinned or ()))
    for name in names:
        spec.param_block(name)  # ValueError for unknown names
    return names


# --- Theorem 3.4: the paper's covering bound --------------------------------------------------


def paper_slope(spec: MoESpec) -> int:
    """The slope of log N(δ) against log(1/δ) that Theorem 3.4 predicts: N_eff = L_T Π_attn + L_T k Π_exp."""
    return check_spec(spec).active_params


def routing_term(spec: MoESpec) -> float:
    """Theorem 3.4's routing overhead L_T ℓ k log(e M / k) (nats): the bound on log C(M,k)^{L_T ℓ}."""
    spec = check_spec(spec)
    return spec.layers * spec.seq_len * spec.top_k * math.log(math.e * spec.experts / spec.top_k)


def exact_routing_term(spec: MoESpec) -> float:
    """log of the per-input pattern count the union bound ranges over: L_T ℓ log C(M, k) (nats)."""
    spec = check_spec(spec)
    return spec.layers * spec.seq_len * math.log(math.comb(spec.experts, spec.top_k))


def paper_log_covering(spec: MoESpec, delta: ArrayLike, constant: float = 1.0) -> FloatOrArray:
    """Theorem 3.4's right-hand side with its hidden constant explicit (nats):
    constant · (N_eff log(1/δ) + L_T ℓ k log(eM/k)), clamped at 0.

    The theorem is stated for δ < 1; past δ = e^{routing term / N_eff} its formula goes negative,
    which no log covering number is (N ≥ 1), so it is clamped at 0 there rather than returned as a
    bound that says less than nothing."""
    d = _positive("delta", delta)
    c = _positive_number("constant", constant)
    raw = c * (paper_slope(spec) * -np.log(d) + routing_term(spec))  # −log δ: finite for any δ > 0
    return _out(np.maximum(raw, 0.0))


# --- the parametric bound ---------------------------------------------------------------------


def parametric_slope(spec: MoESpec, pinned: Pinned = None) -> int:
    """Free (not pinned) parameters: the slope of the parametric bound. `pinned`: block names, or
    the same mapping passed to sampling."""
    spec = check_spec(spec)
    names = _pinned_names(spec, pinned)
    return spec.total_params - sum(spec.param_block(name).size for name in names)


def parametric_log_covering(spec: MoESpec, delta: ArrayLike, lipschitz: float, pinned: Pinned = None) -> FloatOrArray:
    """free · log(max(1, ⌈B·Lip/δ⌉)) (nats): the ℓ∞ cover of the free-parameter box [−B, B]^free by
    cubes of side 2δ/Lip, pushed through a Lip-Lipschitz map θ ↦ f_θ(X_n) (B = param_bound).
    A ratio B·Lip/δ within 1e-9 (relative) of an integer counts as that integer."""
    d = _positive("delta", delta)
    lip = _lipschitz(lipschitz)
    return _out(parametric_slope(spec, pinned) * _log_cells(spec.param_bound * lip, d))


# --- the data-dependent union bound -----------------------------------------------------------


def used_params(spec: MoESpec, routes_of_one_pattern: ArrayLike, pinned: Pinned = None) -> int:
    """The free parameters that one dataset-wide routing pattern exercises.

    `routes_of_one_pattern`: uint (n, layers, seq_len) colex ranks (one sample's `evaluate` routes).
    Counts attention, the experts selected for some token in some layer, and each layer's router
    when the gate weights vary continuously with it (gate = full_softmax, or renormalized_softmax
    with top_k >= 2); pinned blocks are not free and never count.
    """
    spec = check_spec(spec)
    routes = np.asarray(routes_of_one_pattern)
    if not np.issubdtype(routes.dtype, np.integer):
        raise TypeError(f"routes_of_one_pattern: expected integer colex ranks, got dtype {routes.dtype}")
    if routes.ndim != 3 or routes.shape[1:] != (spec.layers, spec.seq_len):
        raise ValueError(
            f"routes_of_one_pattern: expected shape (n, layers, seq_len) = (n, {spec.layers}, {spec.seq_len}), "
            f"got {routes.shape}"
        )
    # the range check and the per-pattern pass read and copy every entry: a huge broadcast view
    # (zero strides, no memory) would take minutes before failing, so it is refused first
    check_bytes("routes_of_one_pattern", 9 * routes.size * spec.experts, f"the expert sets of {routes.size} routes")
    if routes.size and (routes.min() < 0 or routes.max() >= spec.patterns_per_token):
        raise ValueError(f"routes_of_one_pattern: ranks must lie in [0, C(M,k)) = [0, {spec.patterns_per_token})")
    return int(used_params_per_pattern(spec, routes[None].astype(np.int64), pinned)[0])


def used_params_per_pattern(spec: MoESpec, patterns: NDArray[np.integer[Any]], pinned: Pinned = None) -> NDArray[np.int64]:
    """`used_params` of each of many patterns (G, n, layers, seq_len) at once, 4096 at a time: the
    experts each pattern reaches come from a table of the colex subsets."""
    from .routing import subsets

    pinned_names = _pinned_names(spec, pinned)
    router_counts = spec.gate == "full_softmax" or (spec.gate == "renormalized_softmax" and spec.top_k >= 2)
    fixed = 0
    expert_size = np.zeros((spec.layers, spec.experts), dtype=np.int64)
    for block in spec.layout:
        if block.name in pinned_names:
            continue
        if block.kind == "attn" or (block.kind == "router" and router_counts):
            fixed += block.size
        elif block.kind == "experts":
            expert_size[block.layer, block.expert] += block.size
    membership = np.zeros((spec.patterns_per_token, spec.experts), dtype=bool)
    table = subsets(spec.experts, spec.top_k).reshape(spec.patterns_per_token, spec.top_k).astype(np.int64)
    np.put_along_axis(membership, table, True, axis=1)
    used = np.empty(len(patterns), dtype=np.int64)
    for start in range(0, len(patterns), 4096):  # (4096, n, layers, seq_len, experts) booleans at a time
        reached = membership[patterns[start : start + 4096]].any(axis=(1, 3))  # (g, layers, experts)
        used[start : start + 4096] = fixed + (reached * expert_size).sum(axis=(1, 2))
    return used


# --- the functional dimension: the exact asymptotic slope ---------------------------------------


def functional_slope(
    spec: MoESpec,
    inputs: ArrayLike,
    samples: int = 1000,
    rng: Any = None,
    pinned: Mapping[str, ArrayLike] | None = None,
    n_threads: int | None = None,
) -> int:
    """r*, the functional dimension of `spec` on `inputs` (definitions §6): the largest rank of the
    exact Jacobian over `samples` parameter samples. N(δ) = Θ(δ^{-r*}) as δ → 0, so r* is the slope
    every other prediction here is to be compared with; as seen by the samples, it is a lower bound
    on the class's r* (`moecover.functional_dimension` reports how many samples reached it)."""
    from ._jacobian import functional_dimension

    return functional_dimension(spec, inputs, samples=samples, rng=rng, pinned=pinned, n_threads=n_threads).max_rank


def ambient_dimension(spec: MoESpec, n: int) -> int:
    """n·o: the dimension of the space F|X_n lives in, a cap on every slope (definitions §4)."""
    return positive_int("n", n) * check_spec(spec).output_dim


def data_dependent_log_covering(
    n_patterns: int, used: int, delta: ArrayLike, lipschitz: float, param_bound: float
) -> FloatOrArray:
    """log n_patterns + used · log(max(1, ⌈B·Lip/δ⌉)) (nats): a union over the realised dataset-wide
    routing patterns of parametric covers of the parameters each pattern uses (definitions §4)."""
    n_patterns = positive_int("n_patterns", n_patterns)
    used = positive_int("used", used, minimum=0)
    d = _positive("delta", delta)
    bound = _positive_number("param_bound", param_bound)
    lip = _lipschitz(lipschitz)
    return _out(math.log(n_patterns) + used * _log_cells(bound * lip, d))


@dataclass(frozen=True)
class LipschitzEstimate:
    """Empirical Lipschitz constant of θ ↦ (f_θ(x_i))_i from the ℓ∞ parameter box to the sup norm.

    A *lower* estimate: the largest ratio ‖f_θ − f_θ'‖_∞ / ‖θ − θ'‖_∞ seen over sampled nearby pairs.
    Hard top-k routing makes the map discontinuous where a perturbation changes a routing pattern;
    such pairs are counted in `switched` and left out of `lipschitz` (their ratios grow without bound
    as the radius shrinks), but their largest ratio is kept in `max_ratio_all`.

    Attributes:
        lipschitz: max ratio over the pairs whose routing pattern did not change.
        pairs: pairs used for `lipschitz`.
        switched: pairs whose routing pattern changed.
        max_ratio_all: max ratio over every pair.
        radius: ℓ∞ size of the perturbations, relative to param_bound.
        seed: the integer seed (replay with rng=seed).
    """

    lipschitz: float
    pairs: int
    switched: int
    max_ratio_all: float
    radius: float
    seed: int


def estimate_lipschitz(
    spec: MoESpec,
    inputs: ArrayLike,
    samples: int = 2000,
    rng: RngLike = None,
    pinned: Mapping[str, ArrayLike] | None = None,
    radius: float = 1e-2,
    n_threads: int | None = None,
) -> LipschitzEstimate:
    """Samples θ in the box (pinned blocks fixed), perturbs the free coordinates by up to
    `radius`·param_bound in ℓ∞ (clipped to the box), and reports the largest ratio of output to
    parameter distance. Radii much below 1e-2 lose digits to rounding in f_θ(x) − f_θ'(x)."""
    spec = check_spec(spec)
    samples = positive_int("samples", samples)
    r = _positive_number("radius", radius)
    x = check_inputs(spec, inputs)
    # the peak, counted before any of it is made: θ, its step, the moved copy and both stacked
    # for one evaluation (6 arrays of samples × P), and that evaluation's values and routes
    pairs = 2 * samples * x.shape[0]
    check_bytes("samples", 6 * 8 * samples * spec.total_params + pairs * (8 * spec.output_dim + 4 * spec.layers * spec.seq_len),
                f"the {samples} perturbed pairs of parameters and their values")
    seed = resolve_seed(rng)
    base_seed, direction_seed = derive_seeds(seed, 2)
    theta = sample_params(spec, samples, rng=base_seed, pinned=pinned, n_threads=n_threads, sampler="uniform")
    free = np.ones(spec.total_params, dtype=bool)
    for name in _pinned_names(spec, pinned):
        block = spec.param_block(name)
        free[block.offset : block.offset + block.size] = False
    step = np.zeros_like(theta)
    step[:, free] = np.random.default_rng(direction_seed).uniform(-1, 1, size=(samples, int(free.sum())))
    step *= r * spec.param_bound
    moved = np.clip(theta + step, -spec.param_bound, spec.param_bound)
    moved[:, ~free] = theta[:, ~free]
    step = moved - theta
    out = evaluate(spec, np.concatenate([theta, moved]), x, n_threads=n_threads)
    values, routes = out.values.reshape(2, samples, -1), out.routes.reshape(2, samples, -1)
    change = np.abs(values[0] - values[1]).max(axis=1)
    size = np.abs(step).max(axis=1)
    ratios = np.divide(change, size, out=np.zeros_like(change), where=size > 0)
    same = (routes[0] == routes[1]).all(axis=1) & (size > 0)
    return LipschitzEstimate(
        lipschitz=float(ratios[same].max()) if same.any() else float("nan"),
        pairs=int(same.sum()),
        switched=int((~same & (size > 0)).sum()),
        max_ratio_all=float(ratios.max()),
        radius=r,
        seed=seed,
    )


# --- rates (Theorems 3.2, 3.3 and Section 4) -------------------------------------------------


def approximation_rate(n_eff: ArrayLike, experts: ArrayLike, beta: float, d: float) -> FloatOrArray:
    """Theorem 3.2: the squared sup-norm approximation error of a C^β target on a d-dimensional
    manifold, min(N_eff^{−2β/d}, M^{−2β/d}) (up to the theorem's constant)."""
    b, dim = _positive_number("beta", beta), _positive_number("d", d)
    n = _positive("n_eff", n_eff)
    m = _positive("experts", experts)
    return _out(np.minimum(n ** (-2 * b / dim), m ** (-2 * b / dim)))


@dataclass(frozen=True)
class GeneralizationBound:
    """Theorem 3.3's three terms (each with its constant) and their sum."""

    approximation: float
    estimation: float
    routing: float
    total: float


def generalization_bound(
    spec: MoESpec, n: int, beta: float, d: float, constants: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> GeneralizationBound:
    """Theorem 3.3: E‖T̂_n − f‖² ≲ c1 N_eff^{−2β/d} + c2 N_eff / n + c3 L_T ℓ k log(eM/k) / n."""
    spec = check_spec(spec)
    n = positive_int("n", n)
    b, dim = _positive_number("beta", beta), _positive_number("d", d)
    c1, c2, c3 = (float(c) for c in _positive("constants", constants))
    n_eff = spec.active_params
    approximation = c1 * n_eff ** (-2 * b / dim)
    estimation = c2 * n_eff / n
    routing = c3 * routing_term(spec) / n
    return GeneralizationBound(approximation, estimation, routing, approximation + estimation + routing)


def optimal_active_params(n: ArrayLike, beta: float, d: float, constant: float = 1.0) -> FloatOrArray:
    """Section 4: balancing N_eff^{−2β/d} against N_eff/n gives N_eff* = constant · n^{d/(2β+d)}."""
    b, dim = _positive_number("beta", beta), _positive_number("d", d)
    samples = _positive("n", n)
    return _out(_positive_number("constant", constant) * samples ** (dim / (2 * b + dim)))


def spec_with_active_params(base: MoESpec, n_eff: float) -> MoESpec:
    """`base` (mlp experts) with `expert_hidden` in 1 … 256 chosen so that N_eff is nearest `n_eff`:
    how Section 4's schedule and a grid at fixed active parameters size a class."""
    import dataclasses

    if base.expert != "mlp":
        raise ValueError(f"base: sizing by expert_hidden needs mlp experts, got expert = {base.expert!r}")
    sizes = (dataclasses.replace(base, expert_hidden=h) for h in range(1, 257))
    return min(sizes, key=lambda spec: abs(paper_slope(spec) - n_eff))


def optimal_error_exponent(beta: float, d: float) -> float:
    """Section 4: at N_eff*, the error decays as n^{−2β/(2β+d)}; this returns 2β/(2β+d)."""
    b, dim = _positive_number("beta", beta), _positive_number("d", d)
    return 2 * b / (2 * b + dim)


# --- a published empirical law: Joint MoE Scaling Laws -----------------------------------------

# Ludziejewski et al. 2025, "Joint MoE Scaling Laws: Mixture of Experts Can Be Memory Efficient"
# (arXiv:2502.05172), Table 3.
JMSL = {
    "a": 35.91, "alpha": -0.1889, "delta": -0.2285, "gamma": 0.0098,
    "b": 35.98, "beta": -0.1775, "omega": 0.5529, "zeta": -0.0259,
    "e_start": 2.0732, "e_max": 290.4521, "c": 1.3637,
}  # fmt: skip


def _effective_experts(experts: ArrayLike) -> NDArray[np.float64]:
    """Ê with 1/Ê = 1/(E − 1 + (1/E_start − 1/E_max)^{−1}) + 1/E_max (Eq. 6); Ê(1) = E_start."""
    e = np.asarray(experts, dtype=np.float64)
    if not (np.isfinite(e).all() and (e >= 1).all()):
        raise ValueError(f"experts: must be finite and >= 1, got {experts!r}")
    p = JMSL
    return 1.0 / (1.0 / (e - 1.0 + 1.0 / (1.0 / p["e_start"] - 1.0 / p["e_max"])) + 1.0 / p["e_max"])


def jmsl_loss(active_params: ArrayLike, tokens: ArrayLike, experts: ArrayLike) -> FloatOrArray:
    """Eq. 6 of Ludziejewski et al. 2025 (arXiv:2502.05172), constants from its Table 3:
    L(N_act, D, Ê) = a Ê^δ N_act^{α + γ ln Ê} + b Ê^ω D^{β + ζ ln Ê} + c (loss in nats per token)."""
    n = _positive("active_params", active_params)
    d = _positive("tokens", tokens)
    e_hat = _effective_experts(experts)
    p, ln_e = JMSL, np.log(e_hat)
    model = p["a"] * e_hat ** p["delta"] * n ** (p["alpha"] + p["gamma"] * ln_e)
    data = p["b"] * e_hat ** p["omega"] * d ** (p["beta"] + p["zeta"] * ln_e)
    return _out(model + data + p["c"])


def jmsl_chinchilla_form(experts: float) -> dict[str, float]:
    """Eq. 6 at fixed E as L = m N^μ + n D^ν + c (the paper's Table 4):
    m = a Ê^δ, μ = α + γ ln Ê, n = b Ê^ω, ν = β + ζ ln Ê."""
    e_hat = float(_effective_experts(experts))
    p, ln_e = JMSL, math.log(e_hat)
    return {
        "m": p["a"] * e_hat ** p["delta"],
        "mu": p["alpha"] + p["gamma"] * ln_e,
        "n": p["b"] * e_hat ** p["omega"],
        "nu": p["beta"] + p["zeta"] * ln_e,
        "c": p["c"],
    }
