"""The `moecover` command line."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import numpy as np

from . import __version__
from ._evaluate import evaluate_sampled
from ._spec import MoESpec


def _demo(args: argparse.Namespace) -> int:
    """Sample a small MoE class, evaluate it on random inputs, and report what was found."""
    spec = MoESpec(layers=2, experts=8, top_k=2, d_model=4, seq_len=4, heads=1, expert_hidden=8)
    inputs = np.random.default_rng(args.seed).normal(size=(args.inputs, spec.seq_len, spec.d_model))
    started = time.perf_counter()
    result = evaluate_sampled(spec, inputs, args.samples, rng=args.seed, n_threads=args.threads)
    seconds = time.perf_counter() - started
    values = result.values.reshape(args.samples, -1)
    patterns = np.unique(result.routes.reshape(args.samples, -1), axis=0).shape[0]
    print(f"moecover {__version__}: built-in example")
    print(f"  class      {spec}")
    print(f"  params     active N_eff = {spec.active_params}, total P = {spec.total_params}")
    print(f"  evaluated  {args.samples} samples x {args.inputs} inputs in {seconds:.2f} s "
          f"on {result.n_threads} thread(s), seed {result.seed}")
    print(f"  outputs    range [{values.min():.3f}, {values.max():.3f}], "
          f"mean sup-distance between consecutive samples {np.abs(np.diff(values, axis=0)).max(axis=1).mean():.3f}")
    print(f"  routing    {patterns} distinct dataset-wide patterns among {args.samples} samples "
          f"(each of {args.inputs} inputs has C(M,k)^(layers*seq_len) = {spec.patterns_per_token ** 8:.3g} possible)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moecover", description=__doc__)
    parser.add_argument("--version", action="version", version=f"moecover {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="sample and evaluate a built-in example class")
    demo.add_argument("--samples", type=int, default=20_000, help="parameter samples (default 20000)")
    demo.add_argument("--inputs", type=int, default=64, help="random inputs (default 64)")
    demo.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    demo.set_defaults(handler=_demo)
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
