"""`moecover report`: the table agrees with the stored rows, every plot is a PNG."""

import re
import subprocess
import sys
from html.parser import HTMLParser

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


def markdown_table(text):
    """The first Markdown table of `text`: header and rows of cells."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    header, separator = cells[0], cells[1]
    assert set(separator) == {"---"}
    body = []
    for row in cells[2:]:
        if row == ["prediction", "median measured/predicted", "range"]:
            break  # the second table starts
        body.append(row)
    return header, body


def independent_n_eff(spec: MoESpec) -> int:
    """definitions §5: N_eff = L·Π_attn + L·k·Π_exp, from the layout (attention blocks + one expert)."""
    attention = sum(b.size for b in spec.layout if b.kind == "attn")
    one_expert = sum(b.size for b in spec.layout if b.kind == "experts" and b.expert == 0)
    router = sum(b.size for b in spec.layout if b.kind == "router")
    assert attention + router + spec.layers * spec.experts * one_expert <= spec.total_params
    return attention + spec.layers * spec.top_k * one_expert


def test_table_matches_the_stored_rows(db, report):
    stored = {row.key: row for row in batch.stored_rows(db)}
    header, body = markdown_table(report.markdown.read_text(encoding="utf-8"))
    assert header == report.header
    assert len(body) == len(stored) == 8
    assert sorted(cells[0] for cells in body) == sorted(stored)
    column = {name: header.index(name) for name in header}
    # inputs.seed varies across the grid, so it has a column; d_model does not, so it has none
    assert "seed" in column and "d_model" not in column
    for cells in body:
        row = stored[cells[0]]
        result, spec = row.estimate.to_dict(), MoESpec(**row.settings["spec"])
        assert int(cells[column["experts"]]) == spec.experts
        assert int(cells[column["top_k"]]) == spec.top_k
        assert int(cells[column["seed"]]) == row.settings["inputs"]["seed"]
        assert float(cells[column["slope"]]) == pytest.approx(result["slope"], abs=5e-4)
        lo, hi = (float(v) for v in re.fullmatch(r"\[(.+), (.+)\]", cells[column["interval"]]).groups())
        assert lo == pytest.approx(result["slope_interval"][0], abs=5e-4)
        assert hi == pytest.approx(result["slope_interval"][1], abs=5e-4)
        assert lo <= float(cells[column["slope"]]) + 1e-3 and float(cells[column["slope"]]) <= hi + 1e-3
        assert int(cells[column["N_eff"]]) == independent_n_eff(spec)
        assert int(cells[column["paper slope"]]) == independent_n_eff(spec)
        assert int(cells[column["parametric slope"]]) == result["predicted_slopes"]["parametric"]
        assert int(cells[column["data_dependent slope"]]) == result["predicted_slopes"]["data_dependent"]
        assert int(cells[column["scales"]]) == len(result["slope_scales"])
    # rows read along the grid: experts ascending first, although the config lists 3 before 2
    experts = [int(cells[column["experts"]]) for cells in body]
    assert experts == sorted(experts)


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
    assert len(plots) == 8 + 3
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
