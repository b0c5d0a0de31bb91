"""MoESpec: validation, parameter counts (definitions §1) and the flat layout."""

import dataclasses

import numpy as np

import pytest
from reference import reference_layout

import moecover
from moecover import MoESpec


@pytest.mark.parametrize("expert", ["constant", "linear", "mlp"])
@pytest.mark.parametrize("heads", [0, 1, 2])
def test_layout_names_order_and_tiling(expert, heads):
    spec = MoESpec(layers=2, experts=3, top_k=2, d_model=4, heads=heads, expert=expert, expert_hidden=5)
    layout = spec.layout
    assert [(b.name, b.shape) for b in layout] == reference_layout(spec)
    offset = 0
    for block in layout:
        assert block.offset == offset
        assert block.size == (block.shape[0] * (block.shape[1] if len(block.shape) > 1 else 1))
        offset += block.size
    assert offset == spec.total_params


@pytest.mark.parametrize(
    ("kwargs", "active", "total"),
    [
        # D=2, h=4, M=4, k=1, L=1, no attention: Π_exp = 2·2·4+4+2 = 22, Π_router = 12
        ({}, 22, 12 + 4 * 22),
        # D=4, h=8, M=8, k=2, L=2, heads=1: Π_attn = 64, Π_exp = 64+8+4 = 76, Π_router = 40
        (dict(layers=2, experts=8, top_k=2, d_model=4, heads=1, expert_hidden=8), 2 * 64 + 2 * 2 * 76,
         2 * (64 + 40 + 8 * 76)),
        # constant experts: Π_exp = D
        (dict(experts=3, d_model=1, expert="constant"), 1, 3 * 2 + 3 * 1),
        # linear experts: Π_exp = D² + D
        (dict(experts=2, d_model=3, expert="linear", top_k=2), 2 * 12, 2 * 4 + 2 * 12),
    ],
)
def test_parameter_counts_closed_form(kwargs, active, total):
    spec = MoESpec(**kwargs)
    assert spec.active_params == active
    assert spec.total_params == total


def test_output_dim_by_readout():
    assert MoESpec(seq_len=3, d_model=2).output_dim == 1
    assert MoESpec(seq_len=3, d_model=2, readout="token0").output_dim == 2
    assert MoESpec(seq_len=3, d_model=2, readout="all").output_dim == 6


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(top_k=5), "top_k"),
        (dict(d_model=3, heads=2), "heads"),
        (dict(heads=-1), "heads"),
        (dict(layers=0), "layers"),
        (dict(experts=-2), "experts"),
        (dict(d_model=0), "d_model"),
        (dict(seq_len=0), "seq_len"),
        (dict(expert_hidden=0), "expert_hidden"),
        (dict(expert="moe"), "expert"),
        (dict(gate="softmax"), "gate"),
        (dict(block="serial"), "block"),
        (dict(readout="mean"), "readout"),
        (dict(param_bound=0.0), "param_bound"),
        (dict(param_bound=float("nan")), "param_bound"),
        (dict(experts=64, top_k=16), "top_k"),
    ],
)
def test_invalid_fields_raise_value_error_naming_them(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MoESpec(**kwargs)


@pytest.mark.parametrize(("kwargs", "name"), [(dict(layers=1.5), "layers"), (dict(experts=True), "experts"),
                                              (dict(gate=3), "gate"), (dict(param_bound="1"), "param_bound")])
def test_wrong_types_raise_type_error_naming_them(kwargs, name):
    with pytest.raises(TypeError, match=name):
        MoESpec(**kwargs)


def test_spec_is_frozen_hashable_and_compares_by_fields():
    a, b = MoESpec(experts=3), MoESpec(experts=3)
    assert a == b and hash(a) == hash(b)
    assert a != MoESpec(experts=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.experts = 4  # type: ignore[misc]
    assert "experts=3" in repr(a) and "_core" not in repr(a)


def test_param_block_lookup():
    spec = MoESpec()
    assert spec.param_block("layers.0.router.bias").shape == (4,)
    with pytest.raises(ValueError, match="unknown parameter block"):
        spec.param_block("layers.0.router.gain")


def test_package_exports_version():
    assert moecover.__version__[0].isdigit()


def test_numpy_integers_are_sizes_too_and_are_stored_as_int():
    spec = MoESpec(experts=np.int64(4), top_k=np.int32(2), d_model=np.uint8(2), param_bound=np.float32(0.5))
    assert spec == MoESpec(experts=4, top_k=2, d_model=2, param_bound=0.5)
    assert type(spec.experts) is int and type(spec.param_bound) is float


def test_a_parameter_count_that_would_wrap_is_refused():
    # once total_params == 44 314: the count wrapped around 2**64
    with pytest.raises(ValueError, match=r"2\^48"):
        MoESpec(layers=58201, experts=62494, d_model=40532, expert_hidden=62562)
