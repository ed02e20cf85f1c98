"""Scores and pictures of a phone experiment (``speechattn-score``, stage 5 of the phone recipe).

    -> scores.json (frame accuracy, non-silence accuracy, per-phone accuracy, accuracy by distance to a
       phone boundary, PER, the encoder's context), per_phone.txt, confusion.png, attention_map.png
       (encoders with ``attention_weights``), training_curves.png

When the experiment has a ``score_map`` (copied from the lang dir at training time, e.g. TIMIT's 48 -> 39
folding), reference and hypothesis are folded through it first and every score is over the scoring
classes; the frame accuracy over the training classes is kept as ``frame_accuracy_training_classes``.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from speechattn.data.alignments import read_phone_table
from speechattn.data.audio import load_audio
from speechattn.data.kaldi_dir import KaldiDataError, read_table, read_table_lists
from speechattn.data.phone_data_dir import SCORE_MAP, read_score_map
from speechattn.metrics.phone import score_frame_files
from speechattn.models.encoders import describe_context
from speechattn.plots.attention import plot_attention_map
from speechattn.plots.confusion import plot_confusion
from speechattn.tasks.base import check_no_failures, experiment_facts
from speechattn.tasks.phone_predictor import PhoneLabeler
from speechattn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)


def fold_labels(labels: dict[str, list[str]], mapping: dict[str, str], where: Path) -> dict[str, list[str]]:
    """``{utt: labels}`` with every label replaced by its scoring class; an unmapped label is an error."""
    try:
        return {utt: [mapping[p] for p in seq] for utt, seq in labels.items()}
    except KeyError as e:
        raise KaldiDataError(f"{where}:0: label {e.args[0]!r} has no scoring class") from None


def score_phone(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.hyp_dir/frames.txt`` against ``cfg.ref_dir/frame_labels``; see the module docstring."""
    exp_dir, out = Path(cfg.exp_dir), Path(cfg.output_dir)
    phones = read_phone_table(exp_dir / "phones.txt")
    ref = read_table_lists(Path(cfg.ref_dir) / "frame_labels")
    hyp = read_table_lists(Path(cfg.hyp_dir) / "frames.txt", check_sorted=False)
    check_no_failures(Path(cfg.hyp_dir), "labelled")
    score_map = exp_dir / SCORE_MAP
    unfolded: float | None = None
    if score_map.is_file():
        mapping, classes = read_score_map(score_map, phones)
        unfolded = score_frame_files(ref, hyp, phones, include_confusion=False)["frame_accuracy"]
        ref, hyp = fold_labels(ref, mapping, score_map), fold_labels(hyp, mapping, score_map)
        log.info("scoring on %d classes (%s), trained on %d", len(classes), score_map, len(phones))
        phones = classes
    scores = score_frame_files(ref, hyp, phones)
    if unfolded is not None:
        scores["score_map"] = str(score_map)
        scores["frame_accuracy_training_classes"] = unfolded
    confusion = scores.pop("confusion")
    scores.pop("phones", None)
    facts = experiment_facts(exp_dir)
    meta: dict[str, Any] = {"exp_dir": facts.pop("exp_dir"), "ref_dir": str(cfg.ref_dir), **facts}
    labeler = PhoneLabeler.from_exp_dir(exp_dir, device=cfg.device)
    meta["model"] = labeler.config["model"]  # the resolved training config stored in model.pt
    meta["context"] = describe_context(labeler.model.encoder, labeler.model.frame_stack)
    scores = {**meta, **scores}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.json", json.dumps(scores, indent=1) + "\n")
    lines = [f"{p:5s} {v['accuracy'] if v['accuracy'] is not None else float('nan'):6.2f} {v['count']:8d}"
             for p, v in scores["per_phone"].items()]
    atomic_write_text(out / "per_phone.txt", "# phone accuracy(%) frames\n" + "\n".join(lines) + "\n")
    name = meta["model"]["name"]
    plot_confusion(confusion, phones, out / "confusion.png",
                   title=f"{name}: frame confusion (row-normalised), test")
    if (exp_dir / "training_curves.png").exists():
        shutil.copyfile(exp_dir / "training_curves.png", out / "training_curves.png")
    draw_attention_map(cfg, labeler, ref, out)
    log.info("%s: frame accuracy %.2f%%, non-silence %.2f%%, PER %.2f%% -> %s", name, scores["frame_accuracy"],
             scores["non_silence_frame_accuracy"], scores["per"]["per"], out / "scores.json")
    log.info("%s: non-silence accuracy by frames to the nearest reference boundary: %s", name,
             ", ".join(f"{d}: {v['accuracy']}% ({v['share']}% of frames)"
                       for d, v in scores["accuracy_by_boundary_distance"].items()))
    return scores


def draw_attention_map(cfg: DictConfig, labeler: PhoneLabeler, ref: dict[str, list[str]], out: Path) -> Path | None:
    """Attention of one test utterance (2-4 s by default) with its reference phones along the axes; None
    when the encoder has no ``attention_weights``."""
    if not hasattr(labeler.model.encoder, "attention_weights"):
        return None
    utt = cfg.attention_utt or next((u for u, lab in ref.items() if 200 <= len(lab) <= 400), next(iter(ref)))
    wav_scp = read_table(Path(cfg.ref_dir) / "wav.scp")
    feats = labeler.features(load_audio(wav_scp[utt], labeler.sample_rate), utt)
    layer = int(cfg.attention_layer)
    weights = labeler.attention(feats, layer)
    window = labeler.attention_window()  # left/right in encoder positions (k frames each)
    k = labeler.model.frame_stack
    num_layers = getattr(labeler.model.encoder, "num_layers", None)
    shown = layer % num_layers if num_layers else layer
    unit = "frames" if k == 1 else f"positions of {k} frames"
    name = labeler.config["model"]["name"]
    return plot_attention_map(weights.numpy(), out / "attention_map.png", banded=window is not None,
                              left=window[0] if window else None, right=window[1] if window else None,
                              frame_labels=ref[utt][::k],
                              title=f"{name}: attention of layer {shown} (0 = first), {utt}, axes in {unit}")
