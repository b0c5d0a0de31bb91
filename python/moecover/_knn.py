"""k-nearest-neighbour regression, the calibration model of definitions §9 (SciPy's KD-tree)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def knn_predictions(train_x: NDArray[np.float64], train_y: NDArray[np.float64], query_x: NDArray[np.float64],
                    ks: NDArray[np.int64]) -> NDArray[np.float64]:
    """(queries, len(ks)): the mean of the k nearest training responses of each query, for each k
    in `ks` (ascending, each ≤ the training size), from one neighbour search of the largest."""
    from scipy.spatial import cKDTree

    k_max = int(ks[-1])
    _, index = cKDTree(train_x).query(query_x, k=k_max)
    index = np.asarray(index).reshape(len(query_x), k_max)
    running = np.cumsum(train_y[index], axis=1)
    return running[:, ks - 1] / ks
