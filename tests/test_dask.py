"""Grids on a Dask cluster (`moecover run --executor dask`): the same rows as a local run, a worker
killed mid-run, an unreachable scheduler, a point that raises, Ctrl-C on the driver.

The cluster here is a `distributed.LocalCluster` of processes (2 workers x 1 thread), the
executor's own when no scheduler is given, and one started by the test (reached by its address,
as a remote cluster would be) where the test must reach into the workers."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import distributed
import pytest
from interrupts import with_default_sigint

from moecover import batch

#: Four points of about a second each at one thread: long enough to kill a worker inside one.
SLOW = """
[spec]
experts = [2, 3, 4, 5]
d_model = 2
expert_hidden = 2

[inputs]
n = 6

[estimate]
samples = {samples}
replicates = 1
"""

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "examples", "quickstart.toml")


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "moecover", *args], capture_output=True, text=True, **kwargs)


def comparable(db):
    """The stored rows without what depends on timing or on the thread count."""
    rows = {}
    for row in batch.stored_rows(db):
        result = row.estimate.to_dict()
        result["provenance"] = {k: v for k, v in result["provenance"].items() if k not in ("seconds", "n_threads")}
        rows[row.key] = (row.settings, result, row.version)
    return rows


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=40
    ) as local, distributed.Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def slow_grid(tmp_path_factory):
    """A config of four slow points and its rows from a plain local run (the reference)."""
    folder = tmp_path_factory.mktemp("slow")
    config = folder / "slow.toml"
    config.write_text(SLOW.format(samples=150_000))
    reference = folder / "local.db"
    batch.run_grid(batch.expand_config(batch.load_config(config)), reference, progress=False)
    return config, comparable(reference)


def test_quickstart_on_the_executors_own_cluster_equals_the_local_run(tmp_path):
    local, dask = tmp_path / "local.db", tmp_path / "dask.db"
    assert cli("run", QUICKSTART, "--db", str(local), "--quiet").returncode == 0
    result = cli("run", QUICKSTART, "--db", str(dask), "--quiet", "--executor", "dask", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    rows = comparable(dask)
    assert len(rows) == 7 and rows == comparable(local)
    again = cli("run", QUICKSTART, "--db", str(dask), "--quiet", "--executor", "dask", "--jobs", "2")
    assert "0 estimate(s) run, 7 already stored" in again.stdout


def test_a_config_run_section_selects_dask(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(SLOW.format(samples=2_000) + '\n[run]\nexecutor = "dask"\njobs = 2\n')
    points = batch.expand_config(batch.load_config(config))
    assert batch.run_settings(batch.load_config(config)) == batch.RunSettings("dask", None, 2, None)
    # how a grid runs is not what it is: the keys are those of the config without [run]
    plain = tmp_path / "plain.toml"
    plain.write_text(SLOW.format(samples=2_000))
    assert [batch.key_of(p) for p in points] == [batch.key_of(p) for p in batch.expand_config(batch.load_config(plain))]
    result = cli("run", str(config), "--quiet")
    assert result.returncode == 0, result.stderr
    assert len(batch.stored_rows(config.with_suffix(".db"))) == 4


def test_a_worker_killed_mid_run_reruns_its_point_elsewhere(tmp_path, cluster, slow_grid):
    local, client = cluster
    config, reference = slow_grid
    db = tmp_path / "dask.db"
    outcome = {}

    def drive():
        points = batch.expand_config(batch.load_config(config))
        try:
            outcome["run"] = batch.run_grid(points, db, scheduler=local.scheduler_address, progress=False)
        except Exception as error:  # reported by the assertions below, not lost in the thread
            outcome["error"] = error

    driver = threading.Thread(target=drive)
    driver.start()
    deadline = time.monotonic() + 60
    busy = []
    while time.monotonic() < deadline and not busy and driver.is_alive():  # a worker in the middle of a point
        time.sleep(0.1)
        busy = [address for address, tasks in client.processing().items() if tasks]
    assert busy, f"no task ever started: {outcome}"
    time.sleep(0.3)
    pids = client.run(os.getpid)
    os.kill(pids[busy[0]], signal.SIGKILL)
    driver.join(timeout=120)
    assert not driver.is_alive()
    run = outcome["run"]
    assert (run.ran, run.failed) == (4, [])
    assert comparable(db) == reference
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT COUNT(*) FROM estimates").fetchone()[0] == 4
    client.wait_for_workers(2, timeout=30)  # the nanny restarted the killed one


def test_a_failing_point_is_stored_and_the_rest_complete(tmp_path, cluster, slow_grid):
    local, client = cluster
    config, reference = slow_grid
    db = tmp_path / "dask.db"
    points = batch.expand_config(batch.load_config(config))
    bad = next(p for p in points if p["spec"]["experts"] == 3)

    def break_point_with_three_experts():
        from moecover.batch import executors

        if not hasattr(executors, "_original_estimate_point"):
            executors._original_estimate_point = executors.estimate_point

        def estimate_point(point, n_threads):
            if point["spec"]["experts"] == 3:
                raise RuntimeError("a deliberate failure")
            return executors._original_estimate_point(point, n_threads)

        executors.estimate_point = estimate_point

    def repair():
        from moecover.batch import executors

        executors.estimate_point = executors._original_estimate_point

    client.run(break_point_with_three_experts)
    try:
        run = batch.run_grid(points, db, scheduler=local.scheduler_address, progress=False)
        shown = cli("show", str(db))
    finally:
        client.run(repair)
    assert run.ran == 3 and run.failed == [(batch.key_of(bad), "RuntimeError: a deliberate failure")]
    failures = batch.stored_failures(db)
    assert [f.key for f in failures] == [batch.key_of(bad)]
    assert "a deliberate failure" in failures[0].detail and failures[0].settings == bad
    assert f"{batch.key_of(bad)}" in shown.stdout and "failed: RuntimeError" in shown.stdout
    # the next run computes only the failed point, and clears its failure
    again = batch.run_grid(points, db, scheduler=local.scheduler_address, progress=False)
    assert (again.ran, again.skipped, again.failed) == (1, 3, [])
    assert batch.stored_failures(db) == [] and comparable(db) == reference


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_scheduler_is_a_one_line_error_within_seconds(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(SLOW.format(samples=2_000))
    address = f"tcp://127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = cli("run", str(config), "--scheduler", address)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("moecover: error: run.scheduler")
    assert address in result.stderr
    assert elapsed < 20
    assert batch.stored_rows(config.with_suffix(".db")) == []


def test_sigint_on_the_driver_cancels_the_rest_keeps_what_finished(tmp_path):
    config = tmp_path / "grid.toml"
    config.write_text(SLOW.format(samples=3_000_000))
    db = tmp_path / "int.db"
    command = [sys.executable, "-m", "moecover", "run", str(config), "--db", str(db), "--quiet", "--executor", "dask",
               "--jobs", "2"]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=with_default_sigint) as child:
        time.sleep(8)  # the cluster up and the first points running
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=30)
        stopped = time.monotonic() - sent
        stderr = child.stderr.read()
    assert code == 130 and stopped < 2.0, stderr
    assert stderr == "moecover: interrupted\n"
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(batch.stored_rows(db)) < 4


def test_bad_run_settings_name_the_setting():
    with pytest.raises(batch.ConfigError, match=r"run\.executor"):
        batch.run_settings({"run": {"executor": "slurm"}})
    with pytest.raises(batch.ConfigError, match=r"run\.jobs"):
        batch.run_settings({}, jobs=0)
    with pytest.raises(batch.ConfigError, match=r"run\.scheduler"):
        batch.run_settings({"run": {"executor": "local", "scheduler": "tcp://h:1"}})
    with pytest.raises(batch.ConfigError, match=r"run\.threads"):
        batch.run_settings({"run": {"threads": True}})
    with pytest.raises(batch.ConfigError, match=r"run\.colour"):
        batch.run_settings({"run": {"colour": 1}})
    assert batch.run_settings({"run": {"scheduler": "tcp://h:1"}}).executor == "dask"


def test_the_run_section_in_the_docs_is_valid(tmp_path):
    import re

    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "clusters.md"), encoding="utf-8") as page:
        text = page.read()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.S) if "[run]" in b]
    (tmp_path / "run.toml").write_text(block)
    assert batch.run_settings(batch.load_config(tmp_path / "run.toml")) == batch.RunSettings("dask", "tcp://head:8786", None, 1)


def test_workers_of_another_version_are_refused_before_any_task(tmp_path, cluster, slow_grid):
    local, client = cluster
    config, _ = slow_grid

    def pretend_another_version(version):
        import moecover

        moecover._true_version = getattr(moecover, "_true_version", moecover.__version__)
        moecover.__version__ = version or moecover._true_version

    client.run(pretend_another_version, "0.0.0-other")
    try:
        with pytest.raises(ValueError, match=r"run moecover 0\.0\.0-other"):
            batch.run_grid(batch.expand_config(batch.load_config(config)), tmp_path / "x.db",
                           scheduler=local.scheduler_address, progress=False)
    finally:
        client.run(pretend_another_version, None)
    assert batch.stored_rows(tmp_path / "x.db") == []


def test_an_outcome_from_another_version_is_stored_as_failed(tmp_path):
    from moecover.batch import executors
    from moecover.batch.store import open_db

    point = batch.expand_config({"spec": {}})[0]
    key = batch.key_of(point)
    connection = open_db(tmp_path / "v.db")
    recorder = executors._Recorder(connection, {key: point}, None)
    recorder.record({"key": key, "version": "0.0.0-other", "result": {}})
    connection.close()
    assert recorder.ran == 0 and "computed by moecover 0.0.0-other" in recorder.failed[0][1]
    assert [f.key for f in batch.stored_failures(tmp_path / "v.db")] == [key]
