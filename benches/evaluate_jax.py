"""The forward pass against JAX: `moecover.evaluate` beside the JAX versions a careful user would write.

Run: python benches/evaluate_jax.py --threads 1   (then --threads 2)

Classes, on 64 box inputs: "benchmark", the evaluate benchmark's (layers 2, experts 8, top_k 2,
d_model 4, heads 1, seq_len 4, mlp experts with 8 hidden units; P = 1424), and "wide", the same
with 16 experts and top_k 4 (P = 2720). JAX variants, written from the definitions, each `jit` of
a `vmap` over θ run in chunks of θ per call (16, 32, 64, 256), each checked equal to moecover (values
to 1e-11) before it is timed:

- `literal`: tests/jax_model.py per input (a loop over tokens, every expert, the chosen gathered),
  `vmap`ped over the inputs;
- `batched top_k`: a θ's 64 inputs as one batch of 256 tokens, every expert computed densely and
  masked by its gate, top-k by `lax.top_k`;
- `batched argmax`: the same with top-k by k rounds of `argmax` (ties to the lower expert, as the
  definition asks), which XLA runs faster than `top_k` on CPU;
- `batched argmax, gates folded`: the same with each token's gates multiplied into the experts'
  hidden units, so that every expert's second layer is one matrix product.

With two threads, JAX runs θ split over two host devices (`pmap`): XLA's own threads make these
small programs slower, not faster (benches/README.md).
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--threads", type=int, default=1, choices=[1, 2])
parser.add_argument("--forwards", type=int, default=20_000, help="θ per class")
parser.add_argument("--quick", action="store_true", help="2 000 θ and one chunk size: a smoke run")
args = parser.parse_args()
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import moecover  # noqa: E402
from jax_model import output  # noqa: E402
from timing import best  # noqa: E402

jax.config.update("jax_enable_x64", True)
if args.threads == 2:
    jax.config.update("jax_num_cpu_devices", 2)  # two host devices, one thread each

CLASSES = {
    "benchmark": moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp",
                                  expert_hidden=8),
    "wide": moecover.MoESpec(layers=2, experts=16, top_k=4, d_model=4, heads=1, seq_len=4, expert="mlp",
                             expert_hidden=8),
}
X = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))


def batched(spec, top_k="argmax", fold=False):
    """f_θ on all inputs at once (n, ℓ, d) → (n, 1): one head, mlp experts, renormalised softmax
    gates, sequential blocks, scalar readout (the benchmark classes' options)."""
    d, m, k, hid = spec.d_model, spec.experts, spec.top_k, spec.expert_hidden
    size = 2 * d * hid + hid + d

    def choose(scores):
        """(rows, M) scores → (rows, M) 0/1 mask of the k highest, ties to the lower expert."""
        if top_k == "lax":
            _, chosen = jax.lax.top_k(scores, k)
            return jax.nn.one_hot(chosen, m).sum(axis=1)
        mask = jnp.zeros_like(scores)
        left = scores
        for _ in range(k):
            pick = jax.nn.one_hot(jnp.argmax(left, axis=-1), m)  # argmax: the first of equal maxima
            mask = mask + pick
            left = jnp.where(pick > 0, -jnp.inf, left)
        return mask

    def f(theta, x):
        h = x
        n, ell = x.shape[0], x.shape[1]
        for layer in range(spec.layers):
            def take(name, layer=layer):
                b = spec.param_block(f"layers.{layer}.{name}")
                return theta[b.offset: b.offset + b.size].reshape(b.shape)

            wq, wk, wv, wo = (take(f"attn.{t}") for t in ("wq", "wk", "wv", "wo"))
            weights = jax.nn.softmax(jnp.einsum("nid,njd->nij", h @ wq, h @ wk) / jnp.sqrt(d), axis=-1)
            y = h + jnp.einsum("nij,njd->nid", weights, h @ wv) @ wo
            z = y.reshape(n * ell, d)
            scores = z @ take("router.weight").T + take("router.bias")
            mask = choose(scores)
            top = jnp.max(scores, axis=-1, keepdims=True)
            gates = mask * jnp.exp(scores - top)
            gates = gates / gates.sum(axis=-1, keepdims=True)
            start = spec.param_block(f"layers.{layer}.experts.0.w1").offset
            experts = theta[start: start + m * size].reshape(m, size)
            w1 = experts[:, : hid * d].reshape(m * hid, d)
            b1 = experts[:, hid * d: hid * d + hid].reshape(m * hid)
            w2 = experts[:, hid * d + hid: 2 * hid * d + hid].reshape(m, d, hid)
            b2 = experts[:, 2 * hid * d + hid:]
            hidden = jax.nn.relu(z @ w1.T + b1).reshape(n * ell, m, hid)
            if fold:
                folded = (hidden * gates[:, :, None]).reshape(n * ell, m * hid)
                moe = folded @ w2.transpose(0, 2, 1).reshape(m * hid, d) + gates @ b2
            else:
                out = jnp.einsum("tmh,mdh->tmd", hidden, w2) + b2
                moe = jnp.einsum("tm,tmd->td", gates, out)
            h = y + moe.reshape(n, ell, d)
        return h[:, 0, :1]

    return f


def variants(spec):
    literal = jax.vmap(lambda theta, x: output(spec, theta, x), in_axes=(None, 0))
    return {
        "literal (per input)": literal,
        "batched top_k": batched(spec, "lax"),
        "batched argmax": batched(spec, "argmax"),
        "batched argmax, gates folded": batched(spec, "argmax", fold=True),
    }


def runner(function, chunk):
    """Runs `function` over θ in chunks of `chunk` per call, on one device or split over two."""
    over_theta = jax.vmap(function, in_axes=(0, None))
    if args.threads == 1:
        compiled = jax.jit(over_theta)

        def run(params):
            return np.concatenate([np.asarray(compiled(params[s: s + chunk], X)) for s in range(0, len(params), chunk)])
    else:
        compiled = jax.pmap(over_theta, in_axes=(0, None))

        def run(params):
            outs = []
            for s in range(0, len(params), 2 * chunk):
                piece = params[s: s + 2 * chunk]
                if len(piece) < 2 * chunk:  # the last, short piece: pad to the devices' shape
                    piece = np.concatenate([piece, np.zeros((2 * chunk - len(piece), piece.shape[1]))])
                outs.append(np.asarray(compiled(piece.reshape(2, chunk, -1), X)).reshape(2 * chunk, -1))
            return np.concatenate(outs)[: len(params)]
    return run


forwards = 2000 if args.quick else args.forwards
chunks = (64,) if args.quick else (16, 32, 64, 256)
print(f"{args.threads} thread(s), jax {jax.__version__}, {forwards} θ × {len(X)} inputs per class", flush=True)
for name, spec in CLASSES.items():
    params = moecover.sample_params(spec, forwards, rng=2, sampler="uniform")
    ours = moecover.evaluate(spec, params[:256], X, n_threads=args.threads).values.reshape(256, -1)
    ours_s = best(lambda: moecover.evaluate(spec, params, X, n_threads=args.threads))
    print(f"{name} (P = {spec.total_params}): moecover.evaluate {ours_s:.3f} s ({ours_s / forwards * 1e6:.1f} µs per θ)",
          flush=True)
    fastest, which = float("inf"), ""
    for variant, function in variants(spec).items():
        for chunk in chunks:
            run = runner(function, chunk)
            theirs = run(params[:256]).reshape(256, -1)
            assert np.allclose(ours, theirs, rtol=0, atol=1e-11), (name, variant, np.abs(ours - theirs).max())
            s = best(lambda: run(params), rounds=2)
            if s < fastest:
                fastest, which = s, f"{variant}, {chunk} θ per call"
            print(f"  jax {variant}, {chunk:4d} θ per call: {s:.3f} s ({s / forwards * 1e6:.1f} µs per θ; "
                  f"moecover {s / ours_s:.2f}x faster)", flush=True)
    print(f"{name}: the fastest JAX ({which}) {fastest:.3f} s; moecover {fastest / ours_s:.2f}x faster", flush=True)
