"""A catalogue of bad and unusual inputs for every public callable, judged against the contract.

Every case replaces one argument of a valid call by one kind of input. The contract: junk is
refused with a ValueError or TypeError (TooLargeError is a ValueError) whose message starts with the
name of the argument the user passed; an unusual but valid input (a numpy integer, a big-endian or
strided array, a list) is accepted and gives the same answer as its plain float64/int copy; never a
crash, a panic, a hang, or another exception.

Cases run in a child process that is restarted when one crashes or stops answering for 20 s.

    python tests/catalogue.py            every case; a table of outcomes, then each case off contract
    python tests/catalogue.py --list     the cases

`tests/test_catalogue.py` runs the cases known to keep the contract in pytest.
"""

from __future__ import annotations

import json
import math
import os
import select
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Callable

import numpy as np

TIMEOUT = 20.0

# --- the kinds of input, per role of an argument -----------------------------------------------

COUNT_JUNK: dict[str, Any] = {
    "zero": 0, "negative": -1, "2**63": 2**63, "2**64": 2**64, "10**400": 10**400, "float": 1.5, "bool": True, "str": "3",
    "None": None, "nan": math.nan, "list": [3],
}
COUNT_VALID: dict[str, Callable[[int], Any]] = {"np.int64": np.int64, "np.uint16": np.uint16}
THREADS_JUNK: dict[str, Any] = {"zero": 0, "negative": -1, "2**31": 2**31, "2**63-1": 2**63 - 1, "30000": 30_000,
                                "float": 1.5, "bool": True, "str": "2"}
SEED_JUNK: dict[str, Any] = {"negative": -1, "2**64": 2**64, "float": 1.5, "str": "1", "bool": True, "list": [1]}


def array_junk(valid: np.ndarray) -> dict[str, Any]:
    nan, inf = valid.copy(), valid.copy()
    nan.flat[0], inf.flat[-1] = np.nan, np.inf
    return {
        "nan": nan, "inf": inf, "1e308-overflowing": None, "ndim+1": valid[None], "ndim-1": valid.reshape(-1)[:1].reshape(()),
        "empty": valid[:0], "str-array": valid.astype(str), "bool-array": valid > 0, "complex": valid.astype(complex),
        "object": valid.astype(object), "None": None, "str": "x", "ragged": [[1.0, 2.0], [3.0]],
        "timedelta": valid.astype(np.int64).astype("timedelta64[s]"),
    }


def array_valid(valid: np.ndarray) -> dict[str, Any]:
    strided = np.repeat(valid, 2, axis=-1)[..., ::2]
    return {
        "big-endian": valid.astype(">f8"), "strided": strided, "fortran": np.asfortranarray(valid),
        "list": valid.tolist(), "float32-exact": valid.astype(np.float32).astype(np.float64).astype(np.float32),
        "subnormal": valid * 2.0**-1060, "zero-stride": np.broadcast_to(valid[:1], valid.shape),
        "read-only": _read_only(valid), "negative-stride": valid[::-1],
    }


def _read_only(valid: np.ndarray) -> np.ndarray:
    frozen = valid.copy()
    frozen.flags.writeable = False
    return frozen


SCALES_JUNK: dict[str, Any] = {"empty": [], "zero": [0.0], "negative": [-1.0], "nan": [math.nan], "inf": [math.inf],
                               "str": "0.5", "nested": [[0.5]], "bool": True, "complex": [0.5 + 1j], "None": None}
SCALES_VALID: dict[str, Callable[[list[float]], Any]] = {"tuple": tuple, "float32": lambda v: np.asarray(v, np.float32),
                                                          "np.float64": lambda v: np.asarray(v)}
SPEC_JUNK: dict[str, Any] = {"int": 5, "None": None, "str": "spec", "dict": {}}
REAL_JUNK: dict[str, Any] = {"zero": 0.0, "negative": -1.0, "nan": math.nan, "inf": math.inf, "str": "0.5", "bool": True,
                             "complex": 0.5 + 1j, "None": None, "list": [0.5]}
REAL_VALID: dict[str, Callable[[float], Any]] = {"np.float32": lambda v: np.float32(v), "np.float64": np.float64}
ROUTES_JUNK: dict[str, Any] = {"float": None, "negative": None, "too-large": None, "ndim-1": None, "str": "0",
                               "None": None}
