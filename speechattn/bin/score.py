"""speechattn-score: scores and pictures for one experiment (stage 5 of the recipes).

    speechattn-score exp_dir=EXP ref_dir=data/test hyp_dir=EXP/decode_test output_dir=EXP/scores

The task is the checkpoint's (``task=phone|sid`` may be given; it must match), and so is the scoring.
phone (:mod:`speechattn.tasks.phone_scoring`): scores.json (frame accuracy, non-silence accuracy,
per-phone accuracy, accuracy by distance to a phone boundary, PER, the encoder's context), per_phone.txt,
confusion.png, attention_map.png (encoders with attention weights), training_curves.png;
sid (:mod:`speechattn.tasks.sid_scoring`): identification top-1/top-5, verification EER/minDCF, DET curve,
embedding plot.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from speechattn.bin._hydra import CONF_DIR, input_errors_as_one_line, one_line_errors

log = logging.getLogger("speechattn.score")


@one_line_errors
@hydra.main(config_path=str(CONF_DIR), config_name="score", version_base="1.3")
def main(cfg: DictConfig) -> None:
    with input_errors_as_one_line():
        import torch

        # Scoring embeds the training speakers for the AS-norm cohort and the PLDA back-end: with torch's
        # default of one thread per core that took 438 s for 1,125 utterances on this shared 2-core machine,
        # 8.7 s with one thread (docs/sid.md).
        torch.set_num_threads(int(cfg.get("threads", 1)))
        from speechattn.inference.driver import task_of
        from speechattn.tasks import get_task

        # A given task is checked against the checkpoint when its predictor loads it.
        task = get_task(cfg.task) if cfg.task else task_of(Path(cfg.exp_dir))
        task.score(cfg)


if __name__ == "__main__":
    main()
