"""LDA + PLDA back-end for speaker verification and identification (Kaldi's x-vector back-end, on our
embeddings).

Kaldi's x-vector recipes (``egs/voxceleb/v2``) do not score x-vectors by cosine: they centre the vectors
on the training mean, project them with LDA, length-normalise and score with a PLDA model trained on the
training speakers' utterances. This module does the same with numpy/scipy:

1. centring and length normalisation: ``x <- l2(l2(x) - m)``, ``m`` the mean of the L2-normalised
   training vectors;
2. LDA ``(D, k)`` from the generalised eigenproblem ``S_b v = lambda S_w v`` of the between / within
   speaker scatter (``k`` at most speakers - 1), then length normalisation again;
3. a two-covariance PLDA model (Brümmer & de Villiers 2010; Ioffe 2006 in Kaldi's form): a vector is
   ``x = mu + y + e``, speaker part ``y ~ N(0, B)``, within-speaker part ``e ~ N(0, W)``, ``B`` and ``W`` the
   between / within covariances estimated from the training speakers. The score of a trial is the exact
   log-likelihood ratio of "same speaker" against "different speakers" for one enrolment vector::

       LLR(a, b) = log N([a; b]; [mu; mu], [[T, B], [B, T]]) - log N(a; mu, T) - log N(b; mu, T),   T = B + W

For closed-set identification, :meth:`PldaBackend.speaker_log_likelihoods` scores a test vector against
every speaker enrolled with ``n`` vectors (their training recordings, enrolled when the back-end is
trained and stored with it) by the posterior predictive density
of the same model: with ``y`` given the ``n`` enrolment vectors of mean ``m``,
``y | enrolment ~ N(S n W^-1 m, S)``, ``S = (B^-1 + n W^-1)^-1``, so a test vector of that speaker is
``N(S n W^-1 m, S + W)``. For ``n = 1`` its difference with ``log N(b; mu, T)`` is ``LLR(a, b)`` above
(tested). It is computed in the basis that makes ``W`` the identity and ``B`` diagonal, where every
covariance is diagonal.

No well-kept Python PLDA package exists (the ``plda`` package on PyPI has been unmaintained since 2020;
SpeechBrain's ``PLDA_LDA`` would bring the whole toolkit), so the ~40 lines below are tested against the
direct evaluation of the Gaussian densities (``tests/test_plda.py``).

The enrolment recordings' transformed vectors are kept too (``enrol_vectors``): they are the cohort
against which verification AS-normalises PLDA scores (:meth:`PldaBackend.cohort_scores`,
:func:`speechattn.metrics.score_norm.normalise_trial_scores`).

The back-end is stored beside the model (``<exp>/plda/plda.npz`` + ``plda.json`` with the fingerprint of
the weights that made the embeddings), as the AS-norm cohort is; one made by other weights is refused.
``np.load`` reads it with ``allow_pickle=False``.

Example:
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.standard_normal((20, 8)) * 3
    >>> labels = np.repeat(np.arange(20), 6)
    >>> x = centres[labels] + rng.standard_normal((120, 8))
    >>> backend = fit_plda_backend(x, labels, lda_dim=6)
    >>> backend.lda.shape
    (8, 6)
    >>> same = backend.score(x[:1], x[1:2])[0]; different = backend.score(x[:1], x[6:7])[0]
    >>> bool(same > different)
    True
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.linalg

from speechattn.data.kaldi_dir import KaldiDataError
from speechattn.utils.atomic import atomic_open, atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["PldaBackend", "fit_plda_backend", "training_set_problem", "save_plda_backend", "load_plda_backend"]

PLDA_FORMAT = 1
_RIDGE = 1e-6  # added to the within-speaker scatter: keeps the eigenproblem defined when it is near singular


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _class_means(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sorted classes ``(C,)``, each vector's class index ``(N,)``, class sizes ``(C,)`` and means ``(C, D)``:
    one pass over the vectors (not one per class), so that 100k recordings of 1k speakers stay fast."""
    classes, index = np.unique(labels, return_inverse=True)
    counts = np.bincount(index, minlength=len(classes))
    sums = np.zeros((len(classes), x.shape[1]))
    np.add.at(sums, index, x)
    return classes, index, counts, sums / counts[:, None]


