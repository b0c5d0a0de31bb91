"""What every figure shares: how each predicted slope is named and drawn (estimates, reports), and
the tick labels of log axes."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["COLOURS", "LABELS", "PLOTTED", "STYLES", "log_slope_axis", "sparse_label"]


def sparse_label(value: float, _position: Any = None) -> str:
    """A log axis' minor tick label: plain numbers at 2 and 5 times a power of ten, else none."""
    if value <= 0:
        return ""
    leading = round(value / 10 ** math.floor(math.log10(value)), 6)
    return f"{value:g}" if leading in (2.0, 5.0) else ""


def log_slope_axis(ax: Any, values: list[float], margin: float) -> None:
    """A log y axis of slopes, in plain numbers, whose range holds every positive finite value
    drawn on it (`margin`: the factor left below the least and above the largest)."""
    import matplotlib.ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(sparse_label))
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    if positive:
        ax.set_ylim(min(positive) / margin, max(positive) * margin)


#: The predicted slopes the local-slope panel draws.
PLOTTED = ("functional", "paper", "data_dependent", "parametric", "ambient")
#: How each prediction is drawn, everywhere (estimate plots, reports).
LABELS = {"functional": "functional dimension r*", "paper": "paper N_eff", "data_dependent": "data-dependent (max over patterns)",
          "parametric": "parametric (free params)", "ambient": "ambient n·o"}
STYLES: dict[str, Any] = {"functional": "-", "paper": "--", "data_dependent": "-.", "parametric": ":", "ambient": (0, (1, 4))}
COLOURS = {"functional": "tab:purple", "paper": "tab:blue", "data_dependent": "tab:green", "parametric": "tab:orange",
           "ambient": "tab:gray"}
