"""Reports of a results database: one table and a set of PNG plots, in Markdown and HTML.

`write_report(db, out)` writes into `out`:

- `report.md` and `report.html`: the settings every row shares, stated once; "what this shows", a
  few sentences generated from the numbers; the table of every stored estimate, named by the
  settings that vary, with its regime (definitions §8), the slope fitted over its complete scales,
  the extrapolated slope with its interval, the functional dimension r* and the predicted slopes;
  the union-bound table; measured/predicted ratios for the asymptotic estimates only; the plots;
- `<what varies>.png` per grid point (`EntropyEstimate.plot`);
- `slope_vs_<axis>.png` per spec setting that varies (and against N_eff when that is another
  picture): the slopes measured and predicted, on a log axis that holds every line;
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
from ._plots import LABELS, STYLES, log_slope_axis
from .estimate import EntropyEstimate

__all__ = ["Report", "write_report"]

#: The predicted slopes beside each estimate, in the order the tables list them.
PREDICTIONS = ("functional", "paper", "data_dependent", "parametric")
SWEEP_AXES = {"experts": "experts M", "top_k": "top_k k", "layers": "layers L_T", "expert_hidden": "expert hidden width",
              "d_model": "d_model D", "active_params": "active parameters N_eff"}
REGIME_WORDS = {"sample_limited": "sample-limited", "pre_asymptotic": "pre-asymptotic", "asymptotic": "asymptotic",
                "unknown": "unknown (stored before regimes)"}


@dataclass(frozen=True)
class Report:
    """What `write_report` wrote: the estimates' table (header and one row of strings per estimate,
    in grid order), the union-bound table, the generated summary, and the paths of every file.
    Without matplotlib the plots are empty and `plots_skipped` says why."""

    header: list[str]
    rows: list[list[str]]
    markdown: Path
    html: Path
    point_plots: dict[str, Path]
    sweep_plots: dict[str, Path]
    plots_skipped: str | None = None
    curve_header: list[str] | None = None
    curve_rows: list[list[str]] | None = None
    union_header: list[str] | None = None
    union_rows: list[list[str]] | None = None
    fixed: dict[str, Any] | None = None
    summary: list[str] | None = None


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _interval(low: float, high: float, digits: int = 2) -> str:
    return "n/a" if not (math.isfinite(low) and math.isfinite(high)) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _varying(rows: Sequence[Any]) -> list[str]:
    """The flat setting names ("section.key") whose value differs between stored rows."""
    flats = [row.flat_settings for row in rows]
    names = sorted({name for flat in flats for name in flat})
    return [name for name in names if len({repr(flat.get(name)) for flat in flats}) > 1]


def _ordered_varying(rows: Sequence[Any]) -> list[str]:
    varying = _varying(rows)
    return [n for n in LEADING_SETTINGS if n in varying] + [n for n in varying if n not in LEADING_SETTINGS]


def _fixed(rows: Sequence[Any]) -> dict[str, Any]:
    """The settings every row shares, "section.key" → value: stated once, above the tables."""
    varying = set(_varying(rows))
    return {name: value for name, value in sorted(rows[0].flat_settings.items()) if name not in varying}


#: Per family name (None without [[grid]] families): the settings that vary within it, in table
#: order. Rows are named, and series grouped, by these.
Varying = dict[Any, list[str]]


def _by_family(rows: Sequence[Any]) -> dict[Any, list[Any]]:
    """The rows of each family, in grid order (one family, None, without [[grid]])."""
    families: dict[Any, list[Any]] = {}
    for row in rows:
        families.setdefault(row.setting("family.name"), []).append(row)
    return families


def _varying_by_family(rows: Sequence[Any]) -> Varying:
    return {family: [n for n in _ordered_varying(members) if n != "family.name"]
            for family, members in _by_family(rows).items()}


def _label(row: Any, varying: Varying) -> str:
    """A row named by what varies across the grid ("experts=4, top_k=1"); in a config of several
    families ([[grid]]), by its family's name and what varies within that family."""
    family = row.setting("family.name")
    inner = ", ".join(f"{name.split('.', 1)[1]}={_fmt(row.setting(name))}" for name in varying[family])
    if family is not None:
        return f"{family}: {inner}" if inner else str(family)
    return inner or "the one estimate"


