"""Least-squares fits of the MoE class and their learning curves (definitions §9).

Needs the `[erm]` extra (`pip install "moecover[erm]"`: JAX and optax, CPU wheels; `jax.vmap`
trains the many small models a grid of (n, size, seed) needs at once).

- `model(spec)`: the class as a JAX function of the flat θ of `spec.layout`, equal to
  `moecover.evaluate` (values to 1e-10 in float64, routes exactly), so a fitted θ goes to every
  other moecover function; `evaluate(spec, theta, x)` gives values and routes as NumPy arrays.
- `fit`: least squares by Adam from several random starts at once, θ kept in the class's box,
  the best validation risk kept (early stopping), deterministic from one seed, interruptible.
- `learning_curve`: excess test risk against n over seeds for an `MoESpec`, a schedule n → spec
  (`neff_schedule`: Section 4's N_eff* ∝ n^{d/(2β+d)}), or "knn" (the calibration model), with
  the fitted exponent and its interval beside 2β/(2β+d).

Everything here runs in float64 (inside `jax.enable_x64`), whatever the caller's JAX default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import MissingDependency, as_float64, check_spec, positive_int
from ._knn import knn_predictions
from ._progress import Progress
from ._rng import RngLike, resolve_seed
from ._spec import MoESpec
from .targets import RegressionProblem

__all__ = ["Fit", "LearningCurve", "evaluate", "fit", "learning_curve", "model", "neff_schedule"]


def _jax() -> tuple[Any, Any, Any]:
    try:
        import jax
        import jax.numpy as jnp
        import optax
    except ImportError:
        raise MissingDependency('moecover.erm needs JAX and optax: pip install "moecover[erm]"') from None
    return jax, jnp, optax


# --- the class in JAX ------------------------------------------------------------------------


def _forward(spec: MoESpec, theta: Any, x: Any) -> tuple[Any, list[Any]]:
    """Values (n, output_dim) and, per layer, the chosen experts (n, seq_len, top_k), ascending."""
    jax, jnp, _ = _jax()
    blocks = {b.name: theta[b.offset: b.offset + b.size].reshape(b.shape) for b in spec.layout}
    h = x
    chosen_per_layer = []
    for layer in range(spec.layers):
        prefix = f"layers.{layer}"
        if spec.heads:
            wq, wk, wv, wo = (blocks[f"{prefix}.attn.{t}"] for t in ("wq", "wk", "wv", "wo"))
            width = spec.d_model // spec.heads
            n, tokens = h.shape[0], h.shape[1]
            q = (h @ wq).reshape(n, tokens, spec.heads, width)
            k = (h @ wk).reshape(n, tokens, spec.heads, width)
            v = (h @ wv).reshape(n, tokens, spec.heads, width)
            weights = jax.nn.softmax(jnp.einsum("nthw,nshw->nhts", q, k) / math.sqrt(width), axis=-1)
            attention = jnp.einsum("nhts,nshw->nthw", weights, v).reshape(n, tokens, spec.d_model) @ wo
        else:
            attention = jnp.zeros_like(h)
        z = h + attention if spec.block == "sequential" else h
        mixed, chosen = _mixture(spec, blocks, layer, z)
        chosen_per_layer.append(chosen)
        h = z + mixed if spec.block == "sequential" else h + attention + mixed
    if spec.readout == "scalar":
        return h[:, 0, :1], chosen_per_layer
    if spec.readout == "token0":
        return h[:, 0, :], chosen_per_layer
    return h.reshape(h.shape[0], -1), chosen_per_layer


def _mixture(spec: MoESpec, blocks: dict[str, Any], layer: int, z: Any) -> tuple[Any, Any]:
    """The top-k mixture of one layer for tokens z (n, seq_len, d_model): every expert computed on
    every token, mixed by a gate matrix that is zero off the chosen experts."""
    jax, jnp, _ = _jax()
    prefix = f"layers.{layer}"
    scores = z @ blocks[f"{prefix}.router.weight"].T + blocks[f"{prefix}.router.bias"]  # (n, T, M)
    _, chosen = jax.lax.top_k(scores, spec.top_k)  # the k highest; ties to the lower index
    chosen = jnp.sort(chosen, axis=-1)
    mask = jnp.sum(jax.nn.one_hot(chosen, spec.experts, dtype=z.dtype), axis=-2)  # (n, T, M), 1 on the chosen
    if spec.gate == "uniform":
        gates = mask / spec.top_k
    elif spec.gate == "full_softmax":
        gates = mask * jax.nn.softmax(scores, axis=-1)
    else:  # renormalized_softmax: the softmax over the chosen scores only
        shifted = jnp.where(mask > 0, scores, -jnp.inf)
        gates = jax.nn.softmax(shifted, axis=-1) * mask
    experts = range(spec.experts)
    name = f"{prefix}.experts"
    if spec.expert == "constant":
        outputs = jnp.stack([blocks[f"{name}.{j}.value"] for j in experts])[None, None]  # (1, 1, M, D)
        outputs = jnp.broadcast_to(outputs, z.shape[:2] + outputs.shape[2:])
    elif spec.expert == "linear":
        weight = jnp.stack([blocks[f"{name}.{j}.weight"] for j in experts])  # (M, D, D)
        bias = jnp.stack([blocks[f"{name}.{j}.bias"] for j in experts])  # (M, D)
        outputs = jnp.einsum("mde,nte->ntmd", weight, z) + bias
    else:
        w1 = jnp.stack([blocks[f"{name}.{j}.w1"] for j in experts])  # (M, H, D)
        b1 = jnp.stack([blocks[f"{name}.{j}.b1"] for j in experts])
        w2 = jnp.stack([blocks[f"{name}.{j}.w2"] for j in experts])  # (M, D, H)
        b2 = jnp.stack([blocks[f"{name}.{j}.b2"] for j in experts])
        hidden = jax.nn.relu(jnp.einsum("mhd,ntd->ntmh", w1, z) + b1)
        outputs = jnp.einsum("mdh,ntmh->ntmd", w2, hidden) + b2
    return jnp.einsum("ntm,ntmd->ntd", gates, outputs), chosen


def model(spec: MoESpec) -> Callable[[Any, Any], Any]:
    """`f(theta, x)`: the values (n, spec.output_dim) of the class at θ (P,) on inputs x (n,
    seq_len, d_model), as a JAX function (jit, grad and vmap apply). Call it in float64
    (`with jax.enable_x64(True):`) to get `moecover.evaluate`'s values."""
    check_spec(spec)
    return lambda theta, x: _forward(spec, theta, x)[0]


