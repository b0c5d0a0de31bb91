"""Where a forward pass's time goes: 3 × 20 000 θ of the evaluate benchmark's class on 64 inputs at
one thread, to run under a sampling profiler, and the profile's samples attributed to the steps
of the pass (all inlined into one symbol per instruction set, so only the inlined frames of a
DWARF call graph tell them apart).

Run: perf record -F 1999 --call-graph dwarf,8192 -o /tmp/perf.data python benches/forward_profile.py
     perf script -i /tmp/perf.data --inline -F comm,tid,ip,sym > /tmp/perf.txt
     python benches/forward_profile.py --attribute /tmp/perf.txt

The release build carries no line tables; build with them for the second step:
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only maturin develop --release
"""

import sys

sys.path.insert(0, "benches")
from inlined_profile import main  # noqa: E402

# the steps of the lane pass (rust/core/src/forward/), innermost first where names nest
FUNCTIONS = [
    "exp", "softmax", "gate_weights", "router_scores", "select_top_k", "colex_ranks", "matmul_planes",
    "attention_one_head", "attention", "add_mlp", "add_affine", "route", "mixture", "readout",
    "run_layers", "prepare", "forward_batch_here",
]


def workload():
    import numpy as np

    import moecover

    spec = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp",
                            expert_hidden=8)
    x = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))
    params = moecover.sample_params(spec, 20_000, rng=2, sampler="uniform")
    for _ in range(3):
        moecover.evaluate(spec, params, x, n_threads=1)


if __name__ == "__main__":
    main(__doc__, workload, FUNCTIONS, "forward_batch_here")