def _families(rows: Sequence[Any]) -> dict[str, dict[str, Any]]:
    """Per family: the settings its rows share that not every row of the report shares."""
    everywhere = _fixed(rows)
    out: dict[str, dict[str, Any]] = {}
    for family, members in _by_family(rows).items():
        if family is None:
            continue
        out[family] = {k: v for k, v in _fixed(members).items() if k not in everywhere and k != "family.name"}
    return out


def _file_name(label: str) -> str:
    return "".join(c if c.isalnum() or c in "=-_." else "_" for c in label.replace(", ", "__")) + ".png"


def _slope_cell(estimate: EntropyEstimate) -> str:
    """The measured slope over the complete scales, or why there is none."""
    if not math.isfinite(estimate.slope):
        return f"none ({len(estimate.slope_scales)} complete scale(s))"
    return f"{estimate.slope:.2f} {_interval(*estimate.slope_interval)} over {len(estimate.slope_scales)}"


def _ratio_cell(estimate: EntropyEstimate) -> str:
    """measured/r*, only where a ratio means something (the asymptotic regime, definitions §8)."""
    r_star = estimate.functional_dimension
    if not estimate.ratio_meaningful or r_star <= 0 or not math.isfinite(estimate.extrapolated_slope):
        return "—"
    return f"{estimate.extrapolated_slope / r_star:.2f}"


def _table(rows: list[StoredEstimate], varying: Varying) -> tuple[list[str], list[list[str]]]:
    header = ["grid point", "regime", "slope [replicates] over complete scales", "extrapolated slope [interval]",
              "r* (n·o)", "paper N_eff", "data-dependent (max over patterns)", "parametric (free)",
              "extrapolated / r* (asymptotic only)", "plot"]
    body = []
    for row in rows:
        e = row.estimate
        predicted = e.predicted_slopes
        r_star = f"{e.functional_dimension} ({predicted.get('ambient', 'n/a')})" if e.functional_dimension >= 0 else "n/a"
        extrapolated = (f"{e.extrapolated_slope:.2f} {_interval(*e.extrapolated_interval)}"
                        if math.isfinite(e.extrapolated_slope) and e.regime != "sample_limited" else "—")
        body.append([
            _label(row, varying), REGIME_WORDS.get(e.regime, e.regime), _slope_cell(e), extrapolated, r_star,
            str(predicted["paper"]), str(predicted["data_dependent"]), str(predicted["parametric"]), _ratio_cell(e),
            _file_name(_label(row, varying)),
        ])
    return header, body


def _union_table(rows: list[StoredEstimate], varying: Varying) -> tuple[list[str], list[list[str]]]:
    """Per estimate: the patterns found against the union bound's counts, Σ_r N_r / N, and the
    measured routing overhead beside the paper's routing term (definitions §3, §4, §8)."""
    header = ["grid point", "dataset-wide patterns sampled", "realisable (exact)", "log C(M,k)^{L ℓ} per input",
              "paper L ℓ k log(eM/k)", "Σ_r N_r / N (coarsest … finest δ)", "measured overhead log Σ_r N_r − max_r log N_r",
              "group nets' memory"]
    body = []
    for row in rows:
        table = row.estimate.union_bound
        if not table:
            body.append([_label(row, varying)] + ["n/a"] * (len(header) - 1))
            continue
        ratio = np.asarray(table["union_ratio"], dtype=float)
        overhead = np.asarray(table["routing_overhead"], dtype=float)
        exact = table["patterns_exact"]
        body.append([
            _label(row, varying),
            f"{table['patterns_sampled']:,}",
            "n/a" if exact is None else f"{exact:,}",
            f"{table['log_patterns_per_input']:.2f}",
            f"{table['paper_routing_term']:.2f}",
            "n/a" if not np.isfinite(ratio).any() else f"{ratio[0]:.3g} … {ratio[-1]:.3g}",
            "n/a" if not np.isfinite(overhead).any() else f"{np.nanmin(overhead):.2f} … {np.nanmax(overhead):.2f}",
            f"{table['group_nets_bytes'] / 2**20:.1f} MiB",
        ])
    return header, body


