"""moecover: measure covering numbers of Mixture-of-Experts function classes.

The pipeline, one module per step (the Rust core in `rust/core` does the numerics; the definitions
are in docs/definitions.md, cited by section):

- `MoESpec` (`_spec`): the function class of definitions §1 and its parameter layout;
- `sample_params`, `evaluate`, `evaluate_sampled` (`_evaluate`): parameters sampled in the box by
  a named sampler (uniform, arcsine, faces, their mixture: §7), evaluated on inputs, with each
  token's routing pattern;
- `jacobian`, `functional_dimension` (`_jacobian`): exact Jacobians in θ, and their largest rank
  r*, the exact asymptotic slope of log N(δ) (definitions §6);
- `greedy_net`, `cover`, `CoverStream`, `box_count` (`_cover`): exact greedy ℓ∞ nets at many
  scales, in one call or streamed in chunks; `GroupedCoverStream`, a net per routing pattern;
- `explore` (`_explore`): a search for members farther than δ from every centre, which reaches the
  parts of the class that uniform sampling makes rare (§7), and `known_image_class`, classes whose
  image is known in closed form to measure how complete a packing is;
- `inputs`: seeded manifold input sets (box, sphere, torus, swiss_roll, grid);
- `estimate_entropy` (`estimate`): log N(δ) with replicate error bars, its regime, r* and the
  slope extrapolated to δ → 0 (fitting in `_fit`), beside the theory;
- `batch`, `report`: grids of estimates from a TOML config, stored in SQLite, run here or on a Dask
  cluster, and their report
  (the `moecover run`, `show` and `report` commands);
- `routing`: top-k expert sets as colex ranks;
- `theory`: what the paper and the alternatives of definitions §4 predict for a class;
- `targets`: regression problems of known intrinsic dimension d and smoothness β (definitions §9);
- `erm` (the `[erm]` extra): least-squares fits of the class in JAX and their learning curves (§9);
- `manifold` (the `[manifold]` extra): d and β estimated from data, validated on those (§10);
- `findings`: the built-in study of the paper's claims (`studies/findings.toml`), run through
  `batch` and written up one section per reviewers' question (the `moecover findings` command);
- `resolve_seed` (`_rng`): every random result is a function of one integer seed.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from ._checks import TooLargeError
from ._cover import (
    CoverResult,
    CoverStream,
    GroupedCoverResult,
    GroupedCoverStream,
    Net,
    added_centres,
    box_count,
    cover,
    greedy_net,
)
from ._evaluate import Evaluation, evaluate, evaluate_sampled, sample_params
from ._explore import Exploration, KnownImageClass, explore, image_coverage, known_image_class
from ._jacobian import FunctionalDimension, Jacobian, functional_dimension, jacobian
from ._rng import resolve_seed
from ._spec import MoESpec, ParamBlock
from . import inputs, routing, targets, theory
from .estimate import EntropyEstimate, estimate_entropy

try:
    __version__ = version("moecover")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0+unknown"

__all__ = [
    "CoverResult",
    "EntropyEstimate",
    "CoverStream",
    "GroupedCoverResult",
    "GroupedCoverStream",
    "added_centres",
    "Net",
    "box_count",
    "cover",
    "estimate_entropy",
    "greedy_net",
    "Evaluation",
    "FunctionalDimension",
    "Jacobian",
    "functional_dimension",
    "jacobian",
    "MoESpec",
    "ParamBlock",
    "TooLargeError",
    "inputs",
    "__version__",
    "evaluate",
    "evaluate_sampled",
    "Exploration",
    "KnownImageClass",
    "explore",
    "image_coverage",
    "known_image_class",
    "resolve_seed",
    "routing",
    "targets",
    "theory",
    "sample_params",
]
