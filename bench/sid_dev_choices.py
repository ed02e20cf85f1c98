"""Test-time choices of the speaker recipes measured on DEV data only (issue #14; docs/sid.md):
full-length embeddings vs the mean of crops, and raw cosine vs AS-norm vs LDA + PLDA (``--lda-dims``).

    .venv/bin/python bench/sid_dev_choices.py --work-dir recipes/speechocean762/sid [--checkpoint model.pt]

- identification (``exp/ident``): top-1 on ``data/ident_dev`` (one utterance per speaker, never trained on)
  by the model's head, by LDA + PLDA with the training speakers enrolled by their ``data/ident_train``
  recordings, and by the fusion of both (one per ``--lda-dims`` value);
- verification (``exp/verif``): EER / minDCF on all trials among the training speakers the run held back
  for model selection (``trainer.dev_speakers``; the same seeded choice as training), AS-norm with a
  cohort of the other (trained) speakers, so that no dev speaker is in its own cohort; LDA + PLDA back-ends
  (one per ``--lda-dims`` value) trained on the utterances of those trained speakers, and with
  ``--plda-speeds`` also on those recordings at other speeds (each speed a speaker of its own); their scores
  also AS-normalised against those speakers' recordings (``--plda-asnorm-top-n``).

Prints one JSON object. Not a test: numbers depend on the trained models.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from speechattn.data.dataset import load_features
from speechattn.data.dev_trials import dev_trials, held_out_speaker_count, hold_out_speakers
from speechattn.data.kaldi_dir import read_table
from speechattn.metrics.identification import fuse_scores, topk_accuracy
from speechattn.metrics.plda import PldaBackend, fit_plda_backend
from speechattn.metrics.score_norm import make_cohort, normalise_trial_scores, score_trials_asnorm
from speechattn.metrics.verification import compute_eer, compute_min_dcf
from speechattn.tasks.sid_cohort import embed_training_set, embed_training_set_at_speeds
from speechattn.tasks.sid_predictor import SpeakerEmbedder


def embed_all(embedder: SpeakerEmbedder, feats: dict[str, np.ndarray], mode: str, crop_frames: int) -> dict:
    out = {}
    for utt, f in feats.items():
        x = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))
        out[utt] = (embedder.embed(x) if mode == "full" else embedder.embed_crops(x, crop_frames)).numpy()
    return out


def modes(crops: list[int]) -> list[tuple[str, str, int]]:
    return [("full", "full", 0)] + [(f"crops{c}", "crops", c) for c in crops]


def ident(work: Path, checkpoint: str, crops: list[int], lda_dims: list[int]) -> dict:
    exp, dev = work / "exp" / "ident", work / "data" / "ident_dev"
    embedder = SpeakerEmbedder.from_exp_dir(exp, checkpoint)
    feats = load_features(dev, embedder.normalise)
    utt2spk = read_table(dev / "utt2spk")
    train_emb, train_spk = embed_training_set(embedder, work / "data" / "ident_train")
    train_utts = sorted(train_emb)
    backends = {dim: fit_plda_backend(np.stack([train_emb[u] for u in train_utts]),
                                      [train_spk[u] for u in train_utts], dim) for dim in lda_dims}
    index = {s: i for i, s in enumerate(embedder.speakers)}
    result = {}
    for name, mode, c in modes(crops):
        emb = embed_all(embedder, feats, mode, c)
        utts = sorted(emb)
        targets = np.array([index[utt2spk[u]] for u in utts])
        matrix = np.stack([emb[u] for u in utts])
        head = embedder.scores(torch.from_numpy(matrix)).numpy()
        row = {"utterances": len(utts), "dev_top1": round(100 * topk_accuracy(head, targets, (1,))[1], 2)}
        for dim, backend in backends.items():  # the PLDA back-end alone and fused with the head (scoring's plda=true)
            log_lik = backend.speaker_log_likelihoods(matrix, embedder.speakers)
            row[f"lda{dim}_plda_top1"] = round(100 * topk_accuracy(log_lik, targets, (1,))[1], 2)
            row[f"lda{dim}_fused_top1"] = round(100 * topk_accuracy(fuse_scores(head, log_lik), targets, (1,))[1], 2)
        result[name] = row
    return result


def speed_copies(embedder: SpeakerEmbedder, work: Path, utts: list[str], utt2spk: dict[str, str],
                 speeds: list[float]) -> tuple[list[np.ndarray], list[str]]:
    """Embeddings of the trained speakers' recordings at ``speeds`` with their PLDA labels (scoring's
    ``plda_speeds``: each speed of a speaker a speaker of its own)."""
    vectors, labels = [], []
    for name in ("verif_train", "verif_dev"):
        d = work / "data" / name
        in_dir = read_table(d / "utt2spk")
        mine = [u for u in utts if u in in_dir]
        for utt, speed, vector in embed_training_set_at_speeds(embedder, d, mine, speeds):
            vectors.append(vector)
            labels.append(f"{utt2spk[utt]} {speed:g}")
    return vectors, labels


def plda_kinds(name: str, plda: PldaBackend, trials: list, dev_emb: dict, plda_top_ns: list[int]) -> list:
    """``(kind, scores)`` of the dev trials by ``plda``: its LLRs, and those AS-normalised against its enrolment
    recordings (the trained speakers' unperturbed ones, as scoring's ``plda_asnorm_top_n``) for each top n."""
    llr = plda.score(np.stack([dev_emb[t[1]] for t in trials]), np.stack([dev_emb[t[2]] for t in trials]))
    return [(name, llr)] + [(f"{name}_asnorm{n}", normalise_trial_scores(trials, dev_emb, llr, plda.cohort_scores, n))
                            for n in plda_top_ns]


def verif(work: Path, checkpoint: str, crops: list[int], top_n: int, fraction: float,
          lda_dims: list[int], speeds: list[float], plda_top_ns: list[int]) -> dict:
    exp = work / "exp" / "verif"
    embedder = SpeakerEmbedder.from_exp_dir(exp, checkpoint)
    utt2spk, feats = {}, {}
    for name in ("verif_train", "verif_dev"):
        d = work / "data" / name
        utt2spk.update(read_table(d / "utt2spk"))
        feats.update(load_features(d, embedder.normalise))
    spk2utt: dict[str, list[str]] = {}
    for utt in feats:
        spk2utt.setdefault(utt2spk[utt], []).append(utt)
    _, held = hold_out_speakers(spk2utt, held_out_speaker_count(len(spk2utt), fraction))
    trials = dev_trials(held)
    labels = np.array([t[0] for t in trials], dtype=bool)
    result = {"held_back_speakers": len(held), "trials": len(trials), "target": int(labels.sum())}
    for name, mode, c in modes(crops):
        emb = embed_all(embedder, feats, mode, c)
        dev_emb = {u: emb[u] for s in held for u in held[s]}
        cohort_emb = {u: e for u, e in emb.items() if utt2spk[u] not in held}
        cohort = make_cohort(cohort_emb, {u: utt2spk[u] for u in cohort_emb}, "dev")
        raw, norm = score_trials_asnorm(trials, dev_emb, cohort.vectors, top_n=top_n)
        kinds = [("raw", raw), ("asnorm", norm)]
        cohort_utts = sorted(cohort_emb)
        for dim in lda_dims:
            plda = fit_plda_backend(np.stack([cohort_emb[u] for u in cohort_utts]),
                                    [utt2spk[u] for u in cohort_utts], dim)
            kinds += plda_kinds(f"lda{dim}_plda", plda, trials, dev_emb, plda_top_ns)
        if speeds and mode == "full":
            extra, extra_labels = speed_copies(embedder, work, cohort_utts, utt2spk, speeds)
            for dim in lda_dims:
                plda = fit_plda_backend(np.stack([cohort_emb[u] for u in cohort_utts] + extra),
                                        [utt2spk[u] for u in cohort_utts] + extra_labels, dim)
                plda = plda.enrol(np.stack([cohort_emb[u] for u in cohort_utts]), [utt2spk[u] for u in cohort_utts])
                kinds += plda_kinds(f"lda{dim}_plda_speeds", plda, trials, dev_emb, plda_top_ns)
        row = {}
        for kind, scores in kinds:
            eer, _ = compute_eer(scores[labels], scores[~labels])
            dcf, _ = compute_min_dcf(scores[labels], scores[~labels], p_target=0.01)
            row[kind] = {"eer": round(100 * eer, 3), "min_dcf": round(dcf, 4)}
        result[name] = row
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--checkpoint", default="model.pt")
    parser.add_argument("--crops", type=int, nargs="*", default=[200, 300])
    parser.add_argument("--top-n", type=int, default=100)
    parser.add_argument("--dev-speakers", type=float, default=0.1)
    parser.add_argument("--tasks", nargs="*", default=["ident", "verif"])
    parser.add_argument("--lda-dims", type=int, nargs="*", default=[64, 100],
                        help="LDA dimensions of the PLDA back-ends to compare (capped at speakers - 1)")
    parser.add_argument("--plda-speeds", type=float, nargs="*", default=[],
                        help="verification: also PLDA trained with the trained speakers' recordings at these speeds, "
                             "each speed a speaker of its own (scoring's plda_speeds)")
    parser.add_argument("--plda-asnorm-top-n", type=int, nargs="*", default=[20],
                        help="verification: also the PLDA scores AS-normalised with these top n of the trained "
                             "speakers' recordings (scoring's plda_asnorm_top_n)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {}
    if "ident" in args.tasks:
        out["ident"] = ident(args.work_dir, args.checkpoint, args.crops, args.lda_dims)
    if "verif" in args.tasks:
        out["verif"] = verif(args.work_dir, args.checkpoint, args.crops, args.top_n, args.dev_speakers,
                            args.lda_dims, args.plda_speeds, args.plda_asnorm_top_n)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
