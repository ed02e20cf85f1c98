"""Phone recognition scores: frame accuracy, per-phone accuracy, confusion matrix and phone error rate.

Two views of the same output are scored:

- **Frame level** (:class:`FrameScores`): every frame's predicted phone against the reference frame
  label. Reported over all frames and over non-silence frames (frames whose *reference* is SIL are
  left out, so a model cannot score well by predicting silence at the edges of utterances).
- **By distance to a boundary** (:func:`accuracy_by_boundary_distance`): frame accuracy of frames 0, 1,
  2, ... frames from the nearest reference phone change, to tell boundary placement from phone identity.
- **Sequence level** (:func:`phone_error_rate`): frame labels are collapsed into phone sequences
  (runs of equal labels merged), silence is removed, and the Levenshtein distance to the reference
  sequence is divided by the number of reference phones -- the usual TIMIT convention of scoring
  without silence. Frame-level hypotheses are not smoothed, so one stray frame inside a phone costs
  two insertions: PER of a frame classifier is pessimistic compared with a decoder's.

Confusion matrices have the reference along rows and the hypothesis along columns.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

SILENCE = "SIL"


def collapse_runs(labels: Sequence[str]) -> list[str]:
    """Merge runs of equal consecutive labels: ``["a", "a", "SIL", "b", "b"] -> ["a", "SIL", "b"]``."""
    collapsed: list[str] = []
    for label in labels:
        if not collapsed or collapsed[-1] != label:
            collapsed.append(label)
    return collapsed


def edit_distance(ref: Sequence[Any], hyp: Sequence[Any]) -> tuple[int, int, int]:
    """Levenshtein alignment of ``hyp`` against ``ref``: ``(substitutions, deletions, insertions)``.

    All three edits cost 1. The cost table is filled row by row with numpy (the insertion recurrence
    inside a row is a running minimum, ``np.minimum.accumulate``), then one backtrace counts the edit
    types, preferring match/substitution, then deletion, then insertion among equal-cost paths.
    Memory and time are O(len(ref) * len(hyp)).

    Example:
        >>> edit_distance(["a", "b", "c"], ["a", "x", "c", "d"])
        (1, 0, 1)
    """
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return 0, n, m
    # Map symbols to ints so the row update is a vectorised comparison.
    vocab: dict[Any, int] = {}
    ref_ids = np.array([vocab.setdefault(s, len(vocab)) for s in ref], dtype=np.int64)
    hyp_ids = np.array([vocab.setdefault(s, len(vocab)) for s in hyp], dtype=np.int64)

    cost = np.empty((n + 1, m + 1), dtype=np.int64)
    cost[0] = np.arange(m + 1)
    offsets = np.arange(m + 1)
    for i in range(1, n + 1):
        prev = cost[i - 1]
        candidate = np.empty(m + 1, dtype=np.int64)
        candidate[0] = i
        # Diagonal (match or substitution) and vertical (deletion of ref[i-1]).
        candidate[1:] = np.minimum(prev[:-1] + (hyp_ids != ref_ids[i - 1]), prev[1:] + 1)
        # Horizontal (insertion): cost[i, j] = min_k<=j candidate[k] + (j - k).
        cost[i] = np.minimum.accumulate(candidate - offsets) + offsets

    subs = dels = ins = 0
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0:
            diagonal_step = int(ref_ids[i - 1] != hyp_ids[j - 1])
            if cost[i, j] == cost[i - 1, j - 1] + diagonal_step:
                subs += diagonal_step
                i, j = i - 1, j - 1
                continue
        if i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return subs, dels, ins


@dataclass
class EditCounts:
    """Corpus totals of an edit-distance scoring; ``rate`` = (S + D + I) / reference length."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    ref_length: int = 0

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.ref_length == 0:
            raise ValueError("phone error rate is undefined: the references contain no scored phones")
        return self.errors / self.ref_length

    def to_dict(self) -> dict[str, Any]:
        return {
            "per": _percent(self.errors, self.ref_length),
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "ref_phones": self.ref_length,
        }


