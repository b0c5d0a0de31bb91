"""Seconds and peak resident memory of one estimate (issue 6 asks for 10^6 and 10^7 samples).

Run: python benches/estimate_memory.py SAMPLES   (one process per size, so peaks do not mix)
"""

import resource
import sys
import time

import numpy as np

import moecover

samples = int(sys.argv[1])
spec = moecover.MoESpec(layers=1, experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=2)
inputs = moecover.inputs.box(64, d_model=2, rng=0)
started = time.perf_counter()
estimate = moecover.estimate_entropy(spec, inputs, samples, deltas=np.geomspace(4.0, 1.0, 12), replicates=1, rng=1)
seconds = time.perf_counter() - started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(f"samples={samples} seconds={seconds:.1f} peak_rss_mib={peak_mib:.0f} nets={estimate.net_sizes[0].tolist()}")
