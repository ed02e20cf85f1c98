"""speechattn-train: the Hydra training entry point (stage 3 of the recipes).

    speechattn-train model=truncated_transformer model.left=16 trainer.max_epochs=10
    speechattn-train -m model.left=8,16,32                       # multirun sweep
    torchrun --nproc_per_node=2 -m speechattn.bin.train ...      # DistributedDataParallel (gloo on CPU)

The experiment directory (``exp_dir``, Hydra's output directory) receives ``config.yaml`` (resolved),
``checkpoints/``, ``model.pt`` (best validation epoch), ``history.json``, ``tensorboard/``,
``training_curves.png`` and everything inference needs (``phones.txt``, ``feats.yaml``, CMVN stats).
Re-running the same command resumes from ``checkpoints/last.pt``; a finished experiment is skipped. Other
options in an ``exp_dir`` that holds a training are refused (one line naming the first differing option);
``force=true`` discards that training and starts over (:mod:`speechattn.training.experiment`).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from speechattn.bin._hydra import CONF_DIR, input_errors_as_one_line, one_line_errors

log = logging.getLogger("speechattn.train")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def run(cfg: DictConfig, exp_dir: Path) -> dict | None:
    """Train the configured task in ``exp_dir``; returns the final history row (None when skipped)."""
    from speechattn.training.distributed import cleanup, init_distributed
    from speechattn.training.seed import seed_everything

    torch.set_num_threads(int(cfg.trainer.threads))
    device = select_device(cfg.device)
    if device.type == "cpu" and cfg.trainer.get("keep_freed_memory", True):
        from speechattn.utils.malloc import keep_freed_memory
        keep_freed_memory()  # no page-fault churn on long utterances (bench/README.md, "attention")
    dist_info = init_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
        torch.cuda.set_device(device)
    done_marker = exp_dir / ".done"
    if done_marker.exists():
        log.info("%s is complete (remove %s or the directory to retrain): skipping", exp_dir, done_marker)
        return None
    seed_everything(int(cfg.trainer.seed) + dist_info.rank)
    from speechattn.training.setup import build_training
    trainer = build_training(cfg, exp_dir, device, dist_info)
    try:
        state = trainer.fit()
    finally:
        cleanup(dist_info)
    if dist_info.is_main:
        from speechattn.plots.curves import plot_training_curves
        plot_training_curves(state.history, exp_dir / "training_curves.png")
        done_marker.touch()
        log.info("best validation accuracy %.2f%% at epoch %d; model: %s", 100 * state.best_valid_acc,
                 state.best_epoch, exp_dir / "model.pt")
    return state.history[-1] if state.history else None


@one_line_errors
@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    with input_errors_as_one_line():
        exp_dir = Path(HydraConfig.get().runtime.output_dir)
        exp_dir.mkdir(parents=True, exist_ok=True)
        if int(os.environ.get("RANK", "0")) == 0:
            from speechattn.training.experiment import claim_experiment_dir
            from speechattn.utils.atomic import atomic_write_text
            # Before config.yaml is replaced: outputs of a training with other options must not pass for this one's.
            claim_experiment_dir(exp_dir, OmegaConf.to_container(cfg, resolve=True), force=bool(cfg.get("force", False)))
            atomic_write_text(exp_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
            from speechattn.bin.info import environment_report, format_report
            atomic_write_text(exp_dir / "info.txt", format_report(environment_report()))  # what produced it
        row = run(cfg, exp_dir)
        return None if row is None else float(row["valid_acc"])  # sweeps (e.g. Optuna) can optimise it


if __name__ == "__main__":
    main()