def _span(values: Sequence[float], digits: int = 0) -> str:
    low, high = min(values), max(values)
    return f"{low:.{digits}f}" if low == high else f"{low:.{digits}f}–{high:.{digits}f}"


def _summary(rows: list[StoredEstimate]) -> list[str]:
    """"What this shows": sentences generated from the numbers, claiming no more than they hold."""
    estimates = [row.estimate for row in rows]
    counts = {name: sum(e.regime == name for e in estimates) for name in ("asymptotic", "pre_asymptotic", "sample_limited")}
    lines = [
        f"Of {len(estimates)} estimate(s), {counts['asymptotic']} are asymptotic, {counts['pre_asymptotic']} "
        f"pre-asymptotic and {counts['sample_limited']} sample-limited (definitions §8): only an asymptotic estimate's "
        "slope may be compared with a prediction as a ratio; a sample-limited one bounds log N(δ) from below and "
        "measures no slope."
    ]
    known = [e for e in estimates if e.functional_dimension >= 0]
    if known:
        r = [e.functional_dimension for e in known]
        ambient = [e.predicted_slopes.get("ambient", 0) for e in known]
        paper = [e.predicted_slopes["paper"] for e in known]
        total = [e.predicted_slopes["parametric"] for e in known]
        data = [e.predicted_slopes["data_dependent"] for e in known]
        lines.append(
            f"The functional dimension r*, the exact asymptotic slope of log N(δ) on these inputs (§6), is {_span(r)} "
            f"(ambient n·o = {_span(ambient)}), against the paper's N_eff {_span(paper)}, the data-dependent "
            f"count {_span(data)} and {_span(total)} free parameters. r* exceeds N_eff in "
            f"{sum(a > b for a, b in zip(r, paper))} of {len(known)}, equals it in {sum(a == b for a, b in zip(r, paper))}, "
            f"and is capped by n·o in {sum(a == b for a, b in zip(r, ambient))}."
        )
    resolved = [(row, row.estimate) for row in rows if row.estimate.regime in ("pre_asymptotic", "asymptotic")]
    if resolved:
        held = sum(e.extrapolated_interval[0] <= e.functional_dimension <= e.extrapolated_interval[1] for _, e in resolved)
        lines.append(
            f"Where the nets resolve a slope ({len(resolved)} estimate(s)), the extrapolated slope's interval holds r* "
            f"in {held} of {len(resolved)}, and holds the paper's N_eff in "
            f"{sum(e.extrapolated_interval[0] <= e.predicted_slopes['paper'] <= e.extrapolated_interval[1] for _, e in resolved)}."
        )
    else:
        lines.append("No estimate resolves a slope: the nets are complete at too few scales (more samples, or "
                     "`explore` in [estimate], would extend them), so the table's slopes are not measurements of r*.")
    tables = [e.union_bound for e in estimates if e.union_bound]
    if tables:
        overhead = [float(np.nanmax(np.asarray(t["routing_overhead"], dtype=float))) for t in tables
                    if np.isfinite(np.asarray(t["routing_overhead"], dtype=float)).any()]
        paper_term = [t["paper_routing_term"] for t in tables]
        patterns = [t["patterns_sampled"] for t in tables]
        if overhead:
            lines.append(
                f"Routing: the samples realise {_span(patterns)} dataset-wide patterns; the measured routing overhead "
                f"log Σ_r N_r(δ) − max_r log N_r(δ) reaches {_span(overhead, 1)} nats, against the paper's per-input "
                f"L_T ℓ k log(eM/k) = {_span(paper_term, 2)} nats (a union over dataset-wide patterns is over the data "
                "set's routing, not one input's)."
            )
    return lines