def evaluate(spec: MoESpec, theta: ArrayLike, x: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.uint32]]:
    """The JAX model's values (n, output_dim) and routes (n, layers, seq_len) (colex ranks of the
    chosen experts, as `moecover.evaluate` encodes them) at one θ, as NumPy arrays in float64."""
    jax, jnp, _ = _jax()
    check_spec(spec)
    theta = as_float64("theta", theta, 1)
    if theta.shape[0] != spec.total_params:
        raise ValueError(f"theta: expected {spec.total_params} parameters (spec.total_params), got {theta.shape[0]}")
    x = _inputs_for(spec, x)
    with jax.enable_x64(True):
        values, chosen = jax.jit(lambda t, v: _forward(spec, t, v))(jnp.asarray(theta), jnp.asarray(x))
        values = np.asarray(values, dtype=np.float64)
        from . import routing

        # each token's expert set as moecover encodes it (routing.rank: its colex rank)
        ranks = [np.apply_along_axis(routing.rank, -1, np.asarray(c)) for c in chosen]
    return values, np.stack(ranks, axis=1).astype(np.uint32)


def _inputs_for(spec: MoESpec, x: ArrayLike) -> NDArray[np.float64]:
    array = as_float64("x", x, (2, 3))
    if array.ndim == 2:  # points of a regression problem: one token each
        array = array[:, None, :]
    if array.shape[1:] != (spec.seq_len, spec.d_model):
        raise ValueError(f"x: expected inputs (n, {spec.seq_len}, {spec.d_model}) for this spec, got {array.shape}")
    return array


