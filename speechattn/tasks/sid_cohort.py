"""The AS-norm cohort of a speaker experiment: training-speaker embeddings made by its model
(:mod:`speechattn.metrics.score_norm`), stored in ``<exp_dir>/cohort`` so that scoring any trial list
(``speechattn-score asnorm=true``) uses the same cohort.

:func:`cohort_for` loads the cohort of a directory, refusing one made by other weights (an error naming
``cohort.json``: remove it or point ``asnorm_cohort`` elsewhere), or makes the experiment's own from the
training data dir's features (``feats.scp``, normalised with the experiment's CMVN, embedded whole).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from speechattn.data.dataset import load_features
from speechattn.data.kaldi_dir import KaldiDataError, read_table
from speechattn.metrics.score_norm import Cohort, load_cohort, make_cohort, save_cohort
from speechattn.tasks.sid_predictor import SpeakerEmbedder
from speechattn.utils.fingerprint import state_dict_fingerprint

log = logging.getLogger(__name__)

__all__ = ["COHORT_DIR", "cohort_for", "build_cohort"]

COHORT_DIR = "cohort"


def build_cohort(embedder: SpeakerEmbedder, train_dir: Path, fingerprint: str) -> Cohort:
    """One vector per training speaker of ``train_dir`` (mean of its L2-normalised utterance embeddings)."""
    if not (train_dir / "feats.scp").is_file():
        raise KaldiDataError(f"{train_dir / 'feats.scp'}:0: missing: the AS-norm cohort is made from the training "
                             f"features (run from the recipe's work dir, or give asnorm_cohort)")
    utt2spk = read_table(train_dir / "utt2spk")
    feats = load_features(train_dir, embedder.normalise)
    embeddings = {}
    with torch.no_grad():
        for utt, f in feats.items():
            embeddings[utt] = embedder.embed(torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))).numpy()
    return make_cohort(embeddings, {u: utt2spk[u] for u in embeddings}, fingerprint, source=str(train_dir))


def cohort_for(embedder: SpeakerEmbedder, exp_dir: Path, cohort_dir: Path | None = None) -> Cohort:
    """The cohort in ``cohort_dir`` (default ``exp_dir/cohort``, made when absent), checked against the
    embedder's weights."""
    fingerprint = state_dict_fingerprint(embedder.model.state_dict())
    if cohort_dir is not None:
        return load_cohort(cohort_dir, fingerprint)
    own = exp_dir / COHORT_DIR
    if not (own / "cohort.json").is_file():
        train_dir = Path(embedder.config["data"]["train_dir"])
        log.info("AS-norm cohort: embedding the training speakers of %s -> %s", train_dir, own)
        save_cohort(own, build_cohort(embedder, train_dir, fingerprint))
    return load_cohort(own, fingerprint)
