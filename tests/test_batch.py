"""Batch runs: config expansion, keys, storage, resume after SIGKILL, SIGINT, show."""

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from interrupts import with_default_sigint

from moecover import batch

TINY = """
[spec]
experts = [2, 3, 4]
top_k = [1, 2]
d_model = 2
expert_hidden = 2

[inputs]
sampler = "box"
n = 6

[estimate]
samples = {samples}
replicates = 1
"""


def write(tmp_path, text, name="grid.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_grid_is_the_cartesian_product_with_stable_distinct_keys(tmp_path):
    points = batch.expand_config(batch.load_config(write(tmp_path, TINY.format(samples=100))))
    assert len(points) == 6
    assert {(p["spec"]["experts"], p["spec"]["top_k"]) for p in points} == {(e, k) for e in (2, 3, 4) for k in (1, 2)}
    keys = [batch.key_of(p) for p in points]
    assert len(set(keys)) == 6
    again = batch.expand_config(batch.load_config(write(tmp_path, TINY.format(samples=100), "again.toml")))
    assert [batch.key_of(p) for p in again] == keys
    # defaults are filled in, so spelling a default out does not change the key
    explicit = TINY.format(samples=100).replace('sampler = "box"', 'sampler = "box"\nseed = 0')
    assert [batch.key_of(p) for p in batch.expand_config(batch.load_config(write(tmp_path, explicit, "e.toml")))] == keys


def test_deltas_sweep_only_as_a_list_of_lists(tmp_path):
    one = batch.expand_config({"spec": {}, "estimate": {"deltas": [1.0, 0.5]}})
    two = batch.expand_config({"spec": {}, "estimate": {"deltas": [[1.0, 0.5], [2.0]]}})
    assert len(one) == 1 and one[0]["estimate"]["deltas"] == [1.0, 0.5]
    assert len(two) == 2


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"spec": {"expertz": 3}}, "spec.expertz"),
        ({"spec": {}, "estimate": {"sample": 3}}, "estimate.sample"),
        ({"spec": {}, "sweep": {}}, "unknown section"),
        ({"spec": {"experts": 2, "top_k": 3}}, "top_k"),
        ({"spec": {}, "inputs": {"sampler": "cube"}}, "inputs.sampler"),
        ({"spec": {}, "inputs": {"radius": 2}}, "inputs.radius"),
        ({"spec": {}, "estimate": {"samples": 0}}, "estimate.samples"),
        ({"spec": {}, "pinned": {"layers.0.router.bias": [1.0]}}, "pinned"),
        ({"spec": {"d_model": 64}, "inputs": {"n": 4096}, "estimate": {"samples": 10**9}}, "estimate.samples"),
        ({"spec": {}, "estimate": {"functional_samples": 0}}, "estimate.functional_samples"),
        ({"dimension": {"dims": 2}}, "dimension.dims"),
        ({"dimension": {"manifold": "torus", "d": 3}}, "dimension.d"),
        ({"dimension": {"beta": 1.2}}, "dimension.beta"),
        ({"dimension": {"n": 10}}, "dimension.n"),
        ({"dimension": {}, "spec": {}}, "beside"),
    ],
)
def test_config_errors_name_the_key(config, key):
    with pytest.raises(batch.ConfigError, match=key.replace(".", r"\.")):
        batch.expand_config(config)


def test_toml_syntax_errors_give_the_line(tmp_path):
    with pytest.raises(batch.ConfigError, match="line 2"):
        batch.load_config(write(tmp_path, "[spec]\nexperts = = 3\n"))


def cli(*args, **kwargs):
    return subprocess.run([sys.executable, "-m", "moecover", *args], capture_output=True, text=True, **kwargs)


def rows_without_timing(db, provenance=True):
    """The stored rows as plain data, without what depends on timing (or the whole provenance)."""
    rows = []
    for row in batch.stored_rows(db):
        result = row.estimate.to_dict()
        result["provenance"] = {k: v for k, v in result["provenance"].items() if k != "seconds" and provenance}
        rows.append((row.key, row.settings, result, row.version))
    return rows


