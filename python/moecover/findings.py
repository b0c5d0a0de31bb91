"""The findings study: one command that measures what the reviews of "Generalization and Scaling
Laws for Mixture-of-Experts Transformers" ask, and writes it up with every number's interval.

    moecover findings --out DIR [--quick] [--executor dask]

The study is a grid (`studies/findings.toml`, also `examples/findings.toml`) of four parts, each
made of ordinary grid points: families of entropy estimates (`slopes`, `blocks`), d/β estimates on
points of known truth (`dimension`) and learning curves (`curves`). They run through
`moecover.batch` into `DIR/findings.db` (resumable, on any executor), and `write_findings` turns
the stored rows into `findings.md`, `findings.html` and the plots, one section per question:

1. the slope of log N(δ): r* against N_eff, the data-dependent and parametric counts, the nets;
2. the union bound over routing patterns, measured;
3. Definition 3.1's parallel block against the sequential one;
4. d and β estimated on manifolds of known d and targets of known β;
5. learning curves against 2β/(2β+d), the approximation/estimation balance, M and k at fixed N_eff.

Every sentence of an answer is generated from the table above it and claims no more than it
holds; what the numbers cannot say is written beside it.
"""

from __future__ import annotations

import copy
import html
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import batch, theory
from .report import REGIME_WORDS, _varying
from .batch.config import ConfigError, GridPoint

#: The built-in study.
DEFAULT_STUDY = Path(__file__).with_name("studies") / "findings.toml"
#: The parts of a study, and the kind of grid point each is made of.
PARTS = {"slopes": "estimate", "blocks": "estimate", "dimension": "dimension", "curves": "learning_curve"}
#: |d̂ − d| within which a dimension estimate counts as right (nearest-neighbour estimators are
#: accurate to a few tenths for clean d ≤ 5, definitions §10).
DIMENSION_TOLERANCE = 0.3
#: |β̂ − β| within which a smoothness estimate counts as right.
BETA_TOLERANCE = 0.1
#: A learning-curve exponent whose 90 % interval is wider than ± this is reported as testing
#: nothing, whatever it holds.
WIDEST_INTERVAL = 0.15