# --- fitting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """Least-squares fits of one spec to one or more datasets, the best of `starts` random starts
    each (by validation risk). `theta` (datasets, P) in `spec.layout`'s order, inside the box;
    `train_risk`, `validation_risk` (datasets,) at that θ; `best_step` where it was reached;
    `trace` (checks, datasets, starts) of training losses, one per `check_every` steps; `seed`."""

    spec: MoESpec
    theta: NDArray[np.float64]
    train_risk: NDArray[np.float64]
    validation_risk: NDArray[np.float64]
    best_step: NDArray[np.int64]
    trace: NDArray[np.float64]
    steps: int
    seed: int

    def predict(self, x: ArrayLike, dataset: int = 0) -> NDArray[np.float64]:
        """The fitted function of `dataset` at inputs x: values (n, output_dim)."""
        return evaluate(self.spec, self.theta[dataset], x)[0]


def fit(
    spec: MoESpec,
    x: ArrayLike,
    y: ArrayLike,
    starts: int = 4,
    steps: int = 2000,
    learning_rate: float = 0.01,
    validation: float = 0.2,
    check_every: int = 50,
    patience: int = 10,
    rng: RngLike = None,
    progress: bool = False,
) -> Fit:
    """Fits `spec` by least squares to responses y (n,) or (datasets, n) at inputs x (n, ...) or
    (datasets, n, ...) (several datasets of one size are fitted together, under `jax.vmap`).

    Each dataset is split once: a `validation` fraction is held out. From `starts` θ sampled
    uniformly in the box, full-batch Adam runs `steps` steps, θ clipped back into the box after
    each (the class is the box); every `check_every` steps the validation risk is measured and the
    best θ kept; a run stops early once `patience` checks in a row bring no improvement for any
    model. Same seed, same result. Ctrl-C stops it between checks."""
    jax, jnp, optax = _jax()
    check_spec(spec)
    if spec.output_dim != 1:
        raise ValueError(f"spec: least squares here fits scalar outputs; this spec's readout gives {spec.output_dim}")
    xs, ys = _datasets(spec, x, y)
    starts = positive_int("starts", starts)
    steps = positive_int("steps", steps)
    check_every = positive_int("check_every", check_every)
    patience = positive_int("patience", patience)
    if not (isinstance(validation, (int, float)) and 0 < validation < 1):
        raise ValueError(f"validation: expected a fraction in (0, 1), got {validation!r}")
    if not (isinstance(learning_rate, (int, float)) and learning_rate > 0 and math.isfinite(learning_rate)):
        raise ValueError(f"learning_rate: expected a positive number, got {learning_rate!r}")
    datasets, n = ys.shape
    held = max(1, int(round(validation * n)))
    if n - held < 1:
        raise ValueError(f"y: {n} points leave none to train on after the validation split")
    seed = resolve_seed(rng)
    split = np.random.default_rng([seed, 0]).permutation(n)
    train, check = split[held:], split[:held]
    from ._evaluate import sample_params

    init = sample_params(spec, datasets * starts, rng=seed, sampler="uniform").reshape(datasets, starts, spec.total_params)
    bound = float(spec.param_bound)
    f = model(spec)
    optimiser = optax.adam(learning_rate)

    def loss(theta: Any, xv: Any, yv: Any) -> Any:
        return jnp.mean((f(theta, xv)[:, 0] - yv) ** 2)

    def chunk(state: Any, data: Any) -> Any:
        """`check_every` Adam steps of one model, then its validation risk."""
        theta, opt, best_theta, best_risk, best_step, step = state
        x_train, y_train, x_check, y_check = data

        def one(carry: Any, _: Any) -> Any:
            t, o = carry
            value, grads = jax.value_and_grad(loss)(t, x_train, y_train)
            updates, o = optimiser.update(grads, o, t)
            return (jnp.clip(optax.apply_updates(t, updates), -bound, bound), o), value

        (theta, opt), values = jax.lax.scan(one, (theta, opt), None, length=check_every)
        step = step + check_every
        risk = loss(theta, x_check, y_check)
        better = risk < best_risk
        best_theta = jnp.where(better, theta, best_theta)
        best_step = jnp.where(better, step, best_step)
        best_risk = jnp.minimum(risk, best_risk)
        return (theta, opt, best_theta, best_risk, best_step, step), values[-1]

    with jax.enable_x64(True):
        data = (jnp.asarray(xs[:, train]), jnp.asarray(ys[:, train]), jnp.asarray(xs[:, check]), jnp.asarray(ys[:, check]))
        per_start = jax.vmap(chunk, in_axes=(0, None))  # the starts of one dataset
        per_dataset = jax.jit(jax.vmap(per_start, in_axes=(0, 0)))  # and every dataset
        theta0 = jnp.asarray(init)
        opt0 = jax.vmap(jax.vmap(optimiser.init))(theta0)
        infinite = jnp.full((datasets, starts), jnp.inf)
        zeros = jnp.zeros((datasets, starts), dtype=jnp.int64)
        state = (theta0, opt0, theta0, infinite, zeros, zeros)
        trace, stale, last_best = [], 0, np.full((datasets, starts), np.inf)
        bar = Progress(-(-steps // check_every), "checks") if progress else None
        try:
            for _ in range(-(-steps // check_every)):
                state, train_loss = per_dataset(state, data)
                trace.append(np.asarray(train_loss))
                best = np.asarray(state[3])
                stale = 0 if (best < last_best).any() else stale + 1
                last_best = best
                if bar is not None:
                    bar.advance()
                if stale >= patience:
                    break
        finally:
            if bar is not None:
                bar.close()
        best_risk = np.asarray(state[3])
        chosen = np.argmin(best_risk, axis=1)  # the best start of each dataset
        rows = np.arange(datasets)
        theta = np.asarray(state[2])[rows, chosen]
        train_risk = np.asarray(jax.jit(jax.vmap(loss))(jnp.asarray(theta), data[0], data[1]))
        best_step = np.asarray(state[4])[rows, chosen]
        steps_run = int(np.asarray(state[5]).max())
    return Fit(spec, theta, train_risk, best_risk[rows, chosen], best_step, np.asarray(trace), steps_run, seed)


def _datasets(spec: MoESpec, x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    ys = as_float64("y", y, (1, 2))
    ys = ys[None] if ys.ndim == 1 else ys
    xs = as_float64("x", x, (2, 3, 4))
    if xs.ndim == 2 or (xs.ndim == 3 and ys.shape[0] > 1 and xs.shape[0] == ys.shape[0] and xs.shape[1] == ys.shape[1]
                        and spec.seq_len == 1 and xs.shape[2] == spec.d_model):
        xs = xs[..., None, :]  # points of one token each
    if xs.ndim == 3:
        xs = xs[None]
    if xs.shape[0] != ys.shape[0]:
        xs = np.broadcast_to(xs, (ys.shape[0],) + xs.shape[1:])
    if xs.shape[1:] != (ys.shape[1], spec.seq_len, spec.d_model):
        raise ValueError(f"x: expected inputs ({ys.shape[1]}, {spec.seq_len}, {spec.d_model}) per dataset for y of shape "
                         f"{ys.shape}, got {xs.shape}")
    return np.ascontiguousarray(xs), ys


# --- learning curves -------------------------------------------------------------------------


def neff_schedule(problem: RegressionProblem, base: MoESpec | None = None, constant: float = 1.0) -> Callable[[int], MoESpec]:
    """Section 4's schedule: n ↦ `base` with `expert_hidden` chosen so that the active parameter
    count N_eff is closest to `constant`·n^{d/(2β+d)} (definitions §4, §9). `base` defaults to
    mlp experts, 4 of them, top-1, d_model = the problem's ambient dimension, one token."""
    from . import theory

    if base is None:
        base = MoESpec(experts=4, top_k=1, d_model=problem.ambient, expert="mlp", expert_hidden=1)
    check_spec(base)
    theory.spec_with_active_params(base, 1)  # refuses a base it cannot size, before any n

    def spec_for(n: int) -> MoESpec:
        return theory.spec_with_active_params(base, float(theory.optimal_active_params(n, problem.beta, problem.d, constant)))

    return spec_for