def _scatter(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overall mean ``(D,)``, within-speaker ``(D, D)`` and between-speaker ``(D, D)`` covariances
    (within: pooled over utterances, unbiased; between: of the speaker means, one per speaker)."""
    mean = x.mean(0)
    classes, index, _, means = _class_means(x, labels)
    residual = x - means[index]
    within = residual.T @ residual
    between = (means - mean).T @ (means - mean)
    return mean, within / max(len(x) - len(classes), 1), between / len(classes)


@dataclass
class PldaBackend:
    """Centring mean ``(D,)``, LDA ``(D, k)``, PLDA mean ``(k,)`` and between / within covariances ``(k, k)``."""

    mean: np.ndarray
    lda: np.ndarray
    plda_mean: np.ndarray
    between: np.ndarray
    within: np.ndarray
    lda_dim_asked: int = 0  # the lda_dim it was trained with (before capping): a different one retrains it
    # the training speakers enrolled for identification: names (S,), vectors per speaker (S,), mean of their
    # transformed vectors minus plda_mean (S, k); None in a back-end stored before identification used it
    enrol_speakers: np.ndarray | None = None
    enrol_counts: np.ndarray | None = None
    enrol_means: np.ndarray | None = None
    # the transformed enrolment recordings minus plda_mean (M, k), float32: AS-norm's cohort for PLDA scores
    # (:meth:`cohort_scores`); None in a back-end stored before PLDA scores were normalised
    enrol_vectors: np.ndarray | None = None
    speeds: tuple[float, ...] = ()  # speed factors of the extra training copies (each a PLDA speaker); () none

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(N, D)`` embeddings -> ``(N, k)``: centred, projected, length-normalised."""
        return _l2(_l2(_l2(np.asarray(x, dtype=np.float64)) - self.mean) @ self.lda)

    def _llr_terms(self) -> tuple[float, np.ndarray, np.ndarray]:
        """``(constant, Q, P)`` with ``LLR(a, b) = constant + a'Qa / 2 + b'Qb / 2 - a'Pb`` for transformed,
        centred vectors (module docstring)."""
        k = self.between.shape[0]
        total = self.between + self.within
        joint = np.block([[total, self.between], [self.between, total]])
        joint_inv = np.linalg.inv(joint)
        q = np.linalg.inv(total) - joint_inv[:k, :k]  # quadratic term of each side
        p = joint_inv[:k, k:]                         # cross term
        constant = 0.5 * (2 * np.linalg.slogdet(total)[1] - np.linalg.slogdet(joint)[1])
        return constant, q, p

    def score(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """LLR (same vs different speaker) of the pairs ``(a[i], b[i])``, ``a``, ``b``: ``(N, D)`` -> ``(N,)``."""
        a, b = self.transform(a) - self.plda_mean, self.transform(b) - self.plda_mean
        constant, q, p = self._llr_terms()
        return (constant + 0.5 * np.einsum("ij,jk,ik->i", a, q, a) + 0.5 * np.einsum("ij,jk,ik->i", b, q, b)
                - np.einsum("ij,jk,ik->i", a, p, b))

    def cohort_scores(self, x: np.ndarray) -> np.ndarray:
        """LLR of every vector of ``x`` ``(N, D)`` against every enrolment recording (the AS-norm cohort,
        :meth:`enrol`): ``(N, M)``."""
        if self.enrol_vectors is None:
            raise ValueError("no enrolment recordings in this PLDA back-end (enrol the training speakers first)")
        a = self.transform(x) - self.plda_mean
        c = self.enrol_vectors.astype(np.float64)
        constant, q, p = self._llr_terms()
        return (constant + 0.5 * np.einsum("ij,jk,ik->i", a, q, a)[:, None]
                + 0.5 * np.einsum("ij,jk,ik->i", c, q, c)[None, :] - a @ p @ c.T)

    def enrol(self, x: np.ndarray, labels: Sequence) -> "PldaBackend":
        """The back-end with the speakers of ``labels`` ``(M,)`` enrolled by their vectors ``x`` ``(M, D)``."""
        t = self.transform(x) - self.plda_mean
        speakers, _, counts, means = _class_means(t, np.asarray(labels))
        counts = counts.astype(np.int64)
        return dataclasses.replace(self, enrol_speakers=speakers.astype(str), enrol_counts=counts, enrol_means=means,
                                   enrol_vectors=t.astype(np.float32))

    def speaker_log_likelihoods(self, test: np.ndarray, speakers: Sequence) -> np.ndarray:
        """Log density of each test vector under each enrolled speaker (module docstring).

        Args:
            test: ``(N, D)`` embeddings to identify.
            speakers: the ``S`` enrolled speakers (:meth:`enrol`; :func:`fit_plda_backend` enrols the
                training speakers) to score, in column order.

        Returns:
            ``(N, S)`` log densities (of the centred, projected, length-normalised test vectors).
        """
        if self.enrol_speakers is None:
            raise ValueError("no enrolled speakers in this PLDA back-end (enrol them first)")
        row = {str(s): i for i, s in enumerate(self.enrol_speakers)}
        missing = [s for s in speakers if str(s) not in row]
        if missing:
            raise ValueError(f"{len(missing)} speaker(s) not enrolled in the PLDA back-end, e.g. {missing[0]!r}")
        pick = np.array([row[str(s)] for s in speakers], dtype=np.int64)
        counts, means = self.enrol_counts[pick].astype(np.float64), self.enrol_means[pick]
        psi, basis = scipy.linalg.eigh(self.between, self.within)  # basis.T W basis = I, basis.T B basis = diag(psi)
        psi = np.maximum(psi, 0.0)
        u = (self.transform(test) - self.plda_mean) @ basis                           # (N, k)
        means = means @ basis                                                         # (S, k)
        shrink = counts[:, None] * psi / (1.0 + counts[:, None] * psi)                # posterior mean / enrolment mean
        centre = shrink * means                                                       # (S, k)
        var = 1.0 + psi / (1.0 + counts[:, None] * psi)                               # predictive variances (S, k)
        quad = (u ** 2) @ (1.0 / var).T - 2.0 * u @ (centre / var).T + np.sum(centre ** 2 / var, axis=1)
        log_det = np.sum(np.log(var), axis=1) - 2.0 * np.linalg.slogdet(basis)[1]  # slogdet: no overflow at k = 100
        return -0.5 * (quad + log_det + u.shape[1] * np.log(2 * np.pi))


def training_set_problem(num_utterances: int, num_speakers: int) -> str | None:
    """Why a training set of this size cannot train PLDA (within- and between-speaker covariances need at
    least 3 speakers and more utterances than speakers), or ``None``."""
    if num_speakers < 3 or num_utterances <= num_speakers:
        return (f"PLDA needs at least 3 speakers and more utterances than speakers "
                f"({num_speakers} speakers, {num_utterances} utterances)")
    return None


def fit_plda_backend(x: np.ndarray, labels: Sequence, lda_dim: int = 100) -> PldaBackend:
    """Train the back-end on training-speaker utterance embeddings ``x`` ``(N, D)`` with speaker ``labels``
    ``(N,)``; ``lda_dim`` is capped at ``min(D, speakers - 1)`` (LDA has no more useful directions)."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels)
    speakers = len(np.unique(labels))
    if x.ndim != 2 or len(x) != len(labels):
        raise ValueError(f"embeddings {x.shape} and labels {labels.shape} do not match")
    problem = training_set_problem(len(x), speakers)
    if problem:
        raise ValueError(problem)
    k = min(int(lda_dim), x.shape[1], speakers - 1)
    if k < int(lda_dim):
        log.info("PLDA: LDA dimension %d capped at %d (%d-dim embeddings, %d speakers)", lda_dim, k, x.shape[1],
                 speakers)
    mean = _l2(x).mean(0)
    centred = _l2(_l2(x) - mean)
    _, within, between = _scatter(centred, labels)
    values, vectors = scipy.linalg.eigh(between, within + _RIDGE * np.eye(len(within)))
    lda = vectors[:, np.argsort(values)[::-1][:k]]
    projected = _l2(centred @ lda)
    plda_mean, plda_within, plda_between = _scatter(projected, labels)
    backend = PldaBackend(mean, lda, plda_mean, plda_between, plda_within + _RIDGE * np.eye(k), int(lda_dim))
    return backend.enrol(x, labels)


def save_plda_backend(out_dir: str | os.PathLike, backend: PldaBackend, model_fingerprint: str,
                      source: str = "", num_utterances: int = 0, num_speakers: int = 0) -> Path:
    """Write ``out_dir/plda.npz`` then ``out_dir/plda.json`` (fingerprint, sizes, provenance), atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_open(out_dir / "plda.npz", "wb") as f:
        enrolled = ({} if backend.enrol_speakers is None else
                    {"enrol_speakers": backend.enrol_speakers.astype(str), "enrol_counts": backend.enrol_counts,
                     "enrol_means": backend.enrol_means})
        if backend.enrol_vectors is not None:
            enrolled["enrol_vectors"] = backend.enrol_vectors
        np.savez(f, mean=backend.mean, lda=backend.lda, plda_mean=backend.plda_mean, between=backend.between,
                 within=backend.within, **enrolled)
    meta = {"format": PLDA_FORMAT, "model_fingerprint": model_fingerprint, "embed_dim": int(backend.lda.shape[0]),
            "lda_dim": int(backend.lda.shape[1]), "lda_dim_asked": backend.lda_dim_asked, "num_speakers": num_speakers, "num_utterances": num_utterances,
            "speeds": list(backend.speeds), "source": source}
    path = out_dir / "plda.json"
    atomic_write_text(path, json.dumps(meta, indent=1) + "\n")
    return path


def load_plda_backend(plda_dir: str | os.PathLike, model_fingerprint: str | None = None) -> PldaBackend:
    """Read a back-end written by :func:`save_plda_backend`; errors name the file when it is missing,
    damaged, or made from another model's embeddings (``model_fingerprint`` given and different)."""
    plda_dir = Path(plda_dir)
    path, arrays = plda_dir / "plda.json", plda_dir / "plda.npz"
    if not path.is_file() or not arrays.is_file():
        raise KaldiDataError(f"{path}:0: no PLDA back-end here (plda.json and plda.npz are written by scoring)")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        fingerprint = meta["model_fingerprint"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise KaldiDataError(f"{path}:0: not a PLDA description ({e})") from None
    if meta.get("format") != PLDA_FORMAT:
        raise KaldiDataError(f"{path}:0: PLDA format {meta.get('format')!r}, expected {PLDA_FORMAT}")
    if model_fingerprint is not None and fingerprint != model_fingerprint:
        raise KaldiDataError(f"{path}:0: PLDA trained on embeddings of model weights {fingerprint[:12]}..., but "
                             f"the model scoring now is {model_fingerprint[:12]}...: retrain it with this model")
    try:
        with np.load(arrays, allow_pickle=False) as z:
            optional = {name: z[name] for name in ("enrol_speakers", "enrol_counts", "enrol_means", "enrol_vectors")
                        if name in z.files}
            backend = PldaBackend(z["mean"], z["lda"], z["plda_mean"], z["between"], z["within"],
                                  int(meta.get("lda_dim_asked", 0)),
                                  speeds=tuple(float(f) for f in meta.get("speeds", [])), **optional)
    except (OSError, ValueError, KeyError) as e:
        raise KaldiDataError(f"{arrays}:0: unreadable PLDA arrays ({e})") from None
    k = backend.lda.shape[1]
    bad_enrolment = backend.enrol_speakers is not None and (
        backend.enrol_means.shape != (len(backend.enrol_speakers), k) or backend.enrol_counts.shape != backend.enrol_speakers.shape
        or (backend.enrol_vectors is not None and backend.enrol_vectors.shape != (int(backend.enrol_counts.sum()), k)))
    if (backend.lda.shape[0] != meta.get("embed_dim") or backend.between.shape != (k, k)
            or backend.within.shape != (k, k) or bad_enrolment):
        raise KaldiDataError(f"{arrays}:0: array shapes do not match {path.name} (lda {backend.lda.shape})")
    return backend