FLAG_JUNK: dict[str, Any] = {"str": "no", "int": 2, "None": None, "list": [True]}
SAMPLER_JUNK: dict[str, Any] = {"unknown": "gauss", "None": None, "int": 3, "upper": "FACES", "empty": "",
                                "list": ["faces"]}


# --- the calls -----------------------------------------------------------------------------------


def calls() -> dict[str, tuple[Callable[..., Any], dict[str, Any], dict[str, str]]]:
    """name → (function, valid keyword arguments, role of each argument)."""
    import moecover
    from moecover import inputs, routing, theory

    spec = moecover.MoESpec(experts=3, top_k=1, d_model=2, expert_hidden=2)
    x = np.asarray(inputs.box(6, d_model=2, rng=0))
    theta = moecover.sample_params(spec, 3, rng=1)
    points = np.random.default_rng(0).uniform(-1, 1, (40, 3))
    routes = np.random.default_rng(1).integers(0, 3, (40, 2, 1, 1)).astype(np.uint32)
    pattern_routes = moecover.evaluate(spec, theta, x).routes
    return {
        "evaluate": (moecover.evaluate, {"spec": spec, "params": theta, "inputs": x, "n_threads": 1},
                     {"spec": "spec", "params": "points", "inputs": "array", "n_threads": "threads"}),
        "evaluate_sampled": (moecover.evaluate_sampled, {"spec": spec, "inputs": x, "m": 5, "rng": 3, "n_threads": 1,
                                                         "sampler": "faces"},
                             {"spec": "spec", "inputs": "array", "m": "count", "rng": "seed", "n_threads": "threads",
                              "sampler": "sampler"}),
        "sample_params": (moecover.sample_params, {"spec": spec, "m": 4, "rng": 2, "n_threads": 1, "sampler": "faces"},
                          {"spec": "spec", "m": "count", "rng": "seed", "n_threads": "threads", "sampler": "sampler"}),
        "explore": (moecover.explore, {"spec": spec, "inputs": x, "delta": 1.0, "budget": 3000, "rng": 1, "n_threads": 1,
                                       "batch": 500, "sampler": "faces"},
                    {"spec": "spec", "inputs": "array", "budget": "count", "batch": "count", "rng": "seed",
                     "n_threads": "threads", "sampler": "sampler"}),
        "added_centres": (moecover.added_centres, {"first": points[:20], "second": points[20:], "deltas": [1.0, 0.5],
                                                   "n_threads": 1},
                          {"first": "points", "second": "points", "deltas": "scales", "n_threads": "threads"}),
        "image_coverage": (moecover.image_coverage, {"centres": points[:1], "points": points, "delta": 0.5, "n_threads": 1},
                           {"centres": "points", "points": "array", "n_threads": "threads"}),
        "known_image_class": (moecover.known_image_class, {"experts": 3, "d_model": 2},
                              {"experts": "count", "d_model": "count"}),
        "greedy_net": (moecover.greedy_net, {"points": points, "delta": 0.5, "n_threads": 1},
                       {"points": "points", "n_threads": "threads"}),
        "cover": (moecover.cover, {"points": points, "deltas": [1.0, 0.5], "n_threads": 1},
                  {"points": "points", "deltas": "scales", "n_threads": "threads"}),
        "box_count": (moecover.box_count, {"points": points, "deltas": [1.0, 0.5], "n_threads": 1},
                      {"points": "points", "deltas": "scales", "n_threads": "threads"}),
        "jacobian": (moecover.jacobian, {"spec": spec, "params": theta, "inputs": x, "n_threads": 1},
                     {"spec": "spec", "params": "points", "inputs": "array", "n_threads": "threads"}),
        "functional_dimension": (moecover.functional_dimension, {"spec": spec, "inputs": x, "samples": 8, "rng": 1,
                                                                 "n_threads": 1, "sampler": "uniform"},
                                 {"spec": "spec", "inputs": "array", "samples": "count", "rng": "seed",
                                  "n_threads": "threads", "sampler": "sampler"}),
        "estimate_entropy": (moecover.estimate_entropy, {"spec": spec, "inputs": x, "samples": 200, "replicates": 1,
                                                         "deltas": [1.0, 0.5], "rng": 1, "n_threads": 1,
                                                         "sampler": "faces"},
                             {"spec": "spec", "inputs": "array", "samples": "count", "replicates": "count",
                              "deltas": "scales-or-none", "rng": "seed", "n_threads": "threads", "sampler": "sampler"}),
        "inputs.box": (inputs.box, {"n": 5, "seq_len": 1, "d_model": 2, "rng": 1},
                       {"n": "count", "seq_len": "count", "d_model": "count", "rng": "seed"}),
        "inputs.sphere": (inputs.sphere, {"n": 5, "seq_len": 1, "d_model": 3, "rng": 1},
                          {"n": "count", "seq_len": "count", "d_model": "count", "rng": "seed"}),
        "routing.unrank": (routing.unrank, {"rank": 5, "top_k": 2}, {"top_k": "count"}),
        "routing.exact_patterns": (routing.exact_patterns, {"spec": spec, "inputs": x, "n_threads": 1},
                                   {"spec": "spec", "inputs": "array", "n_threads": "threads"}),
        "theory.paper_log_covering": (theory.paper_log_covering, {"spec": spec, "delta": [0.5, 0.25]},
                                      {"spec": "spec", "delta": "broadcast"}),
        "theory.parametric_log_covering": (theory.parametric_log_covering, {"spec": spec, "delta": [0.5], "lipschitz": 2.0},
                                           {"spec": "spec", "delta": "broadcast"}),
        "MoESpec": (moecover.MoESpec, {"experts": 3, "top_k": 1, "d_model": 2, "seq_len": 2, "heads": 1,
                                       "expert_hidden": 2, "param_bound": 1.5},
                    {"experts": "count", "top_k": "count", "d_model": "count", "seq_len": "count", "heads": "count-or-zero",
                     "expert_hidden": "count", "param_bound": "real"}),
        "CoverStream": (_cover_stream, {"deltas": [1.0, 0.5], "dim": 3, "n_threads": 1},
                        {"deltas": "scales", "dim": "count", "n_threads": "threads"}),
        "GroupedCoverStream": (_grouped_stream, {"deltas": [1.0, 0.5], "dim": 3, "pattern_shape": (2, 1, 1),
                                                             "n_threads": 1},
                               {"deltas": "scales-or-none", "dim": "count", "n_threads": "threads"}),
        "GroupedCoverStream.add": (_grouped_add, {"values": points, "routes": routes},
                                   {"values": "array", "routes": "patterns"}),
        "estimate_entropy(explore)": (moecover.estimate_entropy, {"spec": spec, "inputs": x, "samples": 200, "replicates": 1,
                                                                  "deltas": [1.0, 0.5], "rng": 1, "n_threads": 1,
                                                                  "explore": 300, "functional_samples": 5,
                                                                  "by_routing": True, "saturation_threshold": 0.05},
                                      {"explore": "count-or-zero", "functional_samples": "count", "by_routing": "flag",
                                       "saturation_threshold": "real"}),
        "routing.subsets": (routing.subsets, {"experts": 4, "top_k": 2}, {"experts": "count", "top_k": "count"}),
        "routing.arrangement_bound": (routing.arrangement_bound, {"experts": 3, "d_model": 2, "tokens": 5},
                                      {"experts": "count", "d_model": "count", "tokens": "count"}),
        "routing.count_patterns": (routing.count_patterns, {"routes": pattern_routes, "spec": spec, "n_threads": 1},
                                   {"routes": "routes", "spec": "spec-or-none", "n_threads": "threads"}),
        "inputs.torus": (inputs.torus, {"n": 5, "seq_len": 1, "d_model": 4, "rng": 1},
                         {"n": "count", "seq_len": "count", "d_model": "count", "rng": "seed"}),
        "inputs.swiss_roll": (inputs.swiss_roll, {"n": 5, "seq_len": 1, "d_model": 3, "rng": 1},
                              {"n": "count", "seq_len": "count", "d_model": "count", "rng": "seed"}),
        "inputs.grid": (inputs.grid, {"n": 5, "seq_len": 1, "d_model": 1, "low": -1.0, "high": 1.0},
                        {"n": "count", "seq_len": "count", "d_model": "count"}),
        "inputs.one_per_expert": (inputs.one_per_expert, {"spec": spec}, {"spec": "spec"}),
        "inputs.one_per_expert_router": (inputs.one_per_expert_router, {"spec": spec}, {"spec": "spec"}),
        "theory.used_params": (theory.used_params, {"spec": spec, "routes_of_one_pattern": pattern_routes[0]},
                               {"spec": "spec", "routes_of_one_pattern": "routes"}),
        "theory.estimate_lipschitz": (theory.estimate_lipschitz, {"spec": spec, "inputs": x, "samples": 20, "rng": 1,
                                                                  "radius": 0.01, "n_threads": 1},
                                      {"spec": "spec", "inputs": "array", "samples": "count", "rng": "seed",
                                       "radius": "real", "n_threads": "threads"}),
        "theory.data_dependent_log_covering": (theory.data_dependent_log_covering,
                                               {"n_patterns": 3, "used": 4, "delta": [0.5], "lipschitz": 2.0,
                                                "param_bound": 1.0},
                                               {"n_patterns": "count", "delta": "broadcast", "param_bound": "real"}),
        "theory.ambient_dimension": (theory.ambient_dimension, {"spec": spec, "n": 4}, {"spec": "spec", "n": "count"}),
        "theory.paper_slope": (theory.paper_slope, {"spec": spec}, {"spec": "spec"}),
        "theory.routing_term": (theory.routing_term, {"spec": spec}, {"spec": "spec"}),
        "theory.parametric_slope": (theory.parametric_slope, {"spec": spec}, {"spec": "spec"}),
        "theory.generalization_bound": (theory.generalization_bound, {"spec": spec, "n": 100, "beta": 0.5, "d": 2.0},
                                        {"spec": "spec", "n": "count", "beta": "real", "d": "real"}),
        "theory.optimal_active_params": (theory.optimal_active_params, {"n": [100.0, 1000.0], "beta": 0.5, "d": 2.0},
                                         {"n": "broadcast", "beta": "real", "d": "real"}),
        "theory.optimal_error_exponent": (theory.optimal_error_exponent, {"beta": 0.5, "d": 2.0},
                                          {"beta": "real", "d": "real"}),
        "theory.approximation_rate": (theory.approximation_rate, {"n_eff": [10.0], "experts": [4.0], "beta": 0.5, "d": 2.0},
                                      {"n_eff": "broadcast", "beta": "real", "d": "real"}),
        "resolve_seed": (moecover.resolve_seed, {"rng": 5}, {"rng": "seed"}),
    }


