"""speechattn-score: scores and pictures for one experiment (stage 5 of the recipes).

    speechattn-score task=phone exp_dir=EXP ref_dir=data/test hyp_dir=EXP/decode_test output_dir=EXP/scores
        -> scores.json (frame accuracy, non-silence accuracy, per-phone accuracy, accuracy by
           distance to a phone boundary, PER), per_phone.txt,
           confusion.png, attention_map.png (attention models), training_curves.png
    speechattn-score task=sid ...   (see speechattn.inference.sid_score)
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import hydra
from omegaconf import DictConfig

from speechattn.bin._hydra import CONF_DIR, input_errors_as_one_line, one_line_errors

log = logging.getLogger("speechattn.score")


def score_phone(cfg: DictConfig) -> dict:
    from speechattn.data.alignments import read_phone_table
    from speechattn.data.kaldi_dir import read_table_lists
    from speechattn.metrics.phone import score_frame_files
    from speechattn.plots.confusion import plot_confusion
    from speechattn.utils.atomic import atomic_write_text

    exp_dir, out = Path(cfg.exp_dir), Path(cfg.output_dir)
    phones = read_phone_table(exp_dir / "phones.txt")
    ref = read_table_lists(Path(cfg.ref_dir) / "frame_labels")
    hyp = read_table_lists(Path(cfg.hyp_dir) / "frames.txt", check_sorted=False)
    failed = Path(cfg.hyp_dir) / "failed.txt"
    if failed.exists() and failed.stat().st_size:
        raise ValueError(f"{failed}: some test utterances were not labelled; fix them before scoring")
    scores = score_frame_files(ref, hyp, phones)
    confusion = scores.pop("confusion")
    scores.pop("phones", None)
    history_path = exp_dir / "history.json"
    meta: dict = {"exp_dir": str(exp_dir), "ref_dir": str(cfg.ref_dir)}
    if history_path.exists():
        history = json.loads(history_path.read_text())
        meta["epochs"] = len(history)
        meta["best_valid_accuracy"] = round(100 * max(r["valid_acc"] for r in history), 2)
        meta["train_seconds"] = round(sum(r["seconds"] for r in history), 1)
    from speechattn.utils.checkpoint import load_checkpoint
    meta["num_params"] = int(load_checkpoint(exp_dir / "model.pt").get("num_params", 0))
    config_path = exp_dir / "config.yaml"
    if config_path.exists():
        from omegaconf import OmegaConf
        train_cfg = OmegaConf.load(config_path)
        meta["model"] = OmegaConf.to_container(train_cfg.model, resolve=True)
    scores = {**meta, **scores}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scores.json", json.dumps(scores, indent=1) + "\n")
    lines = [f"{p:5s} {v['accuracy'] if v['accuracy'] is not None else float('nan'):6.2f} {v['count']:8d}"
             for p, v in scores["per_phone"].items()]
    atomic_write_text(out / "per_phone.txt", "# phone accuracy(%) frames\n" + "\n".join(lines) + "\n")
    name = meta.get("model", {}).get("name", exp_dir.name)
    plot_confusion(confusion, phones, out / "confusion.png",
                   title=f"{name}: frame confusion (row-normalised), test")
    if (exp_dir / "training_curves.png").exists():
        shutil.copyfile(exp_dir / "training_curves.png", out / "training_curves.png")
    draw_attention_map(cfg, ref, out)
    log.info("%s: frame accuracy %.2f%%, non-silence %.2f%%, PER %.2f%% -> %s", name, scores["frame_accuracy"],
             scores["non_silence_frame_accuracy"], scores["per"]["per"], out / "scores.json")
    log.info("%s: non-silence accuracy by frames to the nearest reference boundary: %s", name,
             ", ".join(f"{d}: {v['accuracy']}% ({v['share']}% of frames)"
                       for d, v in scores["accuracy_by_boundary_distance"].items()))
    return scores


def draw_attention_map(cfg: DictConfig, ref: dict[str, list[str]], out: Path) -> Path | None:
    """Attention of one test utterance (2-4 s by default) with its reference phones along the axes."""
    from speechattn.data.audio import load_audio
    from speechattn.data.kaldi_dir import read_table
    from speechattn.inference.phone import PhoneLabeler
    from speechattn.plots.attention import plot_attention_map

    labeler = PhoneLabeler.from_exp_dir(cfg.exp_dir, device=cfg.device)
    model_cfg = labeler.config["model"]
    if model_cfg["name"] not in ("transformer", "truncated_transformer"):
        return None
    utt = cfg.attention_utt or next((u for u, lab in ref.items() if 200 <= len(lab) <= 400), next(iter(ref)))
    wav_scp = read_table(Path(cfg.ref_dir) / "wav.scp")
    feats = labeler.features(load_audio(wav_scp[utt], labeler.feature_cfg.sample_rate), utt)
    weights = labeler.attention(feats, int(cfg.attention_layer))
    banded = model_cfg["name"] == "truncated_transformer"
    k = labeler.model.frame_stack
    encoder = labeler.model.encoder  # left/right in encoder positions (k frames each)
    layer = int(cfg.attention_layer) % encoder.num_layers
    unit = "frames" if k == 1 else f"positions of {k} frames"
    return plot_attention_map(weights.numpy(), out / "attention_map.png", banded=banded, left=encoder.left,
                              right=encoder.right, frame_labels=ref[utt][::k],
                              title=f"{model_cfg['name']}: attention of layer {layer} (0 = first), {utt}, "
                                    f"axes in {unit}")


@one_line_errors
@hydra.main(config_path=str(CONF_DIR), config_name="score", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with input_errors_as_one_line():
        if cfg.task == "phone":
            score_phone(cfg)
        elif cfg.task == "sid":
            from speechattn.inference.sid_score import score_sid
            score_sid(cfg)
        else:
            raise SystemExit(f"speechattn-score: unknown task '{cfg.task}' (phone | sid)")


if __name__ == "__main__":
    main()
