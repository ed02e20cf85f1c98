"""speechattn-infer: label any Kaldi data directory with a trained model (stage 4 of the recipes).

    speechattn-infer exp_dir=EXP data_dir=DATA output_dir=OUT      (the task is the checkpoint's)
    phone -> OUT/frames.txt   `UTT LABEL LABEL ...`, one phone per 10 ms frame (frame i covers [10i, 10i+25) ms)
           OUT/phones.ctm   `UTT 1 START DUR PHONE`, runs of equal frame labels merged
           OUT/textgrids/UTT.TextGrid + OUT/textgrids.scp   with textgrid=true (Praat / praatio; SIL empty)
    sid   -> OUT/predictions.txt  `UTT SPEAKER SCORE` (top-1 among the training speakers, cosine score)
           OUT/embeddings.scp/.ark  one embedding per utterance (kaldiio)

Only ``wav.scp`` is required. Audio that cannot be used (unreadable, empty, shorter than one 25 ms window)
is skipped, counted in the log and listed in ``OUT/failed.txt``. Outputs are written to temporary files
and renamed when complete, so an interrupted run never leaves partial outputs; a complete output
directory is skipped unless ``force=true`` (:mod:`speechattn.inference.driver`). Utterances of similar
length are predicted together, ``batch_frames`` padded frames per forward pass (0: one at a time; same outputs). ``task=phone|sid`` is
accepted and checked against the checkpoint.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from speechattn.bin._hydra import CONF_DIR, input_errors_as_one_line, one_line_errors

log = logging.getLogger("speechattn.infer")


@one_line_errors
@hydra.main(config_path=str(CONF_DIR), config_name="infer", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with input_errors_as_one_line():
        torch.set_num_threads(int(cfg.threads))
        out = Path(cfg.output_dir)
        device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                              else ("cpu" if cfg.device == "auto" else cfg.device))
        from speechattn.inference.driver import infer_dir
        infer_dir(Path(cfg.exp_dir), Path(cfg.data_dir), out, checkpoint=cfg.checkpoint, task=cfg.task,
                  allow_pipes=bool(cfg.allow_pipes), device=device, force=bool(cfg.force),
                  batch_frames=int(cfg.batch_frames), precision=cfg.get("precision"),
                  writer_options={"textgrid": True} if cfg.get("textgrid") else None, **_task_options(cfg))


def _task_options(cfg: DictConfig) -> dict:
    """Predictor options of infer.yaml: chunk_frames (phone), embedding / crop_frames (sid); each task's
    predictor takes what it knows and ignores the rest."""
    return {"chunk_frames": int(cfg.chunk_frames), "embedding": str(cfg.get("embedding", "full")),
            "crop_frames": int(cfg.get("crop_frames", 300))}


if __name__ == "__main__":
    main()
