"""Where a forward pass's time goes: 3 × 20 000 θ of the evaluate benchmark's class on 64 inputs at
one thread, to run under a sampling profiler.

Run: perf record -F 1999 -g -o /tmp/perf.data python benches/forward_profile.py
     perf report -i /tmp/perf.data --no-children --sort symbol --stdio
"""

import numpy as np

import moecover

SPEC = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp", expert_hidden=8)
X = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))
PARAMS = moecover.sample_params(SPEC, 20_000, rng=2, sampler="uniform")
for _ in range(3):
    moecover.evaluate(SPEC, PARAMS, X, n_threads=1)
