"""Batch runs: a grid of estimates described in a TOML file, stored in SQLite, resumable.

- `config`: the TOML file → validated, fully defaulted grid points, each with a stable key (a hash
  of its settings): entropy estimates, or learning curves (`[erm]`, `moecover.erm`); and the
  `[run]` settings (executor, scheduler, jobs, threads); d and β estimates (`[dimension]`,
  `moecover.manifold`) on points of known truth.
- `store`: the SQLite results, one row per point, committed as each estimate finishes; the
  errors of points that raised, kept beside them.
- `executors`: runs the points not yet stored, in this process, in spawned processes, or on a Dask
  cluster (`executor = "dask"`), with the driver as the store's only writer.

See examples/quickstart.toml for a config, `moecover run --help` for the command line.
"""

from .config import (
    DIMENSION_DEFAULTS,
    ERM_DEFAULTS,
    EXECUTORS,
    LIST_VALUED,
    SECTIONS,
    ConfigError,
    GridPoint,
    RunSettings,
    erm_spec,
    expand_config,
    is_learning_curve,
    key_of,
    load_config,
    make_inputs,
    make_pinned,
    make_dimension_problem,
    make_problem,
    memory_need,
    point_kind,
    run_settings,
)
from .executors import (
    GridRun,
    SchedulerUnreachable,
    dimension_point,
    estimate_point,
    learning_curve_point,
    run_grid,
    run_point,
)
from .store import (
    LEADING_SETTINGS,
    StoredCurve,
    StoredDimension,
    StoredEstimate,
    StoredFailure,
    StoreError,
    grid_order,
    open_db,
    stored_curves,
    stored_dimensions,
    stored_failures,
    stored_keys,
    stored_rows,
)

__all__ = [
    "DIMENSION_DEFAULTS",
    "ERM_DEFAULTS",
    "EXECUTORS",
    "LEADING_SETTINGS",
    "LIST_VALUED",
    "SECTIONS",
    "ConfigError",
    "GridPoint",
    "GridRun",
    "RunSettings",
    "SchedulerUnreachable",
    "StoreError",
    "StoredCurve",
    "StoredDimension",
    "StoredEstimate",
    "StoredFailure",
    "dimension_point",
    "erm_spec",
    "estimate_point",
    "expand_config",
    "is_learning_curve",
    "learning_curve_point",
    "grid_order",
    "key_of",
    "load_config",
    "make_inputs",
    "make_pinned",
    "make_dimension_problem",
    "make_problem",
    "memory_need",
    "open_db",
    "point_kind",
    "run_grid",
    "run_point",
    "run_settings",
    "stored_curves",
    "stored_dimensions",
    "stored_failures",
    "stored_keys",
    "stored_rows",
]
