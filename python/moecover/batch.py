"""Batch runs: a grid of estimates described in a TOML file, stored in SQLite, resumable.

Config (every section optional but `[spec]`; see examples/quickstart.toml):

    [spec]        MoESpec fields
    [inputs]      sampler = "box" | "sphere" | "torus" | "swiss_roll" | "grid" | "one_per_expert",
                  n, seed, and the sampler's own arguments (dim, ...)
    [pinned]      block name = nested list, or router = "one_expert_per_input"
    [estimate]    samples, replicates, deltas, seed, by_routing, saturation_threshold

A list in a scalar field sweeps it (cartesian product over all swept fields); `deltas`, itself a
list, is swept by a list of lists; pinned arrays never sweep. Every grid point gets a stable
key: a hash of its canonical, fully defaulted settings. Each finished estimate is committed to
SQLite at once, so killing a run loses only the estimates in flight and re-running skips the rest.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import sys
import time
from collections.abc import Mapping
from contextlib import closing
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from . import inputs as input_samplers
from ._checks import physical_memory_bytes
from ._checks import check_inputs, resolve_pinned
from ._progress import Progress
from ._spec import MoESpec

if TYPE_CHECKING:
    from .estimate import EntropyEstimate

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "GridPoint",
    "StoreError",
    "StoredEstimate",
    "expand_config",
    "grid_order",
    "load_config",
    "open_db",
    "run_grid",
    "stored_rows",
]

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
}
LIST_VALUED = {("estimate", "deltas")}
SECTIONS = ("spec", "inputs", "pinned", "estimate")


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
    """Every grid point of `config`, fully defaulted and validated; ConfigError names the key."""
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {sorted(unknown)}; expected {list(SECTIONS)}")
    for section in SECTIONS:
        if section in config and not isinstance(config[section], Mapping):
            raise ConfigError(f"{section}: expected a table")
    spec_table = dict(config.get("spec", {}))
    for key in spec_table:
        if key not in SPEC_FIELDS:
            raise ConfigError(f"spec.{key}: unknown MoESpec field; expected one of {sorted(SPEC_FIELDS)}")
    input_table = {**INPUT_DEFAULTS, **config.get("inputs", {})}
    estimate_table = {**ESTIMATE_DEFAULTS, **config.get("estimate", {})}
    for key in config.get("estimate", {}):
        if key not in ESTIMATE_DEFAULTS:
            raise ConfigError(f"estimate.{key}: unknown setting; expected one of {sorted(ESTIMATE_DEFAULTS)}")
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
    return points


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
    for key in ("samples", "replicates"):
        value = point["estimate"][key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"estimate.{key}: expected a positive integer, got {value!r}")
    try:
        x = make_inputs(point, spec)
        pinned = make_pinned(point, spec)
        check_inputs(spec, x)
        resolve_pinned(spec, pinned)
    except (ValueError, TypeError) as error:
        raise ConfigError(f"inputs/pinned: {error}") from error
    need = memory_need(point, spec, x.shape[0])
    if need > physical_memory_bytes():
        raise ConfigError(
            f"estimate.samples: grid point {key_of(point)} could need {need / 2**30:.3g} GiB in the worst case "
            f"(every sample a centre), more than this machine's {physical_memory_bytes() / 2**30:.3g} GiB"
        )


def memory_need(point: GridPoint, spec: MoESpec, n: int) -> int:
    """A floor of what one estimate could need: every sample's coordinates held once by the finest
    net (the global one and, with by_routing, its group's), plus one chunk of values and routes.
    The nets' grid index adds more (up to ~2.5 kB per centre when δ is small); the nets count
    that as they grow and stop with TooLargeError before the machine runs out."""
    samples = point["estimate"]["samples"]
    dim = n * spec.output_dim
    nets = 2 if point["estimate"]["by_routing"] else 1
    from .estimate import CHUNK

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


# --- storage ---------------------------------------------------------------------------------

SCHEMA = """
CREATE TABLE IF NOT EXISTS estimates (
    key TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    result TEXT NOT NULL,
    version TEXT NOT NULL,
    finished REAL NOT NULL
)
"""


class StoreError(ValueError):
    """A results database that cannot be opened or read: the message names the file."""


def open_db(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """The results database at `path` (created if missing); StoreError if it is not one."""
    try:
        connection = sqlite3.connect(str(path), timeout=60)
        connection.execute("PRAGMA journal_mode=WAL")  # a kill mid-write leaves the last commit intact
        connection.execute(SCHEMA)
        connection.commit()
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{os.fspath(path)}: not a moecover results database ({error})") from error
    return connection


def stored_keys(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT key FROM estimates")}


@dataclass(frozen=True)
class StoredEstimate:
    """One stored grid point: its key, its settings (`GridPoint`), the estimate, the package version
    that computed it and when it finished (Unix time)."""

    key: str
    settings: GridPoint
    estimate: EntropyEstimate
    version: str
    finished: float

    def setting(self, name: str) -> Any:
        """A setting by its flat name, `"section.key"` (e.g. `"spec.experts"`); None if unset."""
        section, _, key = name.partition(".")
        return self.settings.get(section, {}).get(key)

    @property
    def flat_settings(self) -> dict[str, Any]:
        """Every setting by its flat name, `"section.key"`."""
        return {f"{section}.{key}": value for section, table in self.settings.items() for key, value in table.items()}

    @property
    def spec(self) -> MoESpec:
        return MoESpec(**self.settings["spec"])


def stored_rows(path: str | os.PathLike[str]) -> list[StoredEstimate]:
    """Every stored estimate, in grid order (see `grid_order`)."""
    from .estimate import EntropyEstimate

    with closing(open_db(path)) as connection:
        rows = connection.execute("SELECT key, settings, result, version, finished FROM estimates")
        stored = [
            StoredEstimate(k, json.loads(s), EntropyEstimate.from_dict(json.loads(r)), v, f)
            for k, s, r, v, f in rows
        ]
    return sorted(stored, key=grid_order)


#: The settings a table shows first and sorts by first.
LEADING_SETTINGS = ("spec.experts", "spec.top_k", "spec.layers")


def grid_order(row: StoredEstimate) -> list[tuple[int, Any]]:
    """Sorts rows by their settings, `LEADING_SETTINGS` first (numbers numerically), so that a
    table reads along the grid."""
    flat = row.flat_settings
    order = list(LEADING_SETTINGS) + sorted(set(flat) - set(LEADING_SETTINGS))
    return [(0, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, repr(v))
            for v in (flat.get(name) for name in order)]


# --- running ---------------------------------------------------------------------------------


def estimate_point(point: GridPoint, n_threads: int) -> dict[str, Any]:
    """Runs one grid point's estimate; returns its to_dict()."""
    from .estimate import estimate_entropy

    spec = MoESpec(**point["spec"])
    settings = point["estimate"]
    estimate = estimate_entropy(
        spec,
        make_inputs(point, spec),
        settings["samples"],
        deltas=settings["deltas"],
        replicates=settings["replicates"],
        rng=settings["seed"],
        pinned=make_pinned(point, spec) or None,
        by_routing=settings["by_routing"],
        saturation_threshold=settings["saturation_threshold"],
        n_threads=n_threads,
    )
    return estimate.to_dict()


def _worker(args: tuple[GridPoint, int]) -> tuple[str, dict[str, Any]]:
    point, threads = args
    return key_of(point), estimate_point(point, threads)


def run_grid(
    points: list[GridPoint], db_path: str | os.PathLike[str], jobs: int = 1, progress: bool = True
) -> int:
    """Runs the grid points not yet in the database; returns how many it ran."""
    from . import __version__
    from ._checks import resolve_threads

    connection = open_db(db_path)
    done = stored_keys(connection)
    todo = [p for p in points if key_of(p) not in done]
    threads = max(1, resolve_threads(None) // jobs)
    if progress and len(points) > len(todo):
        sys.stderr.write(f"{len(points) - len(todo)} grid point(s) already stored: skipped\n")
    bar = Progress(len(todo), "grid points") if progress else None

    def store(key: str, result: dict[str, Any], point: GridPoint) -> None:
        connection.execute(
            "INSERT OR REPLACE INTO estimates VALUES (?, ?, ?, ?, ?)",
            (key, json.dumps(point, sort_keys=True), json.dumps(result), __version__, time.time()),
        )
        connection.commit()
        if bar is not None:
            bar.advance()

    by_key = {key_of(p): p for p in todo}
    try:
        if jobs == 1:
            for point in todo:
                store(key_of(point), estimate_point(point, threads), point)
        else:
            import multiprocessing

            # spawn, never fork: a rayon pool inherited through fork deadlocks
            with multiprocessing.get_context("spawn").Pool(jobs) as pool:
                for key, result in pool.imap_unordered(_worker, [(p, threads) for p in todo]):
                    store(key, result, by_key[key])
    finally:
        if bar is not None:
            bar.close()
        connection.close()
    return len(todo)
