"""Least-squares throughput of `moecover.erm` on 2 cores: models fitted per minute at a stated size,
and one learning curve of 6 values of n × 3 seeds at d = 1 (target: ≤ 10 minutes).

    python benches/erm_throughput.py

A "model" is one θ fitted by full-batch Adam for `steps` steps (4 random starts per dataset,
3 datasets per call, all under one `jax.vmap`); compile time included, as a user meets it.
"""

import time

from moecover import MoESpec, erm, theory
from moecover.targets import RegressionProblem


def main():
    problem = RegressionProblem("sphere", 1, 2, 0.8, noise=0.5)
    spec = MoESpec(experts=4, top_k=1, d_model=2, expert="mlp", expert_hidden=8)
    for n in (400, 3200):
        draws = [problem.sample(n, rng=s) for s in range(3)]
        import numpy as np

        started = time.perf_counter()
        erm.fit(spec, np.stack([d.x for d in draws]), np.stack([d.y for d in draws]), starts=4, steps=1500,
                patience=10**6, rng=0)
        seconds = time.perf_counter() - started
        print(f"fit: N_eff {theory.paper_slope(spec)}, P {spec.total_params}, n = {n}, 1500 steps, 12 models: "
              f"{seconds:.1f} s = {12 / seconds * 60:.0f} models per minute", flush=True)
    ns = [100, 200, 400, 800, 1600, 3200]
    started = time.perf_counter()
    curve = erm.learning_curve(erm.neff_schedule(problem), problem, ns, seeds=3, rng=0, steps=1500, starts=4)
    seconds = time.perf_counter() - started
    print(f"learning curve, d = 1, β = 0.8, N_eff on Section 4's schedule ({curve.sizes}), 6 n × 3 seeds: "
          f"{seconds:.0f} s ({curve})")


if __name__ == "__main__":
    main()
