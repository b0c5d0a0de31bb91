"""Argument checks shared by the public API: every message names the argument it is about."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

if TYPE_CHECKING:
    from ._spec import MoESpec

__all__ = [
    "TooLargeError",
    "as_float64",
    "as_scales",
    "check_bytes",
    "check_inputs",
    "check_params",
    "check_spec",
    "check_start",
    "MissingDependency",
    "available_memory_bytes",
    "memory_limit_bytes",
    "positive_int",
    "resolve_pinned",
    "resolve_threads",
]

_MAX_START = (1 << 64) - 1


class TooLargeError(ValueError, MemoryError):
    """A request whose memory need exceeds the machine's; raised before any work starts.

    It is both a ValueError (the argument is out of range) and a MemoryError (the reason).
    """


class MissingDependency(Exception):
    """An optional dependency a command or an executor needs is not installed; the message says
    which extra installs it."""


def physical_memory_bytes() -> int:
    """Total physical memory of this machine, or a generous fallback where the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


#: The share of the memory available now that one call may plan to fill: the rest is for the
#: interpreter, the caller's own arrays and the OS, so that a request is refused here rather than
#: by the kernel's out-of-memory killer.
MEMORY_HEADROOM = 0.9


def available_memory_bytes() -> int:
    """Memory available to new allocations now (Linux's MemAvailable: free memory plus what the
    kernel can reclaim), else the machine's total."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):  # pragma: no cover - not Linux
        pass
    return physical_memory_bytes()  # pragma: no cover


def memory_limit_bytes() -> int:
    """The most one call may plan to hold: MEMORY_HEADROOM of the memory available now. Arrays the
    caller already holds are resident, so they are already subtracted."""
    return int(MEMORY_HEADROOM * available_memory_bytes())


def check_bytes(argument: str, nbytes: int, what: str) -> None:
    """Refuse an allocation of `nbytes` (a Python int: no overflow) that would not fit in the
    memory available now (with headroom: `memory_limit_bytes`)."""
    limit = memory_limit_bytes()
    if nbytes > limit:
        raise TooLargeError(
            f"{argument}: {what} would need {nbytes / 2**30:.3g} GiB, more than the {limit / 2**30:.3g} GiB "
            f"this call may use ({MEMORY_HEADROOM:.0%} of the memory available now, of {physical_memory_bytes() / 2**30:.3g} GiB)"
        )


def positive_int(argument: str, value: Any, *, minimum: int = 1, maximum: int = 2**63 - 1) -> int:
    """`value` as an int in [`minimum`, `maximum`]; bools and non-integers are TypeErrors. The
    default maximum is the core's signed 64-bit range, so that a larger Python int is a ValueError
    naming the argument rather than an OverflowError where it crosses into Rust."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argument}: expected an integer, got {type(value).__name__}")
    number = int(value)
    if number < minimum:
        raise ValueError(f"{argument}: must be >= {minimum}, got {number}")
    if number > maximum:
        shown = number if number < 10**30 else f"an integer of {len(str(number))} digits"
        raise ValueError(f"{argument}: must be <= {maximum}, got {shown}")
    return number


def as_float64(
    argument: str,
    value: Any,
    ndim: int | tuple[int, ...],
    keep_float32: bool = False,
    check_finite: bool = True,
) -> NDArray[np.float64]:
    """A C-contiguous float64 copy (or the array itself when it already is one), checked finite.

    Accepts any real integer or floating dtype; non-contiguous arrays are converted once, and so is
    float32 unless `keep_float32` (for computations done in the input's own precision).
    `check_finite=False` leaves the check to the core, which makes it while reading the array
    anyway (for large point sets: one pass over them fewer).
    """
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"{argument}: not a rectangular array ({error})") from None
    # kinds i, u, f only: timedelta64 is an integer subtype to NumPy, but a duration is no number
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{argument}: expected a real numeric array, got dtype {array.dtype}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if array.ndim not in allowed:
        expected = " or ".join(str(d) for d in allowed)
        raise ValueError(f"{argument}: expected {expected} dimensions, got shape {array.shape}")
    # float32 in either byte order is float32: one precision rule whatever the array's endianness
    single = array.dtype.kind == "f" and array.dtype.itemsize == 4
    dtype = np.float32 if keep_float32 and single else np.float64
    if not (array.flags.c_contiguous and array.dtype == dtype):
        # a copy is made: a broadcast view of 10^12 rows must be refused here, not by NumPy's
        # MemoryError (or the kernel) once the copy starts
        check_bytes(argument, int(array.size) * np.dtype(dtype).itemsize, f"a contiguous {np.dtype(dtype).name} copy of "
                    f"shape {array.shape}")
    array = np.ascontiguousarray(array, dtype=dtype)
    if check_finite and not all_finite(array):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{argument}: contains {bad} NaN or infinite value(s)")
    return array


def all_finite(array: NDArray[Any]) -> bool:
    """Whether every entry is finite, a piece of 2^21 entries at a time: no mask as large as the
    array (its page faults alone took 0.5 s for 0.7 GB of parameters on a VM), and Ctrl-C is seen
    between pieces."""
    flat = array.reshape(-1)
    step = 1 << 21
    return all(bool(np.isfinite(flat[i : i + step]).all()) for i in range(0, flat.size, step))


