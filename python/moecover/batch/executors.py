"""Running a grid: locally (one process, or spawned ones) or on a Dask cluster.

Whatever runs a point, a task carries only plain data (the point's settings and a thread count)
and returns plain data (the estimate's `to_dict()`, or the error it raised); the driver, this
process, is the only writer of the store, commits each outcome as it arrives, and skips the points
already stored. An estimate's bits do not depend on its thread count, so the same grid run
anywhere gives the same rows.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .._checks import MissingDependency, resolve_threads
from .._progress import Progress
from .._spec import MoESpec
from .config import (
    GridPoint,
    RunSettings,
    erm_spec,
    key_of,
    make_dimension_problem,
    make_inputs,
    make_pinned,
    make_problem,
    point_kind,
)
from .store import CLAIM_HEARTBEAT, Claims, open_db, refresh_claims, store_failure, store_result, stored_keys

#: How long the driver waits for a Dask scheduler to answer before it gives up.
CONNECT_SECONDS = 10

Outcome = dict[str, Any]


@dataclass(frozen=True)
class GridRun:
    """What one `run_grid` did: `ran` estimates stored, `skipped` points already stored, the
    points whose estimate raised, as (key, one-line error) in the order they failed (stored too),
    and `busy` points left to another run that holds them on the same database."""

    ran: int
    skipped: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    busy: int = 0


class SchedulerUnreachable(ValueError):
    """No Dask scheduler answered at the address given."""


def estimate_point(point: GridPoint, n_threads: int) -> dict[str, Any]:
    """Runs one grid point's estimate; returns its to_dict()."""
    from ..estimate import EstimateWarning, estimate_entropy

    spec = MoESpec(**point["spec"])
    settings = point["estimate"]
    with warnings.catch_warnings():
        # what an estimate cannot say is stored with it (`warnings`) and reported, not printed
        warnings.simplefilter("ignore", EstimateWarning)
        estimate = _estimate(estimate_entropy, spec, point, settings, n_threads)
    return estimate.to_dict()


def _estimate(estimate_entropy: Any, spec: MoESpec, point: GridPoint, settings: dict[str, Any], n_threads: int) -> Any:
    return estimate_entropy(
        spec,
        make_inputs(point, spec),
        settings["samples"],
        deltas=settings["deltas"],
        replicates=settings["replicates"],
        rng=settings["seed"],
        pinned=make_pinned(point, spec) or None,
        by_routing=settings["by_routing"],
        saturation_threshold=settings["saturation_threshold"],
        sampler=settings["sampler"],
        explore=settings["explore"],
        functional_samples=settings["functional_samples"],
        n_threads=n_threads,
    )


def learning_curve_point(point: GridPoint) -> dict[str, Any]:
    """Runs one learning-curve grid point ([erm]); returns the curve's to_dict(). (JAX sizes its
    own thread pool: the point's thread count does not reach it.)"""
    from .. import erm

    settings = point["erm"]
    problem = make_problem(point)
    model: Any
    if settings["model"] == "knn":
        model = "knn"
    elif settings["model"] in ("spec", "fixed_neff"):
        model = erm_spec(point)
    else:
        model = erm.neff_schedule(problem)
    curve = erm.learning_curve(
        model, problem, settings["ns"], seeds=settings["seeds"], rng=settings["seed"], test_size=settings["test_size"],
        starts=settings["starts"], steps=settings["steps"], learning_rate=settings["learning_rate"],
    )
    return curve.to_dict()


def dimension_point(point: GridPoint) -> dict[str, Any]:
    """Runs one d/β point ([dimension]): d̂ by each nearest-neighbour estimator and β̂ by
    increments, from the same n draws; returns both estimates' to_dict()."""
    from .. import manifold

    settings = point["dimension"]
    sample = make_dimension_problem(point).sample(settings["n"], rng=settings["seed"])
    dimension = manifold.intrinsic_dimension(sample.x, subsamples=settings["subsamples"], rng=settings["seed"])
    smoothness = manifold.smoothness(sample.x, sample.y, bootstrap=settings["bootstrap"], rng=settings["seed"])
    return {"dimension": dimension.to_dict(), "smoothness": smoothness.to_dict()}


