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

import sys

sys.path.insert(0, "benches")
from inlined_profile import main  # noqa: E402

# the pass's functions (rust/core/src/jacobian.rs, rank.rs), innermost first where names nest
FUNCTIONS = [
    "matmul_reverse", "matmul", "softmax_rows", "exp", "top_k", "attention_reverse", "attention",
    "mixture_reverse", "mixture", "record", "reverse", "Tiles", "sum_of_squares", "certified", "dot", "gram", "NonzeroRows", "Cholesky", "full_row_rank_given_rows",
    "full_row_rank", "jacobian_of_one", "certify_full_row_rank",
]


def workload():
    import numpy as np

    import moecover

    spec = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp",
                            expert_hidden=8)
    x = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))
    for round_ in range(6):
        moecover.functional_dimension(spec, x, samples=300, rng=round_, n_threads=1)


if __name__ == "__main__":
    main(__doc__, workload, FUNCTIONS, "certify_full_row_rank")
