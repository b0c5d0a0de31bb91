"""The `moecover` command line: `demo`, `run`, `show`, `report`.

Every user error (a bad argument or config, a file that is not a results database or cannot be
read or written, a missing optional dependency) is one line on stderr and exit code 2; Ctrl-C is
exit 130; a reader that closes the pipe (`moecover show DB | head`) ends the output silently, 141.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from ._checks import MissingDependency
from ._spec import MoESpec

#: What installs each optional dependency a command may need.
INSTALL = {"matplotlib": 'pip install "moecover[plot]"', "pandas": 'pip install "moecover[frame]"',
           "jax": 'pip install "moecover[erm]"', "optax": 'pip install "moecover[erm]"',
           "skdim": 'pip install "moecover[manifold]"'}


def _require(module: str, purpose: str) -> None:
    try:
        __import__(module)
    except ImportError:
        raise MissingDependency(f"{purpose} needs {module}: {INSTALL[module]}") from None


def _show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on a terminal, or anywhere with --progress; never with --quiet."""
    return not args.quiet and (args.progress or sys.stderr.isatty())


def _demo(args: argparse.Namespace) -> int:
    """The contrast of definitions §4, measured: constant experts, top-1, a router pinned so that each
    input reaches its own expert. The paper predicts slope 1 (active parameters); the sup norm over
    the inputs sees every expert, so the data follow the total count, M."""
    import warnings

    from .estimate import EstimateWarning, estimate_entropy
    from .inputs import one_per_expert, one_per_expert_router

    if args.plot:
        _require("matplotlib", "moecover demo --plot")
    experts = args.experts
    spec = MoESpec(experts=experts, top_k=1, d_model=1, expert="constant")
    inputs, pinned = one_per_expert(spec), one_per_expert_router(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", EstimateWarning)  # printed below, as notes
        estimate = estimate_entropy(
            spec, inputs, args.samples, replicates=3, rng=args.seed, pinned=pinned, n_threads=args.threads,
            progress=_show_progress(args),
        )
    lo, hi = estimate.slope_interval
    print(f"moecover {__version__}: the contrast of definitions §4")
    print(f"  class        {spec}")
    print(f"  pinned       router (input i -> expert i), {experts} inputs")
    print(f"  samples      {args.samples} x 3 replicates, seed {args.seed}, {estimate.provenance['seconds']:.1f} s")
    print(f"  nets         {estimate.net_sizes[0].min()} ... {estimate.net_sizes[0].max()} centres over "
          f"{len(estimate.deltas)} scales (tail discovery <= {estimate.tail_discovery.max():.3f})")
    print(f"  slope        {estimate.slope:.2f}  (replicates: {lo:.2f} ... {hi:.2f}, {len(estimate.slope_scales)} complete scales)")
    ex_lo, ex_hi = estimate.extrapolated_interval
    print(f"  regime       {estimate.regime}; extrapolated slope {estimate.extrapolated_slope:.2f} [{ex_lo:.2f}, {ex_hi:.2f}], "
          f"functional dimension r* = {estimate.functional_dimension}")
    print("  predicted    " + ", ".join(f"{k} {v}" for k, v in estimate.predicted_slopes.items()))
    for note in estimate.warnings:
        print(f"  note         {note}")
    if args.plot:
        estimate.plot(args.plot)
        print(f"  plot         {args.plot}")
    return 0


def _run(args: argparse.Namespace) -> int:
    """Run every grid point of a config that the database does not hold yet."""
    from . import batch

    config = batch.load_config(args.config)
    points = batch.expand_config(config)
    settings = batch.run_settings(
        config, executor=args.executor, scheduler=args.scheduler, jobs=args.jobs, threads=args.threads
    )
    db = args.db or str(Path(args.config).with_suffix(".db"))
    if args.dry_run:
        for point in points:
            print(batch.key_of(point), json.dumps(point, sort_keys=True))
        return 0
    done = batch.run_grid(
        points, db, jobs=settings.jobs, executor=settings.executor, scheduler=settings.scheduler,
        threads=settings.threads, progress=_show_progress(args),
    )
    failed = f", {len(done.failed)} failed" if done.failed else ""
    kinds = {batch.point_kind(point) for point in points}
    noun = {"learning_curve": "learning curve(s)", "dimension": "d/β estimate(s)"}.get(kinds.pop(), "estimate(s)") \
        if len(kinds) == 1 else "grid point(s)"
    busy = f", {done.busy} being run by another process" if done.busy else ""
    print(f"{done.ran} {noun} run{failed}, {done.skipped} already stored{busy}; results in {db}")
    for key, error in done.failed:
        print(f"moecover: grid point {key} failed: {error}", file=sys.stderr)
    if done.failed:
        print(f"moecover: the errors are stored with their points (`moecover show {db}`); "
              "`moecover run` runs them again", file=sys.stderr)
    return 1 if done.failed else 0


def _show(args: argparse.Namespace) -> int:
    """Print what a results database holds, in the report's (grid) order."""
    from . import batch
    from ._serial import to_plain

    if not Path(args.db).is_file():
        raise ValueError(f"DB: no such file {args.db!r}")
    rows, failures = batch.stored_rows(args.db), batch.stored_failures(args.db)
    if args.format == "json":
        for failure in failures:  # the JSON lists estimates only; what failed is said beside it
            print(f"moecover: note: grid point {failure.key} failed: {failure.error}", file=sys.stderr)
        summaries = [
            {
                "key": row.key,
                "settings": row.settings,
                "slope": to_plain(row.estimate.slope),
                "slope_interval": to_plain(row.estimate.slope_interval),
                "regime": row.estimate.regime,
                "extrapolated_slope": to_plain(row.estimate.extrapolated_slope),
                "extrapolated_interval": to_plain(row.estimate.extrapolated_interval),
                "predicted_slopes": row.estimate.predicted_slopes,
                "deltas": to_plain(row.estimate.deltas),
                "net_sizes": to_plain(row.estimate.net_sizes),
                "version": row.version,
            }
            for row in rows
        ]
        summaries += [
            {
                "key": row.key,
                "settings": row.settings,
                "exponent": to_plain(row.curve.exponent),
                "interval": to_plain(row.curve.interval),
                "theory_exponent": row.curve.theory_exponent,
                "ns": row.curve.ns,
                "risks": to_plain(row.curve.risks),
                "version": row.version,
            }
            for row in batch.stored_curves(args.db)
        ]
        summaries += [
            {"key": row.key, "settings": row.settings, "dimension": to_plain(row.dimension_estimates),
             "beta": to_plain(row.beta), "version": row.version}
            for row in batch.stored_dimensions(args.db)
        ]
        print(json.dumps(summaries, indent=1))
        return 0
    if rows:
        print(f"{'key':16}  {'experts':>7} {'top_k':>5} {'layers':>6}  {'regime':>14}  {'slope':>6}  {'interval':>15}  "
              f"{'extrapolated':>12}  {'interval':>15}  predicted")
    for row in rows:
        spec, estimate = row.settings["spec"], row.estimate
        lo, hi = estimate.slope_interval
        interval = f"[{lo:.2f}, {hi:.2f}]" if lo == lo and hi == hi else "n/a"
        slope = f"{estimate.slope:.2f}" if estimate.slope == estimate.slope else "n/a"
        predicted = " ".join(f"{k}={v}" for k, v in estimate.predicted_slopes.items())
        resolved = estimate.regime in ("pre_asymptotic", "asymptotic")
        ex_lo, ex_hi = estimate.extrapolated_interval
        extrapolated = f"{estimate.extrapolated_slope:.2f}" if resolved else "n/a"
        ex_interval = f"[{ex_lo:.2f}, {ex_hi:.2f}]" if resolved else "n/a"
        print(f"{row.key:16}  {spec['experts']:>7} {spec['top_k']:>5} {spec['layers']:>6}  {estimate.regime:>14}  {slope:>6}  "
              f"{interval:>15}  {extrapolated:>12}  {ex_interval:>15}  {predicted}")
    curves = batch.stored_curves(args.db)
    if curves:
        print(("\n" if rows else "") + f"{'key':16}  {'d':>2} {'beta':>5} {'model':>13}  {'exponent':>8}  {'interval':>15}  theory")
        for stored in curves:
            erm, curve = stored.settings["erm"], stored.curve
            lo, hi = curve.interval
            print(f"{stored.key:16}  {erm['d']:>2} {erm['beta']:>5g} {erm['model']:>13}  {curve.exponent:>8.3f}  "
                  f"[{lo:.3f}, {hi:.3f}]  {curve.theory_exponent:.3f}")
    dimensions = batch.stored_dimensions(args.db)
    if dimensions:
        print(("\n" if rows or curves else "") + f"{'key':16}  {'manifold':>10} {'d':>2} {'beta':>5} {'n':>7}  "
              "d̂ [90 % interval] per method; β̂ [90 % interval]")
        for dimension in dimensions:
            settings = dimension.settings["dimension"]
            ds = "  ".join(f"{m} {v:.2f} [{lo:.2f}, {hi:.2f}]" for m, (v, lo, hi) in dimension.dimension_estimates.items())
            beta, lo, hi = dimension.beta
            print(f"{dimension.key:16}  {settings['manifold']:>10} {settings['d']:>2} {settings['beta']:>5g} {settings['n']:>7}  "
                  f"{ds};  β̂ {beta:.2f} [{lo:.2f}, {hi:.2f}]")
    for failure in failures:
        print(f"{failure.key:16}  failed: {failure.error}")
    return 0


def _report(args: argparse.Namespace) -> int:
    """Write report.md, report.html and the plots of a results database."""
    from .report import write_report

    report = write_report(args.db, args.out)
    plots = len(report.point_plots) + len(report.sweep_plots)
    curves = f", {len(report.curve_rows)} learning curve(s)" if report.curve_rows else ""
    print(f"{len(report.rows)} estimate(s){curves}: {report.markdown}, {report.html}, {plots} plots in {report.markdown.parent}")
    if report.plots_skipped:
        print(f"moecover: note: no plots written: {report.plots_skipped}", file=sys.stderr)
    return 0


def _findings(args: argparse.Namespace) -> int:
    """Run the findings study (resuming) and write its report."""
    from . import batch, findings

    for module, purpose in (("jax", "the study's learning curves"), ("optax", "the study's learning curves"),
                            ("skdim", "the study's d and β estimates"), ("matplotlib", "the report's plots")):
        _require(module, purpose)
    config = batch.load_config(args.study or findings.DEFAULT_STUDY)
    settings = batch.run_settings(config, executor=args.executor, scheduler=args.scheduler, jobs=args.jobs,
                                  threads=args.threads)
    try:
        done = findings.run_findings(
            args.out, quick=args.quick, study=args.study, executor=settings.executor, scheduler=settings.scheduler,
            jobs=settings.jobs, threads=settings.threads, progress=_show_progress(args),
        )
    except findings.StudyIncomplete as error:
        for key, message in error.failed:
            print(f"moecover: grid point {key} failed: {message}", file=sys.stderr)
        print(f"moecover: no report written: the errors are stored with their points (`moecover show "
              f"{Path(args.out) / 'findings.db'}`); `moecover findings` runs them again", file=sys.stderr)
        return 1
    print(f"{done.run.ran} grid point(s) run, {done.run.skipped} already stored; {done.markdown}, {done.html} and "
          f"{len(done.plots)} plot(s) written")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="moecover", description="Measure covering numbers of MoE classes and compare them with theory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"moecover {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)

    def progress_flags(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--quiet", action="store_true", help="no progress bar")
        sub.add_argument("--progress", action="store_true",
                         help="show progress even when stderr is not a terminal (one line per update, no \\r)")

    demo = command("demo", "estimate the entropy of a built-in example (definitions §4) against the theory")
    demo.add_argument("--samples", type=int, default=100_000, help="parameter samples per replicate")
    demo.add_argument("--experts", type=int, default=3, help="experts, each reached by one input")
    demo.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    demo.add_argument("--plot", default="moecover-demo.png", help="PNG to write ('' for none; needs matplotlib)")
    demo.add_argument("--threads", type=int, default=None, help="threads (default: MOECOVER_NUM_THREADS, else all cores)")
    progress_flags(demo)
    demo.set_defaults(handler=_demo)

    run = command("run", "run a grid of estimates from a TOML config, resuming where a database left off")
    run.add_argument("config", help="the TOML config (see examples/quickstart.toml)")
    run.add_argument("--db", default=None, help="SQLite results (default: next to the config, same stem, .db)")
    run.add_argument("--executor", choices=["local", "dask"], default=None,
                     help="where the grid points run: this machine, or a Dask cluster (needs moecover[dask]); "
                          "default: the config's [run] executor, else local")
    run.add_argument("--scheduler", metavar="ADDRESS", default=None,
                     help="a Dask scheduler's address (tcp://host:8786); implies --executor dask. "
                          "Without one, the dask executor starts a local cluster")
    run.add_argument("--jobs", type=int, default=None,
                     help="local processes (spawned), or the workers of a local Dask cluster; "
                          "default: 1 locally, one per core for Dask")
    run.add_argument("--threads", type=int, default=None,
                     help="threads per estimate; default: this machine's shared out among the jobs (a Dask task on "
                          "a remote cluster: 1, its worker's threads being the parallelism)")
    run.add_argument("--dry-run", action="store_true", help="print each grid point's key and settings, run nothing")
    progress_flags(run)
    run.set_defaults(handler=_run)

    show = command("show", "print the estimates a results database holds, in grid order")
    show.add_argument("db", metavar="DB", help="a results database written by `moecover run`")
    show.add_argument("--format", choices=["table", "json"], default="table", help="output format")
    show.set_defaults(handler=_show)

    report = command("report", "write a Markdown/HTML report of a results database, with plots if matplotlib is installed")
    report.add_argument("db", metavar="DB", help="a results database written by `moecover run`")
    report.add_argument("--out", required=True, help="directory for report.md, report.html and the PNGs (created)")
    report.set_defaults(handler=_report)

    findings = command("findings", "run the built-in study of the paper's claims (resuming) and write findings.md/.html "
                                   "with plots (needs moecover[erm,manifold,plot])")
    findings.add_argument("--out", required=True, help="directory for findings.db, findings.md, findings.html and the PNGs")
    findings.add_argument("--quick", action="store_true", help="a subset of the study with the same sections (minutes)")
    findings.add_argument("--study", default=None, help="a study TOML instead of the built-in one (examples/findings.toml)")
    findings.add_argument("--executor", choices=["local", "dask"], default=None,
                          help="where the grid points run, as in `moecover run` (default: local)")
    findings.add_argument("--scheduler", metavar="ADDRESS", default=None, help="a Dask scheduler's address; implies dask")
    findings.add_argument("--jobs", type=int, default=None, help="local processes, or the workers of a local Dask cluster")
    findings.add_argument("--threads", type=int, default=None, help="threads per grid point")
    progress_flags(findings)
    findings.set_defaults(handler=_findings)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.handler(args))
        sys.stdout.flush()  # a closed pipe shows here, inside the handler below
        return code
    except (ValueError, TypeError, MissingDependency) as error:
        print(f"moecover: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moecover: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader left (`moecover show DB | head`): stop silently, as `cat` does, and keep Python
        # from reporting the same error again when it flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as error:  # a file that cannot be read or written
        where = f"{error.filename}: " if error.filename else ""
        print(f"moecover: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
