"""Learning curves of least squares over the MoE class against 2β/(2β+d), the harness calibrated
on k-NN first (definitions §9), and the exponent the data's own d̂ and β̂ predict (§10).

    pip install ".[erm,manifold,plot]"
    python examples/learning_curves.py [--out docs/learning_curves] [--quick]

Writes `report.md` and its plots into --out (the committed copy is docs/learning_curves/). About
12 minutes on 2 cores (--quick: a smaller version, about 3 minutes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from moecover import erm, manifold
from moecover.targets import RegressionProblem

PROBLEMS = {1: ("circle", "sphere", 1, 2), 2: ("sphere S²", "sphere", 2, 3)}


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def calibration(quick: bool, out: Path, log) -> list[str]:
    ns = [250, 1000, 4000, 16000] if quick else [250, 500, 1000, 2000, 4000, 8000, 16000, 32000]
    rows = []
    for d, (label, kind, _, ambient) in PROBLEMS.items():
        for beta in (0.4, 0.8):
            problem = RegressionProblem(kind, d, ambient, beta, noise=0.5)
            started = time.perf_counter()
            curve = erm.learning_curve("knn", problem, ns, seeds=3, rng=0, test_size=4000)
            lo, hi = curve.interval
            bias = curve.exponent - curve.theory_exponent
            rows.append([label, str(d), f"{beta:g}", f"{curve.theory_exponent:.3f}", f"{curve.exponent:.3f} [{lo:.3f}, {hi:.3f}]",
                         f"{bias:+.3f}" + ("" if abs(bias) <= 0.08 else " ✗"),
                         f"{time.perf_counter() - started:.1f}"])
            if (d, beta) == (2, 0.8):
                curve.plot(str(out / "knn_d2_beta0.8.png"))
            log(f"k-NN d={d} β={beta}: {curve}")
    return [
        "## Calibration: k-NN regression",
        "",
        f"k = ⌈n^(2β/(2β+d))⌉, Weierstrass-type targets, noise σ = 0.5, n = {ns[0]} … {ns[-1]} (×2 steps"
        f"{'' if not quick else ', quick'}), 3 seeds, excess risk on 4000 fresh test points against the noiseless "
        "target; exponent: mean of the seeds' slopes of log risk against log n, 90 % t-interval. ✗: "
        "more than 0.08 from 2β/(2β+d).",
        "",
        *table(["manifold", "d", "β", "2β/(2β+d)", "fitted exponent", "bias", "seconds"], rows),
        "",
        "![k-NN learning curve, d = 2, β = 0.8](knn_d2_beta0.8.png)",
    ]


def moe_curves(quick: bool, out: Path, log) -> tuple[list[str], list[str]]:
    ns = [100, 200, 400, 800] if quick else [100, 200, 400, 800, 1600, 3200]
    steps = 800 if quick else 1500
    rows, throughput, prediction_rows = [], [], []
    for d, beta in ((1, 0.8), (2, 0.8)):
        label, kind, _, ambient = PROBLEMS[d]
        problem = RegressionProblem(kind, d, ambient, beta, noise=0.5)
        schedule = erm.neff_schedule(problem)
        started = time.perf_counter()
        curve = erm.learning_curve(schedule, problem, ns, seeds=3, rng=0, steps=steps, starts=4, test_size=4000)
        seconds = time.perf_counter() - started
        lo, hi = curve.interval
        # the same fit without the smallest n: how much of the slope its first step carries
        later = np.mean([-np.polyfit(np.log(ns[1:]), np.log(curve.risks[1:, s]), 1)[0] for s in range(3)])
        rows.append([label, str(d), f"{beta:g}", f"{curve.theory_exponent:.3f}", f"{curve.exponent:.3f} [{lo:.3f}, {hi:.3f}]",
                     f"{curve.exponent - curve.theory_exponent:+.3f}", f"{later:.3f}",
                     ", ".join(str(s) for s in curve.sizes), f"{seconds:.0f}"])
        fits = len(ns) * 3 * 4  # datasets × starts, each fitted for up to `steps` steps
        throughput.append(f"d = {d}: {fits} models ({len(ns)} n × 3 seeds × 4 starts, N_eff {curve.sizes[0]}–"
                          f"{curve.sizes[-1]}, up to {steps} full-batch Adam steps on ≤ {ns[-1]} points) in {seconds:.0f} s: "
                          f"{fits / seconds * 60:.0f} models per minute")
        curve.plot(str(out / f"moe_d{d}.png"))
        log(f"MoE d={d} β={beta}: {curve} in {seconds:.0f} s")
        # what the data themselves predict: d̂ and β̂ (noiseless draws of the same target)
        clean = RegressionProblem(kind, d, ambient, beta).sample(4000, rng=11)
        d_hat = manifold.intrinsic_dimension(clean.x, methods=("mle",), subsamples=0, rng=0).estimates["mle"][0]
        beta_hat = manifold.smoothness(clean.x, clean.y, rng=0).beta
        predicted = 2 * beta_hat / (2 * beta_hat + d_hat)
        prediction_rows.append([label, f"{curve.theory_exponent:.3f}", f"{d_hat:.2f}", f"{beta_hat:.3f}", f"{predicted:.3f}",
                                f"{curve.exponent:.3f} [{lo:.3f}, {hi:.3f}]"])
    lines = [
        "## Least squares over the MoE class on Section 4's schedule",
        "",
        "mlp experts (4, top-1, one token, d_model = the ambient dimension), `expert_hidden` chosen at each n so "
        "that N_eff is nearest n^(d/(2β+d)) (`erm.neff_schedule`); noise σ = 0.5; each fit the best of 4 random "
        f"starts by validation risk (a fifth held out), Adam at 0.01 for up to {steps} steps, θ kept in the box. "
        "The exponent is stated as measured.",
        "",
        *table(["manifold", "d", "β", "2β/(2β+d)", "fitted exponent", "difference", f"exponent over n ≥ {ns[1]}",
                "N_eff per n", "seconds"], rows),
        "",
        "![MoE learning curve, d = 1](moe_d1.png) ![MoE learning curve, d = 2](moe_d2.png)",
        "",
        "Throughput (2 cores):",
        "",
        *(f"- {t}" for t in throughput),
        "",
        "## The exponent the data predict",
        "",
        "d̂ (MLE) and β̂ (increments) from 4000 noiseless draws of the same target, and 2β̂/(2β̂ + d̂) beside "
        "the truth and the fitted ERM exponent.",
        "",
        *table(["manifold", "2β/(2β+d)", "d̂", "β̂", "2β̂/(2β̂+d̂)", "fitted ERM exponent"], prediction_rows),
    ]
    return lines, throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/learning_curves")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)

    knn = calibration(args.quick, out, log)
    moe, _ = moe_curves(args.quick, out, log)
    from moecover import __version__

    page = [
        "# Learning curves against 2β/(2β+d)",
        "",
        f"`python examples/learning_curves.py{' --quick' if args.quick else ''}` (moecover {__version__}; "
        f"{time.perf_counter() - started:.0f} s on 2 cores). Library: `moecover.erm`, `moecover.targets`, "
        "`moecover.manifold` (definitions §9, §10).",
        "",
        *knn,
        "",
        *moe,
        "",
    ]
    (out / "report.md").write_text("\n".join(page), encoding="utf-8")
    log(f"wrote {out / 'report.md'}")


if __name__ == "__main__":
    main()