def run_point(point: GridPoint, n_threads: int) -> Outcome:
    """One task: the point's estimate, or the error it raised, as plain data. Interrupts and exits
    are not errors of the point: they propagate."""
    from .. import __version__

    key = key_of(point)
    try:
        kind = point_kind(point)
        if kind == "learning_curve":
            result = learning_curve_point(point)
        elif kind == "dimension":
            result = dimension_point(point)
        else:
            result = estimate_point(point, n_threads)
        return {"key": key, "version": __version__, "result": result}
    except Exception as error:
        return {"key": key, "version": __version__, "error": _one_line(error), "detail": traceback.format_exc()}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_grid(
    points: list[GridPoint],
    db_path: str | os.PathLike[str],
    jobs: int | None = None,
    progress: bool = True,
    executor: str | None = None,
    scheduler: str | None = None,
    threads: int | None = None,
) -> GridRun:
    """Runs the grid points not yet in the database, storing each estimate (or its error) as it
    finishes. `executor`, `scheduler`, `jobs` and `threads` are those of `RunSettings` (a
    scheduler address alone implies the dask executor)."""
    executor = executor or ("dask" if scheduler is not None else "local")
    settings = RunSettings(executor=executor, scheduler=scheduler, jobs=jobs, threads=threads)
    connection = open_db(db_path)
    claims = Claims(connection)
    heartbeat = _Heartbeat(db_path, claims.owner)
    try:
        done = stored_keys(connection)
        unique = {key_of(p): p for p in points}
        pending = [k for k in unique if k not in done]
        taken = set(claims.take(pending))  # points another live run holds are left to it
        todo = [unique[k] for k in pending if k in taken]
        skipped, busy = len(unique) - len(pending), len(pending) - len(taken)
        if progress and skipped:
            sys.stderr.write(f"{skipped} grid point(s) already stored: skipped\n")
        if progress and busy:
            sys.stderr.write(f"{busy} grid point(s) being run by another process on this database: skipped\n")
        if not todo:
            return GridRun(0, skipped, busy=busy)
        heartbeat.start()
        recorder = _Recorder(connection, {key_of(p): p for p in todo}, Progress(len(todo), "grid points") if progress else None)
        try:
            if settings.executor == "dask":
                _run_dask(todo, settings, recorder.record)
            else:
                _run_local(todo, settings, recorder.record)
        finally:
            recorder.close()
        return GridRun(recorder.ran, skipped, recorder.failed, busy)
    finally:
        heartbeat.stop()
        try:
            claims.release()
        finally:
            connection.close()


class _Heartbeat:
    """Refreshes this run's claims every CLAIM_HEARTBEAT seconds from a daemon thread, so that a
    long point is not mistaken for an abandoned one."""

    def __init__(self, path: str | os.PathLike[str], owner: str):
        import threading

        self.path, self.owner, self.stopped = path, owner, threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name="moecover-claims")

    def _beat(self) -> None:
        while not self.stopped.wait(CLAIM_HEARTBEAT):
            try:
                refresh_claims(self.path, self.owner)
            except sqlite3.Error:  # a busy or vanished file: the next beat tries again
                pass

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)


