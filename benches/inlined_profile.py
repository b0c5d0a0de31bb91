"""Samples of `perf script --inline` attributed to the functions of a pass that the release build
inlines into one symbol: only the inlined frames of a DWARF call graph tell them apart."""

import argparse
import collections
import re


def attribute(path, functions, root):
    """Per function of `functions` (innermost first where names nest), the share of the samples
    under `root` spent in it (inclusive) and in its own code (the innermost of them on the stack)."""
    patterns = [(name, re.compile(r"(^|[:\s])" + re.escape(name) + r"(<|\s|$|\b)")) for name in functions]
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    with open(path) as handle:
        for sample in handle.read().split("\n\n"):
            frames = [line.strip().split(None, 1)[-1] for line in sample.strip().split("\n")[1:]]
            found = []
            for frame in frames:
                name = next((n for n, p in patterns if p.search(frame)), None)
                if name:
                    found.append(name)
            if root not in found:
                continue
            total += 1
            inclusive.update(set(found))
            own[found[0]] += 1
    print(f"{total} samples in {root}")
    for name, count in inclusive.most_common():
        print(f"{100 * count / total:5.1f} % inclusive {100 * own[name] / total:5.1f} % own  {name}")


def main(doc, workload, functions, root):
    """A profile script's command line: the workload to run under `perf`, or with `--attribute`
    the attribution of the samples `perf script --inline` printed."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--attribute", metavar="PERF_SCRIPT", help="output of `perf script --inline` to attribute")
    args = parser.parse_args()
    if args.attribute:
        attribute(args.attribute, functions, root)
    else:
        workload()
