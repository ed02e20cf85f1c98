"""What verification scoring learns from a speaker experiment's training speakers, made by its model and
stored beside it so that scoring any trial list uses the same: the AS-norm cohort (``<exp_dir>/cohort``,
:mod:`speechattn.metrics.score_norm`) and the LDA + PLDA back-end (``<exp_dir>/plda``,
:mod:`speechattn.metrics.plda`).

:func:`cohort_for` / :func:`plda_for` load those of a directory, refusing ones made by other weights (an
error naming ``cohort.json`` / ``plda.json``: remove it or point ``asnorm_cohort`` / ``plda_dir``
elsewhere), or make the experiment's own from the training data dir's features (``feats.scp``, normalised
with the experiment's CMVN, embedded whole: :func:`embed_training_set`, computed once for both).
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import torch

from typing import Callable, Sequence

from speechattn.data.audio import load_audio
from speechattn.data.dataset import load_features
from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_table_entries
from speechattn.data.speed_perturb import apply_speed
from speechattn.metrics.plda import (PldaBackend, fit_plda_backend, load_plda_backend, save_plda_backend,
                                     training_set_problem)
from speechattn.metrics.score_norm import Cohort, load_cohort, make_cohort, save_cohort
from speechattn.tasks.sid_predictor import SpeakerEmbedder
from speechattn.utils.fingerprint import state_dict_fingerprint

log = logging.getLogger(__name__)

__all__ = ["COHORT_DIR", "PLDA_DIR", "cohort_for", "plda_for", "build_cohort", "embed_training_set",
           "embed_training_set_at_speeds", "training_set_of", "TrainingEmbeddings"]

COHORT_DIR = "cohort"
PLDA_DIR = "plda"

# (utterance -> embedding (D,), utterance -> speaker) of a training set
TrainingEmbeddings = tuple[dict[str, np.ndarray], dict[str, str]]


def embed_training_set(embedder: SpeakerEmbedder, train_dir: Path) -> TrainingEmbeddings:
    """Whole-utterance embeddings of ``train_dir`` (its ``feats.scp``, the experiment's CMVN) and their speakers."""
    if not (train_dir / "feats.scp").is_file():
        raise KaldiDataError(f"{train_dir / 'feats.scp'}:0: missing: the AS-norm cohort and the PLDA back-end are "
                             f"made from the training features (run from the recipe's work dir, or give "
                             f"asnorm_cohort / plda_dir)")
    utt2spk = read_table(train_dir / "utt2spk")
    feats = load_features(train_dir, embedder.normalise)
    embeddings = {}
    with torch.no_grad():
        for utt, f in feats.items():
            embeddings[utt] = embedder.embed(torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))).numpy()
    return embeddings, {u: utt2spk[u] for u in embeddings}


def embed_training_set_at_speeds(embedder: SpeakerEmbedder, train_dir: Path, utts: Sequence[str],
                                 speeds: Sequence[float]) -> list[tuple[str, float, np.ndarray]]:
    """Whole-recording embeddings of ``utts`` of ``train_dir`` (its ``wav.scp``) at each speed factor:
    ``[(utt, speed, (D,))]``. Audio errors name the ``wav.scp`` line; commands in it are refused."""
    wav_scp = train_dir / "wav.scp"
    if not wav_scp.is_file():
        raise KaldiDataError(f"{wav_scp}:0: missing: PLDA's speed-perturbed training recordings are read from it "
                             f"(plda_speeds=[] trains PLDA without them)")
    entries = read_table_entries(wav_scp, check_sorted=False)
    out = []
    with torch.no_grad():
        for utt in utts:
            if utt not in entries:
                raise KaldiDataError(f"{wav_scp}:0: no recording for training utterance '{utt}'")
            spec, line = entries[utt]
            waveform = load_audio(spec, embedder.sample_rate, where=f"{wav_scp}:{line}")
            for speed in speeds:
                out.append((utt, float(speed), embedder.embed_waveform(apply_speed(waveform, embedder.sample_rate,
                                                                                   float(speed)), utt).numpy()))
    return out


def training_set_of(embedder: SpeakerEmbedder) -> Path:
    """The experiment's training data dir (``data.train_dir`` of its stored config)."""
    return Path(embedder.config["data"]["train_dir"])


def build_cohort(embedder: SpeakerEmbedder, train_dir: Path, fingerprint: str,
                 embedded: TrainingEmbeddings | None = None) -> Cohort:
    """One vector per training speaker of ``train_dir`` (mean of its L2-normalised utterance embeddings)."""
    embeddings, utt2spk = embedded or embed_training_set(embedder, train_dir)
    return make_cohort(embeddings, utt2spk, fingerprint, source=str(train_dir))


