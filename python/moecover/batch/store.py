"""The results store: one SQLite file per grid, one row per finished grid point, written only by
the process that drives the run (workers return plain data), each row committed as it arrives, so
that killing a run loses only the estimates in flight and re-running skips the rest.

A grid point whose estimate raised is stored too, in `failures`, with its error; it is run again
by the next `moecover run`, and its failure row goes when it succeeds.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from contextlib import closing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._spec import MoESpec
from .config import GridPoint, point_kind

if TYPE_CHECKING:
    from ..erm import LearningCurve
    from ..estimate import EntropyEstimate

SCHEMA = """
CREATE TABLE IF NOT EXISTS estimates (
    key TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    result TEXT NOT NULL,
    version TEXT NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS learning_curves (
    key TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    result TEXT NOT NULL,
    version TEXT NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dimension_estimates (
    key TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    result TEXT NOT NULL,
    version TEXT NOT NULL,
    finished REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    heartbeat REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    key TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    error TEXT NOT NULL,
    detail TEXT NOT NULL,
    version TEXT NOT NULL,
    finished REAL NOT NULL
);
"""


class StoreError(ValueError):
    """A results database that cannot be opened or read: the message names the file."""


#: The store's layout version (SQLite's user_version): a file of a later version is refused, not
#: misread. 1: estimates, learning_curves, failures, claims (and dimension_estimates, a table an
#: earlier reader of layout 1 does not look at).
SCHEMA_VERSION = 1
COLUMNS = {
    "estimates": ["key", "settings", "result", "version", "finished"],
    "learning_curves": ["key", "settings", "result", "version", "finished"],
    "dimension_estimates": ["key", "settings", "result", "version", "finished"],
    "failures": ["key", "settings", "error", "detail", "version", "finished"],
    "claims": ["key", "owner", "host", "pid", "heartbeat"],
}


#: The table each kind of grid point (`config.point_kind`) is stored in.
RESULT_TABLES = {"estimate": "estimates", "learning_curve": "learning_curves", "dimension": "dimension_estimates"}


def open_db(path: str | os.PathLike[str], readonly: bool = False) -> sqlite3.Connection:
    """The results database at `path`, checked whole (SQLite's quick_check), of a layout this
    version reads; created if missing unless `readonly` (then it is only read: `show` and `report`
    need no write access). StoreError, naming the file, for anything else."""
    where = os.fspath(path)
    if readonly and not os.path.isfile(where):
        raise StoreError(f"{where}: no such results database")
    try:
        if readonly:
            connection = sqlite3.connect(f"file:{_uri_path(where)}?mode=ro", uri=True, timeout=60)
            try:
                connection.execute("SELECT 1 FROM sqlite_master LIMIT 1")
            except sqlite3.OperationalError:
                # a WAL file in a directory this process cannot write: read it as it stands
                connection.close()
                connection = sqlite3.connect(f"file:{_uri_path(where)}?mode=ro&immutable=1", uri=True, timeout=60)
        else:
            connection = sqlite3.connect(where, timeout=60)
        try:
            _check(connection, where)
            if not readonly:
                _switch_to_wal(connection)
                connection.executescript(SCHEMA)
                if connection.execute("PRAGMA user_version").fetchone()[0] == 0:
                    connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                connection.commit()
        except BaseException:
            connection.close()
            raise
    except sqlite3.DatabaseError as error:
        raise StoreError(f"{where}: not a moecover results database, or not readable ({error})") from error
    return connection


def _uri_path(path: str) -> str:
    from urllib.parse import quote

    return quote(os.path.abspath(path))


def _check(connection: sqlite3.Connection, where: str) -> None:
    """Refuses a damaged file, one of a newer layout, and one whose tables are not ours."""
    verdict = connection.execute("PRAGMA quick_check").fetchone()[0]
    if verdict != "ok":
        raise StoreError(f"{where}: the database is damaged (SQLite's check: {verdict}); restore a copy or start "
                         "a new database")
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{where}: written by a newer moecover (store layout {version}; this version reads up to "
                         f"{SCHEMA_VERSION}): upgrade moecover")
    for table, columns in COLUMNS.items():
        found = [row[1] for row in connection.execute(f"PRAGMA table_info({table})")]
        if found and found != columns:
            raise StoreError(f"{where}: not a moecover results database (its table {table!r} has columns {found})")


def _tables(connection: sqlite3.Connection) -> set[str]:
    return {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def _parses(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def _switch_to_wal(connection: sqlite3.Connection, seconds: float = 60.0) -> None:
    """WAL journaling, so that a kill mid-write leaves the last commit intact. Switching a fresh
    file needs it to itself, and SQLite answers "database is locked" at once (no busy wait) when
    another process is opening it too: retry until the other has finished."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def stored_keys(connection: sqlite3.Connection) -> set[str]:
    """The keys of every finished point (estimates, learning curves, d/β estimates) whose stored
    result is whole: a row damaged on disk (truncated JSON) is not finished, and the next run
    recomputes it."""
    rows = connection.execute(" UNION ALL ".join(f"SELECT key, settings, result FROM {table}" for table in RESULT_TABLES.values()))
    return {key for key, settings, result in rows if _parses(settings) and _parses(result)}


#: A claim whose owner has not shown signs of life for this long is taken over (its owner's
#: heartbeat thread refreshes it every CLAIM_HEARTBEAT seconds while it runs).
CLAIM_TIMEOUT = 300.0
CLAIM_HEARTBEAT = 30.0


class Claims:
    """The grid points this process is running, recorded in the store so that a second `moecover
    run` on the same database skips them instead of computing them again. A claim is released when
    its point is stored, and all of them when the run ends; a claim left by a killed run is taken
    over once its owner is seen dead (same host) or silent for CLAIM_TIMEOUT seconds."""

    def __init__(self, connection: sqlite3.Connection):
        import socket
        import uuid

        self.connection = connection
        self.owner, self.host, self.pid = uuid.uuid4().hex, socket.gethostname(), os.getpid()

    def take(self, keys: list[str]) -> list[str]:
        """Claims those of `keys` that are neither stored nor held by a live run; returns them."""
        taken: list[str] = []
        with _immediate(self.connection):
            done = stored_keys(self.connection)
            held = {k: (h, p, t) for k, h, p, t in self.connection.execute("SELECT key, host, pid, heartbeat FROM claims")}
            now = time.time()
            for key in keys:
                if key in done or (key in held and self._alive(*held[key], now)):
                    continue
                self.connection.execute("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?, ?)",
                                        (key, self.owner, self.host, self.pid, now))
                taken.append(key)
        return taken

    def _alive(self, host: str, pid: int, heartbeat: float, now: float) -> bool:
        if now - heartbeat > CLAIM_TIMEOUT:
            return False
        if host == self.host:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                return True
        return True

    def release(self) -> None:
        with self.connection:
            self.connection.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))


def refresh_claims(path: str | os.PathLike[str], owner: str) -> None:
    """One heartbeat of `owner`'s claims, from its own connection (called from a thread)."""
    with closing(sqlite3.connect(os.fspath(path), timeout=60)) as connection, connection:
        connection.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), owner))


