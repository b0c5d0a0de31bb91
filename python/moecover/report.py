"""Reports of a results database: one table and a set of PNG plots, in Markdown and HTML.

`write_report(db, out)` writes into `out`:

- `report.md` and `report.html`: the table of every stored estimate (the settings that vary across
  the grid, the measured slope and its replicate interval beside the paper's, the parametric and the
  data-dependent predicted slopes), a summary of how each prediction tracks the measurements, and
  the plots;
- `<key>.png` per grid point: log N(δ) with its theory lines (`EntropyEstimate.plot`);
- `slope_vs_experts.png`, `slope_vs_top_k.png`, `slope_vs_active_params.png`: the measured slope
  (replicate interval as error bar) against each, with each prediction drawn at the same points;
- for learning curves (`[erm]` grids): their table (fitted exponent beside 2β/(2β+d)),
  `curve_<key>.png` per curve, and `risk_vs_experts_and_top_k.png` for grids over the spec.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import batch
from .batch import LEADING_SETTINGS, StoredEstimate

__all__ = ["Report", "write_report"]

PREDICTIONS = ("paper", "parametric", "data_dependent")
SWEEP_AXES = {"experts": "experts M", "top_k": "top_k k", "active_params": "active parameters N_eff"}
LINESTYLES: dict[str, Any] = {"paper": "--", "parametric": ":", "data_dependent": "-."}


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote: the table (header and one row of strings per estimate, in grid
    order) and the paths of every file. Without matplotlib the plots are empty and
    `plots_skipped` says why."""

    header: list[str]
    rows: list[list[str]]
    markdown: Path
    html: Path
    point_plots: dict[str, Path]
    sweep_plots: dict[str, Path]
    plots_skipped: str | None = None
    curve_header: list[str] | None = None
    curve_rows: list[list[str]] | None = None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(low: float, high: float) -> str:
    return "n/a" if not (math.isfinite(low) and math.isfinite(high)) else f"[{low:.3f}, {high:.3f}]"


def _table(rows: list[StoredEstimate]) -> tuple[list[str], list[list[str]]]:
    """The settings that vary across the grid (experts, top_k and layers always), then the results."""
    varying = [name for name in _varying(rows) if name not in LEADING_SETTINGS]
    setting_columns = list(LEADING_SETTINGS) + varying
    header = (
        ["key"]
        + [name.split(".", 1)[1] for name in setting_columns]
        + ["N_eff", "slope", "interval", "scales"]
        + [f"{name} slope" for name in PREDICTIONS]
        + ["plot"]
    )
    body = []
    for row in rows:
        estimate = row.estimate
        body.append(
            [row.key]
            + [_fmt(row.setting(name)) for name in setting_columns]
            + [
                str(row.spec.active_params),
                _fmt(estimate.slope),
                _interval(*estimate.slope_interval),
                str(len(estimate.slope_scales)),
            ]
            + [str(estimate.predicted_slopes[name]) for name in PREDICTIONS]
            + [f"{row.key}.png"]
        )
    return header, body


def _tracking(rows: list[StoredEstimate]) -> list[tuple[str, str, str]]:
    """Per prediction: the median and range of measured / predicted slope over the grid points
    with a slope (a prediction that tracks the data keeps the ratio constant across the grid)."""
    lines = []
    for name in PREDICTIONS:
        ratios = [
            row.estimate.slope / row.estimate.predicted_slopes[name]
            for row in rows
            if math.isfinite(row.estimate.slope) and row.estimate.predicted_slopes[name] > 0
        ]
        if ratios:
            lines.append((name, f"{np.median(ratios):.3f}", f"{min(ratios):.3f} … {max(ratios):.3f}"))
        else:
            lines.append((name, "n/a", "n/a"))
    return lines


def _varying(rows: list[StoredEstimate]) -> list[str]:
    """The flat setting names ("section.key") whose value differs between stored estimates."""
    flats = [row.flat_settings for row in rows]
    names = sorted({name for flat in flats for name in flat})
    return [name for name in names if len({repr(flat.get(name)) for flat in flats}) > 1]