@dataclass(frozen=True)
class LearningCurve:
    """Excess test risks E(T̂_n(x) − f*(x))² of `model_name` on `problem`: `risks` (len(ns),
    seeds); `exponent` α of risk ∝ n^{−α} (mean of the seeds' own slopes, `per_seed`) with its
    90 % t-interval over seeds; `theory_exponent` = 2β/(2β+d); `sizes` the active parameter count
    used at each n (for k-NN, its k). `details["fits"]` keeps, per n, the spec, the fitted θ of each
    seed (in `spec.layout`'s order: any moecover function takes them), their train and validation
    risks, the step of the best validation risk and the optimisation trace."""

    ns: list[int]
    risks: NDArray[np.float64]
    exponent: float
    interval: tuple[float, float]
    per_seed: list[float]
    theory_exponent: float
    model_name: str
    sizes: list[int]
    problem: dict[str, Any]
    seed: int
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (arrays as lists, NaN as None); `from_dict` inverts it."""
        from ._serial import to_plain

        return to_plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LearningCurve:
        from ._serial import from_plain

        return from_plain(cls, data)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        lo, hi = self.interval
        return (f"LearningCurve({self.model_name}: exponent {self.exponent:.3f} [{lo:.3f}, {hi:.3f}] over "
                f"{self.risks.shape[1]} seeds, theory {self.theory_exponent:.3f}; n = {self.ns[0]} … {self.ns[-1]})")

    def plot(self, path: str | None = None) -> Any:
        """log risk against log n: each seed, their geometric mean, and the theory slope (anchored
        at the first n's mean, as the plot says); a PNG at `path` if given; returns the figure."""
        import matplotlib
        import matplotlib.ticker

        if path is not None:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 4.2))
        ns = np.asarray(self.ns, dtype=float)
        for s in range(self.risks.shape[1]):
            axes.plot(ns, self.risks[:, s], "o", color="0.6", markersize=4, label="each seed" if s == 0 else None)
        mean = np.exp(np.log(self.risks).mean(1))
        lo, hi = self.interval
        axes.plot(ns, mean, "o-", color="C0", label=f"fitted: n^-{self.exponent:.2f} [{lo:.2f}, {hi:.2f}]")
        axes.plot(ns, mean[0] * (ns / ns[0]) ** -self.theory_exponent, "--", color="C3",
                  label=f"theory 2β/(2β+d) = {self.theory_exponent:.2f} (anchored at the first n)")
        axes.set(xscale="log", yscale="log", xlabel="training size n", ylabel="excess test risk")
        axes.set_xticks(ns, [str(n) for n in self.ns])  # the sizes measured, not log-scale minor labels
        axes.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        p = self.problem
        axes.set_title(f"{self.model_name} on a {p['kind']} target, d = {p['d']}, β = {p['beta']:g}, σ = {p['noise']:g}",
                       fontsize=10)
        axes.legend(fontsize=8)
        figure.tight_layout()
        if path is not None:
            figure.savefig(path, dpi=120)
            plt.close(figure)
        return figure


