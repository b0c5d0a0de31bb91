"""The faults injected to check that the tests notice them, in one place, applied at test time.

Each fault is an exact piece of the current code, its broken form, what the break means, and the
test command that must fail with it in place (docs/reliability.md lists what each one found).

    python docs/faults/faults.py --check          every fault's text is in the code exactly once
    python docs/faults/faults.py NAME [NAME ...]  inject each into a scratch worktree of HEAD, build
                                                  it, run its test command: exit 0 if all were caught
    python docs/faults/faults.py --all            every fault (about 20 minutes on 2 cores)
    python docs/faults/faults.py --list           the names and what each breaks

`tests/test_faults.py` runs the check, so a change that moves a fault's code fails a test instead
of leaving a fault that no longer applies.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Fault:
    name: str
    path: str
    text: str
    broken: str
    means: str
    catch: str


WITHIN = (
    "            near &= ga[lane].abs_diff(gb[lane]) <= delta;\n        }\n        if !near {\n            return false;\n"
    "        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n"
    "    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)"
)
STRICT_WITHIN = WITHIN.replace("<= delta", "< delta")

FAULTS = [
    Fault("cover-strict-tie", "rust/core/src/cover/sketch.rs", WITHIN, STRICT_WITHIN,
          "ties at exactly δ count as uncovered (definitions §3: a distance of δ covers)",
          "pytest tests/test_cover.py tests/test_properties.py -q -x -p no:randomly"),
    Fault("cover-strict-tie-rust", "rust/core/src/cover/sketch.rs", WITHIN, STRICT_WITHIN,
          "the same fault, against the Rust property tests alone",
          "cargo test -q -p moecover-core --test properties"),
    Fault("cover-strict-tie-hypothesis", "rust/core/src/cover/sketch.rs", WITHIN, STRICT_WITHIN,
          "the same fault, against the hypothesis property tests alone",
          "pytest tests/test_properties.py -q -x -p no:randomly"),
    Fault("cover-strict-tie-fuzz", "rust/core/src/cover/sketch.rs", WITHIN, STRICT_WITHIN,
          "the same fault, against the cover fuzz target alone (60 s)",
          "cd rust/core && cargo +nightly fuzz run cover -- -max_total_time=60"),
    Fault("rank-off-by-one", "rust/core/src/routing.rs",
          "let term = binomial(u64::from(s), i as u64 + 1);", "let term = binomial(u64::from(s), i as u64);",
          "colex rank uses C(s_i, i−1) instead of C(s_i, i)",
          "cargo test -q -p moecover-core"),
    Fault("gate-not-renormalised", "rust/core/src/forward/mod.rs",
          "                        *total += g;", "                        *total = 1.0;",
          "renormalized_softmax gates are left unnormalised (in both passes, which share the gate code)",
          "pytest tests/test_evaluate.py -q -x"),
    Fault("top-k-ties-to-higher", "rust/core/src/forward/mod.rs",
          "u64::from(carried_score[lane] > place_score[lane])", "u64::from(carried_score[lane] >= place_score[lane])",
          "tied router scores go to the higher expert (definitions §1: the lower), in both passes",
          "cargo test -q -p moecover-core"),
    Fault("sample-index-in-chunk", "rust/core/src/evaluate.rs",
          "sample_row(*seed, start + s as u64,", "sample_row(*seed, start + i as u64,",
          "evaluate_sampled keys each sample's stream by its position in the chunk, not in the seed",
          "pytest tests/test_evaluate.py -q -x"),
    Fault("no-signal-check", "rust/py/src/lib.rs",
          "        let mut check = || match Python::attach(|py| py.check_signals()) {",
          "        let mut check = || match Ok::<(), PyErr>(()) {",
          "the glue never runs Python's signal handlers during a long call",
          "pytest tests/test_interrupts.py -q -x"),
    Fault("global-rayon-pool", "rust/core/src/parallel.rs",
          "        pool.install(|| work(start..end));", "        let _ = pool;\n        work(start..end);",
          "chunks run on rayon's global pool (which outlives calls) instead of the call's own pool",
          "pytest tests/test_fork.py -q -x"),
    Fault("pattern-singleton-id", "rust/core/src/patterns.rs",
          "            *g = if sizes[*g as usize] == 1 {\n                next += 1;\n                next - 1",
          "            *g = if sizes[*g as usize] == 1 {\n                next",
          "a singleton group takes the next id without reserving it (two groups share an id)",
          "cargo test -q -p moecover-core --test properties"),
    Fault("nan-accepted", "python/moecover/_checks.py",
          "    if check_finite and not all_finite(array):", "    if False:",
          "NaN and infinite inputs are passed to the core",
          "pytest tests/test_evaluate.py tests/test_cover.py -q -x"),
    Fault("cover-nan-unchecked", "rust/core/src/cover/sketch.rs",
          "    values.iter().fold(true, |finite, v| finite & v.is_finite())", "    let _ = values;\n    true",
          "the core never finds the NaN in points it is asked to cover (the Python side leaves that check to it)",
          "pytest tests/test_cover.py -q -x"),
    Fault("cover-nan-within", "rust/core/src/cover/sketch.rs",
          "            near &= ga[lane].abs_diff(gb[lane]) <= delta;",
          "            near &= !(ga[lane].abs_diff(gb[lane]) > delta);",
          "the full comparison takes a NaN coordinate as within δ, so a NaN row is covered and never checked",
          "pytest tests/test_cover.py -q -x"),
    Fault("cover-no-rollback", "rust/core/src/cover/stream.rs",
          "            self.roll_back(before);\n        }\n        result", "            let _ = before;\n        }\n        result",
          "a chunk that fails part-way (NaN in a later block, memory limit, Ctrl-C) leaves its first blocks in the nets",
          "pytest tests/test_cover.py -q -x"),
    Fault("no-memory-check", "python/moecover/_checks.py",
          "    if nbytes > limit:", "    if False:",
          "sizes beyond physical memory are not refused up front",
          "pytest tests/test_evaluate.py tests/test_inputs.py -q -x"),
    Fault("commit-at-end", "python/moecover/batch/store.py",
          '    with connection:\n        connection.execute(\n            f"INSERT OR REPLACE INTO {table}',
          '    if True:\n        connection.execute(\n            f"INSERT OR REPLACE INTO {table}',
          "estimates are committed only when the connection closes (a kill loses all)",
          "pytest tests/test_batch.py -q -x -k sigkill"),
    Fault("failure-not-stored", "python/moecover/batch/executors.py",
          'store_failure(self.connection, key, self.points[key], outcome["error"], outcome["detail"])',
          "None",
          "a grid point that raised is reported but its error is not stored with it",
          "pytest tests/test_batch.py tests/test_dask.py -q -x -k failing"),
    Fault("erm-gates-unnormalised", "python/moecover/erm.py",
          "        gates = jax.nn.softmax(shifted, axis=-1) * mask",
          "        gates = jnp.exp(shifted) * mask",
          "the JAX model's renormalized softmax gates left unnormalised",
          "pytest tests/test_erm.py -q -x -k equals_evaluate"),
    Fault("excess-risk-against-noisy-values", "python/moecover/manifold.py",
          "            reference = y[test] if truth is None else truth[test]",
          "            reference = y[test]",
          "a learning curve given the noiseless targets still measures its risk against the noisy values",
          "pytest tests/test_manifold.py -q -x -k learning_curve"),
    Fault("claims-ignored", "python/moecover/batch/store.py",
          "        taken: list[str] = []\n        with _immediate(self.connection):",
          "        return list(keys)\n        taken: list[str] = []\n        with _immediate(self.connection):",
          "concurrent runs on one database each compute every point",
          "pytest tests/test_batch.py -q -x -k concurrent"),
    Fault("report-wrong-data-dependent", "python/moecover/report.py",
          '            str(predicted["paper"]), str(predicted["data_dependent"]), str(predicted["parametric"]), _ratio_cell(e),',
          '            str(predicted["paper"]), str(predicted["paper"]), str(predicted["parametric"]), _ratio_cell(e),',
          "the report's data-dependent column shows the paper's N_eff",
          "pytest tests/test_report.py -q -x"),
    Fault("data-dependent-first-pattern", "python/moecover/estimate.py",
          "    best = int(np.argmax(used))",
          "    best = 0",
          "the data-dependent slope is the parameters of the first realised pattern, not the most any uses",
          "pytest tests/test_estimate.py -q -x -k union_bound"),
    Fault("extrapolation-without-window", "python/moecover/_fit.py",
          "    for window in (index[1:], index[:-1]):\n        candidates.append(",
          "    for window in ():\n        candidates.append(",
          "the extrapolated slope's interval ignores the fit's window (too narrow on known truths)",
          "pytest tests/test_estimate.py -q -x -k \"known_dimensions or exclusion_model\""),
    Fault("findings-neff-from-data", "python/moecover/findings.py",
          '                name, _setting_label(row.settings, varying), str(p["parametric"]), str(p["paper"]), str(p["data_dependent"]),',
          '                name, _setting_label(row.settings, varying), str(p["parametric"]), str(p["data_dependent"]), str(p["data_dependent"]),',
          "the findings' N_eff column shows the data-dependent count",
          "pytest tests/test_findings.py -q -x -k slopes_table"),
    Fault("findings-dimension-wrong-entry", "python/moecover/findings.py",
          "    for name, rows in grouped.items():\n        for row in rows:\n            s = row.settings[\"dimension\"]",
          "    for name, rows in grouped.items():\n        for row in rows[:1] * len(rows):\n            s = row.settings[\"dimension\"]",
          "the d/β table repeats an entry's first row for every row",
          "pytest tests/test_findings.py -q -x -k dimension_table"),
    Fault("explore-clips-pins", "python/moecover/_explore.py",
          "    steps[:, free] = np.clip(steps[:, free] + scale * moves.standard_normal((len(steps), width)), -bound, bound)",
          "    steps[:, free] += scale * moves.standard_normal((len(steps), width))\n    steps = np.clip(steps, -bound, bound)",
          "the search's steps clip pinned values to the box too, so pins outside it move",
          "pytest tests/test_explore.py -q -x"),
    Fault("faces-one-sign", "rust/core/src/sampling.rs",
          "                    if u < 0.5 * rate {\n                        -bound\n",
          "                    if u < 0.5 * rate {\n                        bound\n",
          "the face sampler puts every face coordinate on +B, never on −B",
          "pytest tests/test_evaluate.py -q -x -k face"),
    Fault("singletons-not-rolled-back", "rust/core/src/cover/scale.rs",
          "        for &centre in &self.shared_since_mark {",
          "        for &centre in self.shared_since_mark.iter().take(0) {",
          "a chunk that fails leaves the centres it joined counted as shared (f1 too small)",
          "cargo test -q -p moecover-core --lib cover"),
    Fault("rarefaction-last-doubling-only", "python/moecover/_cover.py",
          "    budgets = np.array([m // 4, m // 2, m], dtype=float)",
          "    budgets = np.array([m // 2, m // 2, m], dtype=float)",
          "γ(δ) from a degenerate budget grid (m/2 twice): the slope is of the wrong points",
          "pytest tests/test_explore.py -q -x -k rarefaction"),
    Fault("replicates-share-a-seed", "python/moecover/_rng.py",
          "    return [int(child.generate_state(1, dtype=np.uint64)[0]) for child in children]",
          "    return [int(children[0].generate_state(1, dtype=np.uint64)[0]) for child in children]",
          "every replicate of an estimate uses the same seed (error bars of zero width)",
          "pytest tests/test_estimate.py -q -x"),
]
BY_NAME = {fault.name: fault for fault in FAULTS}


def misplaced(root: Path = ROOT) -> list[str]:
    """The faults whose text is not in their file exactly once (they would not apply)."""
    wrong = []
    for fault in FAULTS:
        count = (root / fault.path).read_text(encoding="utf-8").count(fault.text)
        if count != 1:
            wrong.append(f"{fault.name}: its text occurs {count} times in {fault.path}")
    return wrong


def inject(fault: Fault) -> bool:
    """Applies `fault` to a scratch worktree of HEAD, builds it, runs its test command; True if the
    tests failed (the fault was caught)."""
    work = Path(os.environ.get("MOECOVER_FAULT_DIR", Path(tempfile.gettempdir()) / "moecover-fault"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work)], capture_output=True)
    shutil.rmtree(work, ignore_errors=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "prune"], check=True)
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--quiet", "--detach", str(work), "HEAD"], check=True)
    try:
        target = work / fault.path
        text = target.read_text(encoding="utf-8")
        if text.count(fault.text) != 1:
            raise SystemExit(f"{fault.name}: its text is not in HEAD's {fault.path} exactly once")
        target.write_text(text.replace(fault.text, fault.broken), encoding="utf-8")
        env = dict(os.environ)
        # a fixed target directory, so that each build is incremental
        env.setdefault("CARGO_TARGET_DIR", str(Path(tempfile.gettempdir()) / "moecover-fault-target"))
        if fault.catch.startswith("pytest"):
            venv = Path(env["CARGO_TARGET_DIR"]) / "venv"
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
            env["VIRTUAL_ENV"] = str(venv)
            subprocess.run(["pip", "install", "--quiet", "maturin"], env=env, check=True)
            # a quicker release build than the shipped one (no LTO); the tests do not depend on it. The
            # [test] extra brings what every test needs (JAX, scikit-dimension, ...), so that a test fails
            # because of the fault and not because a package is missing.
            build = dict(env, CARGO_PROFILE_RELEASE_LTO="false", CARGO_PROFILE_RELEASE_CODEGEN_UNITS="16")
            subprocess.run(["maturin", "develop", "--release", "--quiet", "--extras", "test"], cwd=work, env=build,
                           check=True, capture_output=True)
        print(f"== fault {fault.name}: {fault.means}\n== running: {fault.catch}", flush=True)
        passed = subprocess.run(fault.catch, shell=True, cwd=work, env=env).returncode == 0
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work)], capture_output=True)
    print(f"== {'MISSED: the tests pass with' if passed else 'CAUGHT:'} fault {fault.name}", flush=True)
    return not passed


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="faults to inject (see --list)")
    parser.add_argument("--all", action="store_true", help="inject every fault")
    parser.add_argument("--check", action="store_true", help="check that every fault applies to the working tree")
    parser.add_argument("--list", action="store_true", help="list the faults")
    args = parser.parse_args()
    if args.list:
        for fault in FAULTS:
            print(f"{fault.name:28} {fault.means}")
        return 0
    if args.check:
        wrong = misplaced()
        print("\n".join(wrong) or f"all {len(FAULTS)} faults apply")
        return 1 if wrong else 0
    unknown = [name for name in args.names if name not in BY_NAME]
    if unknown or not (args.names or args.all):
        parser.error(f"unknown fault(s) {unknown}" if unknown else "name a fault, or --all")
    chosen = FAULTS if args.all else [BY_NAME[name] for name in args.names]
    missed = [fault.name for fault in chosen if not inject(fault)]
    if missed:
        print(f"missed: {', '.join(missed)}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
