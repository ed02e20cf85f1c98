"""Closed-set speaker identification: top-k accuracy."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "detach"):  # torch.Tensor, without importing torch here
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def topk_accuracy(scores: Any, targets: Any, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Fraction of rows whose target class is among the ``k`` highest scores, for each ``k``.

    Args:
        scores: ``(N, C)`` class scores (logits, log-probabilities or cosine scores), numpy or tensor.
        targets: ``(N,)`` integer class ids in ``[0, C)``.
        ks: values of k; a k larger than C counts every row as correct.

    A class tied with the target's score counts as ranked *above* it, so a constant scorer gets 0
    (for k < C) rather than 100 %.

    Example:
        >>> topk_accuracy(np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]), np.array([2, 0]), ks=(1, 2))
        {1: 0.5, 2: 1.0}
    """
    score_array = _to_numpy(scores)
    target_array = _to_numpy(targets).reshape(-1)
    if score_array.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {score_array.shape}")
    num_rows, num_classes = score_array.shape
    if target_array.shape[0] != num_rows:
        raise ValueError(f"{num_rows} score rows but {target_array.shape[0]} targets")
    if num_rows == 0:
        raise ValueError("top-k accuracy of an empty set is undefined")
    if not np.issubdtype(target_array.dtype, np.integer):
        raise TypeError(f"targets must be integer class ids, got {target_array.dtype}")
    if target_array.min() < 0 or target_array.max() >= num_classes:
        raise ValueError(f"targets must be in [0, {num_classes}), got [{target_array.min()}, {target_array.max()}]")
    if np.isnan(score_array).any():
        raise ValueError("scores contain NaN")
    if any(int(k) < 1 for k in ks):
        raise ValueError(f"k must be >= 1, got {tuple(ks)}")

    target_scores = score_array[np.arange(num_rows), target_array]
    # Rank of the target = number of other classes scoring at least as high (ties count against it).
    rank = (score_array >= target_scores[:, None]).sum(axis=1) - 1
    return {int(k): float(np.mean(rank < int(k))) for k in ks}


def fuse_scores(*scores: Any) -> np.ndarray:
    """Equal-weight fusion of closed-set scores of different kinds (e.g. cosine and log-likelihood):
    each ``(N, C)`` matrix is standardised per row (mean 0, standard deviation 1 over the C classes, so
    that its scale does not matter), then they are summed.

    Example:
        >>> fuse_scores(np.array([[0.1, 0.7, 0.2]]), np.array([[-30.0, -20.0, -10.0]])).round(3)
        array([[-2.114,  1.397,  0.717]])
    """
    arrays = [_to_numpy(s).astype(np.float64) for s in scores]
    if not arrays or any(a.ndim != 2 or a.shape != arrays[0].shape for a in arrays):
        raise ValueError(f"fusion needs (N, C) score matrices of one shape, got {[a.shape for a in arrays]}")
    fused = np.zeros_like(arrays[0])
    for a in arrays:
        fused += (a - a.mean(1, keepdims=True)) / np.maximum(a.std(1, keepdims=True), 1e-12)
    return fused
