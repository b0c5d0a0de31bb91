"""Jacobians and forward passes of the evaluate benchmark's class: moecover against JAX.

Run: python benches/jacobian_times.py --threads 1   (then --threads 2)

Class: layers 2, experts 8, top_k 2, d_model 4, heads 1, seq_len 4, mlp experts with 8 hidden
units (P = 1424); 64 box inputs. The JAX peers, both written from the definitions and run as a
user would, `jit` of two `vmap`s (over θ and over inputs) of the per-input function, of its `jacrev`
or of its `jacfwd`, in chunks of θ (the best of several sizes): `literal`, tests/jax_model.py (a
loop over tokens, every expert computed and the chosen ones gathered), and `dense`, vectorised
over tokens and experts (every expert by one einsum, the gates as a dense masked matrix, top-k by
`lax.top_k`), which is what a careful JAX user writes for this class. Each is checked equal to moecover before it is timed. JAX's
threads are set with XLA_FLAGS before it is imported (one thread: no Eigen thread pool).
"""

import argparse
import os
import sys

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--threads", type=int, default=1, choices=[1, 2])
parser.add_argument("--samples", type=int, default=1000, help="θ for the Jacobians")
parser.add_argument("--forwards", type=int, default=20_000, help="θ for the forward passes")
args = parser.parse_args()
# NumPy's BLAS (the singular values on both sides) at the same number of threads
os.environ["OPENBLAS_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(args.threads)
if args.threads == 1:
    os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

import jax  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
import moecover  # noqa: E402
from jax_model import output  # noqa: E402
from timing import best  # noqa: E402

SPEC = moecover.MoESpec(layers=2, experts=8, top_k=2, d_model=4, heads=1, seq_len=4, expert="mlp", expert_hidden=8)
X = np.asarray(moecover.inputs.box(64, seq_len=4, d_model=4, rng=0))
CHUNK = 64


def per_input(function):
    return jax.jit(jax.vmap(jax.vmap(function, in_axes=(None, 0)), in_axes=(0, None)))


def dense(theta, h):
    """The benchmark class (one head, mlp experts, renormalised softmax, scalar readout), vectorised."""
    import jax.numpy as jnp

    d, m, k, hid = SPEC.d_model, SPEC.experts, SPEC.top_k, SPEC.expert_hidden
    size = 2 * d * hid + hid + d
    for layer in range(SPEC.layers):
        block = lambda name: SPEC.param_block(f"layers.{layer}.{name}")  # noqa: E731
        take = lambda b: theta[b.offset : b.offset + b.size].reshape(b.shape)  # noqa: E731
        wq, wk, wv, wo = (take(block(f"attn.{t}")) for t in ("wq", "wk", "wv", "wo"))
        weights = jax.nn.softmax((h @ wq) @ (h @ wk).T / jnp.sqrt(d), axis=-1)
        z = h + weights @ (h @ wv) @ wo
        scores = z @ take(block("router.weight")).T + take(block("router.bias"))
        top, chosen = jax.lax.top_k(scores, k)
        mask = jax.nn.one_hot(chosen, m).sum(axis=1)
        gates = mask * jnp.exp(scores - top[:, :1])
        gates = gates / gates.sum(axis=-1, keepdims=True)
        start = block("experts.0.w1").offset
        experts = theta[start : start + m * size].reshape(m, size)
        w1 = experts[:, : hid * d].reshape(m, hid, d)
        b1 = experts[:, hid * d : hid * d + hid]
        w2 = experts[:, hid * d + hid : 2 * hid * d + hid].reshape(m, d, hid)
        b2 = experts[:, 2 * hid * d + hid :]
        hidden = jax.nn.relu(jnp.einsum("td,mhd->tmh", z, w1) + b1)
        out = jnp.einsum("tmh,mdh->tmd", hidden, w2) + b2
        h = z + jnp.einsum("tm,tmd->td", gates, out)
    return h[0, :1]


MODELS = {"literal": lambda theta, h: output(SPEC, theta, h), "dense": dense}


def chunked(function, params, chunk=CHUNK):
    out = [np.asarray(function(params[s : s + chunk], X)) for s in range(0, len(params), chunk)]
    return np.concatenate(out)


# θ per jitted call: as many as fit in memory (jacfwd carries P tangents through every step)
CHUNKS = {"jacrev": 16, "jacfwd": 2}


params = moecover.sample_params(SPEC, args.samples, rng=1, sampler="uniform")
ours = moecover.jacobian(SPEC, params[:CHUNK], X, n_threads=args.threads).matrix
print(f"{args.threads} thread(s), jax {jax.__version__}, P = {SPEC.total_params}, {len(X)} inputs", flush=True)
ours_s = best(lambda: moecover.jacobian(SPEC, params, X, n_threads=args.threads))
print(f"Jacobians of {args.samples} θ, moecover.jacobian: {ours_s:.3f} s ({ours_s / args.samples * 1e3:.3f} ms per θ)")
peers = {}
for model, function in MODELS.items():
    for mode, transform, chunks in (("jacrev", jax.jacrev, (4, 16, 64)), ("jacfwd", jax.jacfwd, (2,))):
        compiled = per_input(transform(function))
        checked = CHUNK if mode == "jacrev" else 4
        theirs = chunked(compiled, params[:checked], chunks[0]).reshape(ours[:checked].shape)
        assert np.allclose(ours[:checked], theirs, rtol=0, atol=1e-10 * np.abs(theirs).max()), (model, mode)
        rows = params if mode == "jacrev" else params[:4]  # jacfwd takes ~1 s per θ: timed on 4
        for chunk in chunks:
            s = best(lambda: chunked(compiled, rows, chunk), rounds=2) / len(rows) * args.samples
            peers[f"{model} {mode}, {chunk} θ per call"] = s
            print(f"  jax {model} {mode}, {chunk:3d} θ per call: {s:.3f} s for {args.samples} θ "
                  f"({s / args.samples * 1e3:.3f} ms per θ; moecover {s / ours_s:.2f}x faster)", flush=True)
name = min(peers, key=peers.get)
print(f"Jacobians: the fastest JAX ({name}) {peers[name]:.3f} s; moecover {peers[name] / ours_s:.2f}x faster")

# the functional dimension per θ: a Jacobian and its singular values, as a JAX user would take them
# (NumPy's batched SVD, 16 at a time), against `functional_dimension`, which also gives the rank on
# every prefix of the inputs
jacobians = moecover.jacobian(SPEC, params, X, n_threads=args.threads).matrix
svd_s = best(lambda: [np.linalg.svd(jacobians[s : s + 16], compute_uv=False) for s in range(0, len(jacobians), 16)])
dimension_s = best(lambda: moecover.functional_dimension(SPEC, X, samples=args.samples, rng=1, n_threads=args.threads))
theirs_s = peers[name] + svd_s
print(f"functional dimension per θ: moecover.functional_dimension {dimension_s / args.samples * 1e3:.3f} ms; "
      f"the fastest JAX Jacobian + NumPy's singular values {peers[name] / args.samples * 1e3:.3f} + "
      f"{svd_s / args.samples * 1e3:.3f} ms; moecover {theirs_s / dimension_s:.2f}x faster", flush=True)

forward_params = moecover.sample_params(SPEC, args.forwards, rng=2, sampler="uniform")
ours_values = moecover.evaluate(SPEC, forward_params[:CHUNK], X, n_threads=args.threads).values
ours_s = best(lambda: moecover.evaluate(SPEC, forward_params, X, n_threads=args.threads))
print(f"forward passes of {args.forwards} θ x 64 inputs: moecover.evaluate {ours_s:.3f} s")
fastest = float("inf")
for model, function in MODELS.items():
    compiled = per_input(function)
    assert np.allclose(ours_values, chunked(compiled, forward_params[:CHUNK]), rtol=0, atol=1e-11), model
    for chunk in (64, 256, 1024):
        s = best(lambda: chunked(compiled, forward_params, chunk), rounds=2)
        fastest = min(fastest, s)
        print(f"  jax {model} vmap, {chunk:4d} θ per call: {s:.3f} s (moecover {s / ours_s:.2f}x faster)", flush=True)
print(f"forward: the fastest JAX {fastest:.3f} s; moecover {fastest / ours_s:.2f}x faster")
