"""The `moecover` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import __version__
from ._spec import MoESpec


def _demo(args: argparse.Namespace) -> int:
    """The contrast of MATH.md §4, measured: constant experts, top-1, a router pinned so that each
    input reaches its own expert. The paper predicts slope 1 (active parameters); the sup norm over
    the inputs sees every expert, so the data follow the total count, M."""
    from .estimate import estimate_entropy

    experts = args.experts
    spec = MoESpec(experts=experts, top_k=1, d_model=1, expert="constant")
    j = np.arange(experts, dtype=float)
    # tangents of a parabola: at x = 0.1·j the score w_i x + b_i is highest for i = j
    pinned = {"layers.0.router.weight": j.reshape(experts, 1), "layers.0.router.bias": -(j**2) * 0.1 / 2}
    inputs = (0.1 * j).reshape(experts, 1, 1)
    estimate = estimate_entropy(
        spec, inputs, args.samples, replicates=3, rng=args.seed, pinned=pinned, n_threads=args.threads,
        progress=not args.quiet,
    )
    lo, hi = estimate.slope_interval
    print(f"moecover {__version__}: the contrast of MATH.md §4")
    print(f"  class        {spec}")
    print(f"  pinned       router (input i -> expert i), {experts} inputs")
    print(f"  samples      {args.samples} x 3 replicates, seed {args.seed}, {estimate.provenance['seconds']:.1f} s")
    print(f"  nets         {estimate.net_sizes[0].min()} ... {estimate.net_sizes[0].max()} centres over "
          f"{len(estimate.deltas)} scales (tail discovery <= {estimate.tail_discovery.max():.3f})")
    print(f"  slope        {estimate.slope:.2f}  (replicates: {lo:.2f} ... {hi:.2f}, {len(estimate.slope_scales)} scales)")
    print("  predicted    " + ", ".join(f"{k} {v}" for k, v in estimate.predicted_slopes.items()))
    if args.plot:
        estimate.plot(args.plot)
        print(f"  plot         {args.plot}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run every grid point of a config that the database does not hold yet."""
    from . import batch

    points = batch.expand_config(batch.load_config(args.config))
    db = args.db or str(Path(args.config).with_suffix(".db"))
    if args.dry_run:
        for point in points:
            print(batch.key_of(point), json.dumps(point, sort_keys=True))
        return 0
    if args.jobs < 1:
        raise ValueError(f"--jobs: must be >= 1, got {args.jobs}")
    ran = batch.run_grid(points, db, jobs=args.jobs, progress=not args.quiet)
    print(f"{ran} estimate(s) run, {len(points) - ran} already stored; results in {db}")
    return 0


def _show(args: argparse.Namespace) -> int:
    """Print what a results database holds."""
    from . import batch

    if not Path(args.db).exists():
        raise ValueError(f"DB: no such file {args.db!r}")
    summaries = list(batch.iter_summary(batch.stored_rows(args.db)))
    if args.format == "json":
        print(json.dumps(summaries, indent=1))
        return 0
    print(f"{'key':16}  {'experts':>7} {'top_k':>5} {'layers':>6}  {'slope':>6}  {'interval':>15}  predicted")
    for row in summaries:
        spec = row["settings"]["spec"]
        lo, hi = row["slope_interval"]
        interval = "n/a" if lo is None else f"[{lo:.2f}, {hi:.2f}]"
        slope = "n/a" if row["slope"] is None else f"{row['slope']:.2f}"
        predicted = " ".join(f"{k}={v}" for k, v in row["predicted_slopes"].items())
        print(f"{row['key']:16}  {spec['experts']:>7} {spec['top_k']:>5} {spec['layers']:>6}  {slope:>6}  "
              f"{interval:>15}  {predicted}")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write report.md, report.html and the plots of a results database."""
    from .report import write_report

    report = write_report(args.db, args.out)
    print(f"{len(report.rows)} estimate(s): {report.markdown}, {report.html}, "
          f"{len(report.point_plots) + len(report.sweep_plots)} plots in {report.markdown.parent}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moecover", description=__doc__)
    parser.add_argument("--version", action="version", version=f"moecover {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="estimate the entropy of a built-in example against the theory")
    demo.add_argument("--samples", type=int, default=100_000, help="parameter samples per replicate (default 100000)")
    demo.add_argument("--experts", type=int, default=3, help="experts, each reached by one input (default 3)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--plot", default="moecover-demo.png", help="PNG to write ('' for none)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    demo.set_defaults(handler=_demo)

    run = commands.add_parser("run", help="run a grid of estimates from a TOML config, resuming")
    run.add_argument("config", help="the TOML config (see examples/)")
    run.add_argument("--db", default=None, help="SQLite results (default: next to the config, same stem)")
    run.add_argument("--jobs", type=int, default=1, help="processes (spawned); threads are shared out")
    run.add_argument("--dry-run", action="store_true", help="print each grid point's key and settings")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)

    show = commands.add_parser("show", help="print the estimates a results database holds")
    show.add_argument("db", metavar="DB")
    show.add_argument("--format", choices=["table", "json"], default="table")
    show.set_defaults(handler=_show)

    report = commands.add_parser("report", help="write a Markdown/HTML report with plots of a results database")
    report.add_argument("db", metavar="DB")
    report.add_argument("--out", required=True, help="directory for report.md, report.html and the PNGs")
    report.set_defaults(handler=_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except (ValueError, TypeError) as error:
        print(f"moecover: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moecover: interrupted", file=sys.stderr)
        return 130