class _immediate:
    """A write transaction begun at once (BEGIN IMMEDIATE), so that two processes claiming points
    take turns instead of both reading the same free points."""

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> None:
        self.level = self.connection.isolation_level
        self.connection.isolation_level = None
        self.connection.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: Any, *_: Any) -> None:
        try:
            self.connection.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.connection.isolation_level = self.level


def store_result(connection: sqlite3.Connection, key: str, point: GridPoint, result: dict[str, Any]) -> None:
    """Commits one finished point (the `to_dict()` of its estimate or learning curve), clearing any
    failure stored for it."""
    from .. import __version__

    table = RESULT_TABLES[point_kind(point)]
    with connection:
        connection.execute(
            f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, ?)",
            (key, json.dumps(point, sort_keys=True), json.dumps(result), __version__, time.time()),
        )
        connection.execute("DELETE FROM failures WHERE key = ?", (key,))
        connection.execute("DELETE FROM claims WHERE key = ?", (key,))


def store_failure(connection: sqlite3.Connection, key: str, point: GridPoint, error: str, detail: str) -> None:
    """Commits the error of a grid point whose estimate raised (`error` one line, `detail` the
    traceback)."""
    from .. import __version__

    with connection:
        connection.execute(
            "INSERT OR REPLACE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
            (key, json.dumps(point, sort_keys=True), error, detail, __version__, time.time()),
        )
        connection.execute("DELETE FROM claims WHERE key = ?", (key,))


class _Settings:
    """The settings accessors shared by stored estimates and failures."""

    settings: GridPoint

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


@dataclass(frozen=True)
class StoredEstimate(_Settings):
    """One stored grid point: its key, its settings (`GridPoint`), the estimate, the package version
    that computed it and when it finished (Unix time)."""

    key: str
    settings: GridPoint
    estimate: EntropyEstimate
    version: str
    finished: float


@dataclass(frozen=True)
class StoredFailure(_Settings):
    """A grid point whose estimate raised: its key, settings, the error in one line, the traceback,
    the package version and when it failed (Unix time)."""

    key: str
    settings: GridPoint
    error: str
    detail: str
    version: str
    finished: float