def cohort_for(embedder: SpeakerEmbedder, exp_dir: Path, cohort_dir: Path | None = None,
               training: Callable[[], TrainingEmbeddings] | None = None) -> Cohort:
    """The cohort in ``cohort_dir`` (default ``exp_dir/cohort``, made when absent), checked against the
    embedder's weights; ``training`` supplies the training embeddings when they are already computed."""
    fingerprint = state_dict_fingerprint(embedder.model.state_dict())
    if cohort_dir is not None:
        return load_cohort(cohort_dir, fingerprint)
    own = exp_dir / COHORT_DIR
    if not (own / "cohort.json").is_file():
        train_dir = training_set_of(embedder)
        log.info("AS-norm cohort: embedding the training speakers of %s -> %s", train_dir, own)
        save_cohort(own, build_cohort(embedder, train_dir, fingerprint, training() if training else None))
    return load_cohort(own, fingerprint)


def plda_for(embedder: SpeakerEmbedder, exp_dir: Path, plda_dir: Path | None = None, lda_dim: int = 100,
             training: Callable[[], TrainingEmbeddings] | None = None,
             speeds: Sequence[float] = (), enrolled: bool = False) -> PldaBackend | None:
    """The LDA + PLDA back-end in ``plda_dir`` (default ``exp_dir/plda``, trained on the experiment's training
    speakers when absent or made with another ``lda_dim`` or ``speeds``), checked against the embedder's
    weights; ``None`` (logged) when the training set has fewer than 3 speakers (quick runs), since PLDA cannot
    be trained. ``speeds``: the training recordings are also embedded at these speed factors, each speed of a
    speaker a PLDA speaker of its own (as speed perturbation trains the models); the training speakers are
    enrolled (identification; their recordings are also the cohort of PLDA's AS-norm) by their unperturbed
    recordings only. ``enrolled``: a stored back-end from before identification or AS-norm used it (no
    enrolled speakers or recordings) gets the training speakers enrolled."""
    speeds = tuple(float(f) for f in speeds)
    fingerprint = state_dict_fingerprint(embedder.model.state_dict())

    def with_speakers(backend: PldaBackend) -> PldaBackend:
        if not enrolled or (backend.enrol_speakers is not None and backend.enrol_vectors is not None):
            return backend
        embeddings, utt2spk = training() if training else embed_training_set(embedder, training_set_of(embedder))
        utts = sorted(embeddings)
        return backend.enrol(np.stack([embeddings[u] for u in utts]), [utt2spk[u] for u in utts])

    if plda_dir is not None:
        return with_speakers(load_plda_backend(plda_dir, fingerprint))
    own = exp_dir / PLDA_DIR
    if (own / "plda.json").is_file():
        backend = load_plda_backend(own, fingerprint)
        if backend.lda_dim_asked == lda_dim and backend.speeds == speeds:
            completed = with_speakers(backend)
            if completed is not backend:  # an experiment's own back-end: keep what was added, once
                meta = json.loads((own / "plda.json").read_text(encoding="utf-8"))
                save_plda_backend(own, completed, fingerprint, source=meta.get("source", ""),
                                  num_utterances=int(meta.get("num_utterances", 0)),
                                  num_speakers=int(meta.get("num_speakers", 0)))
            return completed
        log.info("PLDA back-end in %s was trained with lda_dim=%d and speeds %s, lda_dim=%d and speeds %s asked: "
                 "retraining it", own, backend.lda_dim_asked, list(backend.speeds), lda_dim, list(speeds))
    train_dir = training_set_of(embedder)
    log.info("PLDA back-end: embedding the training speakers of %s -> %s", train_dir, own)
    embeddings, utt2spk = training() if training else embed_training_set(embedder, train_dir)
    utts = sorted(embeddings)
    speakers = len(set(utt2spk.values()))
    problem = training_set_problem(len(utts), speakers)
    if problem:
        log.warning("no PLDA back-end for %s: %s", train_dir, problem)
        return None
    vectors, labels = [embeddings[u] for u in utts], [utt2spk[u] for u in utts]
    if speeds:
        log.info("PLDA back-end: embedding the %d training recordings at speeds %s as new speakers", len(utts),
                 list(speeds))
        for utt, speed, vector in embed_training_set_at_speeds(embedder, train_dir, utts, speeds):
            vectors.append(vector)
            labels.append(f"{utt2spk[utt]} {speed:g}")  # speakers have no spaces: never a real speaker's name
    backend = fit_plda_backend(np.stack(vectors), labels, lda_dim)
    backend = dataclasses.replace(backend, speeds=speeds).enrol(np.stack(vectors[:len(utts)]), labels[:len(utts)])
    save_plda_backend(own, backend, fingerprint, source=str(train_dir), num_utterances=len(vectors),
                      num_speakers=len(set(labels)))
    return backend  # float64 arrays: the stored copy is identical (unlike the cohort's float32 ark)