def _cover_stream(**kwargs: Any) -> Any:
    """A `CoverStream` built with `kwargs`, fed 40 fixed points: its result (an object compares by
    what it computes)."""
    import moecover

    stream = moecover.CoverStream(**kwargs)
    stream.add(np.random.default_rng(0).uniform(-1, 1, (40, stream._dim)))
    return stream.result()


def _grouped_stream(**kwargs: Any) -> Any:
    """A `GroupedCoverStream` built with `kwargs`, fed 40 fixed rows with patterns of its shape."""
    import moecover

    stream = moecover.GroupedCoverStream(**kwargs)
    rows = np.random.default_rng(0).uniform(-1, 1, (40, stream._dim))
    stream.add(rows, np.random.default_rng(1).integers(0, 2, (40, *stream._shape)))
    return stream.result()


def _grouped_add(values: Any, routes: Any) -> Any:
    """`GroupedCoverStream.add` on a fresh stream of 3 columns and patterns of shape (2, 1, 1)."""
    import moecover

    stream = moecover.GroupedCoverStream([1.0, 0.5], 3, (2, 1, 1), n_threads=1)
    stream.add(values, routes)
    return stream.result()


def _routes_junk(valid: np.ndarray) -> dict[str, Any]:
    return {"float": valid.astype(float) + 0.5, "negative": valid.astype(np.int64) - 5, "too-large": valid + 1000,
            "ndim-1": valid.reshape(len(valid), -1)[..., 0] if valid.ndim > 1 else valid[:1],
            "str": "0", "None": None}