# --- the study -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    """A findings study, expanded: every grid point, and for each point's key its part and the
    name of its entry (the report's label)."""

    path: str
    quick: bool
    points: list[GridPoint]
    entries: dict[str, tuple[str, str]]

    def keys(self, part: str) -> list[str]:
        return [key for key, (p, _) in self.entries.items() if p == part]


def _overlay(entry: Mapping[str, Any], quick: Mapping[str, Any]) -> dict[str, Any]:
    """`entry` with `quick`'s values laid over it, table by table (one level deep)."""
    merged = copy.deepcopy(dict(entry))
    for key, value in quick.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _entry_config(part: str, entry: dict[str, Any], shared_estimate: dict[str, Any]) -> dict[str, Any]:
    """The `moecover run` config of one study entry."""
    if part in ("slopes", "blocks"):
        return {"estimate": shared_estimate, "grid": [entry]}
    if part == "dimension":
        return {"dimension": entry}
    unknown = set(entry) - {"erm", "spec"}
    if unknown:
        raise ConfigError(f"curves: unknown table(s) {sorted(unknown)}; a curves entry takes name, erm, spec and quick")
    return dict(entry)


def load_study(path: str | os.PathLike[str] | None = None, quick: bool = False) -> Study:
    """The study at `path` (default: the built-in one), expanded; `quick` lays each entry's
    `quick` tables over it and leaves out the entries with `quick = false`. ConfigError names the
    part, the entry and the key."""
    path = DEFAULT_STUDY if path is None else Path(path)
    config = batch.load_config(path)
    unknown = set(config) - set(PARTS) - {"estimate", "run"}
    if unknown:
        raise ConfigError(f"{path}: unknown part(s) {sorted(unknown)}; a study has {sorted(PARTS)}, estimate and run")
    shared = dict(config.get("estimate", {}))
    shared_quick = shared.pop("quick", {})
    if quick:
        shared = {**shared, **shared_quick}
    points: dict[str, GridPoint] = {}
    entries: dict[str, tuple[str, str]] = {}
    names: set[str] = set()
    for part in PARTS:
        listed = config.get(part, [])
        if not isinstance(listed, list) or not all(isinstance(e, Mapping) for e in listed):
            raise ConfigError(f"{path}: {part}: expected [[{part}]] tables")
        for number, raw in enumerate(listed):
            entry = dict(raw)
            name = entry.pop("name", f"{part} {number + 1}")
            if not isinstance(name, str) or not name or name in names:
                raise ConfigError(f"{path}: {part}.name: expected a distinct non-empty string per entry, got {name!r}")
            names.add(name)
            overlay = entry.pop("quick", {})
            if quick and overlay is False:
                continue
            if not isinstance(overlay, (Mapping, bool)):
                raise ConfigError(f"{path}: {part} {name!r}: quick: expected a table or false, got {overlay!r}")
            if quick and isinstance(overlay, Mapping):
                entry = _overlay(entry, overlay)
            if part in ("slopes", "blocks"):
                entry["name"] = name
            try:
                expanded = batch.expand_config(_entry_config(part, entry, shared))
            except ConfigError as error:
                raise ConfigError(f"{path}: {part} {name!r}: {error}") from None
            for point in expanded:
                key = batch.key_of(point)
                points[key] = point
                entries[key] = (part, name)
    if not points:
        raise ConfigError(f"{path}: the study has no grid points")
    return Study(str(path), quick, list(points.values()), entries)


# --- running it --------------------------------------------------------------------------------


class StudyIncomplete(RuntimeError):
    """Some grid points of the study raised: their errors are stored with them, and running the
    study again retries them (`failed`: (key, one-line error) per point)."""

    def __init__(self, message: str, failed: list[tuple[str, str]]):
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class Findings:
    """What `run_findings` wrote: the report's files, the database, the grid run's outcome and
    the seconds the grid took (0 when every point was already stored)."""

    markdown: Path
    html: Path
    db: Path
    plots: list[Path]
    run: batch.GridRun
    seconds: float


def run_findings(
    out: str | os.PathLike[str],
    quick: bool = False,
    study: str | os.PathLike[str] | None = None,
    executor: str | None = None,
    scheduler: str | None = None,
    jobs: int | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> Findings:
    """Runs the study's grid points not yet in `out/findings.db` (`executor`, `scheduler`,
    `jobs`, `threads` as in `moecover run`), then writes the report into `out`."""
    loaded = load_study(study, quick=quick)
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "findings.db"
    started = time.perf_counter()
    done = batch.run_grid(loaded.points, db, jobs=jobs, progress=progress, executor=executor, scheduler=scheduler,
                          threads=threads)
    seconds = time.perf_counter() - started if done.ran else 0.0
    if done.failed:
        listed = "; ".join(f"{key}: {error}" for key, error in done.failed[:3])
        raise StudyIncomplete(f"{len(done.failed)} grid point(s) of the study failed ({listed}); their errors are stored "
                              f"in {db} (`moecover show`), and running the study again retries them", done.failed)
    markdown, page, plots = write_findings(loaded, db, directory, seconds=seconds)
    return Findings(markdown, page, db, plots, done, seconds)


# --- the document ------------------------------------------------------------------------------

Block = tuple[str, Any]


@dataclass
class _Document:
    """The report as blocks, written both as Markdown and as HTML."""

    blocks: list[Block] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append((f"h{level}", text))

    def text(self, *sentences: str) -> None:
        self.blocks.append(("p", " ".join(s for s in sentences if s)))

    def labelled(self, label: str, *sentences: str) -> None:
        self.blocks.append(("labelled", (label, " ".join(sentences))))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def image(self, path: Path | None, alt: str) -> None:
        if path is not None:
            self.plots.append(path)
            self.blocks.append(("img", (path.name, alt)))

    def markdown(self) -> str:
        lines: list[str] = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                lines += ["#" * int(kind[1]) + " " + value, ""]
            elif kind == "p":
                lines += [value, ""]
            elif kind == "labelled":
                lines += [f"**{value[0]}** {value[1]}", ""]
            elif kind == "table":
                header, rows = value
                lines.append("| " + " | ".join(header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
                lines.append("")
            elif kind == "img":
                lines += [f"![{value[1]}]({value[0]})", ""]
        return "\n".join(lines)

    def html(self, title: str) -> str:
        body: list[str] = []
        for kind, value in self.blocks:
            if kind.startswith("h"):
                body.append(f"<{kind}>{html.escape(value)}</{kind}>")
            elif kind == "p":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "labelled":
                body.append(f"<p><b>{html.escape(value[0])}</b> {_inline(value[1])}</p>")
            elif kind == "table":
                header, rows = value
                cells = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                lines = [f"<tr>{cells}</tr>"] + ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows]
                body.append("<table>" + "".join(lines) + "</table>")
            elif kind == "img":
                body.append(f'<p><img src="{html.escape(value[0])}" alt="{html.escape(value[1])}"></p>')
        style = ("body{font-family:sans-serif;max-width:72em;margin:2em auto;line-height:1.45}"
                 "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.2em .5em;"
                 "text-align:left;font-size:.92em}th{background:#eee}img{max-width:100%}code{background:#f4f4f4}")
        return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Markdown's `code` and **bold** in a sentence, as HTML."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = escaped.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


# --- formatting ------------------------------------------------------------------------------


def _num(value: float, digits: int = 2) -> str:
    return f"{value:.{digits}f}" if math.isfinite(value) else "n/a"


def _with_interval(value: float, low: float, high: float, digits: int = 2) -> str:
    if not math.isfinite(value):
        return "n/a"
    if not (math.isfinite(low) and math.isfinite(high)):
        return _num(value, digits)
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _span(values: Sequence[float], digits: int | None = None) -> str:
    """"low–high" of the finite values (one number if they agree); `digits` after the point, or
    the shortest form."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    low, high = min(finite), max(finite)
    text = (lambda v: f"{v:g}") if digits is None else (lambda v: f"{v:.{digits}f}")
    return text(low) if text(low) == text(high) else f"{text(low)}–{text(high)}"


def _setting_label(point: GridPoint, varying: Sequence[str]) -> str:
    """The settings of a row that vary within its entry, `name=value` joined."""
    parts = []
    for name in varying:
        section, _, key = name.partition(".")
        parts.append(f"{key}={point.get(section, {}).get(key)}")
    return ", ".join(parts) or "—"


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    figure.savefig(path, dpi=110, bbox_inches="tight")
    _figure().close(figure)
    return path


# --- section 1: the slope of log N(δ) -----------------------------------------------------------


def _entry_rows(study: Study, part: str, rows: Sequence[Any]) -> dict[str, list[Any]]:
    """Stored rows of a part, grouped by the study entry they belong to (in the study's order)."""
    wanted = {key: name for key, (p, name) in study.entries.items() if p == part}
    order = list(dict.fromkeys(wanted.values()))
    grouped: dict[str, list[Any]] = {name: [] for name in order}
    for row in rows:
        if row.key in wanted:
            grouped[wanted[row.key]].append(row)
    return {name: found for name, found in grouped.items() if found}


def _slopes_table(grouped: dict[str, list[batch.StoredEstimate]]) -> tuple[list[str], list[list[str]]]:
    header = ["family", "setting", "free params P", "paper N_eff", "data-dependent", "r* (reached / samples)", "n·o",
              "regime", "slope over complete scales [replicates]", "extrapolated slope [interval]"]
    body = []
    for name, rows in grouped.items():
        varying = _varying(rows)
        for row in rows:
            e, p = row.estimate, row.estimate.predicted_slopes
            extrapolated = (_with_interval(e.extrapolated_slope, *e.extrapolated_interval)
                            if e.regime != "sample_limited" else "— (not resolved)")
            slope = (_with_interval(e.slope, *e.slope_interval) + f" over {len(e.slope_scales)}"
                     if math.isfinite(e.slope) else f"none ({len(e.slope_scales)} complete)")
            body.append([
                name, _setting_label(row.settings, varying), str(p["parametric"]), str(p["paper"]), str(p["data_dependent"]),
                f"{e.functional_dimension} ({e.functional_reached} / {e.provenance.get('functional_samples', '?')})",
                str(p["ambient"]), REGIME_WORDS.get(e.regime, e.regime), slope, extrapolated,
            ])
    return header, body


def _sweep_plot(grouped: dict[str, list[batch.StoredEstimate]], directory: Path) -> Path | None:
    """r* beside N_eff, the data-dependent count, P and n·o along each family's one swept number."""
    panels = []
    for name, rows in grouped.items():
        varying = _varying(rows)
        numeric = [v for v in varying if all(isinstance(r.setting(v), int) for r in rows)]
        if len(numeric) == 1 and len(rows) >= 2:
            panels.append((name, numeric[0], sorted(rows, key=lambda r: r.setting(numeric[0]))))
    if not panels:
        return None
    plt = _figure()
    from ._plots import COLOURS, LABELS, STYLES, log_slope_axis

    import matplotlib.ticker

    columns = min(len(panels), 4)
    rows_of_panels = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows_of_panels, columns, figsize=(4.2 * columns, 3.5 * rows_of_panels), squeeze=False)
    flat_axes = list(axes.flat)
    for ax, (name, axis, rows) in zip(flat_axes, panels):
        x = [r.setting(axis) for r in rows]
        drawn: list[float] = []
        for what in ("functional", "paper", "data_dependent", "parametric", "ambient"):
            y = [r.estimate.functional_dimension if what == "functional" else r.estimate.predicted_slopes[what] for r in rows]
            ax.plot(x, y, linestyle=STYLES[what], color=COLOURS[what], marker="o", markersize=3, label=LABELS[what])
            drawn += y
        log_slope_axis(ax, drawn, 1.25)
        if min(x) > 0:
            ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(v) for v in x])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel(axis.split(".")[1])
        ax.set_title(name, fontsize=10)
        ax.grid(alpha=0.3)
    for ax in flat_axes[len(panels):]:
        ax.set_visible(False)
    for row_axes in axes:
        row_axes[0].set_ylabel("slope of log N(δ) in log(1/δ)")
    handles, labels = flat_axes[0].get_legend_handles_labels()
    legend = figure.legend(handles, labels, loc="upper center", ncol=5, bbox_to_anchor=(0.5, 0.0), fontsize=8)
    title = figure.suptitle("r*, the exact asymptotic slope, against each prediction, along each family", fontsize=11, y=1.0)
    figure.tight_layout()
    figure.savefig(directory / "slopes.png", dpi=110, bbox_inches="tight", bbox_extra_artists=[legend, title])
    plt.close(figure)
    return directory / "slopes.png"


def _growth_plot(row: batch.StoredEstimate, directory: Path) -> Path:
    plt = _figure()
    e = row.estimate
    j = np.arange(1, len(e.rank_by_inputs) + 1)
    figure, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(j, e.rank_by_inputs, color="tab:purple", label="r* on the first j inputs")
    for what, style, colour in (("paper", "--", "tab:blue"), ("parametric", ":", "tab:orange"),
                                ("data_dependent", "-.", "tab:green")):
        ax.axhline(e.predicted_slopes[what], linestyle=style, color=colour, label=f"{what.replace('_', '-')} "
                   f"{e.predicted_slopes[what]}")
    ax.plot(j, j * row.spec.output_dim, color="tab:gray", linestyle=(0, (1, 4)), label="ambient j·o")
    ax.set_xscale("log")
    ax.set_ylim(0, max(e.predicted_slopes["parametric"], int(e.rank_by_inputs.max())) * 1.15)
    ax.set_xlabel("inputs j")
    ax.set_ylabel("rank")
    ax.set_title(f"r* against the number of inputs ({_spec_words(row.spec)})", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(figure, directory / "rank_by_inputs.png")


def _spec_words(spec: Any) -> str:
    return (f"M={spec.experts}, k={spec.top_k}, {spec.expert} experts"
            + (f" of {spec.expert_hidden} hidden" if spec.expert == "mlp" else "")
            + f", d_model={spec.d_model}, layers={spec.layers}, heads={spec.heads}, ℓ={spec.seq_len}")


def _slopes_section(doc: _Document, grouped: dict[str, list[batch.StoredEstimate]], directory: Path, plots: bool) -> None:
    doc.heading(2, "1. Does the metric entropy scale with the active parameters?")
    doc.labelled("Question.", "Theorem 3.4 bounds log N(δ) with slope N_eff = L_T Π_attn + L_T k Π_exp in log(1/δ): the "
                 "active parameters. Is that the slope the class actually has?")
    doc.labelled("Method.", "For each class, the functional dimension r* (the largest rank of the Jacobian of θ ↦ "
                 "(f_θ(x_i))_i over sampled θ) is the exact asymptotic slope of log N(δ) on those inputs; it is set beside "
                 "N_eff, the largest parameter count any realised routing pattern uses (data-dependent), the free parameters "
                 "P and the ambient n·o. Greedy nets of sampled members measure the slope directly where they resolve it "
                 "(regimes of definitions §8); elsewhere they are lower bounds with no slope.")
    rows = [row for found in grouped.values() for row in found]
    header, body = _slopes_table(grouped)
    doc.table(header, body)
    if plots:
        doc.image(_sweep_plot(grouped, directory), "r* against the predictions along each family")
        widest = max(rows, key=lambda r: len(r.estimate.rank_by_inputs))
        if len(widest.estimate.rank_by_inputs) >= 4:
            doc.image(_growth_plot(widest, directory), "r* against the number of inputs")
    r_star = [r.estimate.functional_dimension for r in rows]
    neff = [r.estimate.predicted_slopes["paper"] for r in rows]
    data = [r.estimate.predicted_slopes["data_dependent"] for r in rows]
    free = [r.estimate.predicted_slopes["parametric"] for r in rows]
    ambient = [r.estimate.predicted_slopes["ambient"] for r in rows]
    above = sum(a > b for a, b in zip(r_star, neff))
    equal = sum(a == b for a, b in zip(r_star, neff))
    capped = sum(a == b for a, b in zip(r_star, ambient))
    below_free = sum(a < b for a, b in zip(r_star, free))
    sentences = [
        f"Of {len(rows)} classes, r* exceeds the paper's N_eff in {above}, equals it in {equal} and is below it in "
        f"{len(rows) - above - equal}; r* is below the free parameter count in {below_free} and equals n·o (the data's "
        f"cap) in {capped}."
    ]
    unpinned = [r for r in rows if not r.settings.get("pinned")]
    not_capped = [r for r in unpinned if r.estimate.functional_dimension < r.estimate.predicted_slopes["ambient"]]
    if not_capped:
        tracks_data = sum(r.estimate.functional_dimension <= r.estimate.predicted_slopes["data_dependent"] for r in not_capped)
        sentences.append(
            f"Where the data do not cap it ({len(not_capped)} classes with free routers), r* is at most the data-dependent "
            f"count in {tracks_data} and exceeds N_eff in "
            f"{sum(r.estimate.functional_dimension > r.estimate.predicted_slopes['paper'] for r in not_capped)}.")
    experts = grouped.get("experts")
    if experts and len(experts) >= 2:
        ordered = sorted(experts, key=lambda r: r.spec.experts)
        first, last = ordered[0], ordered[-1]
        sentences.append(
            f"Along experts M = {first.spec.experts} … {last.spec.experts} at top-{first.spec.top_k}, N_eff stays "
            f"{_span([r.estimate.predicted_slopes['paper'] for r in ordered])} while r* goes "
            f"{' → '.join(str(r.estimate.functional_dimension) for r in ordered)} (n·o = "
            f"{first.estimate.predicted_slopes['ambient']}).")
    resolved = [r for r in rows if r.estimate.regime in ("pre_asymptotic", "asymptotic")]
    if resolved:
        held = sum(r.estimate.extrapolated_interval[0] <= r.estimate.functional_dimension <= r.estimate.extrapolated_interval[1]
                   for r in resolved)
        held_neff = sum(r.estimate.extrapolated_interval[0] <= r.estimate.predicted_slopes["paper"]
                        <= r.estimate.extrapolated_interval[1] for r in resolved)
        sentences.append(f"Where the nets resolve a slope ({len(resolved)} classes), the extrapolated slope's interval holds "
                         f"r* in {held} and N_eff in {held_neff}.")
    differs = len(rows) - equal
    if differs * 2 > len(rows):
        answer = f"No: the exact slope r* differs from N_eff in {differs} of {len(rows)} classes."
    else:
        answer = f"Mostly: the exact slope r* equals N_eff in {equal} of {len(rows)} classes."
    doc.labelled("Answer.", answer, *sentences)
    limited = [r for r in rows if r.estimate.regime == "sample_limited"]
    doc.labelled("What the numbers cannot say.",
                 "r* is the largest rank seen over the sampled θ: a routing region the samples miss could hold a larger one "
                 "(the reached column says how often it was attained). It is the slope as δ → 0 on these inputs, which says "
                 "nothing about the constant in front or about the entropy at the δ of a generalisation bound."
                 + (f" {len(limited)} of the {len(rows)} nets are sample-limited (r* {_span([r.estimate.functional_dimension for r in limited])}"
                    f" there): lower bounds on log N(δ) that measure no slope, and no check of r* by the nets." if limited else ""))


# --- section 2: the union bound ----------------------------------------------------------------


def _union_section(doc: _Document, grouped: dict[str, list[batch.StoredEstimate]], directory: Path, plots: bool) -> None:
    doc.heading(2, "2. How loose is the union bound over routing patterns?")
    doc.labelled("Question.", "The theorem pays L_T ℓ k log(eM/k) nats for a union over every top-k routing pattern of an "
                 "input, C(M,k)^{L_T ℓ} ≤ (eM/k)^{k L_T ℓ} of them. How many patterns does the class realise, and what "
                 "does the union cost the nets?")
    doc.labelled("Method.", "The samples' dataset-wide routing patterns (one per θ: every input's, every layer's and token's "
                 "top-k set) are counted, and exactly enumerated where the router is linear and the arrangement is small; a "
                 "greedy net is built within each pattern, so Σ_r N_r(δ) / N(δ) measures the union's overhead at each δ.")
    header = ["family", "setting", "patterns realised (sampled)", "realisable (exact)", "C(M,k)^{L_T ℓ} per input",
              "(eM/k)^{k L_T ℓ} per input", "log C(M,k)^{L_T ℓ n} (dataset union)", "Σ_r N_r / N (coarsest … finest δ)",
              "measured overhead, nats (coarsest … finest δ)", "paper's term (nats)"]
    body = []
    for name, rows in grouped.items():
        varying = _varying(rows)
        for row in rows:
            table, spec = row.estimate.union_bound, row.spec
            if not table:
                continue
            n = len(row.estimate.rank_by_inputs)
            ratio = np.asarray(table["union_ratio"], dtype=float)
            overhead = np.asarray(table["routing_overhead"], dtype=float)
            per_input = math.comb(spec.experts, spec.top_k) ** (spec.layers * spec.seq_len)
            paper_count = math.exp(theory.routing_term(spec))
            finite = overhead[np.isfinite(overhead)]
            exact = table["patterns_exact"]
            body.append([
                name, _setting_label(row.settings, varying), f"{table['patterns_sampled']:,}",
                "n/a" if exact is None else f"{exact:,}", f"{per_input:,}", f"{paper_count:.3g}",
                f"{n * table['log_patterns_per_input']:.1f}",
                "n/a" if not np.isfinite(ratio).any() else f"{ratio[0]:.3g} … {ratio[-1]:.3g}",
                "n/a" if not finite.size else f"{finite[0]:.2f} … {finite[-1]:.2f}",
                f"{table['paper_routing_term']:.2f}",
            ])
    doc.table(header, body)
    if plots:
        doc.image(_union_plot(grouped, directory), "Σ_r N_r / N against δ")
    doc.labelled("Answer.", *_union_answer(grouped))
    doc.labelled("What the numbers cannot say.",
                 "The sampled pattern count is a lower bound on the realisable one (the exact column, where it exists, is the "
                 "truth); the per-pattern nets are measured at the nets' own scales, so the overhead at δ far below them "
                 "is not measured. The paper's term is per input, the dataset union is over every input's patterns at once: "
                 "the two are not the same quantity, and the table shows both.")


def _union_answer(grouped: dict[str, list[batch.StoredEstimate]]) -> list[str]:
    """The union section's answer, sentence by sentence, from the stored tables."""
    rows = [row for found in grouped.values() for row in found if row.estimate.union_bound]
    routed = [row for row in rows if row.estimate.union_bound["log_patterns_per_input"] > 0]
    if not routed:
        return ["No class here routes: every input has one possible pattern."]
    sentences = []
    fractions = []
    for row in routed:
        if row.settings.get("pinned"):
            continue  # a pinned router realises what it was pinned to
        table = row.estimate.union_bound
        union_log = len(row.estimate.rank_by_inputs) * table["log_patterns_per_input"]
        if union_log > 0:
            fractions.append(math.log(max(table["patterns_sampled"], 1)) / union_log)
    exact = [row for row in routed if row.estimate.union_bound["patterns_exact"] is not None]
    if fractions:
        sentences.append(f"With free routers, the log of the number of dataset-wide patterns the samples realise is "
                         f"{_span(fractions, 2)} times the log of the union's count over the data set, "
                         "C(M,k)^{L_T ℓ n}.")
    if exact:
        listed = []
        for row in exact:
            table = row.estimate.union_bound
            union_log = len(row.estimate.rank_by_inputs) * table["log_patterns_per_input"]
            listed.append(f"M={row.spec.experts}, k={row.spec.top_k}, n={len(row.estimate.rank_by_inputs)}"
                          + (" (router pinned)" if row.settings.get("pinned") else "")
                          + f": {table['patterns_exact']:,} of e^{union_log:.1f}")
        sentences.append(f"Where the realisable patterns are enumerated exactly ({len(exact)} classes), they are "
                         + "; ".join(listed) + " (realisable of the union's count).")
    saturated = [row for row in routed
                 if row.estimate.union_bound["patterns_sampled"] >= 0.95 * row.settings["estimate"]["samples"]]
    if saturated:
        sentences.append(f"In {len(saturated)} of the {len(routed)} classes that route, at least 95 % of the samples each "
                         "realised a pattern of its own: there the sampled count is limited by the samples, not by the "
                         "class.")
    finest_ratio = [float(np.asarray(r.estimate.union_bound["union_ratio"], float)[-1]) for r in routed]
    coarsest_ratio = [float(np.asarray(r.estimate.union_bound["union_ratio"], float)[0]) for r in routed]
    finest_ratio = [v for v in finest_ratio if math.isfinite(v)]
    coarsest_ratio = [v for v in coarsest_ratio if math.isfinite(v)]
    if finest_ratio:
        sentences.append(f"What the union costs the cover, Σ_r N_r / N, is {_span(finest_ratio, 2)} at the "
                         f"finest δ measured, against {_span(coarsest_ratio, 0)} at the coarsest, where "
                         "each realised pattern needs a centre of its own.")
    overhead = [(float(np.asarray(r.estimate.union_bound["routing_overhead"], float)[-1]), r.estimate.union_bound["paper_routing_term"])
                for r in routed]
    overhead = [(o, t) for o, t in overhead if math.isfinite(o)]
    if overhead:
        above = sum(o > t for o, t in overhead)
        sentences.append(f"At the finest δ the measured overhead log Σ_r N_r − max_r log N_r exceeds the paper's per-input "
                         f"term L_T ℓ k log(eM/k) in {above} of {len(overhead)} classes (it is {_span([o for o, _ in overhead], 2)}"
                         f" nats against {_span([t for _, t in overhead], 2)}).")
    return sentences


def _union_plot(grouped: dict[str, list[batch.StoredEstimate]], directory: Path) -> Path | None:
    series = []
    for number, (name, rows) in enumerate(grouped.items()):
        varying = _varying(rows)
        members = [r for r in rows if r.estimate.union_bound and r.estimate.union_bound["patterns_sampled"] > 1
                   and np.isfinite(np.asarray(r.estimate.union_bound["union_ratio"], float)).any()]
        for place, row in enumerate(members):
            series.append((f"{name}: {_setting_label(row.settings, varying)}", row, number, place))
    if not series:
        return None
    plt = _figure()
    figure, ax = plt.subplots(figsize=(7.5, 4.4))
    colours = plt.get_cmap("tab10")
    styles = ["-", "--", ":", "-.", (0, (5, 1, 1, 1))]
    for label, row, number, place in series:
        ratio = np.asarray(row.estimate.union_bound["union_ratio"], float)
        scale = row.estimate.diameter if math.isfinite(row.estimate.diameter) and row.estimate.diameter > 0 else 1.0
        ax.plot(row.estimate.deltas / scale, ratio, color=colours(number % 10), linestyle=styles[place % len(styles)],
                linewidth=1.3, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("δ / D, the scale relative to the class's diameter (finer to the right)")
    ax.set_ylabel("Σ_r N_r(δ) / N(δ)")
    ax.set_title("What the union over routing patterns costs the nets", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _save(figure, directory / "union.png")


# --- section 3: the parallel block --------------------------------------------------------------


def _blocks_section(doc: _Document, grouped: dict[str, list[batch.StoredEstimate]], directory: Path, plots: bool) -> None:
    doc.heading(2, "3. Definition 3.1's parallel block against the sequential block")
    doc.labelled("Question.", "Definition 3.1 writes a block as H' = H + Attn(H) + MoE(H) (parallel), where the standard "
                 "Transformer has Y = H + Attn(H), H' = Y + MoE(Y) (sequential). Does the class behave differently?")
    doc.labelled("Method.", "The same classes in both forms: r*, the nets at the same samples, and log |net| at the finest "
                 "scale both forms complete.")
    rows = [row for found in grouped.values() for row in found]
    header = ["setting", "block", "P", "N_eff", "r* (reached / samples)", "regime", "log|net| at δ (finest complete)",
              "patterns realised"]
    body = []
    pairs: dict[str, dict[str, batch.StoredEstimate]] = {}
    for row in rows:
        others = {k: v for k, v in row.flat_settings.items() if k != "spec.block"}
        pairs.setdefault(repr(sorted(others.items())), {})[row.setting("spec.block")] = row
    varying = [v for v in _varying(rows) if v != "spec.block"]
    for pair in pairs.values():
        for form, row in sorted(pair.items(), key=lambda item: item[0] != "sequential"):
            e = row.estimate
            complete = np.isin(e.deltas, e.slope_scales)
            finest = (f"{e.log_covering[complete][-1]:.2f} at {e.deltas[complete][-1]:.3g}" if complete.any() else
                      f"≥ {e.log_covering[-1]:.2f} at {e.deltas[-1]:.3g} (incomplete)")
            body.append([_setting_label(row.settings, varying), form, str(e.predicted_slopes["parametric"]),
                         str(e.predicted_slopes["paper"]),
                         f"{e.functional_dimension} ({e.functional_reached} / {e.provenance.get('functional_samples', '?')})",
                         REGIME_WORDS.get(e.regime, e.regime), finest,
                         f"{e.union_bound.get('patterns_sampled', 0):,}" if e.union_bound else "n/a"])
    doc.table(header, body)
    if plots:
        doc.image(_blocks_plot(pairs, directory), "log|net| against δ, both block forms")
    same = [p for p in pairs.values() if len(p) == 2]
    equal = [p for p in same if p["sequential"].estimate.functional_dimension == p["parallel"].estimate.functional_dimension]
    capped = [p for p in equal if p["sequential"].estimate.functional_dimension == p["sequential"].estimate.predicted_slopes["ambient"]]
    differing = [f"{_setting_label(p['sequential'].settings, varying)}: sequential {p['sequential'].estimate.functional_dimension}, "
                 f"parallel {p['parallel'].estimate.functional_dimension}" for p in same if p not in equal]
    sentences = [f"r* is the same for both forms in {len(equal)} of {len(same)} settings"
                 + (f" ({len(capped)} of them at the cap n·o, where r* cannot tell the forms apart)" if capped else "") + "."]
    if differing:
        sentences.append("It differs in " + "; ".join(differing) + ".")
        rare = [p for p in same if p not in equal and min(
            p[f].estimate.functional_reached / max(p[f].estimate.provenance.get("functional_samples", 1), 1)
            for f in ("sequential", "parallel")) < 0.01]
        if rare:
            sentences.append(f"In {len(rare)} of those, fewer than 1 % of one form's samples reached its r*, so "
                             "more samples could close the gap: the difference is not established.")
    sentences.append("The nets (the plot) show how the entropy at the sampled scales differs.")
    doc.labelled("Answer.", *sentences)
    doc.labelled("What the numbers cannot say.", "Equal r* means equal asymptotic slopes on these inputs, not equal covering "
                 "numbers: the routing of the parallel form reads H, not Y, which changes which patterns occur and the "
                 "entropy at finite δ.")


def _blocks_plot(pairs: dict[str, dict[str, batch.StoredEstimate]], directory: Path) -> Path | None:
    if not pairs:
        return None
    plt = _figure()
    figure, ax = plt.subplots(figsize=(6.5, 4))
    colours = plt.get_cmap("tab10")
    for i, pair in enumerate(pairs.values()):
        for form, style in (("sequential", "-"), ("parallel", "--")):
            row = pair.get(form)
            if row is None:
                continue
            e = row.estimate
            ax.fill_between(e.deltas, e.log_covering_min, e.log_covering_max, color=colours(i), alpha=0.15)
            ax.plot(e.deltas, e.log_covering, linestyle=style, color=colours(i),
                    label=f"layers={row.spec.layers}, {form} (r*={e.functional_dimension})")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("δ (finer to the right)")
    ax.set_ylabel("log |net_δ| (nats, replicate range shaded)")
    ax.set_title("Greedy nets of both block forms (lower bounds on log N(δ/2))", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, directory / "blocks.png")


# --- section 4: d and β -------------------------------------------------------------------------


def _dimension_section(doc: _Document, grouped: dict[str, list[batch.StoredDimension]], directory: Path, plots: bool) -> None:
    doc.heading(2, "4. Can d and β be estimated? Checked on toy manifolds")
    doc.labelled("Question.", "The rates depend on the data's intrinsic dimension d and the target's smoothness β. Can both "
                 "be read from data, and how well, where the truth is known?")
    doc.labelled("Method.", "Points of manifolds of known d in R^ambient, targets of known β (Weierstrass-type sums); d̂ by "
                 "three nearest-neighbour estimators (scikit-dimension's MLE, TwoNN, correlation integral) with 90 % "
                 f"half-sampling intervals, β̂ by increments (a variogram fit with its noise floor) with a bootstrap interval. "
                 f"✓ marks |d̂ − d| ≤ {DIMENSION_TOLERANCE} and |β̂ − β| ≤ {BETA_TOLERANCE}.")
    header = ["entry", "manifold", "d", "ambient", "β", "response noise σ", "n", "d̂ MLE", "d̂ TwoNN", "d̂ corr. integral",
              "β̂ [90 %]"]
    body = []
    right_d, right_beta, total = 0, 0, 0
    misses = []
    for name, rows in grouped.items():
        for row in rows:
            s = row.settings["dimension"]
            estimates = row.dimension_estimates
            cells = [name, s["manifold"], str(s["d"]), str(s["ambient"]), f"{s['beta']:g}", f"{s['noise']:g}", str(s["n"])]
            for method in ("mle", "twonn", "corrint"):
                value, low, high = estimates.get(method, (math.nan, math.nan, math.nan))
                ok = abs(value - s["d"]) <= DIMENSION_TOLERANCE
                cells.append(_with_interval(value, low, high) + (" ✓" if ok else " ✗"))
            beta, low, high = row.beta
            beta_ok = abs(beta - s["beta"]) <= BETA_TOLERANCE
            cells.append(_with_interval(beta, low, high) + (" ✓" if beta_ok else " ✗"))
            body.append(cells)
            total += 1
            right_d += abs(estimates.get("mle", (math.nan,))[0] - s["d"]) <= DIMENSION_TOLERANCE
            right_beta += beta_ok
            if not beta_ok:
                misses.append(f"β̂ {beta:.2f} for β = {s['beta']:g} ({s['manifold']}, d = {s['d']}, σ = {s['noise']:g})")
            if abs(estimates.get("mle", (math.nan,))[0] - s["d"]) > DIMENSION_TOLERANCE:
                misses.append(f"MLE d̂ {estimates['mle'][0]:.2f} for d = {s['d']} ({s['manifold']} in R^{s['ambient']})")
    doc.table(header, body)
    if plots:
        doc.image(_dimension_plot(grouped, directory), "d̂ against d and β̂ against β")
    doc.labelled("Answer.", f"The MLE's d̂ is within {DIMENSION_TOLERANCE} of d in {right_d} of {total} cases and β̂ within "
                 f"{BETA_TOLERANCE} of β in {right_beta} of {total}." + (" The misses: " + "; ".join(misses) + "." if misses else ""))
    doc.labelled("What the numbers cannot say.", "These are toy manifolds with smooth charts and targets rough to order β "
                 "everywhere; nearest-neighbour estimators read low as d grows (≳ 10) and drift with ambient noise, and the "
                 "increments estimator reads a kinked target's smooth part. A real data set's d̂ and β̂ carry those biases "
                 "and no known truth to check them against.")


def _dimension_plot(grouped: dict[str, list[batch.StoredDimension]], directory: Path) -> Path | None:
    rows = [row for found in grouped.values() for row in found]
    if not rows:
        return None
    plt = _figure()
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    offsets = {"mle": -0.12, "twonn": 0.0, "corrint": 0.12}
    colours = {"mle": "tab:blue", "twonn": "tab:orange", "corrint": "tab:green"}
    for method, offset in offsets.items():
        for i, row in enumerate(rows):
            d = row.settings["dimension"]["d"]
            value, low, high = row.dimension_estimates[method]
            left.errorbar(d + offset, value, yerr=[[value - low], [high - value]], fmt="o", markersize=3, color=colours[method],
                          label=method if i == 0 else None)
    truth = sorted({row.settings["dimension"]["d"] for row in rows})
    left.plot([0.5, max(truth) + 0.5], [0.5, max(truth) + 0.5], color="gray", linestyle=":", label="d̂ = d")
    left.set_xlabel("d (truth)")
    left.set_ylabel("d̂")
    left.set_title("intrinsic dimension", fontsize=10)
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    for row in rows:
        s = row.settings["dimension"]
        beta, low, high = row.beta
        right.errorbar(s["beta"] + 0.01 * s["d"], beta, yerr=[[beta - low], [high - beta]], fmt="o", markersize=3,
                       color="tab:red" if s["noise"] else "tab:purple")
    right.plot([0.2, 0.8], [0.2, 0.8], color="gray", linestyle=":", label="β̂ = β")
    right.set_xlabel("β (truth; purple clean, red noisy responses)")
    right.set_ylabel("β̂ (increments)")
    right.set_title("smoothness", fontsize=10)
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return _save(figure, directory / "d_and_beta.png")


# --- section 5: learning curves ------------------------------------------------------------------


def _risk_at(curve: Any, index: int) -> tuple[float, float, float]:
    """The geometric mean of the seeds' risks at the curve's `index`-th n, and their min and max."""
    risks = np.asarray(curve.risks, dtype=float)[index]
    return float(np.exp(np.mean(np.log(risks)))), float(risks.min()), float(risks.max())


def _curves_section(doc: _Document, grouped: dict[str, list[batch.StoredCurve]], directory: Path, plots: bool) -> None:
    doc.heading(2, "5. Learning curves: the exponents, the balance, and M and k at fixed N_eff")
    doc.labelled("Question.", "Does least squares over the class reach the predicted rate n^{−2β/(2β+d)}; is the risk "
                 "smallest near the theory's N_eff* ∝ n^{d/(2β+d)}; and does the choice of experts M and top_k k matter "
                 "at a fixed active count (\"keep M ≈ k\", \"operate near k*\")?")
    doc.labelled("Method.", "Noisy regression problems of known d and β; each fit the best of several Adam starts by "
                 "validation risk, with θ kept in the box; excess risk on fresh points against the noiseless target; the "
                 "exponent is the mean of the seeds' log-log slopes with a 90 % t-interval. k-NN with k ∝ n^{2β/(2β+d)}, "
                 "which attains the minimax rate, runs the same harness as a calibration.")
    header = ["entry", "model", "d", "β", "2β/(2β+d)", "n", "fitted exponent [90 %]", "fitted − theory", "active params per n"]
    body = []
    verdicts = []
    for name, rows in grouped.items():
        for row in rows:
            curve, s = row.curve, row.settings["erm"]
            if s["model"] == "fixed_neff":
                continue  # at fixed N_eff the exponent is not the rate's: tabled below
            difference = curve.exponent - curve.theory_exponent
            body.append([name, s["model"], str(s["d"]), f"{s['beta']:g}", f"{curve.theory_exponent:.3f}",
                         f"{curve.ns[0]}–{curve.ns[-1]}", _with_interval(curve.exponent, *curve.interval, digits=3),
                         f"{difference:+.3f}", ", ".join(str(v) for v in curve.sizes)])
            lo, hi = curve.interval
            inside = lo <= curve.theory_exponent <= hi
            if not (hi - lo <= 2 * WIDEST_INTERVAL):
                verdict = f"an interval wider than ±{WIDEST_INTERVAL} tests nothing"
            else:
                verdict = "its interval holds the theory" if inside else "its interval misses the theory"
            verdicts.append(f"{s['model']} (d = {s['d']}): {curve.exponent:.3f} [{lo:.3f}, {hi:.3f}] against "
                            f"{curve.theory_exponent:.3f}: {verdict}")
    doc.heading(3, "Exponents")
    doc.table(header, body)
    if plots:
        doc.image(_curves_plot(grouped, directory), "risk against n")
    if verdicts:
        doc.labelled("Answer.", "; ".join(verdicts) + ".")
    by_neff: dict[str, list[batch.StoredCurve]] = {}
    for name, rows in grouped.items():
        for row in rows:
            if row.settings["erm"]["model"] == "fixed_neff":
                others = {k: v for k, v in row.flat_settings.items() if k != "erm.neff"}
                by_neff.setdefault(name + repr(sorted(others.items())), []).append(row)
    neff_sweeps = [rows for rows in by_neff.values() if len(rows) >= 3]
    if neff_sweeps:
        _balance(doc, neff_sweeps, directory, plots)
    at_fixed = [rows for rows in grouped.values()
                if rows[0].settings["erm"]["model"] == "fixed_neff"
                and len({(r.settings["spec"]["experts"], r.settings["spec"]["top_k"]) for r in rows}) >= 2]
    if at_fixed:
        _heuristics(doc, at_fixed[0])
    doc.labelled("What the numbers cannot say.", "Adam from a few starts need not find the least-squares fit, so a fitted "
                 "exponent measures this optimiser on this class as much as the estimator the theory describes; with a few "
                 "n per curve and 2–5 seeds the intervals are wide, and an exponent's agreement with 2β/(2β+d) over one "
                 "or two decades of n does not show the asymptotic rate.")


def _balance(doc: _Document, sweeps: list[list[batch.StoredCurve]], directory: Path, plots: bool) -> None:
    doc.heading(3, "Approximation against estimation")
    header = ["n", "N_eff (active params)", "risk at n, geometric mean [seeds' range]", "theory's N_eff* = n^{d/(2β+d)}"]
    body = []
    sentences = []
    for rows in sweeps:
        rows = sorted(rows, key=lambda r: r.settings["erm"]["neff"])
        s = rows[0].settings["erm"]
        for index, n in enumerate(rows[0].curve.ns):
            best_star = float(theory.optimal_active_params(n, s["beta"], s["d"]))
            risks = [_risk_at(r.curve, index) for r in rows]
            for row, (mean, low, high) in zip(rows, risks):
                body.append([str(n), str(row.curve.sizes[index]), f"{mean:.4f} [{low:.4f}, {high:.4f}]", f"{best_star:.1f}"])
            best = int(np.argmin([m for m, _, _ in risks]))
            sentences.append(f"at n = {n} the risk is least at N_eff = {rows[best].curve.sizes[index]} of "
                             f"{', '.join(str(r.curve.sizes[index]) for r in rows)} (N_eff* ≈ {best_star:.1f})"
                             + (", still falling at the largest N_eff measured" if best == len(rows) - 1 else ""))
    doc.table(header, body)
    if plots:
        doc.image(_balance_plot(sweeps, directory), "risk against N_eff at fixed n")
    joined = "; ".join(sentences)
    doc.labelled("Answer.", joined[:1].upper() + joined[1:] + ". Where the risk is still falling at the largest N_eff, "
                 "no balance point shows in the range measured. The theory fixes N_eff* only up to a constant (1 here), so "
                 "agreement would mean the same order, not the same number.")


def _heuristics(doc: _Document, rows: list[batch.StoredCurve]) -> None:
    doc.heading(3, "Experts M and top_k k at a fixed active count")
    header = ["M", "k", "N_eff", "risk at the largest n, geometric mean [seeds' range]", "fitted exponent [90 %]"]
    body = []
    risks = []
    for row in sorted(rows, key=lambda r: (r.settings["spec"]["experts"], r.settings["spec"]["top_k"])):
        spec = row.settings["spec"]
        mean, low, high = _risk_at(row.curve, -1)
        risks.append((mean, low, high, spec["experts"], spec["top_k"]))
        body.append([str(spec["experts"]), str(spec["top_k"]), str(row.curve.sizes[-1]), f"{mean:.4f} [{low:.4f}, {high:.4f}]",
                     _with_interval(row.curve.exponent, *row.curve.interval, digits=3)])
    doc.table(header, body)
    best = min(risks)
    overlapping = [r for r in risks if r[1] <= best[2]]
    doc.labelled("Answer.", f"The least risk is at M = {best[3]}, k = {best[4]}; the seeds' ranges of "
                 f"{len(overlapping)} of {len(risks)} settings overlap the best one's, so "
                 + ("these runs do not separate the settings." if len(overlapping) > 1 else "that setting is best by more than "
                    "the seeds' spread."))


def _curves_plot(grouped: dict[str, list[batch.StoredCurve]], directory: Path) -> Path | None:
    rows = [row for found in grouped.values() for row in found if row.settings["erm"]["model"] != "fixed_neff"]
    if not rows:
        return None
    plt = _figure()
    figure, ax = plt.subplots(figsize=(6.5, 4.2))
    colours = plt.get_cmap("tab10")
    for i, row in enumerate(rows):
        curve, s = row.curve, row.settings["erm"]
        ns = np.asarray(curve.ns, float)
        risks = np.asarray(curve.risks, float)
        mean = np.exp(np.log(risks).mean(axis=1))
        ax.fill_between(ns, risks.min(axis=1), risks.max(axis=1), color=colours(i), alpha=0.15)
        ax.plot(ns, mean, "o-", color=colours(i), markersize=3,
                label=f"{s['model']}, d={s['d']}: {curve.exponent:.2f} (theory {curve.theory_exponent:.2f})")
        ax.plot(ns, mean[0] * (ns / ns[0]) ** (-curve.theory_exponent), ":", color=colours(i))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training size n")
    ax.set_ylabel("excess risk (seeds' range shaded)")
    ax.set_title("Learning curves; dotted: slope −2β/(2β+d) from the first n", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, directory / "learning_curves.png")


def _balance_plot(sweeps: list[list[batch.StoredCurve]], directory: Path) -> Path:
    plt = _figure()
    figure, ax = plt.subplots(figsize=(6.2, 4))
    for rows in sweeps:
        rows = sorted(rows, key=lambda r: r.settings["erm"]["neff"])
        s = rows[0].settings["erm"]
        for index, n in enumerate(rows[0].curve.ns):
            risks = np.array([np.asarray(r.curve.risks, float)[index] for r in rows])
            sizes = [r.curve.sizes[index] for r in rows]
            mean = np.exp(np.log(risks).mean(axis=1))
            line = ax.plot(sizes, mean, "o-", markersize=3, label=f"n = {n}")[0]
            ax.fill_between(sizes, risks.min(axis=1), risks.max(axis=1), color=line.get_color(), alpha=0.15)
            ax.axvline(float(theory.optimal_active_params(n, s["beta"], s["d"])), color=line.get_color(), linestyle=":")
    import matplotlib.ticker

    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_yscale("log")
    ax.set_xlabel("active parameters N_eff")
    ax.set_ylabel("excess risk")
    ax.set_title("Risk against N_eff at fixed n; dotted: N_eff* = n^{d/(2β+d)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(figure, directory / "balance.png")


# --- the report ---------------------------------------------------------------------------------


def _plots_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def write_findings(study: Study, db: str | os.PathLike[str], out: str | os.PathLike[str],
                   seconds: float = 0.0) -> tuple[Path, Path, list[Path]]:
    """Writes `findings.md`, `findings.html` and the plots of `study`'s stored rows in `db` into
    `out`; returns their paths. A point of the study that is not stored is named, not skipped."""
    from . import __version__

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    estimates, curves, dimensions = batch.stored_rows(db), batch.stored_curves(db), batch.stored_dimensions(db)
    stored = {row.key for row in estimates} | {row.key for row in curves} | {row.key for row in dimensions}
    missing = [key for key in study.entries if key not in stored]
    if missing:
        raise ValueError(f"db: {len(missing)} grid point(s) of the study are not stored in {os.fspath(db)} "
                         f"(first: {missing[0]}); run the study first")
    plots = _plots_available()
    doc = _Document()
    command = "moecover findings --out DIR" + (" --quick" if study.quick else "")
    doc.heading(1, "Findings: what the measurements say about the paper's claims" + (" (quick run)" if study.quick else ""))
    doc.text(f"`{command}`, moecover {__version__}, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores "
             f"({platform.machine()}, Python {platform.python_version()})"
             + (f", the grid in {seconds / 60:.1f} min" if seconds else "") + f". Study: `{Path(study.path).name}` "
             f"({len(study.points)} grid points), results in `findings.db` (`moecover show`). Definitions: the package's "
             "docs/definitions.md." + ("" if plots else " matplotlib is not installed: no plots (`pip install "
                                      "\"moecover[plot]\"`)."))
    if study.quick:
        doc.text("**A quick run**: a subset of the study with fewer samples, for a first look and for CI. Its tables have "
                 "the full run's columns; its intervals are wider and its nets coarser.")
    slopes = _entry_rows(study, "slopes", estimates)
    _slopes_section(doc, slopes, directory, plots)
    _union_section(doc, slopes, directory, plots)
    _blocks_section(doc, _entry_rows(study, "blocks", estimates), directory, plots)
    _dimension_section(doc, _entry_rows(study, "dimension", dimensions), directory, plots)
    _curves_section(doc, _entry_rows(study, "curves", curves), directory, plots)
    markdown = directory / "findings.md"
    page = directory / "findings.html"
    markdown.write_text(doc.markdown(), encoding="utf-8")
    page.write_text(doc.html("moecover findings"), encoding="utf-8")
    return markdown, page, doc.plots


__all__ = ["DEFAULT_STUDY", "Findings", "Study", "StudyIncomplete", "load_study", "run_findings", "write_findings"]
