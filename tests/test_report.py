"""`moecover report`: the table agrees with the stored rows, every plot is a PNG."""

import re
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from moecover import MoESpec, batch
from moecover.report import write_report

pytest.importorskip("matplotlib")

GRID = """
[spec]
experts = [3, 2]
top_k = [1, 2]
d_model = 2
expert_hidden = 2

[inputs]
sampler = "box"
n = 5
seed = [0, 1]

[estimate]
samples = 1500
replicates = 2
"""

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    directory = tmp_path_factory.mktemp("report")
    config = directory / "grid.toml"
    config.write_text(GRID)
    path = directory / "grid.db"
    assert batch.run_grid(batch.expand_config(batch.load_config(config)), path, progress=False).ran == 8
    return path


@pytest.fixture(scope="module")
def report(db, tmp_path_factory):
    return write_report(db, tmp_path_factory.mktemp("out"))


def markdown_table(text, first_header="grid point"):
    """The Markdown table of `text` whose header starts with `first_header`: header and rows."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header}"))
    cells = []
    for line in lines[start:]:
        if not line.startswith("| "):
            break
        cells.append([c.strip() for c in line.strip("|").split(" | ")])
    header, separator = cells[0], cells[1]
    assert set(separator) == {"---"}
    return header, cells[2:]


def independent_n_eff(spec: MoESpec) -> int:
    """definitions §5: N_eff = L·Π_attn + L·k·Π_exp, from the layout (attention blocks + one expert)."""
    attention = sum(b.size for b in spec.layout if b.kind == "attn")
    one_expert = sum(b.size for b in spec.layout if b.kind == "experts" and b.expert == 0)
    router = sum(b.size for b in spec.layout if b.kind == "router")
    assert attention + router + spec.layers * spec.experts * one_expert <= spec.total_params
    return attention + spec.layers * spec.top_k * one_expert


def most_used_by_sampling_again(row) -> int:
    """The data-dependent count recomputed from the routes of the stored seed's samples: the largest
    `theory.used_params` over the distinct dataset-wide patterns (definitions §4)."""
    from moecover import evaluate_sampled, theory
    from moecover.batch.config import make_inputs, make_pinned

    spec, estimate = row.spec, row.estimate
    x = make_inputs(row.settings, spec)
    out = evaluate_sampled(spec, x, estimate.provenance["samples"], rng=estimate.provenance["replicate_seeds"][0],
                           pinned=make_pinned(row.settings, spec) or None, sampler=estimate.provenance["sampler"])
    patterns = np.unique(out.routes.reshape(len(out.routes), -1), axis=0)
    shape = out.routes.shape[1:]
    return max(theory.used_params(spec, p.reshape(shape), estimate.provenance["pinned"]) for p in patterns)


def test_table_matches_the_stored_rows(db, report):
    stored = batch.stored_rows(db)
    header, body = markdown_table(report.markdown.read_text(encoding="utf-8"))
    assert header == report.header
    assert len(body) == len(stored) == 8
    column = {name: header.index(name) for name in header}
    for cells, row in zip(body, stored):  # grid order
        spec, estimate = MoESpec(**row.settings["spec"]), row.estimate
        # rows named by what varies (experts, top_k and the inputs' seed), not by a hash
        assert cells[0] == f"experts={spec.experts}, top_k={spec.top_k}, seed={row.settings['inputs']['seed']}"
        assert cells[column["regime"]] in ("sample-limited", "pre-asymptotic", "asymptotic")
        assert cells[column["regime"]].replace("-", "_") == estimate.regime
        r_star, ambient = re.fullmatch(r"(\d+) \((\d+)\)", cells[column["r* (n·o)"]]).groups()
        assert int(ambient) == 5 and 0 < int(r_star) <= 5 and int(r_star) == estimate.functional_dimension
        assert int(cells[column["paper N_eff"]]) == independent_n_eff(spec)
        assert int(cells[column["parametric (free)"]]) == spec.total_params
        assert int(cells[column["data-dependent (max over patterns)"]]) == most_used_by_sampling_again(row)
        if estimate.regime != "asymptotic":
            assert cells[column["extrapolated / r* (asymptotic only)"]] == "—"
        if estimate.regime == "sample_limited":
            assert cells[column["extrapolated slope [interval]"]] == "—"
    # rows read along the grid: experts ascending first, although the config lists 3 before 2
    experts = [int(re.match(r"experts=(\d+)", cells[0]).group(1)) for cells in body]
    assert experts == sorted(experts)


def test_settings_are_stated_once_and_the_summary_counts_the_regimes(db, report):
    text = report.markdown.read_text(encoding="utf-8")
    assert "`spec.d_model = 2`" in text and "`estimate.samples = 1500`" in text
    regimes = [row.estimate.regime for row in batch.stored_rows(db)]
    assert report.summary[0].startswith(
        f"Of 8 estimate(s), {regimes.count('asymptotic')} are asymptotic, {regimes.count('pre_asymptotic')} "
        f"pre-asymptotic and {regimes.count('sample_limited')} sample-limited")
    if "asymptotic" not in regimes:
        assert "No estimate is asymptotic, so no measured/predicted ratio is shown" in text


def test_union_bound_table_has_no_missing_figure(db, report):
    header, body = markdown_table(report.markdown.read_text(encoding="utf-8"), "grid point | dataset-wide")
    assert header == report.union_header and len(body) == 8
    for cells, row in zip(body, batch.stored_rows(db)):
        table = row.estimate.union_bound
        assert "n/a" not in cells[1:3] + cells[5:]  # sampled and exact counts, ratios, overheads
        assert int(cells[1].replace(",", "")) == table["patterns_sampled"]
        assert float(cells[4]) == pytest.approx(table["paper_routing_term"], abs=5e-3)


class _Tables(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.images, self._table, self._cell = [], [], None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = attrs.get("id")
        elif tag == "tr" and self._table == "estimates":
            self.rows.append([])
        elif tag == "td" and self._table == "estimates":
            self._cell = True
        elif tag == "img":
            self.images.append(attrs["src"])

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = False
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell:
            self.rows[-1].append(data)


def test_html_holds_the_same_table_and_every_plot(db, report):
    parser = _Tables()
    parser.feed(report.html.read_text(encoding="utf-8"))
    assert parser.rows[1:] == report.rows  # row 0 is the header (th cells, no data collected)
    expected = {p.name for p in report.point_plots.values()} | {p.name for p in report.sweep_plots.values()}
    assert set(parser.images) == expected


def test_every_plot_is_a_png(db, report):
    plots = list(report.point_plots.values()) + list(report.sweep_plots.values())
    # one sweep per spec setting that varies; N_eff moves with top_k alone here: the same picture
    assert set(report.sweep_plots) == {"experts", "top_k"}
    assert len(plots) == 8 + 2
    assert set(report.point_plots) == {row.key for row in batch.stored_rows(db)}
    for path in plots:
        with open(path, "rb") as handle:
            assert handle.read(8) == PNG_MAGIC, path


def test_cli_report_and_its_errors(db, tmp_path):
    out = tmp_path / "cli"
    done = subprocess.run([sys.executable, "-m", "moecover", "report", str(db), "--out", str(out)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (out / "report.md").exists() and (out / "report.html").exists()
    missing = subprocess.run([sys.executable, "-m", "moecover", "report", str(tmp_path / "none.db"), "--out",
                              str(out)], capture_output=True, text=True)
    assert missing.returncode == 2 and "db" in missing.stderr
    assert not (tmp_path / "none.db").exists()  # reporting never creates a database
    empty = tmp_path / "empty.db"
    batch.open_db(empty).close()
    nothing = subprocess.run([sys.executable, "-m", "moecover", "report", str(empty), "--out", str(out)],
                             capture_output=True, text=True)
    assert nothing.returncode == 2 and "no estimates" in nothing.stderr


def test_the_quickstart_report_says_what_each_row_measured(tmp_path):
    """The README's main job at smaller budgets: every row has a regime, r* and the data-dependent
    count recomputed from its samples' routes; the union table has every figure; the contrast
    family is resolved and the realistic one is not."""
    from pathlib import Path

    config = batch.load_config(Path(__file__).parents[1] / "examples" / "quickstart.toml")
    for family, samples in zip(config["grid"], (20_000, 3_000)):
        family["estimate"]["samples"] = samples
    db = tmp_path / "quickstart.db"
    assert batch.run_grid(batch.expand_config(config), db, progress=False).ran == 7
    report = write_report(db, tmp_path / "report")
    stored = batch.stored_rows(db)
    column = {name: i for i, name in enumerate(report.header)}
    for cells, row in zip(report.rows, stored):
        family = row.settings["family"]["name"]
        assert cells[0].startswith(f"{family}: experts={row.spec.experts}")
        assert row.estimate.regime in ("sample_limited", "pre_asymptotic", "asymptotic")
        assert row.estimate.functional_dimension == int(cells[column["r* (n·o)"]].split()[0]) > 0
        assert int(cells[column["data-dependent (max over patterns)"]]) == most_used_by_sampling_again(row)
        if family == "contrast":  # the cube [-1, 1]^M: r* = M, resolved
            assert row.estimate.functional_dimension == row.spec.experts
        else:
            assert row.estimate.regime == "sample_limited"
    assert all("n/a" not in cells[1:2] + cells[5:7] for cells in report.union_rows)
    text = report.markdown.read_text(encoding="utf-8")
    assert "Family **contrast**" in text and "Family **realistic**" in text
