"""Grid configs: a TOML file → validated, fully defaulted grid points with stable keys.

    [spec]        MoESpec fields
    [inputs]      sampler = "box" | "sphere" | "torus" | "swiss_roll" | "grid" | "one_per_expert",
                  n, seed, and the sampler's own arguments (dim, ...)
    [pinned]      block name = nested list, or router = "one_expert_per_input"
    [estimate]    samples, replicates, deltas, seed, by_routing, saturation_threshold, sampler
                  (the parameter sampler: "faces", the default, "uniform", "arcsine", "mixture"),
                  explore (evaluations per replicate for `moecover.explore`, 0: none),
                  functional_samples (parameter samples for r*)
    [erm]         instead of [inputs]/[pinned]/[estimate]: a learning-curve grid (see ERM_DEFAULTS)
    [dimension]   instead of all of those: d and β estimated from points of known truth (see
                  DIMENSION_DEFAULTS)
    [run]         executor = "local" | "dask", scheduler, jobs, threads (how to run, never part of
                  a point's key: the same grid run anywhere gives the same rows)

A list in a scalar field sweeps it (cartesian product over all swept fields); `deltas`, itself a
list, is swept by a list of lists; pinned arrays never sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .. import inputs as input_samplers
from .._checks import DEFAULT_SAMPLER, check_inputs, check_sampler, memory_limit_bytes, resolve_pinned
from .._spec import MoESpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SPEC_FIELDS = {f.name: f.default for f in fields(MoESpec) if f.init}
INPUT_DEFAULTS: dict[str, Any] = {"sampler": "box", "n": 16, "seed": 0}
SAMPLER_ARGS = {
    "box": {"dim"},
    "sphere": {"dim"},
    "torus": set(),
    "swiss_roll": set(),
    "grid": {"low", "high"},
    "one_per_expert": set(),
}
ESTIMATE_DEFAULTS: dict[str, Any] = {
    "samples": 20_000,
    "replicates": 3,
    "deltas": None,
    "seed": 0,
    "by_routing": True,
    "saturation_threshold": 0.05,
    "sampler": DEFAULT_SAMPLER,
    "explore": 0,
    "functional_samples": 200,
}
#: A learning-curve grid ([erm]): the regression problem (`moecover.targets.RegressionProblem`'s
#: fields, its seed as `target_seed`), the model ("neff_schedule": Section 4's N_eff* ∝
#: n^{d/(2β+d)}; "knn": the calibration model; "spec": the [spec] section as it is, which may
#: sweep; "fixed_neff": the [spec] section with expert_hidden chosen so that N_eff is nearest
#: `neff`, so that a sweep over experts and top_k holds the active parameters fixed), and the
#: fitting settings of `erm.learning_curve`.
ERM_DEFAULTS: dict[str, Any] = {
    "manifold": "sphere",
    "d": 1,
    "ambient": 2,
    "beta": 0.8,
    "kind": "weierstrass",
    "noise": 0.5,
    "target_seed": 0,
    "model": "neff_schedule",
    "neff": None,
    "ns": [100, 200, 400, 800, 1600, 3200],
    "seeds": 3,
    "steps": 1500,
    "starts": 4,
    "learning_rate": 0.01,
    "test_size": 4000,
    "seed": 0,
}
ERM_MODELS = ("neff_schedule", "knn", "spec", "fixed_neff")
#: A grid of d and β estimates ([dimension]): n draws of a regression problem of known d and β
#: (`moecover.targets.RegressionProblem`'s fields, its seed as `target_seed`), from which
#: `moecover.manifold` estimates the intrinsic dimension (MLE, TwoNN, correlation integral, with
#: `subsamples` half-samples for the intervals) and the smoothness (increments, `bootstrap`
#: resamples); `seed` draws the points and the estimators' subsets.
DIMENSION_DEFAULTS: dict[str, Any] = {
    "manifold": "sphere",
    "d": 2,
    "ambient": 3,
    "beta": 0.5,
    "kind": "weierstrass",
    "noise": 0.0,
    "target_seed": 0,
    "n": 4000,
    "subsamples": 3,
    "bootstrap": 200,
    "seed": 0,
}
#: The models that read the [spec] section.
SPEC_MODELS = {"spec", "fixed_neff"}
LIST_VALUED = {("estimate", "deltas"), ("erm", "ns")}
SECTIONS = ("spec", "inputs", "pinned", "estimate")
#: `[[grid]]`: several families of points in one config; their points carry `family.name`.
GRID_SECTION = "grid"
FAMILY_SECTION = "family"
ERM_SECTION = "erm"
DIMENSION_SECTION = "dimension"
#: The section that says how to run a grid, not what it is.
RUN_SECTION = "run"


class ConfigError(ValueError):
    """A config problem, reported with the key (and line, where the TOML parser gives one)."""


GridPoint = dict[str, dict[str, Any]]


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: {error}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from error
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from error


def _check_settings(section: str, table: Mapping[str, Any], known: Mapping[str, Any]) -> None:
    """ConfigError naming the first key of `table` that is not a setting of `section`."""
    for key in table:
        if key not in known:
            raise ConfigError(f"{section}.{key}: unknown setting; expected one of {sorted(known)}")


def _axes(section: str, table: Mapping[str, Any]) -> list[tuple[str, str, list[Any]]]:
    """(section, key, values) per setting: a list sweeps a scalar field; a list of lists sweeps a
    list-valued one (deltas); pinned arrays never sweep."""
    axes = []
    for key, value in table.items():
        sweeps = (
            isinstance(value, list)
            and bool(value)
            and section != "pinned"
            and ((section, key) not in LIST_VALUED or isinstance(value[0], list))
        )
        axes.append((section, key, value if sweeps else [value]))
    return axes


def expand_config(config: Mapping[str, Any]) -> list[GridPoint]:
    """Every grid point of `config`, fully defaulted and validated; ConfigError names the key.

    `[[grid]]` entries (an array of tables, each with its own spec/inputs/pinned/estimate tables
    and a `name`) make several families in one config: each entry's tables are laid over the
    top-level ones, and its points carry `family.name` (a report names rows by it)."""
    if ERM_SECTION in config:
        return _expand_erm(config)
    if DIMENSION_SECTION in config:
        return _expand_dimension(config)
    if GRID_SECTION in config:
        return _expand_families(config)
    unknown = set(config) - set(SECTIONS) - {RUN_SECTION}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected {[*SECTIONS, RUN_SECTION]}")
    for section in SECTIONS:
        if section in config and not isinstance(config[section], Mapping):
            raise ConfigError(f"{section}: expected a table")
    spec_table = dict(config.get("spec", {}))
    for key in spec_table:
        if key not in SPEC_FIELDS:
            raise ConfigError(f"spec.{key}: unknown MoESpec field; expected one of {sorted(SPEC_FIELDS)}")
    input_table = {**INPUT_DEFAULTS, **config.get("inputs", {})}
    estimate_table = {**ESTIMATE_DEFAULTS, **config.get("estimate", {})}
    _check_settings("estimate", config.get("estimate", {}), ESTIMATE_DEFAULTS)
    axes = (
        _axes("spec", {**SPEC_FIELDS, **spec_table})
        + _axes("inputs", input_table)
        + _axes("pinned", dict(config.get("pinned", {})))
        + _axes("estimate", estimate_table)
    )
    points = []
    for combination in itertools.product(*(values for _, _, values in axes)):
        point: GridPoint = {section: {} for section in SECTIONS}
        for (section, key, _), value in zip(axes, combination):
            point[section][key] = value
        _validate(point)
        points.append(point)
    # A value repeated in a sweep (experts = [2, 2]) names one point, run and stored once.
    return list({key_of(point): point for point in points}.values())


def _expand_families(config: Mapping[str, Any]) -> list[GridPoint]:
    families = config[GRID_SECTION]
    if not isinstance(families, list) or not families or not all(isinstance(f, Mapping) for f in families):
        raise ConfigError(f"{GRID_SECTION}: expected one or more [[{GRID_SECTION}]] tables")
    shared = {key: value for key, value in config.items() if key != GRID_SECTION}
    points: dict[str, GridPoint] = {}
    names: set[str] = set()
    for number, family in enumerate(families):
        name = family.get("name", f"grid {number + 1}")
        if not isinstance(name, str) or not name or name in names:
            raise ConfigError(f"{GRID_SECTION}.name: expected a distinct non-empty string per family, got {name!r}")
        names.add(name)
        unknown = set(family) - set(SECTIONS) - {"name"}
        if unknown:
            raise ConfigError(f"{GRID_SECTION} {name!r}: unknown table(s) {sorted(unknown)}; expected name and {list(SECTIONS)}")
        merged = dict(shared)
        for section in SECTIONS:
            if section in family:
                if not isinstance(family[section], Mapping):
                    raise ConfigError(f"{GRID_SECTION} {name!r}: {section}: expected a table")
                merged[section] = {**shared.get(section, {}), **family[section]}
        for point in expand_config(merged):
            point[FAMILY_SECTION] = {"name": name}
            points[key_of(point)] = point
    return list(points.values())


def _validate(point: GridPoint) -> None:
    try:
        spec = MoESpec(**point["spec"])
    except (ValueError, TypeError) as error:
        raise ConfigError(f"spec: {error}") from error
    sampler = point["inputs"]["sampler"]
    if sampler not in SAMPLER_ARGS:
        raise ConfigError(f"inputs.sampler: unknown sampler {sampler!r}; expected one of {sorted(SAMPLER_ARGS)}")
    extra = set(point["inputs"]) - {"sampler", "n", "seed"} - SAMPLER_ARGS[sampler]
    if extra:
        raise ConfigError(f"inputs.{sorted(extra)[0]}: not an argument of the {sampler!r} sampler")
    for key in ("samples", "replicates", "functional_samples"):
        value = point["estimate"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"estimate.{key}: expected a positive integer, got {value!r}")
    # every setting the estimate takes, checked here so that --dry-run finds what a run would
    settings = point["estimate"]
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ConfigError(f"estimate.seed: expected an integer in [0, 2**64), got {seed!r}")
    if settings["deltas"] is not None:
        from .._checks import as_scales

        try:
            as_scales("deltas", settings["deltas"])
        except (ValueError, TypeError) as error:
            raise ConfigError(f"estimate.{error}") from error
    threshold = settings["saturation_threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < 1:
        raise ConfigError(f"estimate.saturation_threshold: expected a number in (0, 1), got {threshold!r}")
    if not isinstance(settings["by_routing"], bool):
        raise ConfigError(f"estimate.by_routing: expected true or false, got {settings['by_routing']!r}")
    try:
        check_sampler(settings["sampler"])
    except ValueError as error:
        raise ConfigError(f"estimate.{error}") from error
    explore = settings["explore"]
    if isinstance(explore, bool) or not isinstance(explore, int) or not 0 <= explore <= 2**48:
        raise ConfigError(f"estimate.explore: expected an integer in [0, 2**48] (evaluations), got {explore!r}")
    try:
        x = make_inputs(point, spec)
        pinned = make_pinned(point, spec)
        check_inputs(spec, x)
        resolve_pinned(spec, pinned)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"inputs/pinned: {error}") from error
    need = memory_need(point, spec, x.shape[0])
    if need > memory_limit_bytes():
        raise ConfigError(
            f"estimate.samples: grid point {key_of(point)} could need {need / 2**30:.3g} GiB in the worst case "
            f"(every sample a centre), more than the {memory_limit_bytes() / 2**30:.3g} GiB a call may use here"
        )


def memory_need(point: GridPoint, spec: MoESpec, n: int) -> int:
    """A floor of what one estimate could need: every sample's coordinates held once by the finest
    net (the global one and, with by_routing, its group's), plus one chunk of values and routes.
    The nets' grid index adds more (up to ~2.5 kB per centre when δ is small); the nets count
    that as they grow and stop with TooLargeError before the machine runs out."""
    samples = point["estimate"]["samples"]
    dim = n * spec.output_dim
    nets = 2 if point["estimate"]["by_routing"] else 1
    from ..estimate import CHUNK

    chunk = CHUNK * n * (8 * spec.output_dim + 4 * spec.layers * spec.seq_len)
    return nets * samples * dim * 8 + chunk


def make_inputs(point: GridPoint, spec: MoESpec) -> np.ndarray:
    args = dict(point["inputs"])
    sampler, n, seed = args.pop("sampler"), args.pop("n"), args.pop("seed")
    if sampler == "one_per_expert":
        return np.asarray(input_samplers.one_per_expert(spec))
    if sampler == "grid":
        return np.asarray(input_samplers.grid(n, spec.seq_len, spec.d_model, **args))
    function = getattr(input_samplers, sampler)
    return np.asarray(function(n, seq_len=spec.seq_len, d_model=spec.d_model, rng=seed, **args))


def make_pinned(point: GridPoint, spec: MoESpec) -> dict[str, np.ndarray]:
    pinned: dict[str, np.ndarray] = {}
    for name, value in point["pinned"].items():
        if name == "router" and value == "one_expert_per_input":
            pinned.update(input_samplers.one_per_expert_router(spec))
        else:
            pinned[name] = np.asarray(value, dtype=float)
    return pinned


def key_of(point: GridPoint) -> str:
    """A stable 16-hex-digit key: SHA-256 of the canonical JSON of the fully defaulted settings."""
    canonical = json.dumps(point, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]




def is_learning_curve(point: GridPoint) -> bool:
    """Whether a grid point is a learning curve ([erm]) rather than an entropy estimate."""
    return ERM_SECTION in point


def point_kind(point: GridPoint) -> str:
    """What a grid point computes: "estimate" (entropy), "learning_curve" ([erm]) or "dimension"."""
    if ERM_SECTION in point:
        return "learning_curve"
    return "dimension" if DIMENSION_SECTION in point else "estimate"


def _expand_erm(config: Mapping[str, Any]) -> list[GridPoint]:
    unknown = set(config) - {ERM_SECTION, "spec", RUN_SECTION}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)} beside [erm]; a learning-curve grid takes "
                          f"[erm], [spec] (with model = 'spec') and [run]")
    table = config[ERM_SECTION]
    if not isinstance(table, Mapping):
        raise ConfigError("erm: expected a table")
    _check_settings(ERM_SECTION, table, ERM_DEFAULTS)
    spec_table = dict(config.get("spec", {}))
    for key in spec_table:
        if key not in SPEC_FIELDS:
            raise ConfigError(f"spec.{key}: unknown MoESpec field; expected one of {sorted(SPEC_FIELDS)}")
    axes = _axes(ERM_SECTION, {**ERM_DEFAULTS, **table})
    models = {value for section, key, values in axes if key == "model" for value in values}
    if "spec" in config and not models <= SPEC_MODELS:
        raise ConfigError("spec: a [spec] section beside [erm] needs model = 'spec' or 'fixed_neff'")
    if models & SPEC_MODELS:
        axes += _axes("spec", {**SPEC_FIELDS, **spec_table})
    points = []
    for combination in itertools.product(*(values for _, _, values in axes)):
        point: GridPoint = {ERM_SECTION: {}}
        for (section, key, _), value in zip(axes, combination):
            point.setdefault(section, {})[key] = value
        if point[ERM_SECTION]["model"] not in SPEC_MODELS:
            point.pop("spec", None)
        if point[ERM_SECTION]["model"] != "fixed_neff":
            point[ERM_SECTION].pop("neff", None)  # unused: not part of the key
        _validate_erm(point)
        points.append(point)
    return list({key_of(point): point for point in points}.values())


def _expand_dimension(config: Mapping[str, Any]) -> list[GridPoint]:
    unknown = set(config) - {DIMENSION_SECTION, RUN_SECTION}
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)} beside [dimension]; a d/β grid takes [dimension] and [run]")
    table = config[DIMENSION_SECTION]
    if not isinstance(table, Mapping):
        raise ConfigError("dimension: expected a table")
    _check_settings(DIMENSION_SECTION, table, DIMENSION_DEFAULTS)
    axes = _axes(DIMENSION_SECTION, {**DIMENSION_DEFAULTS, **table})
    points = []
    for combination in itertools.product(*(values for _, _, values in axes)):
        point: GridPoint = {DIMENSION_SECTION: {key: value for (_, key, _), value in zip(axes, combination)}}
        _validate_dimension(point)
        points.append(point)
    return list({key_of(point): point for point in points}.values())


def make_dimension_problem(point: GridPoint) -> Any:
    """The `moecover.targets.RegressionProblem` whose draws a [dimension] point estimates from."""
    return _regression_problem(point[DIMENSION_SECTION])


def _regression_problem(settings: Mapping[str, Any]) -> Any:
    """The problem a section's problem fields describe (its seed as `target_seed`)."""
    from ..targets import RegressionProblem

    return RegressionProblem(
        manifold=settings["manifold"], d=settings["d"], ambient=settings["ambient"], beta=settings["beta"],
        kind=settings["kind"], noise=settings["noise"], seed=settings["target_seed"],
    )


def _problem_error(section: str, error: Exception) -> ConfigError:
    """RegressionProblem's "field: message" as a ConfigError naming the section's key."""
    field = str(error).split(":")[0]
    name = "target_seed" if field == "seed" else field
    return ConfigError(f"{section}.{name}: {str(error).partition(':')[2].strip()}")


def _validate_dimension(point: GridPoint) -> None:
    settings = point[DIMENSION_SECTION]
    try:
        make_dimension_problem(point)
    except (ValueError, TypeError) as error:
        raise _problem_error(DIMENSION_SECTION, error) from error
    least = {"n": 100, "subsamples": 0, "bootstrap": 0, "seed": 0}
    for key, low in least.items():
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"dimension.{key}: expected an integer >= {low}, got {value!r}")


