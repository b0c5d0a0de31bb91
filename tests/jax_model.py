"""The MoE class of docs/definitions.md §1 written in JAX from the definitions (no moecover code but
the parameter layout), for reference values and derivatives: `outputs(spec, theta, x)` is
(f_θ(x_i)_c)_{i,c} flattened, differentiable in θ with `jax.jacrev` or `jax.jacfwd`."""

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)


def _block(spec, theta, name):
    block = spec.param_block(name)
    return theta[block.offset : block.offset + block.size].reshape(block.shape)


def _softmax(s):
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    return e / jnp.sum(e, axis=-1, keepdims=True)


def _attention(spec, theta, layer, h):
    w = {t: _block(spec, theta, f"layers.{layer}.attn.{t}") for t in ("wq", "wk", "wv", "wo")}
    q, k, v = h @ w["wq"], h @ w["wk"], h @ w["wv"]
    width = spec.d_model // spec.heads
    heads = []
    for head in range(spec.heads):
        cols = slice(head * width, (head + 1) * width)
        weights = _softmax(q[:, cols] @ k[:, cols].T / jnp.sqrt(width))
        heads.append(weights @ v[:, cols])
    return jnp.concatenate(heads, axis=1) @ w["wo"]


def _expert(spec, theta, layer, j, z):
    name = f"layers.{layer}.experts.{j}"
    if spec.expert == "constant":
        return _block(spec, theta, f"{name}.value")
    if spec.expert == "linear":
        return _block(spec, theta, f"{name}.weight") @ z + _block(spec, theta, f"{name}.bias")
    hidden = jnp.maximum(_block(spec, theta, f"{name}.w1") @ z + _block(spec, theta, f"{name}.b1"), 0.0)
    return _block(spec, theta, f"{name}.w2") @ hidden + _block(spec, theta, f"{name}.b2")


def _mixture(spec, theta, layer, z):
    weight, bias = _block(spec, theta, f"layers.{layer}.router.weight"), _block(spec, theta, f"layers.{layer}.router.bias")
    out = []
    for token in z:
        scores = weight @ token + bias
        _, chosen = jax.lax.top_k(scores, spec.top_k)  # the k highest; ties to the lower index
        chosen = jnp.sort(chosen)
        if spec.gate == "uniform":
            gates = jnp.full(spec.top_k, 1.0 / spec.top_k)
        elif spec.gate == "full_softmax":
            gates = _softmax(scores)[chosen]
        else:
            gates = _softmax(scores[chosen])
        experts = jnp.stack([_expert(spec, theta, layer, j, token) for j in range(spec.experts)])
        out.append(gates @ experts[chosen])
    return jnp.stack(out)


def output(spec, theta, h):
    """f_θ(X) (o,) for one input X (seq_len, d_model)."""
    for layer in range(spec.layers):
        attn = _attention(spec, theta, layer, h) if spec.heads else jnp.zeros_like(h)
        if spec.block == "sequential":
            y = h + attn
            h = y + _mixture(spec, theta, layer, y)
        else:
            h = h + attn + _mixture(spec, theta, layer, h)
    return {"scalar": h[0, :1], "token0": h[0], "all": h.ravel()}[spec.readout]


def outputs(spec, theta, x):
    """(f_θ(x_i)_c)_{i, c} for inputs x (n, seq_len, d_model), flattened in that order."""
    return jnp.concatenate([output(spec, theta, h) for h in x])