def as_scales(argument: str, value: Any) -> NDArray[np.float64]:
    """Scales δ in the order given, as float64: a non-empty 1-D real sequence (or one number),
    each finite and > 0."""
    array = np.atleast_1d(np.asarray(value))
    # kinds i, u, f only: timedelta64 is an integer subtype to NumPy, but a duration is no number
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{argument}: expected real scales, got dtype {array.dtype}")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{argument}: expected a non-empty 1-D sequence of scales, got shape {array.shape}")
    array = array.astype(np.float64)
    if not (np.isfinite(array).all() and (array > 0).all()):
        raise ValueError(f"{argument}: every scale must be finite and > 0, got {array.tolist()}")
    return array


#: The most threads a call may ask for: far above any machine this runs on, far below what would
#: exhaust memory or the process table (each thread reserves a stack).
MAX_THREADS = 1024


def resolve_threads(n_threads: int | None) -> int:
    """`n_threads`, else `MOECOVER_NUM_THREADS`, else the cores this process may run on; at most
    `MAX_THREADS`."""
    if n_threads is not None:
        threads = positive_int("n_threads", n_threads)
        if threads > MAX_THREADS:
            raise ValueError(f"n_threads: at most {MAX_THREADS} threads, got {threads}")
        return threads
    env = os.environ.get("MOECOVER_NUM_THREADS")
    if env:
        try:
            threads = int(env.strip())
        except ValueError:
            raise ValueError(f"MOECOVER_NUM_THREADS: expected a positive integer, got {env!r}") from None
        if not 1 <= threads <= MAX_THREADS:
            raise ValueError(f"MOECOVER_NUM_THREADS: expected an integer from 1 to {MAX_THREADS}, got {env!r}")
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        return os.cpu_count() or 1


SAMPLERS = ("uniform", "arcsine", "faces", "mixture")
"""Parameter samplers (definitions §7): every one keeps each θ in the box, so every net stays a
certified lower bound; they differ in how soon the nets reach the image's extremes."""

#: Measured (benches/exploration.py): on every class tried, the face-rate sampler's nets are the
#: largest at every budget and scale (5-15x uniform's on the quickstart classes at delta = 2), and
#: it reaches 0.9-0.99 of a known image where uniform sampling reaches 0.6-0.8.
DEFAULT_SAMPLER = "faces"


def check_sampler(sampler: Any) -> str:
    if not isinstance(sampler, str) or sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {', '.join(map(repr, SAMPLERS))}, got {sampler!r}")
    return sampler


def check_spec(spec: Any) -> MoESpec:
    """`spec` itself, if it is a `moecover.MoESpec`."""
    from ._spec import MoESpec

    if not isinstance(spec, MoESpec):
        raise TypeError(f"spec: expected a moecover.MoESpec, got {type(spec).__name__}")
    return spec


def check_start(start: Any, m: int) -> int:
    """The first sample index: an int >= 0 with start + m below 2**64."""
    start = positive_int("start", start, minimum=0, maximum=_MAX_START)
    if start + m > _MAX_START:
        raise ValueError(f"start: start + m must stay below 2**64, got {start} + {m}")
    return start


def resolve_pinned(spec: MoESpec, pinned: Mapping[str, ArrayLike] | None) -> list[tuple[int, list[float]]]:
    """`{name: array}` as `[(offset, flat values)]`, each checked against its block's shape."""
    if pinned is None:
        return []
    if not isinstance(pinned, Mapping):
        raise TypeError(f"pinned: expected a mapping of block names to arrays, got {type(pinned).__name__}")
    resolved = []
    for name, value in pinned.items():
        block = spec.param_block(name)
        array = as_float64(f"pinned[{name!r}]", value, ndim=len(block.shape))
        if array.shape != block.shape:
            raise ValueError(f"pinned[{name!r}]: expected shape {block.shape}, got {array.shape}")
        resolved.append((block.offset, array.ravel().tolist()))
    return resolved


def check_inputs(spec: MoESpec, inputs: ArrayLike) -> NDArray[np.float64]:
    """`inputs` as a C-contiguous float64 (n, seq_len, d_model) array of finite values."""
    array = as_float64("inputs", inputs, ndim=3)
    expected = (spec.seq_len, spec.d_model)
    if array.shape[1:] != expected:
        raise ValueError(
            f"inputs: expected shape (n, seq_len, d_model) = (n, {expected[0]}, {expected[1]}), got {array.shape}"
        )
    if array.shape[0] == 0:
        raise ValueError("inputs: expected at least one input, got none")
    return array


def check_params(spec: MoESpec, params: ArrayLike) -> tuple[NDArray[np.float64], bool]:
    """`params` as C-contiguous float64 rows (m, total_params), finite, and whether it was one θ
    (1-D), whose leading axis the caller drops again."""
    theta = as_float64("params", params, ndim=(1, 2))
    single = theta.ndim == 1
    theta = theta.reshape(1, -1) if single else theta
    if theta.shape[1] != spec.total_params:
        raise ValueError(f"params: expected {spec.total_params} columns (spec.total_params), got shape {theta.shape}")
    return theta, single  # m = 0 is a question with an empty answer
