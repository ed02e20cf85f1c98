"""Adaptive score normalisation (AS-norm) of cosine verification scores, and the cohort it needs; the same
normalisation of other scores (PLDA's, against its own cohort) by :func:`normalise_trial_scores`.

AS-norm (Cumani et al. 2011; Matejka et al. 2017; WeSpeaker's ``score_norm.py``): each side of a trial is
compared with a *cohort* of impostor speakers, and only its ``top_n`` closest cohort speakers are kept.
With ``mu_e, sigma_e`` the mean and (population) standard deviation of the top-n cosine scores of the
first embedding and ``mu_t, sigma_t`` those of the second, the normalised score is::

    s_norm = 0.5 * ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t)

Cohort: the training speakers, one vector per speaker (the mean of its L2-normalised utterance
embeddings, as WeSpeaker's ``vector_mean.py``), stored beside the model by :func:`save_cohort` together
with the fingerprint of the weights that produced them, so that scoring with a cohort from another
model is refused (:func:`load_cohort`).

Optionally (``subtract_mean``) every embedding is centred on the cohort's mean vector before the cosine
(WeSpeaker's "cosine, sub mean of vox2_dev"), in raw and normalised scoring alike.

Example:
    >>> rng = np.random.default_rng(0)
    >>> cohort = rng.standard_normal((50, 8))
    >>> emb = {"a": rng.standard_normal(8), "b": rng.standard_normal(8)}
    >>> raw, norm = score_trials_asnorm([(0, "a", "b")], emb, cohort, top_n=10)
    >>> raw.shape, norm.shape
    ((1,), (1,))
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import kaldiio
import numpy as np

from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.data.trials import Trial
from speechattn.metrics.verification import trial_index
from speechattn.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

__all__ = [
    "l2_normalize",
    "speaker_means",
    "cohort_statistics",
    "top_n_statistics",
    "normalise_trial_scores",
    "adaptive_snorm",
    "score_trials_asnorm",
    "Cohort",
    "make_cohort",
    "save_cohort",
    "load_cohort",
]

COHORT_FORMAT = 1
_STD_FLOOR = 1e-8


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows of ``x (N, D)`` scaled to unit length (zero rows stay zero), float64."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def speaker_means(embeddings: Mapping[str, np.ndarray], utt2spk: Mapping[str, str]) -> tuple[list[str], np.ndarray]:
    """``(speakers, (S, D))``: per speaker (sorted), the mean of its utterances' L2-normalised embeddings.
    Every embedded utterance must have a speaker (KeyError naming it otherwise)."""
    by_speaker: dict[str, list[np.ndarray]] = {}
    for utt, vector in embeddings.items():
        if utt not in utt2spk:
            raise KeyError(f"utterance '{utt}' has an embedding but no speaker in utt2spk")
        by_speaker.setdefault(utt2spk[utt], []).append(np.asarray(vector, dtype=np.float64).reshape(-1))
    speakers = sorted(by_speaker)
    if not speakers:
        raise ValueError("no embeddings")
    return speakers, np.stack([l2_normalize(np.stack(by_speaker[s])).mean(axis=0) for s in speakers])


def cohort_statistics(embeddings: np.ndarray, cohort: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std ``(M,)`` of each embedding's ``top_n`` highest cosine scores against the
    cohort ``(C, D)``; ``embeddings`` is ``(M, D)``. ``top_n`` larger than C uses the whole cohort."""
    if embeddings.shape[-1] != cohort.shape[-1]:
        raise ValueError(f"embedding dimension {embeddings.shape[-1]} != cohort dimension {cohort.shape[-1]}")
    return top_n_statistics(l2_normalize(embeddings) @ l2_normalize(cohort).T, top_n)