def test_sigkill_mid_grid_then_rerun_equals_an_uninterrupted_run(tmp_path):
    config = write(tmp_path, TINY.format(samples=40_000))
    killed, clean = tmp_path / "killed.db", tmp_path / "clean.db"
    child = subprocess.Popen([sys.executable, "-m", "moecover", "run", str(config), "--db", str(killed), "--quiet"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until some, not all, estimates are stored
        time.sleep(0.2)
        if killed.exists() and 1 <= len(batch.stored_rows(killed)) < 6:
            break
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial = len(batch.stored_rows(killed))
    assert 1 <= partial < 6
    assert cli("run", str(config), "--db", str(killed), "--quiet").returncode == 0
    assert cli("run", str(config), "--db", str(clean), "--quiet").returncode == 0
    assert rows_without_timing(killed) == rows_without_timing(clean)
    assert len({row.key for row in batch.stored_rows(killed)}) == 6


def test_sigint_exits_130_quickly_and_leaves_a_consistent_db(tmp_path):
    config = write(tmp_path, TINY.format(samples=400_000))
    db = tmp_path / "int.db"
    command = [sys.executable, "-m", "moecover", "run", str(config), "--db", str(db), "--quiet"]
    with subprocess.Popen(command, stderr=subprocess.DEVNULL, preexec_fn=with_default_sigint) as child:
        time.sleep(3)
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=30)
        stopped = time.monotonic() - sent
    assert code == 130 and stopped < 2.0
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(batch.stored_rows(db)) < 6


def test_dry_run_and_show(tmp_path):
    config = write(tmp_path, TINY.format(samples=2_000))
    dry = cli("run", str(config), "--dry-run")
    assert dry.returncode == 0 and len(dry.stdout.splitlines()) == 6
    keys = [line.split()[0] for line in dry.stdout.splitlines()]
    assert cli("run", str(config), "--quiet").returncode == 0  # default db: next to the config
    db = config.with_suffix(".db")
    shown = json.loads(cli("show", str(db), "--format", "json").stdout)
    assert sorted(row["key"] for row in shown) == sorted(keys)
    for row in shown:
        assert {"key", "settings", "slope", "slope_interval", "predicted_slopes", "deltas", "net_sizes"} <= set(row)
        assert row["predicted_slopes"]["paper"] > 0
    table = cli("show", str(db))
    assert table.returncode == 0 and all(key in table.stdout for key in keys)
    rerun = cli("run", str(config), "--quiet")
    assert "0 estimate(s) run, 6 already stored" in rerun.stdout


def test_jobs_use_spawned_processes_and_give_the_same_rows(tmp_path):
    config = write(tmp_path, TINY.format(samples=2_000))
    one, two = tmp_path / "one.db", tmp_path / "two.db"
    assert cli("run", str(config), "--db", str(one), "--quiet").returncode == 0
    result = cli("run", str(config), "--db", str(two), "--quiet", "--jobs", "2")
    assert result.returncode == 0, result.stderr
    assert rows_without_timing(one, provenance=False) == rows_without_timing(two, provenance=False)


def test_bad_config_exits_2_and_names_the_key(tmp_path):
    result = cli("run", str(write(tmp_path, "[spec]\nexpertz = 3\n")))
    assert result.returncode == 2 and "spec.expertz" in result.stderr


def test_a_failing_point_is_stored_the_rest_complete_and_a_rerun_repairs_it(tmp_path, monkeypatch, capsys):
    from moecover import _cli
    from moecover.batch import executors

    config = write(tmp_path, TINY.format(samples=500))
    points = batch.expand_config(batch.load_config(config))
    original = executors.estimate_point

    def estimate_point(point, n_threads):
        if (point["spec"]["experts"], point["spec"]["top_k"]) == (3, 2):
            raise MemoryError("a deliberate failure")
        return original(point, n_threads)

    monkeypatch.setattr(executors, "estimate_point", estimate_point)
    assert _cli.main(["run", str(config), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert "5 estimate(s) run, 1 failed, 0 already stored" in out
    assert "failed: MemoryError: a deliberate failure" in err
    db = config.with_suffix(".db")
    [failure] = batch.stored_failures(db)
    assert failure.settings["spec"]["experts"] == 3 and failure.settings["spec"]["top_k"] == 2
    assert len(batch.stored_rows(db)) == 5
    from moecover.report import write_report

    report = write_report(db, tmp_path / "report")
    assert f"Grid point {failure.key} failed and is not shown: MemoryError" in report.markdown.read_text()
    monkeypatch.setattr(executors, "estimate_point", original)
    run = batch.run_grid(points, db, progress=False)
    assert (run.ran, run.skipped, run.failed) == (1, 5, [])
    assert batch.stored_failures(db) == [] and len(batch.stored_rows(db)) == 6


def test_repeated_sweep_values_are_one_point():
    assert len(batch.expand_config({"spec": {"experts": [2, 2, 2], "top_k": [1, 1]}})) == 1


def test_the_dask_executor_without_distributed_says_what_to_install(tmp_path, monkeypatch, capsys):
    from moecover import _cli

    monkeypatch.setitem(sys.modules, "distributed", None)  # `import distributed` raises ImportError
    config = write(tmp_path, TINY.format(samples=500))
    assert _cli.main(["run", str(config), "--quiet", "--executor", "dask"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "moecover[dask]"' in err


@pytest.mark.parametrize("config", sorted((Path(__file__).parents[1] / "examples").glob("*.toml")), ids=lambda p: p.name)
def test_every_example_config_expands(config):
    loaded = batch.load_config(config)
    if "slopes" in loaded:  # the findings study: a file of several grids (tests/test_findings.py)
        from moecover import findings

        points = findings.load_study(config).points
    else:
        points = batch.expand_config(loaded)
    assert points and len({batch.key_of(p) for p in points}) == len(points)


def _open_when_released(path, barrier, results):
    barrier.wait()
    try:
        batch.open_db(path).close()
        results.put("ok")
    except Exception as error:  # reported to the parent, which asserts on it
        results.put(repr(error))


def test_many_processes_opening_one_fresh_database_at_once_all_succeed(tmp_path):
    # switching a fresh file to WAL raced: about 1 open in 80 failed with "database is locked"
    import multiprocessing

    context = multiprocessing.get_context("fork")  # the children touch only SQLite
    failures = []
    for trial in range(10):
        barrier, results = context.Barrier(16), context.Queue()
        children = [context.Process(target=_open_when_released, args=(tmp_path / f"{trial}.db", barrier, results))
                    for _ in range(16)]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=60)
        failures += [o for o in outcomes if o != "ok"]
    assert failures == []


def _small_db(tmp_path):
    config = write(tmp_path, TINY.format(samples=300))
    db = tmp_path / "small.db"
    assert cli("run", str(config), "--db", str(db), "--quiet").returncode == 0
    return config, db


def _one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("moecover: error: "), result.stderr
    assert all(needle in result.stderr for needle in needles), result.stderr


def test_a_damaged_database_is_a_one_line_error_not_a_clean_run(tmp_path):
    config, db = _small_db(tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.execute("PRAGMA page_count").fetchone()[0]
    assert pages >= 3
    data = bytearray(db.read_bytes())
    data[4096 + 100: 4096 + 4096] = bytes(4096 - 100)  # zero most of the second page (a table's b-tree)
    db.write_bytes(bytes(data))
    # once "0 run, 6 already stored" and exit 0
    _one_line_error(cli("run", str(config), "--db", str(db), "--quiet"), str(db), "damaged")
    _one_line_error(cli("show", str(db)), "damaged")


def test_a_database_of_a_newer_layout_or_a_foreign_schema_is_refused(tmp_path):
    config, db = _small_db(tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA user_version = 99")
    _one_line_error(cli("run", str(config), "--db", str(db), "--quiet"), "newer moecover", "layout 99")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as connection:
        connection.execute("CREATE TABLE estimates (id INTEGER, payload BLOB)")
    _one_line_error(cli("run", str(config), "--db", str(foreign), "--quiet"), "not a moecover results database", "payload")


def test_show_and_report_only_read(tmp_path):
    _, db = _small_db(tmp_path)
    with sqlite3.connect(db) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = db.read_bytes()
    assert cli("show", str(db)).returncode == 0
    assert cli("report", str(db), "--out", str(tmp_path / "report")).returncode == 0
    assert db.read_bytes() == before
    missing = tmp_path / "missing.db"
    _one_line_error(cli("show", str(missing)), "no such file")
    assert not missing.exists()  # a read never creates a database


def test_a_damaged_row_is_named_and_recomputed_by_the_next_run(tmp_path):
    config, db = _small_db(tmp_path)
    with sqlite3.connect(db) as connection:
        key, result = connection.execute("SELECT key, result FROM estimates LIMIT 1").fetchone()
        connection.execute("UPDATE estimates SET result = ? WHERE key = ?", (result[: len(result) // 2], key))
    _one_line_error(cli("show", str(db)), key, "damaged")
    rerun = cli("run", str(config), "--db", str(db), "--quiet")
    assert rerun.returncode == 0 and "1 estimate(s) run, 5 already stored" in rerun.stdout
    assert len(batch.stored_rows(db)) == 6


@pytest.mark.parametrize(("setting", "key"), [
    ("seed = -1", "estimate.seed"),
    ("deltas = [1.0, -0.5]", "estimate.deltas"),
    ("saturation_threshold = 2.0", "estimate.saturation_threshold"),
    ('by_routing = "no"', "estimate.by_routing"),
    ('sampler = "gauss"', "estimate.sampler"),
])
def test_dry_run_checks_every_estimate_setting(tmp_path, setting, key):
    # once accepted by --dry-run, failing (or, for by_routing = "no", running with routing on) at run time
    config = write(tmp_path, TINY.format(samples=300) + setting + "\n")
    _one_line_error(cli("run", str(config), "--dry-run"), key)


def test_the_parameter_sampler_sweeps_and_reaches_the_estimate():
    points = batch.expand_config({"spec": {}, "estimate": {"sampler": ["uniform", "faces"], "samples": 300, "replicates": 1}})
    assert [p["estimate"]["sampler"] for p in points] == ["uniform", "faces"]
    assert len({batch.key_of(p) for p in points}) == 2
    default = batch.expand_config({"spec": {}})[0]
    assert default["estimate"]["sampler"] == "faces"
    from moecover.batch.executors import estimate_point

    for point in points:
        result = estimate_point(point, n_threads=1)
        assert result["provenance"]["sampler"] == point["estimate"]["sampler"]


def test_duplicate_deltas_are_one_scale():
    from moecover import MoESpec, estimate_entropy, inputs

    spec = MoESpec(experts=2, d_model=2, expert_hidden=2)
    x = inputs.box(6, d_model=2, rng=0)
    twice = estimate_entropy(spec, x, 300, deltas=[1.0, 0.5, 0.5, 1.0], replicates=1, rng=0)
    once = estimate_entropy(spec, x, 300, deltas=[1.0, 0.5], replicates=1, rng=0)
    assert list(twice.deltas) == [1.0, 0.5] and np.array_equal(twice.net_sizes, once.net_sizes)


@pytest.mark.parametrize("processes", [2, 4])
def test_concurrent_runs_on_one_fresh_database_compute_each_point_once(tmp_path, processes):
    # once every point was computed by every process, and 1 run in 21 died opening the new file
    config = write(tmp_path, TINY.format(samples=200).replace("experts = [2, 3, 4]", "experts = [2, 3]"))
    for round_ in range(20):
        db = tmp_path / f"round{round_}.db"
        command = [sys.executable, "-m", "moecover", "run", str(config), "--db", str(db), "--quiet"]
        children = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                    for _ in range(processes)]
        outputs = [child.communicate(timeout=120) for child in children]
        assert all(child.returncode == 0 for child in children), [err for _, err in outputs]
        ran = sum(int(out.split(" estimate(s) run")[0]) for out, _ in outputs)
        assert ran == 4, [out for out, _ in outputs]  # no point computed twice, none left out
        with sqlite3.connect(db) as connection:
            assert connection.execute("SELECT COUNT(*) FROM estimates").fetchone()[0] == 4
            assert connection.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_a_claim_left_by_a_killed_run_is_taken_over(tmp_path):
    config = write(tmp_path, TINY.format(samples=200))
    db = tmp_path / "stale.db"
    points = batch.expand_config(batch.load_config(config))
    with batch.open_db(db) as connection:
        # a run on this host whose process no longer exists (pid far above any in use)
        connection.execute("INSERT INTO claims VALUES (?, 'gone', ?, ?, ?)",
                           (batch.key_of(points[0]), __import__("socket").gethostname(), 2**22 + 12345, time.time()))
    run = batch.run_grid(points, db, progress=False)
    assert (run.ran, run.busy) == (6, 0)