def _series(rows: list[StoredEstimate], axis: str) -> dict[str, list[int]]:
    """Rows grouped by every varying setting that does not move along `axis` (so that each line
    joins points that differ in the axis only); active_params moves with every spec field but experts."""
    if axis == "active_params":
        fixed = [n for n in _varying(rows) if not n.startswith("spec.") or n == "spec.experts"]
    else:
        fixed = [n for n in _varying(rows) if n != f"spec.{axis}"]
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        label = ", ".join(f"{n.split('.', 1)[1]}={_fmt(row.setting(n))}" for n in fixed) or "all"
        groups.setdefault(label, []).append(i)
    return groups


def _sweep_plot(rows: list[StoredEstimate], axis: str, path: Path) -> None:
    """Measured slope (solid, replicate range as error bars) and the three predictions (one line
    style each) against `axis`, one colour per series of otherwise equal settings; log y so that
    a constant ratio measured/predicted shows as parallel lines."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    x_all = np.array([getattr(row.spec, axis) for row in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(7, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = _series(rows, axis)
    for number, (label, members) in enumerate(series.items()):
        colour = colours[number % len(colours)]
        members = sorted(members, key=lambda i: x_all[i])
        x = x_all[members]
        estimates = [rows[i].estimate for i in members]
        slope = np.array([e.slope for e in estimates])
        low = np.array([e.slope_interval[0] for e in estimates])
        high = np.array([e.slope_interval[1] for e in estimates])
        yerr = np.nan_to_num(np.vstack([slope - low, high - slope]), nan=0.0).clip(min=0)
        ax.errorbar(x, slope, yerr=yerr, fmt="o-", color=colour, capsize=3, label=label if len(series) > 1 else None)
        for name in PREDICTIONS:
            style = LINESTYLES[name]
            ax.plot(x, [e.predicted_slopes[name] for e in estimates], style, marker="x", color=colour, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xlabel(SWEEP_AXES[axis])
    ax.set_ylabel("slope of log N(δ) in log(1/δ)")
    kinds = [Line2D([], [], color="black", marker="o", label="measured (replicate range)")] + [
        Line2D([], [], color="black", linestyle=LINESTYLES[name], marker="x", label=f"{name} prediction")
        for name in PREDICTIONS
    ]
    first = ax.legend(handles=kinds, fontsize=8, loc="upper left")
    if len(series) > 1:  # the series beside the axes, where they cannot cover the first legend
        ax.add_artist(first)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="series", title_fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png", bbox_inches="tight")
    plt.close(fig)


def _failed_note(failures: list[batch.StoredFailure]) -> list[str]:
    """A sentence per failed grid point: what the report leaves out, and why."""
    return [f"Grid point {f.key} failed and is not shown: {f.error} (`moecover run` runs it again)." for f in failures]


def _markdown(db: str, header: list[str], body: list[list[str]], tracking: list[tuple[str, str, str]],
              sweeps: dict[str, Path], skipped: str | None, failed: list[str]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    table = [line(header), line(["---"] * len(header))]
    for cells in body:
        table.append(line(cells[:-1] + [f"[{cells[-1]}]({cells[-1]})" if skipped is None else "—"]))
    parts = [
        f"# moecover report: {db}",
        "",
        f"{len(body)} estimate(s). Slopes are of log N(δ) (nats) against log(1/δ) over the scales that "
        "are not saturated; the interval is the range of the same fit over each replicate alone.",
        "",
        *(line for note in failed for line in (note, "")),
        *table,
        "",
        "## How each prediction tracks the measurements",
        "",
        line(["prediction", "median measured/predicted", "range"]),
        line(["---"] * 3),
        *(line(list(t)) for t in tracking),
        "",
        "## Slope against the grid",
        "",
        *([f"No plots: {skipped}."] if skipped else []),
        *(f"![{axis}]({path.name})" for axis, path in sweeps.items()),
        "",
    ]
    return "\n".join(parts)


def _html(db: str, header: list[str], body: list[list[str]], tracking: list[tuple[str, str, str]],
          sweeps: dict[str, Path], skipped: str | None, failed: list[str]) -> str:
    e = html.escape

    def row(cells: Sequence[str], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"

    table = [row([e(h) for h in header], "th")]
    for cells in body:
        link = f'<a href="{e(cells[-1])}">{e(cells[-1])}</a>' if skipped is None else "—"
        table.append(row([e(c) for c in cells[:-1]] + [link]))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8"><title>moecover report</title>',
            "<style>table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 6px;"
            "font-family:monospace}</style></head><body>",
            f"<h1>moecover report: {e(db)}</h1>",
            f"<p>{len(body)} estimate(s). Slopes are of log N(δ) (nats) against log(1/δ) over the scales "
            "that are not saturated; the interval is the range of the same fit over each replicate alone.</p>",
            *(f"<p>{e(note)}</p>" for note in failed),
            '<table id="estimates">',
            *table,
            "</table>",
            "<h2>How each prediction tracks the measurements</h2>",
            '<table id="tracking">',
            row(["prediction", "median measured/predicted", "range"], "th"),
            *(row([e(c) for c in t]) for t in tracking),
            "</table>",
            "<h2>Slope against the grid</h2>",
            *([f"<p>No plots: {e(skipped)}.</p>"] if skipped else []),
            *(f'<img src="{e(path.name)}" alt="{e(axis)}">' for axis, path in sweeps.items()),
            *(["<h2>Each grid point</h2>"] if skipped is None else []),
            *(f'<h3>{e(cells[0])}</h3><img src="{e(cells[-1])}" alt="{e(cells[0])}">' for cells in body if skipped is None),
            "</body></html>",
            "",
        ]
    )


def _curve_section(curves: list[batch.StoredCurve], directory: Path, plots: bool) -> tuple[list[str], list[list[str]], dict[str, Path]]:
    """The learning curves' table (header, rows) and plots: one per curve, and for grids over the
    spec (model = "spec") the risk at the largest n against experts, a line per top_k."""
    header = ["key", "d", "β", "σ", "model", "n", "fitted exponent", "2β/(2β+d)", "difference", "plot"]
    body = []
    paths: dict[str, Path] = {}
    for row in curves:
        erm, curve = row.settings["erm"], row.curve
        model = erm["model"]
        if model in ("spec", "fixed_neff"):
            neff = f", N_eff≈{erm['neff']}" if model == "fixed_neff" else ""
            model = f"spec experts={row.settings['spec']['experts']}, top_k={row.settings['spec']['top_k']}{neff}"
        lo, hi = curve.interval
        path = directory / f"curve_{row.key}.png"
        if plots:
            curve.plot(str(path))
            paths[row.key] = path
        body.append([row.key, str(erm["d"]), f"{erm['beta']:g}", f"{erm['noise']:g}", model,
                     f"{curve.ns[0]}…{curve.ns[-1]}", f"{curve.exponent:.3f} [{lo:.3f}, {hi:.3f}]",
                     f"{curve.theory_exponent:.3f}", f"{curve.exponent - curve.theory_exponent:+.3f}", path.name])
    grid = [row for row in curves if row.settings["erm"]["model"] in ("spec", "fixed_neff")]
    if plots and len({(r.settings["spec"]["experts"], r.settings["spec"]["top_k"]) for r in grid}) > 1:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.4))
        for top_k in sorted({r.settings["spec"]["top_k"] for r in grid}):
            members = sorted((r for r in grid if r.settings["spec"]["top_k"] == top_k), key=lambda r: r.settings["spec"]["experts"])
            risk = [float(np.exp(np.log(r.curve.risks[-1]).mean())) for r in members]
            ax.plot([r.settings["spec"]["experts"] for r in members], risk, "o-", label=f"top_k = {top_k}")
        fixed = {r.settings["erm"].get("neff") for r in grid}
        title = f"risk against M and k at N_eff ≈ {fixed.pop()}" if len(fixed) == 1 and None not in fixed else "risk against M and k"
        largest = sorted({r.curve.ns[-1] for r in grid})
        ax.set(xlabel="experts M", ylabel=f"excess test risk at n = {'/'.join(map(str, largest))}\n(geometric mean over seeds)",
               yscale="log", title=title)
        ax.set_xticks(sorted({r.settings["spec"]["experts"] for r in grid}))
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths["risk_vs_experts_and_top_k"] = directory / "risk_vs_experts_and_top_k.png"
        fig.savefig(paths["risk_vs_experts_and_top_k"], dpi=110)
        plt.close(fig)
    return header, body, paths


def write_report(db: str | os.PathLike[str], out: str | os.PathLike[str]) -> Report:
    """Writes the report of every estimate in the database `db` into the directory `out` (created
    if missing). The tables need nothing more; the plots need matplotlib
    (`pip install "moecover[plot]"`): without it the report says so and `Report.plots_skipped` too."""
    if not Path(db).exists():
        raise ValueError(f"db: no such file {str(db)!r}")
    rows = batch.stored_rows(db)
    curves = batch.stored_curves(db)
    if not rows and not curves:
        raise ValueError(f"db: {str(db)!r} holds no estimates or learning curves yet (run `moecover run CONFIG` first)")
    try:
        import matplotlib  # noqa: F401

        skipped = None
    except ImportError:
        skipped = 'the plots need matplotlib: pip install "moecover[plot]"'
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    header, body = _table(rows) if rows else ([], [])
    point_plots: dict[str, Path] = {}
    sweep_plots: dict[str, Path] = {}
    curve_header, curve_body, curve_plots = _curve_section(curves, directory, skipped is None)
    point_plots.update(curve_plots)
    if skipped is None and rows:
        for row in rows:
            point_plots[row.key] = directory / f"{row.key}.png"
            row.estimate.plot(str(point_plots[row.key]))
        sweep_plots = {axis: directory / f"slope_vs_{axis}.png" for axis in SWEEP_AXES}
        for axis, path in sweep_plots.items():
            _sweep_plot(rows, axis, path)
    tracking = _tracking(rows) if rows else []
    markdown = directory / "report.md"
    failed = _failed_note(batch.stored_failures(db))
    estimates_md = _markdown(str(db), header, body, tracking, sweep_plots, skipped, failed) if rows else (
        "\n".join([f"# moecover report: {db}", "", *(line for note in failed for line in (note, "")), ""]))
    estimates_html = _html(str(db), header, body, tracking, sweep_plots, skipped, failed) if rows else (
        "\n".join(["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>moecover report</title></head><body>',
                   f"<h1>moecover report: {html.escape(str(db))}</h1>", *(f"<p>{html.escape(n)}</p>" for n in failed),
                   "</body></html>", ""]))
    if curves:
        estimates_md += "\n".join(_curves_markdown(curve_header, curve_body, curve_plots, skipped)) + "\n"
        estimates_html = estimates_html.replace("</body></html>", "\n".join(_curves_html(curve_header, curve_body, curve_plots, skipped)) + "\n</body></html>")
    markdown.write_text(estimates_md, encoding="utf-8")
    page = directory / "report.html"
    page.write_text(estimates_html, encoding="utf-8")
    return Report(header, body, markdown, page, point_plots, sweep_plots, skipped, curve_header, curve_body)


CURVE_NOTE = ("Excess test risk of least squares over the class (or k-NN, the calibration model) against the "
              "training size n; the exponent is the mean over seeds of the slopes of log risk in log n, with a 90 % "
              "t-interval, beside the minimax 2β/(2β+d) (definitions §9). k-NN at n ≤ 10^4 reads a few hundredths "
              "high: compare an MoE exponent with the k-NN one on the same problem, not with theory alone.")


def _curves_markdown(header: list[str], body: list[list[str]], plots: dict[str, Path], skipped: str | None) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    rows = [line(c[:-1] + [f"[{c[-1]}]({c[-1]})" if skipped is None else "—"]) for c in body]
    extra = [f"![risk against M and k]({plots['risk_vs_experts_and_top_k'].name})"] if "risk_vs_experts_and_top_k" in plots else []
    return ["## Learning curves", "", CURVE_NOTE, "", line(header), line(["---"] * len(header)), *rows, "", *extra,
            *(f"![{c[0]}]({c[-1]})" for c in body if skipped is None)]


def _curves_html(header: list[str], body: list[list[str]], plots: dict[str, Path], skipped: str | None) -> list[str]:
    e = html.escape

    def row(cells: Sequence[str], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"

    rows = [row([e(x) for x in c[:-1]] + [f'<a href="{e(c[-1])}">{e(c[-1])}</a>' if skipped is None else "—"]) for c in body]
    extra = ([f'<img src="{e(plots["risk_vs_experts_and_top_k"].name)}" alt="risk against M and k">']
             if "risk_vs_experts_and_top_k" in plots else [])
    return ["<h2>Learning curves</h2>", f"<p>{e(CURVE_NOTE)}</p>", '<table id="learning_curves">', row([e(h) for h in header], "th"),
            *rows, "</table>", *extra, *(f'<img src="{e(c[-1])}" alt="{e(c[0])}">' for c in body if skipped is None)]
