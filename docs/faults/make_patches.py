"""Writes docs/faults/*.patch: each a one-line fault and the command that should catch it.

Run from anywhere: python docs/faults/make_patches.py. Each FAULTS entry is (name, file, the exact
text to break, its broken form, what the fault means, the test command). Re-run it when the code
under a patch moves, then docs/faults/inject.sh NAME to check that the fault is still caught."""
import subprocess, pathlib, sys
root = pathlib.Path(__file__).resolve().parents[2]
FAULTS = [
 ("cover-strict-tie", "rust/core/src/cover.rs", "            near &= ga[lane].abs_diff(gb[lane]) <= delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)", "            near &= ga[lane].abs_diff(gb[lane]) < delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) < delta)",
  "ties at exactly δ count as uncovered (MATH.md §3 says ≤ δ covers)",
  "pytest tests/test_cover.py tests/test_properties.py -q -x -p no:randomly"),
 ("cover-strict-tie-rust", "rust/core/src/cover.rs", "            near &= ga[lane].abs_diff(gb[lane]) <= delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)", "            near &= ga[lane].abs_diff(gb[lane]) < delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) < delta)",
  "the same fault, against the Rust property tests alone",
  "cargo test -q -p moecover-core --test properties"),
 ("cover-strict-tie-hypothesis", "rust/core/src/cover.rs", "            near &= ga[lane].abs_diff(gb[lane]) <= delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)", "            near &= ga[lane].abs_diff(gb[lane]) < delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) < delta)",
  "the same fault, against the hypothesis property tests alone",
  "pytest tests/test_properties.py -q -x -p no:randomly"),
 ("cover-strict-tie-fuzz", "rust/core/src/cover.rs", "            near &= ga[lane].abs_diff(gb[lane]) <= delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) <= delta)", "            near &= ga[lane].abs_diff(gb[lane]) < delta;\n        }\n        if !near {\n            return false;\n        }\n    }\n    let (rest_a, rest_b) = (groups_a.remainder(), groups_b.remainder());\n    rest_a.iter().zip(rest_b).all(|(&x, &y)| x.abs_diff(y) < delta)",
  "the same fault, against the cover fuzz target alone (60 s)",
  "cd rust/core && cargo +nightly fuzz run cover -- -max_total_time=60"),
 ("rank-off-by-one", "rust/core/src/routing.rs", "let term = binomial(u64::from(s), i as u64 + 1);", "let term = binomial(u64::from(s), i as u64);",
  "colex rank uses C(s_i, i−1) instead of C(s_i, i)",
  "cargo test -q -p moecover-core"),
 ("gate-not-renormalised", "rust/core/src/model.rs", "                    ws.gates.iter().sum()", "                    1.0",
  "renormalized_softmax gates are left unnormalised",
  "pytest tests/test_evaluate.py -q -x"),
 ("gate-not-renormalised-lanes", "rust/core/src/batch.rs", "                            *total += g;", "                            *total = 1.0;",
  "renormalized_softmax gates are left unnormalised in the SIMD-lane pass only (32 or more inputs)",
  "pytest tests/test_evaluate.py -q -x"),
 ("top-k-ties-to-higher", "rust/core/src/model.rs", "u64::from(carried_score[lane] > place_score[lane])", "u64::from(carried_score[lane] >= place_score[lane])",
  "tied router scores go to the higher expert (MATH.md §1: the lower), in both passes",
  "cargo test -q -p moecover-core"),
 ("sample-index-in-chunk", "rust/core/src/evaluate.rs", "sample_row(*seed, start + s as u64,", "sample_row(*seed, start + i as u64,",
  "evaluate_sampled keys each sample's stream by its position in the chunk, not in the seed",
  "pytest tests/test_evaluate.py -q -x"),
 ("no-signal-check", "rust/py/src/lib.rs", "        let mut check = || match Python::attach(|py| py.check_signals()) {", "        let mut check = || match Ok::<(), PyErr>(()) {",
  "the glue never runs Python's signal handlers during a long call",
  "pytest tests/test_interrupts.py -q -x"),
 ("global-rayon-pool", "rust/core/src/parallel.rs", "        pool.install(|| work(start..end));", "        let _ = pool;\n        work(start..end);",
  "chunks run on rayon's global pool (which outlives calls) instead of the call's own pool",
  "pytest tests/test_fork.py -q -x"),
 ("pattern-singleton-id", "rust/core/src/patterns.rs", "            *g = if sizes[*g as usize] == 1 {\n                next += 1;\n                next - 1", "            *g = if sizes[*g as usize] == 1 {\n                next",
  "a singleton group takes the next id without reserving it (two groups share an id)",
  "cargo test -q -p moecover-core --test properties"),
 ("nan-accepted", "python/moecover/_checks.py", "    if check_finite and not np.isfinite(array).all():", "    if False:",
  "NaN and infinite inputs are passed to the core",
  "pytest tests/test_evaluate.py tests/test_cover.py -q -x"),
 ("cover-nan-unchecked", "rust/core/src/cover.rs", "    values.iter().fold(true, |finite, v| finite & v.is_finite())", "    let _ = values;\n    true",
  "the core never finds the NaN in points it is asked to cover (the Python side leaves that check to it)",
  "pytest tests/test_cover.py -q -x"),
 ("cover-nan-within", "rust/core/src/cover.rs", "            near &= ga[lane].abs_diff(gb[lane]) <= delta;", "            near &= !(ga[lane].abs_diff(gb[lane]) > delta);",
  "the full comparison takes a NaN coordinate as within δ, so a NaN row is covered and never checked (rows are checked only where they open a centre)",
  "pytest tests/test_cover.py -q -x"),
 ("cover-no-rollback", "rust/core/src/cover.rs", "            self.roll_back(before);", "            let _ = before;",
  "a chunk that fails part-way (NaN in a later block, memory limit, Ctrl-C) leaves the blocks before the failure in the nets",
  "pytest tests/test_cover.py -q -x"),
 ("no-memory-check", "python/moecover/_checks.py", "    if nbytes > limit:", "    if False:",
  "sizes beyond physical memory are not refused up front",
  "pytest tests/test_evaluate.py tests/test_inputs.py -q -x"),
 ("commit-at-end", "python/moecover/batch.py", "        )\n        connection.commit()\n        if bar is not None:", "        )\n        if bar is not None:",
  "estimates are committed only when the connection closes (a kill loses all)",
  "pytest tests/test_batch.py -q -x -k sigkill"),
 ("report-wrong-slope", "python/moecover/report.py", '                _fmt(result["slope"]),', '                _fmt(result["slope_interval"][0]),',
  "the report's slope column shows the replicate minimum",
  "pytest tests/test_report.py -q -x"),
 ("replicates-share-a-seed", "python/moecover/_rng.py", "    return [int(child.generate_state(1, dtype=np.uint64)[0]) for child in children]", "    return [int(children[0].generate_state(1, dtype=np.uint64)[0]) for child in children]",
  "every replicate of an estimate uses the same seed (error bars of zero width)",
  "pytest tests/test_estimate.py -q -x"),
]
for name, path, old, new, what, catch in FAULTS:
    text = (root / path).read_text()
    assert text.count(old) == 1, (name, text.count(old))
    (root / path).write_text(text.replace(old, new))
    try:
        diff = subprocess.run(["git", "diff", "--", path], cwd=root, capture_output=True, text=True, check=True).stdout
    finally:
        (root / path).write_text(text)
    (root / "docs/faults" / f"{name}.patch").write_text(f"fault: {what}\ncatch: {catch}\n\n{diff}")
print(len(FAULTS), "patches")