def _phone_sequence(labels: Sequence[str], ignore: Sequence[str], collapse: bool) -> list[str]:
    # Collapse before removing silence: "a SIL a" is two phones, not one.
    sequence = collapse_runs(labels) if collapse else list(labels)
    skip = set(ignore)
    return [label for label in sequence if label not in skip]


def phone_error_counts(
    refs: Sequence[Sequence[str]],
    hyps: Sequence[Sequence[str]],
    ignore: Sequence[str] = (SILENCE,),
    collapse: bool = True,
) -> EditCounts:
    """Edit counts summed over a corpus of (reference, hypothesis) label sequences.

    Each sequence is first collapsed (runs merged, when ``collapse``) and then stripped of the labels
    in ``ignore``. Pass ``collapse=False`` for sequences that are already phone sequences.
    """
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} reference sequences but {len(hyps)} hypothesis sequences")
    counts = EditCounts()
    for ref, hyp in zip(refs, hyps):
        ref_phones = _phone_sequence(ref, ignore, collapse)
        hyp_phones = _phone_sequence(hyp, ignore, collapse)
        s, d, i = edit_distance(ref_phones, hyp_phones)
        counts.substitutions += s
        counts.deletions += d
        counts.insertions += i
        counts.ref_length += len(ref_phones)
    return counts


def phone_error_rate(
    refs: Sequence[Sequence[str]],
    hyps: Sequence[Sequence[str]],
    ignore: Sequence[str] = (SILENCE,),
    collapse: bool = True,
) -> float:
    """Corpus phone error rate as a fraction: total (S + D + I) / total reference phones.

    Silence is not scored by default (``ignore=("SIL",)``, the TIMIT convention); ``ignore=()``
    scores it like any phone.

    Example:
        >>> refs = [["SIL", "a", "a", "b", "SIL"]]
        >>> hyps = [["SIL", "a", "c", "b", "b"]]
        >>> phone_error_rate(refs, hyps)   # ref "a b", hyp "a c b": one insertion
        0.5
    """
    return phone_error_counts(refs, hyps, ignore=ignore, collapse=collapse).rate


def _percent(numerator: float, denominator: float) -> float | None:
    return None if denominator == 0 else round(100.0 * numerator / denominator, 2)