def top_n_statistics(scores: np.ndarray, top_n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and population std ``(M,)`` of the ``top_n`` highest of each row of cohort scores ``(M, C)``
    (any kind of score: cosine, PLDA LLR); ``top_n`` larger than C uses the whole row."""
    if top_n < 2:
        raise ValueError(f"top_n must be >= 2 (a standard deviation needs two scores), got {top_n}")
    k = min(top_n, scores.shape[1])
    top = np.partition(scores, scores.shape[1] - k, axis=1)[:, scores.shape[1] - k:]  # the k largest, unordered
    return top.mean(axis=1), np.maximum(top.std(axis=1), _STD_FLOOR)


def normalise_trial_scores(trials: Sequence[Trial], embeddings: Mapping[str, np.ndarray], raw: np.ndarray,
                           cohort_scores: Callable[[np.ndarray], np.ndarray], top_n: int,
                           chunk: int = 256) -> np.ndarray:
    """AS-norm ``(N,)`` of already computed trial scores ``raw`` ``(N,)`` of any kind: ``cohort_scores`` maps
    ``(M, D)`` embeddings to their ``(M, C)`` scores of the same kind against the cohort (e.g.
    :meth:`~speechattn.metrics.plda.PldaBackend.cohort_scores`). Each utterance's statistics are computed
    once, ``chunk`` utterances at a time (a large cohort never makes an all-utterances matrix)."""
    utts, first, second = trial_index(trials, embeddings)
    mean, std = np.zeros(len(utts)), np.ones(len(utts))
    for start in range(0, len(utts), chunk):
        batch = np.stack([np.asarray(embeddings[u], dtype=np.float64).reshape(-1) for u in utts[start:start + chunk]])
        mean[start:start + len(batch)], std[start:start + len(batch)] = top_n_statistics(cohort_scores(batch), top_n)
    return adaptive_snorm(np.asarray(raw, dtype=np.float64), mean[first], std[first], mean[second], std[second])


def adaptive_snorm(raw: np.ndarray, mean1: np.ndarray, std1: np.ndarray, mean2: np.ndarray,
                   std2: np.ndarray) -> np.ndarray:
    """``0.5 * ((raw - mean1) / std1 + (raw - mean2) / std2)``, elementwise over trials ``(N,)``."""
    return 0.5 * ((raw - mean1) / std1 + (raw - mean2) / std2)


def score_trials_asnorm(trials: Sequence[Trial], embeddings: Mapping[str, np.ndarray],
                        cohort: np.ndarray, top_n: int = 100, subtract_mean: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Raw cosine and AS-normalised scores ``(N,)`` of ``trials`` (``(label, utt1, utt2)``).

    Each utterance's cohort statistics are computed once, however many trials it is in. ``subtract_mean``
    ``(D,)`` centres embeddings and cohort first. KeyError naming the trial for a missing embedding.
    """
    utts, first, second = trial_index(trials, embeddings)
    if not utts:
        return np.zeros(0), np.zeros(0)
    matrix = np.stack([np.asarray(embeddings[u], dtype=np.float64).reshape(-1) for u in utts])
    cohort = np.asarray(cohort, dtype=np.float64)
    if subtract_mean is not None:
        matrix, cohort = matrix - subtract_mean, cohort - subtract_mean
    unit = l2_normalize(matrix)
    raw = np.einsum("nd,nd->n", unit[first], unit[second])
    mean, std = cohort_statistics(matrix, cohort, top_n)
    return raw, adaptive_snorm(raw, mean[first], std[first], mean[second], std[second])


# ---------------------------------------------------------------------------------------------- storage

@dataclass
class Cohort:
    """Cohort speakers' vectors ``(S, D)``, their mean vector ``(D,)`` (for ``subtract_mean``), the
    fingerprint of the model weights that made them, and provenance."""

    speakers: list[str]
    vectors: np.ndarray
    mean: np.ndarray
    model_fingerprint: str
    num_utterances: int
    source: str = ""


def make_cohort(embeddings: Mapping[str, np.ndarray], utt2spk: Mapping[str, str], model_fingerprint: str,
                source: str = "") -> Cohort:
    """A :class:`Cohort` from training-speaker utterance embeddings (see :func:`speaker_means`)."""
    speakers, vectors = speaker_means(embeddings, utt2spk)
    if len(speakers) < 2:
        raise ValueError(f"a cohort needs at least 2 speakers, got {len(speakers)}")
    mean = l2_normalize(np.stack([np.asarray(v, dtype=np.float64).reshape(-1) for v in embeddings.values()])).mean(0)
    return Cohort(speakers, vectors, mean, model_fingerprint, len(embeddings), source)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def save_cohort(out_dir: str | os.PathLike, cohort: Cohort) -> Path:
    """Write ``out_dir/cohort.ark`` (kaldiio: speaker -> float32 vector) and then ``out_dir/cohort.json``
    (fingerprints, mean vector, provenance), both atomically; returns the json path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ark = out_dir / "cohort.ark"
    with atomic_open(ark, "wb") as f:
        kaldiio.save_ark(f, {s: v.astype(np.float32) for s, v in zip(cohort.speakers, cohort.vectors)})
    meta = {"format": COHORT_FORMAT, "model_fingerprint": cohort.model_fingerprint,
            "num_speakers": len(cohort.speakers), "num_utterances": cohort.num_utterances,
            "embed_dim": int(cohort.vectors.shape[1]), "source": cohort.source, "ark_sha256": _sha256(ark),
            "mean": [float(x) for x in cohort.mean]}
    path = out_dir / "cohort.json"
    atomic_write_text(path, json.dumps(meta, indent=1) + "\n")
    return path


def load_cohort(cohort_dir: str | os.PathLike, model_fingerprint: str | None = None) -> Cohort:
    """Read a cohort written by :func:`save_cohort`.

    Raises KaldiDataError naming the file when it is missing or damaged, when ``cohort.ark`` is not the
    one ``cohort.json`` was written with, or when ``model_fingerprint`` is given and differs from the
    cohort's (a cohort of another model's embedding space normalises with meaningless statistics).
    """
    cohort_dir = Path(cohort_dir)
    path, ark = cohort_dir / "cohort.json", cohort_dir / "cohort.ark"
    if not path.is_file() or not ark.is_file():
        raise KaldiDataError(f"{path}:0: no cohort here (cohort.json and cohort.ark are written by the scoring "
                             f"stage's cohort step)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        fingerprint, mean, expected_sha = meta["model_fingerprint"], meta["mean"], meta["ark_sha256"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise KaldiDataError(f"{path}:0: not a cohort description ({e})") from None
    if meta.get("format") != COHORT_FORMAT:
        raise KaldiDataError(f"{path}:0: cohort format {meta.get('format')!r}, expected {COHORT_FORMAT}")
    if _sha256(ark) != expected_sha:
        raise KaldiDataError(f"{ark}:0: changed since {path.name} was written (recompute the cohort)")
    if model_fingerprint is not None and fingerprint != model_fingerprint:
        raise KaldiDataError(f"{path}:0: cohort made with model weights {fingerprint[:12]}..., but the model "
                             f"scoring now is {model_fingerprint[:12]}...: recompute the cohort with this model")
    table = {k: np.asarray(v, dtype=np.float64) for k, v in kaldiio.load_ark(str(ark))}
    speakers = list(table)
    vectors = np.stack([table[s] for s in speakers])
    if vectors.shape[1] != meta.get("embed_dim") or len(mean) != vectors.shape[1]:
        raise KaldiDataError(f"{path}:0: embedding dimension {meta.get('embed_dim')} / mean of {len(mean)} do "
                             f"not match the {vectors.shape[1]}-dim vectors of {ark.name}")
    return Cohort(speakers, vectors, np.asarray(mean, dtype=np.float64), fingerprint,
                  int(meta.get("num_utterances", 0)), str(meta.get("source", "")))