def erm_spec(point: GridPoint) -> MoESpec:
    """The spec of a learning-curve point whose model reads [spec]: as written ("spec"), or with
    expert_hidden set so that N_eff is nearest erm.neff ("fixed_neff", mlp experts)."""
    spec = MoESpec(**point["spec"])
    if point[ERM_SECTION]["model"] != "fixed_neff":
        return spec
    from .. import theory

    if spec.expert != "mlp":
        raise ValueError(f"model = 'fixed_neff' sizes expert_hidden, which needs mlp experts; got expert = {spec.expert!r}")
    return theory.spec_with_active_params(spec, point[ERM_SECTION]["neff"])


def make_problem(point: GridPoint) -> Any:
    """The `moecover.targets.RegressionProblem` of a learning-curve point."""
    return _regression_problem(point[ERM_SECTION])


def _validate_erm(point: GridPoint) -> None:
    settings = point[ERM_SECTION]
    try:
        problem = make_problem(point)
    except (ValueError, TypeError) as error:
        raise _problem_error(ERM_SECTION, error) from error
    if problem.noise == 0:
        raise ConfigError("erm.noise: learning curves need noisy responses (the rate 2β/(2β+d) is theirs); give noise > 0")
    if settings["model"] not in ERM_MODELS:
        raise ConfigError(f"erm.model: expected one of {list(ERM_MODELS)}, got {settings['model']!r}")
    ns = settings["ns"]
    if (not isinstance(ns, list) or len(ns) < 2 or any(isinstance(n, bool) or not isinstance(n, int) or n < 2 for n in ns)
            or sorted(set(ns)) != ns):
        raise ConfigError(f"erm.ns: expected at least two increasing training sizes >= 2, got {ns!r}")
    for key in ("seeds", "steps", "starts", "test_size"):
        value = settings[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (2 if key == "seeds" else 1):
            raise ConfigError(f"erm.{key}: expected an integer >= {2 if key == 'seeds' else 1}, got {value!r}")
    rate = settings["learning_rate"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0:
        raise ConfigError(f"erm.learning_rate: expected a positive number, got {rate!r}")
    seed = settings["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"erm.seed: expected an integer >= 0, got {seed!r}")
    if settings["model"] == "fixed_neff":
        neff = settings.get("neff")
        if isinstance(neff, bool) or not isinstance(neff, int) or neff < 1:
            raise ConfigError(f"erm.neff: model = 'fixed_neff' needs the active parameter count, a positive integer; got {neff!r}")
    if settings["model"] in SPEC_MODELS:
        try:
            spec = erm_spec(point)
        except (ValueError, TypeError) as error:
            raise ConfigError(f"spec: {error}") from error
        if spec.seq_len != 1 or spec.d_model != problem.ambient or spec.output_dim != 1:
            raise ConfigError(f"spec: a learning curve's spec takes one token of d_model = erm.ambient = {problem.ambient} "
                              f"to a scalar; got {spec}")


# --- how to run ------------------------------------------------------------------------------

EXECUTORS = ("local", "dask")


@dataclass(frozen=True)
class RunSettings:
    """How a grid runs (the `[run]` section, overridden by the command line's flags).

    executor: "local" (this machine: one process, or `jobs` spawned ones) or "dask" (a Dask
        cluster: the one at `scheduler`, else a LocalCluster of `jobs` worker processes, one per
        core by default).
    threads: the threads each estimate uses; by default the local executor shares this machine's
        threads out among its jobs, and a Dask task uses one (a Dask worker's threads are its
        parallelism: each runs one task).
    """

    executor: str = "local"
    scheduler: str | None = None
    jobs: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ConfigError(f"run.executor (--executor): unknown executor {self.executor!r}; expected one of {list(EXECUTORS)}")
        if self.scheduler is not None:
            if not isinstance(self.scheduler, str) or not self.scheduler.strip():
                raise ConfigError(f"run.scheduler (--scheduler): expected a scheduler address such as 'tcp://host:8786', got {self.scheduler!r}")
            if self.executor != "dask":
                raise ConfigError("run.scheduler (--scheduler): a scheduler address needs executor = 'dask'")
        for name in ("jobs", "threads"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4096):
                raise ConfigError(f"run.{name} (--{name}): expected an integer from 1 to 4096, got {value!r}")
        if self.jobs is not None and self.scheduler is not None:
            raise ConfigError("run.jobs (--jobs): the cluster at run.scheduler has its own workers; jobs sizes a local one")


def run_settings(config: Mapping[str, Any], **overrides: Any) -> RunSettings:
    """The `[run]` section of `config`, with `overrides` (the command line's flags; None = unset)
    taking precedence; ConfigError names the key."""
    table = config.get(RUN_SECTION, {})
    if not isinstance(table, Mapping):
        raise ConfigError(f"{RUN_SECTION}: expected a table")
    known = {f.name for f in fields(RunSettings)}
    for key in table:
        if key not in known:
            raise ConfigError(f"run.{key}: unknown setting; expected one of {sorted(known)}")
    merged = {**table, **{k: v for k, v in overrides.items() if v is not None}}
    if "scheduler" in merged and "executor" not in merged:
        merged["executor"] = "dask"  # an address alone says where to run
    return RunSettings(**merged)