@dataclass
class FrameScores:
    """Frame-level scores accumulated utterance by utterance.

    Args:
        phones: class names, index = class id (``phones[0]`` is SIL in ``data/lang/phones.txt``).
        silence: name of the silence class for the non-silence accuracy (None: no silence class).

    Example:
        >>> scores = FrameScores(["SIL", "a", "b"])
        >>> scores.update(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]))
        >>> scores.frame_accuracy, round(scores.non_silence_frame_accuracy, 4)
        (0.75, 0.6667)
    """

    phones: list[str]
    silence: str | None = SILENCE
    confusion: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.phones = list(self.phones)
        if not self.phones:
            raise ValueError("FrameScores needs at least one phone")
        if len(set(self.phones)) != len(self.phones):
            raise ValueError("FrameScores: phone names are not unique")
        num_classes = len(self.phones)
        self.confusion = np.zeros((num_classes, num_classes), dtype=np.int64)

    @property
    def num_classes(self) -> int:
        return len(self.phones)

    @property
    def silence_id(self) -> int | None:
        if self.silence is None or self.silence not in self.phones:
            return None
        return self.phones.index(self.silence)

    def update(self, ref: Any, hyp: Any) -> None:
        """Add one utterance: ``ref`` and ``hyp`` are class ids of shape ``(T,)`` (numpy or CPU tensor)."""
        ref_ids = np.asarray(ref).reshape(-1)
        hyp_ids = np.asarray(hyp).reshape(-1)
        if ref_ids.shape != hyp_ids.shape:
            raise ValueError(f"reference has {ref_ids.size} frames, hypothesis has {hyp_ids.size}")
        for name, ids in (("reference", ref_ids), ("hypothesis", hyp_ids)):
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise TypeError(f"{name} ids must be integers, got {ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
                raise ValueError(
                    f"{name} ids must be in [0, {self.num_classes}), got [{ids.min()}, {ids.max()}]"
                )
        pairs = ref_ids.astype(np.int64) * self.num_classes + hyp_ids.astype(np.int64)
        self.confusion += np.bincount(pairs, minlength=self.num_classes**2).reshape(self.confusion.shape)

    @property
    def num_frames(self) -> int:
        return int(self.confusion.sum())

    @property
    def per_phone_count(self) -> np.ndarray:
        """Reference frames per class ``(C,)``."""
        return self.confusion.sum(axis=1)

    @property
    def per_phone_accuracy(self) -> np.ndarray:
        """Recall per reference class ``(C,)`` in [0, 1]; NaN for classes with no reference frames."""
        counts = self.per_phone_count
        correct = np.diag(self.confusion).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, correct / np.maximum(counts, 1), np.nan)

    @property
    def frame_accuracy(self) -> float:
        """Fraction of all frames classified correctly (NaN before any update)."""
        total = self.num_frames
        return float(np.trace(self.confusion) / total) if total else float("nan")

    @property
    def num_non_silence_frames(self) -> int:
        sil = self.silence_id
        return self.num_frames - (int(self.confusion[sil].sum()) if sil is not None else 0)

    @property
    def non_silence_frame_accuracy(self) -> float:
        """Accuracy over frames whose *reference* is not silence (a hypothesis of SIL there is an error)."""
        sil = self.silence_id
        correct = int(np.trace(self.confusion)) - (int(self.confusion[sil, sil]) if sil is not None else 0)
        total = self.num_non_silence_frames
        return correct / total if total else float("nan")

    def to_dict(self, include_confusion: bool = False) -> dict[str, Any]:
        """JSON-ready summary; accuracies in percent (2 decimals), None where undefined."""
        total = self.num_frames
        correct = int(np.trace(self.confusion))
        sil = self.silence_id
        non_sil_total = self.num_non_silence_frames
        non_sil_correct = correct - (int(self.confusion[sil, sil]) if sil is not None else 0)
        counts = self.per_phone_count
        diagonal = np.diag(self.confusion)
        result: dict[str, Any] = {
            "frames": total,
            "frame_accuracy": _percent(correct, total),
            "non_silence_frames": non_sil_total,
            "non_silence_frame_accuracy": _percent(non_sil_correct, non_sil_total),
            "silence": self.silence if sil is not None else None,
            "per_phone": {
                phone: {"accuracy": _percent(int(diagonal[k]), int(counts[k])), "count": int(counts[k])}
                for k, phone in enumerate(self.phones)
            },
        }
        if include_confusion:
            result["phones"] = list(self.phones)
            result["confusion"] = self.confusion.tolist()
        return result


def boundary_distances(labels: Sequence[str] | np.ndarray) -> np.ndarray:
    """Frames from each frame to the nearest change of reference label ``(T,)``, 0 = a boundary frame.

    A frame is at distance 0 when its label differs from the previous or the next frame's (both sides of
    a boundary count); utterance edges are not boundaries. Example::

        labels    SIL SIL  a  a  a  a  b
        distance   1   0   0  1  1  0  0
    """
    labels = np.asarray(labels)
    T = len(labels)
    if T == 0:
        return np.zeros(0, dtype=np.int64)
    change = np.flatnonzero(labels[1:] != labels[:-1])  # a boundary between frames i and i + 1
    if change.size == 0:
        return np.full(T, T, dtype=np.int64)  # no boundary in the utterance
    at_boundary = np.zeros(T, dtype=bool)
    at_boundary[change] = at_boundary[change + 1] = True
    boundary_frames = np.flatnonzero(at_boundary)
    frames = np.arange(T)
    nearest = np.searchsorted(boundary_frames, frames).clip(max=boundary_frames.size - 1)
    before = boundary_frames[(nearest - 1).clip(min=0)]
    return np.minimum(np.abs(frames - boundary_frames[nearest]), np.abs(frames - before))