def learning_curve(
    model: MoESpec | Callable[[int], MoESpec] | str,
    problem: RegressionProblem,
    ns: Sequence[int],
    seeds: int = 3,
    rng: RngLike = None,
    test_size: int = 4000,
    starts: int = 4,
    steps: int = 2000,
    learning_rate: float = 0.01,
    progress: bool = False,
) -> LearningCurve:
    """The learning curve of `model` on `problem`: for each n in `ns` and each of `seeds` seeds, a
    fresh training set of n draws, the fit (`fit`, or k-NN), and its excess risk against the
    noiseless target on a fresh test set of `test_size` draws.

    model: an `MoESpec` (one size for every n), a function n ↦ MoESpec (`neff_schedule`), or
        "knn": k-nearest-neighbour regression with k = ⌈n^{2β/(2β+d)}⌉, which attains the minimax
        rate for β ≤ 1 and so calibrates the harness (definitions §9).
    """
    if not isinstance(problem, RegressionProblem):
        raise TypeError(f"problem: expected a moecover.targets.RegressionProblem, got {type(problem).__name__}")
    ns = [positive_int("ns", n, minimum=2) for n in ns]
    if len(ns) < 2 or sorted(set(ns)) != ns:
        raise ValueError(f"ns: expected at least two increasing training sizes, got {ns}")
    seeds = positive_int("seeds", seeds, minimum=2)
    test_size = positive_int("test_size", test_size)
    if isinstance(model, str):
        if model != "knn":
            raise ValueError(f"model: expected an MoESpec, a function n -> MoESpec, or 'knn', got {model!r}")
        spec_for = None
        name = "k-NN, k = n^(2β/(2β+d))"
    elif isinstance(model, MoESpec):
        spec_for, name = (lambda n: model), f"MoE {model}"
    elif callable(model):
        spec_for, name = model, "MoE on a schedule"
    else:
        raise TypeError(f"model: expected an MoESpec, a function n -> MoESpec, or 'knn', got {type(model).__name__}")
    if problem.noise == 0:
        raise ValueError("problem: the rate 2β/(2β+d) is that of noisy responses; give the problem noise > 0")
    seed = resolve_seed(rng)
    test = problem.sample(test_size, rng=np.random.default_rng([seed, 1]))
    risks = np.empty((len(ns), seeds))
    sizes = []
    fits: list[dict[str, Any]] = []  # per n (MoE only): the fitted θ and what the fit saw
    bar = Progress(len(ns) * seeds, "fits") if progress else None
    try:
        for row, n in enumerate(ns):
            draws = [problem.sample(n, rng=np.random.default_rng([seed, 2, n, s])) for s in range(seeds)]
            if spec_for is None:
                k = min(n, math.ceil(n ** problem.theory_exponent))
                sizes.append(k)
                for s, d in enumerate(draws):
                    prediction = knn_predictions(d.x, d.y, test.x, np.array([k]))[:, 0]
                    risks[row, s] = np.mean((prediction - test.f) ** 2)
                    if bar is not None:
                        bar.advance()
            else:
                from . import theory

                spec = spec_for(n)
                if spec.seq_len != 1 or spec.d_model != problem.ambient or spec.output_dim != 1:
                    raise ValueError(f"model: the spec for n = {n} must take one token of d_model = {problem.ambient} "
                                     f"(the problem's ambient dimension) to a scalar; got {spec}")
                sizes.append(int(theory.paper_slope(spec)))
                fitted = fit(spec, np.stack([d.x for d in draws]), np.stack([d.y for d in draws]), starts=starts,
                             steps=steps, learning_rate=learning_rate, rng=np.random.default_rng([seed, 3, n]))
                for s in range(seeds):
                    risks[row, s] = np.mean((fitted.predict(test.x, s)[:, 0] - test.f) ** 2)
                fits.append({"n": n, "spec": {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec) if f.init},
                             "theta": fitted.theta, "train_risk": fitted.train_risk,
                             "validation_risk": fitted.validation_risk, "best_step": fitted.best_step,
                             "steps_run": fitted.steps, "trace": fitted.trace})
                if bar is not None:
                    bar.advance(seeds)
    finally:
        if bar is not None:
            bar.close()
    from ._serial import to_plain

    mean, interval, per_seed = learning_exponent(ns, risks)
    details = {"test_size": test_size, "starts": starts, "steps": steps, "fits": to_plain(fits)}
    return LearningCurve(ns, risks, mean, interval, per_seed, problem.theory_exponent, name, sizes,
                         problem.to_dict(), seed, details)


def learning_exponent(ns: Sequence[int], risks: NDArray[np.float64]) -> tuple[float, tuple[float, float], list[float]]:
    """α of risk ∝ n^{−α} from risks (len(ns), seeds): each seed's least-squares slope of log risk
    in log n, their mean, and its 90 % t-interval over seeds."""
    from scipy import stats

    seeds = risks.shape[1]
    log_n = np.log(ns)
    per_seed = [float(-np.polyfit(log_n, np.log(risks[:, s]), 1)[0]) for s in range(seeds)]
    mean = float(np.mean(per_seed))
    half = float(stats.t.ppf(0.95, seeds - 1) * np.std(per_seed, ddof=1) / math.sqrt(seeds))
    return mean, (mean - half, mean + half), per_seed

