"""`moecover findings`: the built-in study loads in both sizes, its quick run writes every section
from the stored results (checked here against the database and against closed forms, not against
the report itself), a second run resumes, and the study's errors name what is wrong."""

import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from moecover import batch, findings
from moecover.batch import ConfigError

SECTIONS = (
    "## 1. Does the metric entropy scale with the active parameters?",
    "## 2. How loose is the union bound over routing patterns?",
    "## 3. Definition 3.1's parallel block against the sequential block",
    "## 4. Can d and β be estimated? Checked on toy manifolds",
    "## 5. Learning curves: the exponents, the balance, and M and k at fixed N_eff",
)


def active_params(spec):
    """The paper's N_eff = L_T Π_attn + L_T k Π_exp, written out from definitions §1 (not from
    MoESpec): attention is four d×d matrices per layer, an mlp expert W1 (d×h), b1, W2 (h×d), b2,
    a linear one W (d×d) and b, a constant one c (d)."""
    d, h = spec["d_model"], spec["expert_hidden"]
    expert = {"mlp": 2 * d * h + h + d, "linear": d * d + d, "constant": d}[spec["expert"]]
    attention = 4 * d * d if spec["heads"] > 0 else 0
    return spec["layers"] * (attention + spec["top_k"] * expert)


def tables_under(markdown, heading):
    """Each Markdown table of the section that starts at `heading` (up to the next "## "), as a
    list of {column: cell} rows."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if current is None:
                current = {"header": cells, "rows": []}
            elif not set("".join(cells)) <= set("-"):
                current["rows"].append(dict(zip(current["header"], cells)))
        elif current is not None:
            tables.append(current["rows"])
            current = None
    if current is not None:
        tables.append(current["rows"])
    return tables


def answer_of(markdown, heading, nth=0):
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    return re.findall(r"\*\*Answer\.\*\* (.*)", section)[nth]


#: The full run's report and results, committed (README: "Findings").
COMMITTED = Path(__file__).resolve().parents[1] / "docs" / "findings"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("findings")
    done = subprocess.run([sys.executable, "-m", "moecover", "findings", "--quick", "--out", str(out), "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out, done.stdout


@pytest.fixture(params=["quick run", "committed full run"])
def report(request):
    """(directory, study) of the quick run made here, and of the full run committed under docs/."""
    if request.param == "quick run":
        return request.getfixturevalue("quick_run")[0], findings.load_study(quick=True)
    return COMMITTED, findings.load_study()


def test_the_study_loads_in_both_sizes_with_every_part():
    full, quick = findings.load_study(), findings.load_study(quick=True)
    for study in (full, quick):
        assert {part for part, _ in study.entries.values()} == set(findings.PARTS)
        assert len(study.points) == len(study.entries)
    assert len(quick.points) < len(full.points)
    # entries marked quick = false are left out of the quick run, and only those
    assert {"gates", "torus", "noisy responses"} <= {name for _, name in full.entries.values()}
    assert not {"gates", "torus", "noisy responses"} & {name for _, name in quick.entries.values()}
    # the quick overlay replaces values: the contrast family's samples
    samples = {p["estimate"]["samples"] for k, p in zip(quick.entries, quick.points)
               if quick.entries[k] == ("slopes", "contrast")}
    assert samples == {20000}


@pytest.mark.parametrize("text, needle", [
    ("[[slope]]\nname = 'x'\n", "unknown part(s) ['slope']"),
    ("[[slopes]]\nname = 'a'\n[[slopes]]\nname = 'a'\n", "slopes.name"),
    ("[[slopes]]\nname = 'a'\nquick = 3\n", "quick: expected a table or false"),
    ("[[slopes]]\nname = 'a'\nspec = { experts = 0 }\n", "slopes 'a': spec"),
    ("[[dimension]]\nname = 'd'\nmanifold = 'sphere'\nd = 2\nambient = 2\n", "dimension 'd': dimension.d"),
    ("[[dimension]]\nname = 'd'\nn = 10\n", "dimension.n"),
    ("[[curves]]\nname = 'c'\nerm = { model = 'knn' }\nextra = {}\n", "curves: unknown table(s) ['extra']"),
    ("[estimate]\nsamples = 10\n", "no grid points"),
])
def test_a_bad_study_names_what_is_wrong(tmp_path, text, needle):
    path = tmp_path / "study.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(needle)):
        findings.load_study(path)


def test_a_bad_study_is_one_line_on_the_command_line(tmp_path):
    path = tmp_path / "study.toml"
    path.write_text("[[slopes]]\nname = 'a'\nspec = { experts = 0 }\n")
    done = subprocess.run([sys.executable, "-m", "moecover", "findings", "--study", str(path), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "experts" in done.stderr


def test_every_section_is_written_with_its_pictures(report):
    out, _ = report
    markdown = (out / "findings.md").read_text()
    page = (out / "findings.html").read_text()
    for heading in SECTIONS:
        assert heading in markdown
        assert heading[3:].replace("'", "&#x27;") in page
        assert tables_under(markdown, heading), heading
        assert "**What the numbers cannot say.**" in markdown.split(heading, 1)[1]
    for image in re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", image
        assert f'src="{image}"' in page


def test_the_quick_run_says_what_it_ran(quick_run):
    _, stdout = quick_run
    assert stdout.startswith(f"{len(findings.load_study(quick=True).points)} grid point(s) run, 0 already stored")


def test_the_slopes_table_holds_the_stored_estimates_and_the_papers_count(report):
    out, study = report
    markdown = (out / "findings.md").read_text()
    stored = {row.key: row for row in batch.stored_rows(out / "findings.db")}
    slope_keys = study.keys("slopes")
    (table,) = tables_under(markdown, SECTIONS[0])
    assert len(table) == len(slope_keys)
    rows = [stored[key] for key in slope_keys]
    assert len({row_for(cells, rows).key for cells in table}) == len(rows)  # each stored row once
    for cells in table:
        row = row_for(cells, rows)
        assert int(cells["paper N_eff"]) == active_params(row.settings["spec"])
        assert int(cells["r* (reached / samples)"].split()[0]) == row.estimate.functional_dimension
        assert int(cells["n·o"]) == row.settings["inputs"]["n"] if row.settings["inputs"]["sampler"] != "one_per_expert" \
            else int(cells["n·o"]) == row.settings["spec"]["experts"]
    # the answer's counts, recomputed from the stored rows
    r_star = [r.estimate.functional_dimension for r in rows]
    neff = [active_params(r.settings["spec"]) for r in rows]
    answer = answer_of(markdown, SECTIONS[0])
    above, equal = sum(a > b for a, b in zip(r_star, neff)), sum(a == b for a, b in zip(r_star, neff))
    assert (f"r* exceeds the paper's N_eff in {above}, equals it in {equal} and is below it in "
            f"{len(rows) - above - equal}") in answer


def row_for(cells, rows):
    """The one stored row of the table row's family whose settings the "setting" cell names
    ("experts=4, top_k=2")."""
    def named(row):
        for pair in ([] if cells["setting"] == "—" else cells["setting"].split(", ")):
            key, value = pair.split("=", 1)
            if [str(t[key]) for s, t in row.settings.items() if s != "family" and key in t] != [value]:
                return False
        return True

    (row,) = [r for r in rows if r.settings["family"]["name"] == cells["family"] and named(r)]
    return row


def test_the_union_table_holds_the_stored_counts_and_the_closed_forms(report):
    out, study = report
    markdown = (out / "findings.md").read_text()
    stored = {row.key: row for row in batch.stored_rows(out / "findings.db")}
    rows = [stored[key] for key in study.keys("slopes")]
    (table,) = tables_under(markdown, SECTIONS[1])
    assert len({row_for(cells, rows).key for cells in table}) == len(rows) == len(table)
    for cells in table:
        row = row_for(cells, rows)
        spec = row.settings["spec"]
        routed = spec["layers"] * spec["seq_len"]
        assert int(cells["C(M,k)^{L_T ℓ} per input"].replace(",", "")) == math.comb(spec["experts"], spec["top_k"]) ** routed
        e_m_k = (math.e * spec["experts"] / spec["top_k"]) ** (spec["top_k"] * routed)
        assert float(cells["(eM/k)^{k L_T ℓ} per input"]) == pytest.approx(e_m_k, rel=5e-3)
        assert int(cells["patterns realised (sampled)"].replace(",", "")) == row.estimate.union_bound["patterns_sampled"]
        ratio = np.asarray(row.estimate.union_bound["union_ratio"], float)
        first, last = (float(v) for v in cells["Σ_r N_r / N (coarsest … finest δ)"].split(" … "))
        assert first == pytest.approx(ratio[0], rel=5e-3) and last == pytest.approx(ratio[-1], rel=5e-3)


def test_the_dimension_table_holds_the_stored_estimates(report):
    out, study = report
    markdown = (out / "findings.md").read_text()
    stored = [row for row in batch.stored_dimensions(out / "findings.db") if row.key in study.entries]
    (table,) = tables_under(markdown, SECTIONS[3])
    assert len(table) == len(stored) >= 2
    matched = set()
    for cells in table:
        (row,) = [r for r in stored if str(r.settings["dimension"]["d"]) == cells["d"]
                  and r.settings["dimension"]["manifold"] == cells["manifold"]
                  and f"{r.settings['dimension']['beta']:g}" == cells["β"]
                  and f"{r.settings['dimension']['noise']:g}" == cells["response noise σ"]]
        matched.add(row.key)
        mle, low, high = row.dimension_estimates["mle"]
        assert cells["d̂ MLE"].startswith(f"{mle:.2f} [{low:.2f}, {high:.2f}]")
        assert cells["d̂ MLE"].endswith("✓" if abs(mle - row.settings["dimension"]["d"]) <= 0.3 else "✗")
        beta = row.beta
        assert cells["β̂ [90 %]"].startswith(f"{beta[0]:.2f} [{beta[1]:.2f}, {beta[2]:.2f}]")
        # a clean circle or sphere is within a few tenths: the estimators work at all
        if row.settings["dimension"]["manifold"] == "sphere":
            assert abs(mle - row.settings["dimension"]["d"]) < 0.3
    assert matched == {row.key for row in stored}  # every stored row is in the table, once


def test_the_curves_tables_hold_the_stored_curves_and_the_theorys_exponent(report):
    out, study = report
    markdown = (out / "findings.md").read_text()
    curves = [row for row in batch.stored_curves(out / "findings.db") if row.key in study.entries]
    exponents = tables_under(markdown, SECTIONS[4])[0]
    rate_curves = [c for c in curves if c.settings["erm"]["model"] != "fixed_neff"]
    assert len(exponents) == len(rate_curves) >= 2
    for cells in exponents:
        (curve,) = [c for c in rate_curves if c.settings["erm"]["model"] == cells["model"]
                    and str(c.settings["erm"]["d"]) == cells["d"]]
        d, beta = curve.settings["erm"]["d"], curve.settings["erm"]["beta"]
        assert float(cells["2β/(2β+d)"]) == pytest.approx(2 * beta / (2 * beta + d), abs=5e-4)
        lo, hi = curve.curve.interval
        assert cells["fitted exponent [90 %]"] == f"{curve.curve.exponent:.3f} [{lo:.3f}, {hi:.3f}]"
    balance = tables_under(markdown, SECTIONS[4])[1]
    for cells in balance:
        n = int(cells["n"])
        assert float(cells["theory's N_eff* = n^{d/(2β+d)}"]) == pytest.approx(n ** (1 / (1 + 1.6)), abs=0.05)


def test_a_second_run_resumes_and_writes_the_same_report(quick_run, tmp_path):
    out, _ = quick_run
    before = (out / "findings.md").read_text()
    done = subprocess.run([sys.executable, "-m", "moecover", "findings", "--quick", "--out", str(out), "--quiet"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"0 grid point(s) run, {len(findings.load_study(quick=True).points)} already stored")
    after = (out / "findings.md").read_text()
    # the header says when the grid ran; everything below it is the same
    assert before.split("\n## ", 1)[1] == after.split("\n## ", 1)[1]


def test_a_report_of_a_database_without_the_study_names_what_is_missing(tmp_path):
    study = findings.load_study(quick=True)
    batch.open_db(tmp_path / "empty.db").close()
    with pytest.raises(ValueError, match=rf"db: {len(study.points)} grid point\(s\) of the study are not stored"):
        findings.write_findings(study, tmp_path / "empty.db", tmp_path / "out")


def test_a_dimension_point_stores_what_the_estimators_give(tmp_path):
    from moecover import manifold
    from moecover.targets import RegressionProblem

    (point,) = batch.expand_config({"dimension": {"manifold": "sphere", "d": 1, "ambient": 3, "n": 400, "seed": 3,
                                                  "bootstrap": 20}})
    done = batch.run_grid([point], tmp_path / "d.db", progress=False)
    assert done.ran == 1 and not done.failed
    (row,) = batch.stored_dimensions(tmp_path / "d.db")
    sample = RegressionProblem("sphere", 1, 3, beta=0.5).sample(400, rng=3)
    direct = manifold.intrinsic_dimension(sample.x, subsamples=3, rng=3).estimates
    assert row.dimension_estimates == {m: tuple(map(float, v)) for m, v in direct.items()}
    assert row.beta[0] == manifold.smoothness(sample.x, sample.y, bootstrap=20, rng=3).beta


def test_findings_without_jax_names_the_install_command(tmp_path):
    code = "import sys; sys.modules['jax'] = None; from moecover._cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run([sys.executable, "-c", code, "findings", "--quick", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and 'pip install "moecover[erm]"' in done.stderr
    assert not (tmp_path / "o").exists()


def test_a_failing_point_is_reported_on_stderr_and_no_report_is_written(tmp_path):
    # a d/β point whose estimator raises: too few distinct points for the neighbourhoods asked
    study = tmp_path / "study.toml"
    study.write_text("[[dimension]]\nname = 'd'\nmanifold = 'sphere'\nd = 1\nambient = 2\nn = 100\nbootstrap = 0\n"
                     "subsamples = 0\n[[slopes]]\nname = 's'\nspec = { experts = 2 }\n"
                     "estimate = { samples = 200, replicates = 1, functional_samples = 4 }\n")
    code = ("import sys; from moecover.batch import executors; "
            "executors.dimension_point = lambda point: (_ for _ in ()).throw(ValueError('no neighbours')); "
            "from moecover._cli import main; sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "findings", "--study", str(study), "--out", str(tmp_path / "o"),
                           "--quiet"], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "failed: ValueError: no neighbours" in done.stderr and "no report written" in done.stderr
    assert not (tmp_path / "o" / "findings.md").exists()
    assert len(batch.stored_failures(tmp_path / "o" / "findings.db")) == 1


def test_the_committed_report_is_what_the_code_writes_from_the_committed_results(tmp_path):
    # the report below its header (which says when the grid ran) is a function of the stored rows
    markdown, _, _ = findings.write_findings(findings.load_study(), COMMITTED / "findings.db", tmp_path)
    committed = (COMMITTED / "findings.md").read_text()
    assert markdown.read_text().split("\n## ", 1)[1] == committed.split("\n## ", 1)[1]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(p.name for p in COMMITTED.glob("*.png"))