def _routes_valid(valid: np.ndarray) -> dict[str, Any]:
    return {"int64": valid.astype(np.int64), "big-endian": valid.astype(">u4"), "list": valid.tolist()}


def cases() -> list[tuple[str, str, str, bool]]:
    """(call, argument, kind, whether the kind is valid) for every case."""
    out = []
    for name, (_, kwargs, roles) in calls().items():
        for argument, role in roles.items():
            if role in ("count", "count-or-zero"):
                # zero heads is no attention, a search of zero evaluations none: valid there
                out += [(name, argument, k, role == "count-or-zero" and k == "zero") for k in COUNT_JUNK]
                out += [(name, argument, k, True) for k in COUNT_VALID]
            elif role == "threads":
                out += [(name, argument, k, False) for k in THREADS_JUNK]
            elif role == "seed":
                out += [(name, argument, k, False) for k in SEED_JUNK]
            elif role in ("array", "points"):
                valid = np.asarray(kwargs[argument], dtype=float)
                # an empty point set has an empty net, no θ an empty evaluation: valid; no inputs is
                # not a question
                empty_valid = role == "points"
                out += [(name, argument, k, empty_valid and k == "empty") for k in array_junk(valid) if k != "1e308-overflowing"]
                out += [(name, argument, k, True) for k in array_valid(valid)]
            elif role in ("scales", "scales-or-none", "broadcast"):
                # None means "choose the scales" where it is the default; a theory function maps any
                # array shape, so nested and empty arrays are valid there
                valid_junk = {"scales-or-none": {"None"}, "broadcast": {"empty", "nested"}}.get(role, set())
                out += [(name, argument, k, k in valid_junk) for k in SCALES_JUNK]
                out += [(name, argument, k, True) for k in SCALES_VALID]
            elif role in ("spec", "spec-or-none"):
                # an optional spec may be left out (None)
                out += [(name, argument, k, role == "spec-or-none" and k == "None") for k in SPEC_JUNK]
            elif role == "sampler":
                out += [(name, argument, k, False) for k in SAMPLER_JUNK]
            elif role == "real":
                out += [(name, argument, k, False) for k in REAL_JUNK] + [(name, argument, k, True) for k in REAL_VALID]
            elif role in ("routes", "patterns"):
                # a grouped stream's patterns are any integers in [0, 2^32), not one spec's ranks
                valid = np.asarray(kwargs[argument])
                out += [(name, argument, k, role == "patterns" and k == "too-large") for k in _routes_junk(valid)]
                out += [(name, argument, k, True) for k in _routes_valid(valid)]
            elif role == "flag":
                out += [(name, argument, k, False) for k in FLAG_JUNK] + [(name, argument, "np.bool_", True)]
    return out


