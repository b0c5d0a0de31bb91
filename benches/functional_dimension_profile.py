"""Where a certified θ's time goes in `functional_dimension`: 6 × 300 θ of the evaluate benchmark's
class on 64 inputs at one thread, to run under a sampling profiler, and the profile's samples
attributed to the functions of the Jacobian pass and the rank certificate (all inlined into one
symbol, so only the inlined frames of a DWARF call graph tell them apart).

Run: perf record -F 2999 --call-graph dwarf,8192 -o /tmp/perf.data python benches/functional_dimension_profile.py
     perf script -i /tmp/perf.data --inline -F comm,tid,ip,sym > /tmp/perf.txt
     python benches/functional_dimension_profile.py --attribute /tmp/perf.txt

The release build carries no line tables; build with them for the second step:
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only maturin develop --release
"""

import argparse
import collections
import re

# the pass's functions (rust/core/src/jacobian.rs, rank.rs), innermost first where names nest
FUNCTIONS = [
    "matmul_reverse", "matmul", "softmax_rows", "exp", "top_k", "attention_reverse", "attention",
    "mixture_reverse", "mixture", "record", "reverse", "Tiles", "NonzeroRows", "Cholesky", "full_row_rank_given_rows",
    "full_row_rank", "jacobian_of_one", "certify_full_row_rank",
]


def attribute(path):
    """Per function, the share of the certificate's samples spent in it (inclusive) and in its
    own code (the innermost of FUNCTIONS on the stack)."""
    patterns = [(name, re.compile(r"(^|[:\s])" + re.escape(name) + r"(<|\s|$|\b)")) for name in FUNCTIONS]
    inclusive, own, total = collections.Counter(), collections.Counter(), 0
    with open(path) as handle:
        for sample in handle.read().split("\n\n"):
            frames = [line.strip().split(None, 1)[-1] for line in sample.strip().split("\n")[1:]]
            found = []
            for frame in frames:
                name = next((n for n, p in patterns if p.search(frame)), None)
                if name:
                    found.append(name)
            if "certify_full_row_rank" not in found:
                continue
            total += 1
            inclusive.update(set(found))
            own[found[0]] += 1
    print(f"{total} samples in certify_full_row_rank")
    for name, count in inclusive.most_common():
        print(f"{100 * count / total:5.1f} % inclusive {100 * own[name] / total:5.1f} % own  {name}")


def workload():
    import numpy as np

    import moecover

    spec = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp",
                            expert_hidden=8)
    x = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))
    for round_ in range(6):
        moecover.functional_dimension(spec, x, samples=300, rng=round_, n_threads=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attribute", metavar="PERF_SCRIPT", help="output of `perf script --inline` to attribute")
    args = parser.parse_args()
    if args.attribute:
        attribute(args.attribute)
    else:
        workload()