def _same_picture(rows: list[StoredEstimate], varying: list[str]) -> bool:
    """Whether N_eff moves exactly with one varying spec setting (then its sweep is that one's)."""
    neff = [row.spec.active_params for row in rows]
    for name in varying:
        if not name.startswith("spec."):
            continue
        values = [repr(row.setting(name)) for row in rows]
        if len(set(zip(values, neff))) == len(set(values)) == len(set(neff)):
            return True
    return False


def _sweep_axes(rows: list[StoredEstimate], varying: Varying) -> list[str]:
    """One sweep plot per spec setting that varies within a family, and one against N_eff when it
    is not the same picture as one of those (N_eff moving with one setting alone)."""
    axes: list[str] = []
    neff_axis = False
    families = _by_family(rows)
    for family, inner in varying.items():
        members = families[family]
        for name in inner:
            axis = name.split(".", 1)[1]
            if name.startswith("spec.") and axis in SWEEP_AXES and axis not in axes:
                axes.append(axis)
        if len({row.spec.active_params for row in members}) > 1 and not _same_picture(members, inner):
            neff_axis = True
    return axes + (["active_params"] if neff_axis else [])


def _moving_along(rows: list[StoredEstimate], axis: str, varying: Varying) -> list[StoredEstimate]:
    """The rows of the families within which `axis` varies (a family fixed along it would be a
    column of single points)."""
    families = _by_family(rows)

    def moves(family: Any) -> bool:
        members = families[family]
        if axis == "active_params":
            return len({row.spec.active_params for row in members}) > 1
        return f"spec.{axis}" in varying[family]

    return [row for row in rows if moves(row.setting("family.name"))]


def _series(rows: list[StoredEstimate], axis: str, varying: Varying) -> dict[str, list[int]]:
    """Rows grouped by every setting that varies (within its family) and does not move along `axis`."""
    def moving(name: str) -> bool:  # N_eff moves with every spec setting
        return name.startswith("spec.") if axis == "active_params" else name == f"spec.{axis}"

    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        family = row.setting("family.name")
        label = ", ".join(f"{n.split('.', 1)[1]}={_fmt(row.setting(n))}" for n in varying[family] if not moving(n))
        label = (f"{family}: {label}" if label else str(family)) if family is not None else (label or "all")
        groups.setdefault(label, []).append(i)
    return groups


