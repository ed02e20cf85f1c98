"""Identification on DEV with fewer enrolment recordings per speaker (issue #14; docs/sid.md "Where the targets
stand"): would enrolling one more recording per speaker (e.g. the dev one, after model selection) help?

    .venv/bin/python bench/sid_enrolment_count.py --work-dir recipes/speechocean762/sid [--keep 4 5 6 7 8]

The PLDA back-end is trained on all ``data/ident_train`` recordings as scoring trains it; only the enrolment
changes: each speaker enrolled by ``keep`` of its recordings (every cyclic window of ``keep`` of its sorted
recordings in turn, averaged), and ``data/ident_dev`` scored by PLDA alone and fused with the head. The slope of
the dev errors from ``keep - 1`` to ``keep`` is what one more enrolment recording is worth.

Prints one JSON object: dev errors (utterances) of the head, and per ``keep`` the mean errors of PLDA and of the
fusion. Not a test: numbers depend on the trained model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from speechattn.data.dataset import load_features
from speechattn.data.kaldi_dir import read_table
from speechattn.metrics.identification import fuse_scores
from speechattn.metrics.plda import fit_plda_backend
from speechattn.tasks.sid_cohort import embed_training_set
from speechattn.tasks.sid_predictor import SpeakerEmbedder


def errors(scores: np.ndarray, speakers: list[str], truth: np.ndarray) -> int:
    """Utterances whose top-1 speaker of ``scores`` ``(N, S)`` is not ``truth`` ``(N,)``."""
    return int((np.array(speakers)[scores.argmax(1)] != truth).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", default="model.pt")
    parser.add_argument("--keep", type=int, nargs="*", default=[4, 5, 6, 7, 8])
    parser.add_argument("--lda-dim", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    embedder = SpeakerEmbedder.from_exp_dir(args.work_dir / "exp" / "ident", args.checkpoint)
    train, train_spk = embed_training_set(embedder, args.work_dir / "data" / "ident_train")
    utts = sorted(train)
    backend = fit_plda_backend(np.stack([train[u] for u in utts]), [train_spk[u] for u in utts], args.lda_dim)
    speakers = list(embedder.speakers)
    by_speaker: dict[str, list[str]] = {}
    for u in utts:
        by_speaker.setdefault(train_spk[u], []).append(u)
    dev = args.work_dir / "data" / "ident_dev"
    feats, utt2spk = load_features(dev, embedder.normalise), read_table(dev / "utt2spk")
    dev_utts = sorted(feats)
    with torch.no_grad():
        x = np.stack([embedder.embed(torch.from_numpy(np.ascontiguousarray(feats[u], dtype=np.float32))).numpy()
                      for u in dev_utts])
    truth = np.array([utt2spk[u] for u in dev_utts])
    head = embedder.scores(torch.from_numpy(x)).numpy()
    out: dict = {"dev_utterances": len(dev_utts), "head_errors": errors(head, speakers, truth)}
    fewest = min(len(v) for v in by_speaker.values())
    for keep in args.keep:
        if keep > fewest:
            continue
        plda_errors, fused_errors = [], []
        for start in range(fewest if keep < fewest else 1):  # every cyclic window of `keep` recordings
            chosen = [u for s in speakers for i, u in enumerate(by_speaker[s]) if (i - start) % len(by_speaker[s]) < keep]
            enrolled = backend.enrol(np.stack([train[u] for u in chosen]), [train_spk[u] for u in chosen])
            log_lik = enrolled.speaker_log_likelihoods(x, speakers)
            plda_errors.append(errors(log_lik, speakers, truth))
            fused_errors.append(errors(fuse_scores(head, log_lik), speakers, truth))
        out[f"enrol{keep}"] = {"plda_errors": float(np.mean(plda_errors)), "fused_errors": float(np.mean(fused_errors)),
                               "windows": len(plda_errors)}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
