"""Results to and from JSON-safe values, driven by their dataclass fields' types.

One rule everywhere: arrays become nested lists, a float that is not finite becomes None (JSON has
no NaN), and back: None in a float field or a float array becomes NaN. A field's type annotation
says what to rebuild (`NDArray[np.float64]`, `NDArray[np.int64]`, `float`, `tuple[float, float]`,
`dict[int, NDArray[np.int64]]`, …), so a new field needs no serialisation code of its own.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from typing import Any

import numpy as np

__all__ = ["from_plain", "to_plain"]


def to_plain(value: Any) -> Any:
    """JSON-safe: dataclasses as dicts of their fields, arrays as lists, non-finite floats as None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, np.ndarray):
        return to_plain(value.tolist())
    if isinstance(value, np.generic):
        item = value.item()
        if isinstance(item, np.generic):  # longdouble and friends .item() to themselves
            item = float(item) if np.issubdtype(value.dtype, np.floating) else complex(item)
        return to_plain(item)
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _floats(value: Any) -> np.ndarray:
    """A float64 array of nested lists in which None stands for NaN."""
    shaped = np.array(value, dtype=object)
    flat = [np.nan if v is None else v for v in shaped.ravel()]
    return np.array(flat, dtype=np.float64).reshape(shaped.shape)


def from_plain(hint: Any, value: Any) -> Any:
    """The value of type `hint` that `to_plain` turned into `value`."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint, vars(sys.modules[hint.__module__]))
        # A field with a default may be missing: results stored before it existed still load.
        init = {
            f.name: from_plain(hints[f.name], value[f.name])
            for f in dataclasses.fields(hint)
            if f.init and (f.name in value or (f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING))
        }
        return hint(**init)  # type: ignore[operator]
    if origin is np.ndarray:
        dtype = typing.get_args(args[1])[0] if len(args) > 1 else np.float64
        if np.issubdtype(dtype, np.floating):
            return _floats(value)
        return np.array(value, dtype=dtype)
    if hint is float:
        return math.nan if value is None else float(value)
    if hint is int:
        return int(value)
    if origin is tuple:
        return tuple(from_plain(a, v) for a, v in zip(args, value))
    if origin is dict:
        key, item = args
        return {from_plain(key, k): from_plain(item, v) for k, v in value.items()}
    if origin is list:
        return [from_plain(args[0], v) for v in value]
    return value