def _value(role: str, kind: str, base: Any) -> Any:
    if role in ("count", "count-or-zero"):
        return COUNT_VALID[kind](base) if kind in COUNT_VALID else COUNT_JUNK[kind]
    if role == "threads":
        return THREADS_JUNK[kind]
    if role == "seed":
        return SEED_JUNK[kind]
    if role in ("array", "points"):
        valid = np.asarray(base, dtype=float)
        return {**array_junk(valid), **array_valid(valid)}[kind]
    if role in ("scales", "scales-or-none", "broadcast"):
        return SCALES_VALID[kind](list(base)) if kind in SCALES_VALID else SCALES_JUNK[kind]
    if role == "sampler":
        return SAMPLER_JUNK[kind]
    if role == "real":
        return REAL_VALID[kind](base) if kind in REAL_VALID else REAL_JUNK[kind]
    if role in ("routes", "patterns"):
        valid = np.asarray(base)
        return {**_routes_junk(valid), **_routes_valid(valid)}[kind]
    if role == "flag":
        return np.bool_(base) if kind == "np.bool_" else FLAG_JUNK[kind]
    return SPEC_JUNK[kind]


def _canonical(value: Any) -> Any:
    """The plain copy an unusual valid input must behave as: a C-contiguous native-endian array of
    its own precision (float32 stays float32), a Python int for a numpy integer."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (np.floating, np.bool_)):
        return value.item()
    if isinstance(value, list):
        return value
    if isinstance(value, np.ndarray) and value.dtype.kind in "iu":
        return np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("="))
    array = np.asarray(value)
    if array.dtype.kind == "f":
        return np.ascontiguousarray(array, dtype=np.float32 if array.dtype.itemsize == 4 else np.float64)
    return value


def _plain(result: Any) -> Any:
    """A comparable form of a result (dataclasses by their fields, arrays as bytes and shapes)."""
    import dataclasses

    if dataclasses.is_dataclass(result):
        return {f.name: _plain(getattr(result, f.name)) for f in dataclasses.fields(result)
                if f.name not in ("provenance", "seconds", "_core")}
    if isinstance(result, np.ndarray):
        return (result.shape, str(result.dtype), result.tobytes())
    if isinstance(result, float) and math.isnan(result):
        return "nan"  # NaN != NaN: compare as a token
    if isinstance(result, (list, tuple)):
        return [_plain(r) for r in result]
    if isinstance(result, dict):
        return {k: _plain(v) for k, v in result.items() if k not in ("seconds",)}
    return result


def run_case(name: str, argument: str, kind: str, valid: bool) -> dict[str, Any]:
    """One case, judged: outcome is ok, junk-accepted, silently-different, other-exception or
    wrong-name (the message does not start with the argument's name)."""
    function, kwargs, roles = calls()[name]
    changed = dict(kwargs)
    changed[argument] = _value(roles[argument], kind, kwargs[argument])
    try:
        result = function(**changed)
    except (ValueError, TypeError) as error:
        message = str(error)
        if valid:
            return {"outcome": "valid-refused", "detail": f"{type(error).__name__}: {message[:160]}"}
        if message.startswith(f"{argument}:") or message.startswith(f"{argument} ") or f"{argument}:" in message.split(";")[0]:
            return {"outcome": "ok"}
        return {"outcome": "wrong-name", "detail": f"{type(error).__name__}: {message[:160]}"}
    except Exception as error:  # the contract allows only ValueError/TypeError
        return {"outcome": "other-exception", "detail": f"{type(error).__name__}: {str(error)[:160]}"}
    if not valid:
        return {"outcome": "junk-accepted", "detail": repr(changed[argument])[:80]}
    reference = function(**{**kwargs, argument: _canonical(changed[argument])})
    same = _plain(result) == _plain(reference)
    return {"outcome": "ok" if same else "silently-different"}


# --- the runner ----------------------------------------------------------------------------------


def _worker() -> None:
    for line in sys.stdin:
        case = json.loads(line)
        print(json.dumps(run_case(*case)), flush=True)


class _Child:
    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ask(self, case: tuple[Any, ...]) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(case) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT)
        if not ready:
            self.process.kill()
            return {"outcome": "hang"}
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            err = self.process.stderr.read()[-300:] if self.process.stderr else ""
            return {"outcome": "crash", "detail": f"exit {self.process.returncode}: {err.strip()}"}
        return json.loads(line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.close()  # the worker's loop ends with its input
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def run_all(selected: list[tuple[str, str, str, bool]]) -> list[tuple[tuple[str, str, str, bool], dict[str, Any]]]:
    child = _Child()
    results = []
    try:
        for case in selected:
            if not child.alive():
                child.close()
                child = _Child()
            results.append((case, child.ask(case)))
    finally:
        child.close()
    return results


def main() -> int:
    if "--worker" in sys.argv:
        _worker()
        return 0
    every = cases()
    if "--list" in sys.argv:
        for case in every:
            print(*case)
        return 0
    started = time.perf_counter()
    results = run_all(every)
    counts = Counter(r["outcome"] for _, r in results)
    print(f"{len(results)} cases over {len({c[0] for c in every})} callables and "
          f"{len({(c[0], c[1]) for c in every})} function–argument pairs, {time.perf_counter() - started:.0f} s")
    for outcome, count in counts.most_common():
        print(f"  {outcome:20} {count}")
    for case, result in results:
        if result["outcome"] != "ok":
            print(f"{result['outcome']:20} {case[0]}({case[1]}={case[2]}): {result.get('detail', '')}")
    return 0 if counts.get("ok", 0) == len(results) else 1


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    sys.exit(main())
