"""The functional dimension r* of four small MoE classes against the paper's active count N_eff.

Run: python examples/functional_dimension.py [--samples 200] [--plot functional_dimension.png]

One layer, d_model 2, mlp experts with 2 hidden units, box inputs (seed 0), 200 parameter samples
per class: the largest rank of the exact Jacobian of θ ↦ (f_θ(x_i))_i on n = 16 and n = 64 inputs
(definitions §6). r* is the exact asymptotic slope of log N(δ) in log(1/δ); the paper predicts
N_eff. The plot shows how r* grows with the inputs for the last class.
"""

import argparse

import moecover

CLASSES = [(2, 1), (4, 1), (4, 2), (8, 2)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="parameter samples per class")
    parser.add_argument("--plot", default="", help="PNG of r* against the inputs for the last class")
    args = parser.parse_args()
    print("| experts | top_k | P | N_eff | r*, n = 16 | r*, n = 64 | samples reaching r* (n = 64) |")
    print("|---|---|---|---|---|---|---|")
    for experts, top_k in CLASSES:
        spec = moecover.MoESpec(layers=1, experts=experts, top_k=top_k, d_model=2, expert="mlp", expert_hidden=2)
        found = {}
        for n in (16, 64):
            x = moecover.inputs.box(n, d_model=2, rng=0)
            found[n] = moecover.functional_dimension(spec, x, samples=args.samples, rng=0)
        print(f"| {experts} | {top_k} | {spec.total_params} | {spec.active_params} | {found[16].max_rank} | "
              f"{found[64].max_rank} | {found[64].reached} of {args.samples} |")
    if args.plot:
        found[64].plot(args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