def accuracy_by_boundary_distance(
    ref: Sequence[Sequence[str]],
    hyp: Sequence[Sequence[str]],
    max_distance: int = 4,
    ignore: Sequence[str] = (SILENCE,),
) -> dict[str, dict[str, float | int | None]]:
    """Frame accuracy grouped by distance to the nearest reference phone boundary.

    Separates boundary placement (aligner and model disagreeing by a frame or two) from phone identity:
    if frames far from any boundary are also often wrong, the errors are about *which* phone, not
    *where*. Frames whose reference is in ``ignore`` are left out. Keys ``"0"`` .. ``"max_distance - 1"``
    and ``"{max_distance}+"``, each ``{"share": % of counted frames, "accuracy": %, "frames": n}``.
    """
    totals = np.zeros(max_distance + 1, dtype=np.int64)
    correct = np.zeros(max_distance + 1, dtype=np.int64)
    for ref_labels, hyp_labels in zip(ref, hyp):
        ref_arr, hyp_arr = np.asarray(ref_labels), np.asarray(hyp_labels)
        distance = boundary_distances(ref_arr).clip(max=max_distance)
        keep = ~np.isin(ref_arr, list(ignore))
        totals += np.bincount(distance[keep], minlength=max_distance + 1)
        correct += np.bincount(distance[keep & (ref_arr == hyp_arr)], minlength=max_distance + 1)
    counted = int(totals.sum())
    return {
        (f"{d}+" if d == max_distance else str(d)): {
            "share": _percent(int(totals[d]), counted),
            "accuracy": _percent(int(correct[d]), int(totals[d])),
            "frames": int(totals[d]),
        }
        for d in range(max_distance + 1)
    }


def score_frame_files(
    ref: Mapping[str, Sequence[str]],
    hyp: Mapping[str, Sequence[str]],
    phones: Sequence[str],
    silence: str | None = SILENCE,
    ignore: Sequence[str] = (SILENCE,),
    include_confusion: bool = True,
) -> dict[str, Any]:
    """Score frame-label hypotheses against references, both ``{utt: [label per frame]}``.

    Returns :meth:`FrameScores.to_dict` plus ``"per"`` (:meth:`EditCounts.to_dict`, silence removed
    per ``ignore``) and ``"utterances"``. Every reference utterance must be in ``hyp`` with the same
    number of frames; hypothesis utterances absent from ``ref`` are ignored with a warning.

    Raises:
        ValueError: naming the utterance, for a missing hypothesis, a frame count mismatch or a label
            that is not in ``phones``.
    """
    if not ref:
        raise ValueError("no reference utterances to score")
    phone_to_id = {phone: k for k, phone in enumerate(phones)}
    scores = FrameScores(list(phones), silence=silence)
    refs_in_order: list[Sequence[str]] = []
    hyps_in_order: list[Sequence[str]] = []
    for utt, ref_labels in ref.items():
        if utt not in hyp:
            raise ValueError(f"utterance {utt}: no hypothesis")
        hyp_labels = hyp[utt]
        if len(ref_labels) != len(hyp_labels):
            raise ValueError(
                f"utterance {utt}: reference has {len(ref_labels)} frames, hypothesis has {len(hyp_labels)}"
            )
        ids = []
        for side, labels in (("reference", ref_labels), ("hypothesis", hyp_labels)):
            try:
                ids.append(np.fromiter((phone_to_id[p] for p in labels), dtype=np.int64, count=len(labels)))
            except KeyError as err:
                raise ValueError(f"utterance {utt}: {side} label {err.args[0]!r} is not in the phone set") from None
        scores.update(ids[0], ids[1])
        refs_in_order.append(ref_labels)
        hyps_in_order.append(hyp_labels)
    extra = len(set(hyp) - set(ref))
    if extra:
        logger.warning("%d hypothesis utterances have no reference and were not scored", extra)
    result = scores.to_dict(include_confusion=include_confusion)
    result["utterances"] = len(ref)
    result["per"] = phone_error_counts(refs_in_order, hyps_in_order, ignore=ignore).to_dict()
    result["per"]["ignored"] = list(ignore)
    result["accuracy_by_boundary_distance"] = accuracy_by_boundary_distance(refs_in_order, hyps_in_order,
                                                                            ignore=ignore)
    return result