def _sweep_plot(rows: list[StoredEstimate], axis: str, varying: Varying, fixed_text: str, path: Path) -> None:
    """Per series (one colour): the slope the nets measure (filled: extrapolated, with its interval,
    where the regime is not sample-limited; open: the fitted slope over complete scales, a lower
    bound), and the predicted slopes (one line style each) against `axis`, on a log y axis that
    holds every line."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    x_all = np.array([getattr(row.spec, axis) for row in rows], dtype=float)
    fig, ax = plt.subplots(figsize=(8.5, 5.0))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    series = _series(rows, axis, varying)
    values: list[float] = []
    for number, (label, members) in enumerate(series.items()):
        colour = colours[number % len(colours)]
        members = sorted(members, key=lambda i: x_all[i])
        x = x_all[members]
        estimates = [rows[i].estimate for i in members]
        for xi, e in zip(x, estimates):
            if e.regime in ("pre_asymptotic", "asymptotic") and math.isfinite(e.extrapolated_slope):
                lo, hi = e.extrapolated_interval
                ax.errorbar([xi], [e.extrapolated_slope], yerr=[[e.extrapolated_slope - lo], [hi - e.extrapolated_slope]],
                            fmt="o", color=colour, capsize=3)
                values += [lo, hi]
            elif math.isfinite(e.slope) and e.slope > 0:
                ax.plot([xi], [e.slope], "o", mfc="none", color=colour)
                values.append(e.slope)
        for name in PREDICTIONS:
            ys = [e.predicted_slopes.get(name, -1) for e in estimates]
            if all(y > 0 for y in ys):
                ax.plot(x, ys, STYLES[name], marker="x", color=colour, alpha=0.85)
                values += ys
        ax.plot([], [], "s", color=colour, label=label)
    log_slope_axis(ax, values, margin=1.5)
    ax.set_xticks(sorted(set(x_all)))
    ax.set_xlabel(SWEEP_AXES[axis])
    ax.set_ylabel("slope of log N(δ) in log(1/δ)  (log scale)")
    ax.set_title(f"Slopes against {SWEEP_AXES[axis]}" + (f"\n{fixed_text}" if fixed_text else ""), fontsize=9)
    kinds = [
        Line2D([], [], color="black", marker="o", linestyle="none", label="extrapolated slope [interval] (resolved)"),
        Line2D([], [], color="black", marker="o", mfc="none", linestyle="none", label="fitted slope, not resolved (lower bound)"),
    ] + [Line2D([], [], color="black", linestyle=STYLES[name], marker="x", label=LABELS[name]) for name in PREDICTIONS]
    first = ax.legend(handles=kinds, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="what", title_fontsize=8)
    legends = [first]
    if len(series) > 1:
        ax.add_artist(first)
        legends.append(ax.legend(fontsize=7.5, loc="lower left", bbox_to_anchor=(1.02, 0.0), title="series (colour)",
                                 title_fontsize=8))
    fig.tight_layout()
    # both legends sit outside the axes: name them, or the tight box may cut the one added as an artist
    fig.savefig(path, dpi=110, format="png", bbox_inches="tight", bbox_extra_artists=legends)
    plt.close(fig)


def _failed_note(failures: list[batch.StoredFailure]) -> list[str]:
    """A sentence per failed grid point: what the report leaves out, and why."""
    return [f"Grid point {f.key} failed and is not shown: {f.error} (`moecover run` runs it again)." for f in failures]


ESTIMATES_NOTE = (
    "Each row is one estimate of log N(δ) (nats) on the fixed inputs. Its regime (definitions §8) says what it "
    "measures: sample-limited, the nets still grow with the samples at most scales and bound log N from below only; "
    "pre-asymptotic, the nets are complete over enough scales to extrapolate the slope, but the local slope has not "
    "reached r*; asymptotic, it has (within 10 %). The fitted slope is over the complete scales (γ(δ) ≤ 0.1 in every "
    "replicate), its interval the range over replicates; the extrapolated slope is r of N(δ) = ρ(D/δ + 1)^r fitted to "
    "them, its interval from the replicates, the fit's window and the model's measured error. r* is the functional "
    "dimension (the largest Jacobian rank, §6): the exact asymptotic slope, capped by the ambient n·o. The "
    "data-dependent count is the largest of the parameters any realised routing pattern uses (§4)."
)
UNION_NOTE = (
    "Replicate 0's samples grouped by dataset-wide routing pattern, with a greedy net per group (definitions §3): "
    "Σ_r N_r / N is how loose the union over patterns is on the sample, and the measured overhead "
    "log Σ_r N_r − max_r log N_r is what the union adds to its largest member, beside the paper's routing term "
    "(which bounds one input's patterns). Exact counts come from LP enumeration where it applies (one layer, "
    "no attention, the arrangement bound at most 20 000)."
)


def _markdown_table(header: list[str], body: list[list[str]], link_last: bool) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    out = [line(header), line(["---"] * len(header))]
    for cells in body:
        out.append(line(cells[:-1] + [f"[{cells[-1]}]({cells[-1]})" if link_last else "—"]) if header[-1] == "plot"
                   else line(cells))
    return out


def _markdown(db: str, fixed: dict[str, Any], families: dict[str, dict[str, Any]], summary: list[str], header: list[str], body: list[list[str]],
              union: tuple[list[str], list[list[str]]], tracking: list[tuple[str, str, str]], sweeps: dict[str, Path],
              skipped: str | None, failed: list[str]) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    parts = [
        f"# moecover report: {db}",
        "",
        "Settings shared by every row: " + ", ".join(f"`{k} = {_fmt(v)}`" for k, v in fixed.items()) + ".",
        "",
        *(line for name, shared in families.items()
          for line in (f"Family **{name}**: " + ", ".join(f"`{k} = {_fmt(v)}`" for k, v in shared.items()) + ".", "")),
        *(line for note in failed for line in (note, "")),
        "## What this shows",
        "",
        *(line for sentence in summary for line in (sentence, "")),
        "## Estimates",
        "",
        ESTIMATES_NOTE,
        "",
        *_markdown_table(header, body, skipped is None),
        "",
        "## The union bound over routing patterns",
        "",
        UNION_NOTE,
        "",
        *_markdown_table(*union, link_last=False),
        "",
        "## Measured against predicted, where a ratio means something",
        "",
        *(
            [line(["prediction", "median extrapolated/predicted", "range", ]), line(["---"] * 3), *(line(list(t)) for t in tracking)]
            if tracking else ["No estimate is asymptotic, so no measured/predicted ratio is shown: a ratio of a slope that "
                              "has not reached its limit says nothing about the prediction."]
        ),
        "",
        "## Slope against the grid",
        "",
        *([f"No plots: {skipped}."] if skipped else []),
        *(f"![slope against {axis}]({path.name})" for axis, path in sweeps.items()),
        "",
        *(["## Each grid point", ""] if skipped is None else []),
        *(f"![{cells[0]}]({cells[-1]})" for cells in body if skipped is None),
        "",
    ]
    return "\n".join(parts)


def _html(db: str, fixed: dict[str, Any], families: dict[str, dict[str, Any]], summary: list[str], header: list[str], body: list[list[str]],
          union: tuple[list[str], list[list[str]]], tracking: list[tuple[str, str, str]], sweeps: dict[str, Path],
          skipped: str | None, failed: list[str]) -> str:
    e = html.escape

    def row(cells: Sequence[str], tag: str = "td") -> str:
        return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"

    table = [row([e(h) for h in header], "th")]
    for cells in body:
        link = f'<a href="{e(cells[-1])}">{e(cells[-1])}</a>' if skipped is None else "—"
        table.append(row([e(c) for c in cells[:-1]] + [link]))
    union_header, union_body = union
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html><head><meta charset="utf-8"><title>moecover report</title>',
            "<style>body{font-family:sans-serif;max-width:1200px}table{border-collapse:collapse}"
            "td,th{border:1px solid #999;padding:2px 6px;font-family:monospace;font-size:90%}</style></head><body>",
            f"<h1>moecover report: {e(db)}</h1>",
            "<p>Settings shared by every row: " + ", ".join(f"<code>{e(k)} = {e(_fmt(v))}</code>" for k, v in fixed.items()) + ".</p>",
            *(f"<p>Family <b>{e(name)}</b>: " + ", ".join(f"<code>{e(k)} = {e(_fmt(v))}</code>" for k, v in shared.items()) + ".</p>"
              for name, shared in families.items()),
            *(f"<p>{e(note)}</p>" for note in failed),
            "<h2>What this shows</h2>",
            *(f"<p>{e(sentence)}</p>" for sentence in summary),
            "<h2>Estimates</h2>",
            f"<p>{e(ESTIMATES_NOTE)}</p>",
            '<table id="estimates">',
            *table,
            "</table>",
            "<h2>The union bound over routing patterns</h2>",
            f"<p>{e(UNION_NOTE)}</p>",
            '<table id="union_bound">',
            row([e(h) for h in union_header], "th"),
            *(row([e(c) for c in cells]) for cells in union_body),
            "</table>",
            "<h2>Measured against predicted, where a ratio means something</h2>",
            *(['<table id="tracking">', row(["prediction", "median extrapolated/predicted", "range"], "th"),
               *(row([e(c) for c in t]) for t in tracking), "</table>"] if tracking else
              ["<p>No estimate is asymptotic, so no measured/predicted ratio is shown: a ratio of a slope that has not "
               "reached its limit says nothing about the prediction.</p>"]),
            "<h2>Slope against the grid</h2>",
            *([f"<p>No plots: {e(skipped)}.</p>"] if skipped else []),
            *(f'<img src="{e(path.name)}" alt="slope against {e(axis)}">' for axis, path in sweeps.items()),
            *(["<h2>Each grid point</h2>"] if skipped is None else []),
            *(f'<h3>{e(cells[0])}</h3><img src="{e(cells[-1])}" alt="{e(cells[0])}">' for cells in body if skipped is None),
            "</body></html>",
            "",
        ]
    )


def _tracking(rows: list[StoredEstimate]) -> list[tuple[str, str, str]]:
    """Per prediction, over the asymptotic estimates only: the median and range of extrapolated /
    predicted slope (a prediction that tracks the data keeps the ratio near 1 across the grid)."""
    asymptotic = [row.estimate for row in rows if row.estimate.ratio_meaningful and math.isfinite(row.estimate.extrapolated_slope)]
    if not asymptotic:
        return []
    lines = []
    for name in PREDICTIONS:
        ratios = [e.extrapolated_slope / e.predicted_slopes[name] for e in asymptotic if e.predicted_slopes.get(name, 0) > 0]
        if ratios:
            lines.append((LABELS[name], f"{np.median(ratios):.3f}", f"{min(ratios):.3f} … {max(ratios):.3f}"))
    return lines


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
    point_plots: dict[str, Path] = {}
    sweep_plots: dict[str, Path] = {}
    curve_header, curve_body, curve_plots = _curve_section(curves, directory, skipped is None)
    point_plots.update(curve_plots)
    failed = _failed_note(batch.stored_failures(db))
    header: list[str] = []
    body: list[list[str]] = []
    union: tuple[list[str], list[list[str]]] = ([], [])
    fixed: dict[str, Any] = {}
    summary: list[str] = []
    if rows:
        varying = _varying_by_family(rows)
        fixed = _fixed(rows)
        families = _families(rows)
        fixed_text = "" if families else ", ".join(
            f"{k.split('.', 1)[1]}={_fmt(v)}" for k, v in fixed.items() if k.startswith("spec.") and k.split(".", 1)[1] in SWEEP_AXES)
        header, body = _table(rows, varying)
        union = _union_table(rows, varying)
        summary = _summary(rows)
        if skipped is None:
            for row, cells in zip(rows, body):
                point_plots[row.key] = directory / cells[-1]
                row.estimate.plot(str(point_plots[row.key]), title=f"{cells[0]}   ({row.estimate.title()})")
            for axis in _sweep_axes(rows, varying):
                sweep_plots[axis] = directory / f"slope_vs_{axis}.png"
                _sweep_plot(_moving_along(rows, axis, varying), axis, varying, fixed_text, sweep_plots[axis])
        tracking = _tracking(rows)
        estimates_md = _markdown(str(db), fixed, families, summary, header, body, union, tracking, sweep_plots, skipped, failed)
        estimates_html = _html(str(db), fixed, families, summary, header, body, union, tracking, sweep_plots, skipped, failed)
    else:
        estimates_md = "\n".join([f"# moecover report: {db}", "", *(line for note in failed for line in (note, "")), ""])
        estimates_html = "\n".join(["<!DOCTYPE html>", '<html><head><meta charset="utf-8"><title>moecover report</title></head><body>',
                                    f"<h1>moecover report: {html.escape(str(db))}</h1>", *(f"<p>{html.escape(n)}</p>" for n in failed),
                                    "</body></html>", ""])
    if curves:
        estimates_md += "\n".join(_curves_markdown(curve_header, curve_body, curve_plots, skipped)) + "\n"
        estimates_html = estimates_html.replace("</body></html>", "\n".join(_curves_html(curve_header, curve_body, curve_plots, skipped)) + "\n</body></html>")
    markdown = directory / "report.md"
    markdown.write_text(estimates_md, encoding="utf-8")
    page = directory / "report.html"
    page.write_text(estimates_html, encoding="utf-8")
    return Report(header, body, markdown, page, point_plots, sweep_plots, skipped, curve_header, curve_body,
                  union[0], union[1], fixed, summary)


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