def stored_rows(path: str | os.PathLike[str]) -> list[StoredEstimate]:
    """Every stored estimate, in grid order (see `grid_order`)."""
    from ..estimate import EntropyEstimate

    with closing(open_db(path, readonly=True)) as connection:
        rows = _rows(connection, "estimates", "result", path)
    stored = [StoredEstimate(k, s, EntropyEstimate.from_dict(r), v, f) for k, s, r, v, f in rows]
    return sorted(stored, key=grid_order)


def _rows(connection: sqlite3.Connection, table: str, payload: str, path: Any) -> list[tuple[Any, ...]]:
    """(key, settings, payload, version, finished) of every row of `table`, JSON decoded; a row
    damaged on disk is a StoreError that names it (`moecover run` recomputes it)."""
    if table not in _tables(connection):
        return []  # a database of an earlier layout, opened read-only
    decoded = []
    for key, settings, value, version, finished in connection.execute(
            f"SELECT key, settings, {payload}, version, finished FROM {table}"):
        try:
            decoded.append((key, json.loads(settings), json.loads(value) if payload == "result" else value,
                            version, finished))
        except ValueError as error:
            raise StoreError(f"{os.fspath(path)}: the stored row {key} is damaged ({error}); `moecover run` recomputes "
                             "it") from None
    return decoded


@dataclass(frozen=True)
class StoredCurve(_Settings):
    """One stored learning-curve point: its key, its settings (`GridPoint` with an `erm` section),
    the curve, the package version that computed it and when it finished (Unix time)."""

    key: str
    settings: GridPoint
    curve: LearningCurve
    version: str
    finished: float

    @property
    def spec(self) -> MoESpec:
        raise AttributeError("a learning-curve point has a spec only with model = 'spec': see settings")


def stored_curves(path: str | os.PathLike[str]) -> list[StoredCurve]:
    """Every stored learning curve, in grid order."""
    from ..erm import LearningCurve

    with closing(open_db(path, readonly=True)) as connection:
        rows = _rows(connection, "learning_curves", "result", path)
    stored = [StoredCurve(k, s, LearningCurve.from_dict(r), v, f) for k, s, r, v, f in rows]
    return sorted(stored, key=grid_order)


@dataclass(frozen=True)
class StoredDimension(_Settings):
    """One stored d/β point: its key, its settings (`GridPoint` with a `dimension` section), the
    estimates as plain data (`dimension`: `manifold.DimensionEstimate.to_dict()`, `smoothness`:
    `manifold.SmoothnessEstimate.to_dict()`), the package version and when it finished."""

    key: str
    settings: GridPoint
    result: dict[str, Any]
    version: str
    finished: float

    @property
    def spec(self) -> MoESpec:
        raise AttributeError("a d/β point has no spec: see settings")

    @property
    def dimension_estimates(self) -> dict[str, tuple[float, float, float]]:
        """method → (d̂, low, high): all points, the middle neighbourhood size."""
        return {method: (float(v[0]), float(v[1]), float(v[2])) for method, v in self.result["dimension"]["estimates"].items()}

    @property
    def beta(self) -> tuple[float, float, float]:
        """(β̂, low, high) by increments."""
        smoothness = self.result["smoothness"]
        return float(smoothness["beta"]), float(smoothness["interval"][0]), float(smoothness["interval"][1])


def stored_dimensions(path: str | os.PathLike[str]) -> list[StoredDimension]:
    """Every stored d/β estimate, in grid order."""
    with closing(open_db(path, readonly=True)) as connection:
        rows = _rows(connection, "dimension_estimates", "result", path)
    return sorted((StoredDimension(*row) for row in rows), key=grid_order)


def stored_failures(path: str | os.PathLike[str]) -> list[StoredFailure]:
    """Every grid point whose last run failed (and has not succeeded since), in grid order."""
    with closing(open_db(path, readonly=True)) as connection:
        if "failures" not in _tables(connection):
            return []
        rows = connection.execute("SELECT key, settings, error, detail, version, finished FROM failures").fetchall()
    failed = [StoredFailure(k, json.loads(s), e, d, v, f) for k, s, e, d, v, f in rows if _parses(s)]
    return sorted(failed, key=grid_order)


#: The settings a table shows first and sorts by first.
LEADING_SETTINGS = ("spec.experts", "spec.top_k", "spec.layers", "erm.d", "erm.beta", "dimension.d", "dimension.beta")


def grid_order(row: _Settings) -> list[tuple[int, Any]]:
    """Sorts rows by their settings, `LEADING_SETTINGS` first (numbers numerically), so that a
    table reads along the grid."""
    flat = row.flat_settings
    order = list(LEADING_SETTINGS) + sorted(set(flat) - set(LEADING_SETTINGS))
    return [(0, v) if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, repr(v))
            for v in (flat.get(name) for name in order)]
