"""The MoE function class (definitions §1) and its flat parameter layout."""

from __future__ import annotations

import numbers

from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from . import _core

__all__ = ["MoESpec", "ParamBlock"]

ExpertKind = Literal["constant", "linear", "mlp"]
GateKind = Literal["renormalized_softmax", "full_softmax", "uniform"]
BlockForm = Literal["sequential", "parallel"]
ReadoutKind = Literal["scalar", "token0", "all"]


BlockKind = Literal["attn", "router", "experts"]


@dataclass(frozen=True)
class ParamBlock:
    """One named block of the flat parameter vector θ: `theta[offset:offset + size].reshape(shape)`.

    Attributes:
        name: `layers.{layer}.{kind}[.{expert}].{tensor}`, e.g. `layers.0.experts.2.w1`.
        layer: the block's layer.
        kind: `"attn"`, `"router"` or `"experts"`.
        expert: the expert's index for `kind == "experts"`, else None.
        tensor: the tensor within its part (`wq`, `wk`, `wv`, `wo`; `weight`, `bias`; `value`;
            `w1`, `b1`, `w2`, `b2`).
        shape, offset, size: where the block lies in θ.
    """

    name: str
    layer: int
    kind: BlockKind
    expert: int | None
    tensor: str
    shape: tuple[int, ...]
    offset: int
    size: int


@dataclass(frozen=True)
class MoESpec:
    """A class of tiny MoE Transformers `f_θ : R^{seq_len × d_model} → R^{output_dim}`.

    Parameters follow definitions §1: `layers` blocks, each with optional multi-head attention
    (`heads = 0` turns it off), a linear router over `experts` experts choosing `top_k` per token,
    gate weights (`gate`), experts of kind `expert` (`constant`, `linear`, `mlp` with
    `expert_hidden` units), residual form `block` (`sequential` or the paper's `parallel`), and a
    readout (`scalar` = H[0, 0], `token0` = H[0, :], `all` = H flattened). Every parameter lies in
    `[-param_bound, param_bound]`.

    Invalid values raise ValueError naming the field.
    """

    layers: int = 1
    experts: int = 4
    top_k: int = 1
    d_model: int = 2
    seq_len: int = 1
    heads: int = 0
    expert: ExpertKind = "mlp"
    expert_hidden: int = 4
    gate: GateKind = "renormalized_softmax"
    block: BlockForm = "sequential"
    readout: ReadoutKind = "scalar"
    param_bound: float = 1.0
    _core: _core.CoreSpec = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        for name in ("layers", "experts", "top_k", "d_model", "seq_len", "heads", "expert_hidden"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
            number = int(value)  # numpy integers welcome, stored as int
            if not (0 if name == "heads" else 1) <= number <= 1 << 16:  # the core's range, checked before conversion
                raise ValueError(f"{name}: must be {'>= 0' if name == 'heads' else '>= 1'} and <= {1 << 16}, got {number}")
            object.__setattr__(self, name, number)
        for name in ("expert", "gate", "block", "readout"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a str, got {type(getattr(self, name)).__name__}")
        if isinstance(self.param_bound, bool) or not isinstance(self.param_bound, numbers.Real):
            raise TypeError(f"param_bound: expected a float, got {type(self.param_bound).__name__}")
        object.__setattr__(self, "param_bound", float(self.param_bound))
        core = _core.CoreSpec(
            self.layers,
            self.experts,
            self.top_k,
            self.d_model,
            self.seq_len,
            self.heads,
            self.expert,
            self.expert_hidden,
            self.gate,
            self.block,
            self.readout,
            float(self.param_bound),
        )
        object.__setattr__(self, "_core", core)

    @property
    def active_params(self) -> int:
        """The paper's N_eff = layers·Π_attn + layers·top_k·Π_exp."""
        return self._core.active_params

    @property
    def total_params(self) -> int:
        """P = layers·(Π_attn + Π_router + experts·Π_exp): the length of θ."""
        return self._core.total_params

    @property
    def output_dim(self) -> int:
        """Width o of f_θ(X): 1, d_model or seq_len·d_model by readout."""
        return self._core.output_dim

    @property
    def patterns_per_token(self) -> int:
        """C(experts, top_k): the top-k expert sets one token can be routed to."""
        return self._core.patterns_per_token

    @cached_property
    def layout(self) -> tuple[ParamBlock, ...]:
        """The named blocks of θ in flat order; they tile `range(total_params)`."""
        return tuple(
            ParamBlock(name, layer, kind, expert, tensor, tuple(shape), offset, size)  # type: ignore[arg-type]
            for name, layer, kind, expert, tensor, shape, offset, size in self._core.layout()
        )

    def param_block(self, name: str) -> ParamBlock:
        """The block called `name`; ValueError listing the known names when there is none."""
        for block in self.layout:
            if block.name == name:
                return block
        known = [b.name for b in self.layout]
        raise ValueError(f"pinned: unknown parameter block {name!r}; this spec has {known}")
