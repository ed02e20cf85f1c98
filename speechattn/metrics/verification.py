"""Speaker verification: cosine trial scoring, EER, minDCF, DET curves and VoxCeleb trial lists.

All error-rate functions share one threshold sweep (:func:`error_rates`): target and non-target
scores are sorted together once (O(n log n)) and cumulative counts give, for every distinct score
value ``s``, the operating point of the decision "accept when score >= s". Tied scores form one
group, so no operating point splits a tie (a tie is either all accepted or all rejected); the EER
is interpolated on the segment between the two operating points that bracket it, which is what a
random decision on the tied group would achieve.

Trials are :class:`speechattn.data.trials.Trial` ``(label, utt1, utt2)`` (read and written there,
VoxCeleb format ``LABEL UTT1 UTT2``, 1 = target).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from speechattn.data.trials import Trial


def _scores_1d(scores: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"no {name} scores")
    if np.isnan(array).any():
        raise ValueError(f"{name} scores contain NaN")
    return array


def error_rates(
    target_scores: Sequence[float] | np.ndarray, nontarget_scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Miss and false-alarm rates at every distinct threshold: ``(p_miss, p_fa, thresholds)``, each ``(G+1,)``.

    Point ``i`` is the decision "accept when score >= thresholds[i]". Point 0 accepts everything
    (p_miss 0, p_fa 1, threshold = lowest score); the last point rejects everything (p_miss 1,
    p_fa 0, threshold +inf). ``p_miss`` is non-decreasing and ``p_fa`` non-increasing.
    G is the number of distinct score values.
    """
    target = _scores_1d(target_scores, "target")
    nontarget = _scores_1d(nontarget_scores, "non-target")
    scores = np.concatenate([target, nontarget])
    is_target = np.concatenate([np.ones(target.size, dtype=np.int64), np.zeros(nontarget.size, dtype=np.int64)])
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    targets_below = np.cumsum(is_target[order])  # targets with score <= sorted_scores[i]
    nontargets_below = np.arange(1, scores.size + 1) - targets_below
    # Last index of every group of equal scores: thresholds sit between groups, never inside one.
    group_end = np.flatnonzero(np.diff(sorted_scores) > 0)
    group_end = np.append(group_end, scores.size - 1)

    p_miss = np.concatenate([[0.0], targets_below[group_end] / target.size])
    p_fa = np.concatenate([[1.0], 1.0 - nontargets_below[group_end] / nontarget.size])
    thresholds = np.concatenate([[sorted_scores[0]], sorted_scores[group_end[:-1] + 1], [np.inf]])
    return p_miss, p_fa, thresholds


def det_curve(
    target_scores: Sequence[float] | np.ndarray, nontarget_scores: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """DET curve points ``(p_miss, p_fa)`` from the threshold sweep of :func:`error_rates`."""
    p_miss, p_fa, _ = error_rates(target_scores, nontarget_scores)
    return p_miss, p_fa


def compute_eer(
    target_scores: Sequence[float] | np.ndarray, nontarget_scores: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """Equal error rate (fraction) and the threshold where it is reached.

    The EER is the crossing of the p_miss and p_fa curves, linearly interpolated between the two
    operating points that bracket it; the threshold is interpolated the same way (or the finite
    neighbour when the crossing touches the reject-all point).

    Example:
        >>> eer, threshold = compute_eer([0.9, 0.8, 0.3], [0.1, 0.2, 0.85])
        >>> round(eer, 4)
        0.3333
    """
    p_miss, p_fa, thresholds = error_rates(target_scores, nontarget_scores)
    # First point with p_miss >= p_fa; point 0 has p_miss=0 < p_fa=1, and the last has 1 >= 0.
    k = int(np.argmax(p_miss >= p_fa))
    if p_miss[k] == p_fa[k]:
        return float(p_miss[k]), float(thresholds[k])
    m0, f0, m1, f1 = p_miss[k - 1], p_fa[k - 1], p_miss[k], p_fa[k]
    alpha = (f0 - m0) / ((f0 - m0) + (m1 - f1))
    eer = m0 + alpha * (m1 - m0)
    t0, t1 = thresholds[k - 1], thresholds[k]
    threshold = t0 + alpha * (t1 - t0) if np.isfinite(t1) else t0
    return float(eer), float(threshold)


def compute_min_dcf(
    target_scores: Sequence[float] | np.ndarray,
    nontarget_scores: Sequence[float] | np.ndarray,
    p_target: float = 0.01,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
) -> tuple[float, float]:
    """Minimum normalised detection cost and its threshold (accept when score >= threshold).

    ``DCF = c_miss * p_target * p_miss + c_fa * (1 - p_target) * p_fa``, normalised by the cost of
    the best trivial system, ``min(c_miss * p_target, c_fa * (1 - p_target))`` (NIST SRE convention).
    The DCF is linear between operating points, so its minimum is at one of them.
    """
    if not 0.0 < p_target < 1.0:
        raise ValueError(f"p_target must be in (0, 1), got {p_target}")
    if c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"costs must be positive, got c_miss={c_miss}, c_fa={c_fa}")
    p_miss, p_fa, thresholds = error_rates(target_scores, nontarget_scores)
    dcf = c_miss * p_target * p_miss + c_fa * (1.0 - p_target) * p_fa
    best = int(np.argmin(dcf))
    default_cost = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(dcf[best] / default_cost), float(thresholds[best])


def trial_index(trials: Sequence[Trial], embeddings: Mapping[str, np.ndarray]
                ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The utterances of ``trials`` in order of first use, and each trial's two positions in that list
    ``(num_trials,)``, ``(num_trials,)``: so that each utterance is embedded, normalised or compared with a
    cohort once, however many trials use it. KeyError naming the trial for a missing embedding."""
    index: dict[str, int] = {}
    for trial_number, (_, utt1, utt2) in enumerate(trials, start=1):
        for utt in (utt1, utt2):
            if utt not in index:
                if utt not in embeddings:
                    raise KeyError(f"trial {trial_number}: no embedding for utterance {utt!r}")
                index[utt] = len(index)
    first = np.fromiter((index[t[1]] for t in trials), dtype=np.int64, count=len(trials))
    second = np.fromiter((index[t[2]] for t in trials), dtype=np.int64, count=len(trials))
    return list(index), first, second


def score_trials(trials: Sequence[Trial], embeddings: Mapping[str, np.ndarray]) -> np.ndarray:
    """Cosine similarity of each trial's two embeddings: ``(num_trials,)`` float64.

    ``embeddings`` maps utterance id to a ``(D,)`` vector (numpy or CPU tensor). Each vector is
    normalised once, however many trials use it.
    """
    utts, first, second = trial_index(trials, embeddings)
    if not utts:
        return np.zeros(0, dtype=np.float64)
    matrix = np.stack([np.asarray(embeddings[utt], dtype=np.float64).reshape(-1) for utt in utts])
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.maximum(norms, 1e-12)  # a zero vector scores 0 against everything
    return np.einsum("nd,nd->n", matrix[first], matrix[second])