class _Recorder:
    """Commits outcomes to the store as they arrive, and counts them."""

    def __init__(self, connection: sqlite3.Connection, points: dict[str, GridPoint], bar: Progress | None):
        self.connection, self.points, self.bar = connection, points, bar
        self.ran, self.failed = 0, []  # type: int, list[tuple[str, str]]

    def record(self, outcome: Outcome) -> None:
        from .. import __version__

        key = outcome["key"]
        if outcome.get("version", __version__) != __version__:  # a worker that joined a remote cluster late
            outcome = {"key": key, "error": f"ValueError: computed by moecover {outcome['version']}, this process "
                       f"runs {__version__}", "detail": ""}
        if "result" in outcome:
            store_result(self.connection, key, self.points[key], outcome["result"])
            self.ran += 1
        else:
            store_failure(self.connection, key, self.points[key], outcome["error"], outcome["detail"])
            self.failed.append((key, outcome["error"]))
        if self.bar is not None:
            self.bar.advance()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_local(todo: list[GridPoint], settings: RunSettings, record: Callable[[Outcome], None]) -> None:
    jobs = settings.jobs or 1
    threads = settings.threads or max(1, resolve_threads(None) // jobs)
    if jobs == 1:
        for point in todo:
            record(run_point(point, threads))
        return
    import multiprocessing

    # spawn, never fork: a rayon pool inherited through fork deadlocks
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        for outcome in pool.imap_unordered(_run_point_args, [(p, threads) for p in todo]):
            record(outcome)


def _run_point_args(args: tuple[GridPoint, int]) -> Outcome:
    return run_point(*args)


# --- Dask ------------------------------------------------------------------------------------


def _run_dask(todo: list[GridPoint], settings: RunSettings, record: Callable[[Outcome], None]) -> None:
    distributed = _import_distributed()
    with _quiet_distributed_logs(), _dask_client(distributed, settings) as (client, threads):
        futures = {
            client.submit(run_point, point, threads, key=f"moecover-{key_of(point)}", pure=False): key_of(point)
            for point in todo
        }
        try:
            for future in distributed.as_completed(list(futures)):
                try:
                    outcome = future.result()
                except Exception as error:  # the task never returned: its workers died (KilledWorker), ...
                    outcome = {"key": futures[future], "error": _one_line(error), "detail": repr(error)}
                record(outcome)
        finally:
            # On Ctrl-C (or a store error) nothing more is wanted from the cluster; finished results
            # are already committed.
            client.cancel([f for f in futures if not f.done()])


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError:
        raise MissingDependency('the dask executor needs dask.distributed: pip install "moecover[dask]"') from None
    return distributed


@contextmanager
def _quiet_distributed_logs() -> Iterator[None]:
    """This process's `distributed` loggers at ERROR for the run. A cluster's comms log their
    closing (at INFO, with a traceback) as it shuts down, and a LocalCluster's own `silence_logs`
    is undone by its close() before they are done: on Ctrl-C that reached the user's terminal."""
    log = logging.getLogger("distributed")
    previous = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(previous)


@contextmanager
def _dask_client(distributed: Any, settings: RunSettings) -> Iterator[tuple[Any, int]]:
    """A client of the cluster at `settings.scheduler`, else of a LocalCluster of `settings.jobs`
    worker processes (one per core by default) with one thread each; and the threads per task."""
    cluster = None
    if settings.scheduler is not None:
        try:
            client = distributed.Client(settings.scheduler, timeout=CONNECT_SECONDS)
        except (OSError, TimeoutError, ValueError) as error:
            raise SchedulerUnreachable(
                f"run.scheduler: no Dask scheduler answered at {settings.scheduler!r} within {CONNECT_SECONDS} s "
                f"({_one_line(error)})"
            ) from None
        threads = settings.threads or 1
    else:
        workers = settings.jobs or resolve_threads(None)
        cluster = distributed.LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True,
            dashboard_address=":0",  # its HTTP server on a free port: never a clash with another cluster
            silence_logs=logging.ERROR,  # restarts and cancellations are handled here, not news to the user
        )
        client = distributed.Client(cluster)
        # Ctrl-C at a terminal reaches the whole process group: the driver stops the run, and the
        # workers it started must not each print a KeyboardInterrupt traceback.
        client.register_plugin(_ignore_sigint_plugin(distributed))
        threads = settings.threads or max(1, resolve_threads(None) // workers)
    try:
        _check_worker_versions(client, settings.scheduler)
        yield client, threads
    except BaseException:
        if cluster is not None:
            _kill_workers(cluster)  # a running estimate cannot be cancelled; its result is not wanted
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _ignore_sigint_plugin(distributed: Any) -> Any:
    class IgnoreSigint(distributed.WorkerPlugin):  # type: ignore[misc]
        def setup(self, worker: Any) -> None:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    return IgnoreSigint()


def _kill_workers(cluster: Any) -> None:
    """SIGKILLs the worker processes of a LocalCluster this run started, so that an interrupted
    run ends at once instead of when the estimates in flight finish."""
    for nanny in list(getattr(cluster, "workers", {}).values()):
        pid = getattr(nanny, "pid", None)
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _worker_version() -> str:
    from .. import __version__

    return __version__


def _check_worker_versions(client: Any, scheduler: str | None) -> None:
    """Every worker must run this moecover: a row records the version that computed it. (Workers
    that join later are checked by their tasks' outcomes.)"""
    from .. import __version__

    where = f"the workers at {scheduler!r}" if scheduler else "the local Dask workers"
    try:
        versions = client.run(_worker_version)
    except Exception as error:
        raise ValueError(f"run.scheduler: {where} cannot run moecover ({_one_line(error)})") from None
    other = sorted({v for v in versions.values() if v != __version__})
    if other:
        raise ValueError(f"run.scheduler: {where} run moecover {', '.join(other)}, this process {__version__}")
