"""Assemble training from a Hydra config, for any task: data, model, step, optimiser, :class:`Trainer`.

The task (``cfg.task``, :func:`speechattn.tasks.get_task`) supplies its class list, datasets, batch
samplers, model and step; everything else is the same for every task. The experiment directory also
receives what inference needs (the class list, ``feats.yaml``, CMVN statistics:
:meth:`speechattn.tasks.base.Task.write_experiment_files`); ``model.pt`` holds the resolved config, the
class list (under the task's key, e.g. ``phones``/``speakers``), the input dimension and the parameter count.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from speechattn.data.dataset import collate
from speechattn.tasks import get_task
from speechattn.training.distributed import DistInfo
from speechattn.training.loop import Trainer, build_trainer

log = logging.getLogger(__name__)


def build_training(cfg: DictConfig, exp_dir: Path, device: torch.device, dist_info: DistInfo) -> Trainer:
    """The :class:`Trainer` of the experiment ``cfg`` describes (task ``cfg.task``) in ``exp_dir``."""
    task = get_task(cfg.task)
    labels = task.read_labels(task.labels_path(cfg))
    if dist_info.is_main:
        task.write_experiment_files(cfg, exp_dir)
    data = task.load_data(cfg, labels)
    t = cfg.trainer
    train_sampler, valid_sampler = task.batch_samplers(cfg, data, dist_info.rank, dist_info.world_size)
    # Own generators: creating a DataLoader iterator draws a worker base seed, which would otherwise come
    # from the global RNG (SpecAugment's and dropout's), shifting it by one draw after a mid-epoch resume.
    train_loader = DataLoader(data.train_set, batch_sampler=train_sampler, collate_fn=collate,
                              num_workers=int(t.num_workers), generator=torch.Generator().manual_seed(int(t.seed)))
    valid_loader = DataLoader(data.valid_set, batch_sampler=valid_sampler, collate_fn=collate,
                              generator=torch.Generator().manual_seed(int(t.seed)))

    raw_model = task.build_model(cfg, data.input_dim, len(labels)).to(device)
    n_params = sum(p.numel() for p in raw_model.parameters())
    log.info("%s: %.2f M parameters, %d classes", task.describe_model(cfg, raw_model), n_params / 1e6, len(labels))
    if data.selection is not None:
        log.info("model.pt: the epoch with the best %s (trainer.select_by)", data.selection.metric)
    extra = {"config": OmegaConf.to_container(cfg, resolve=True), task.checkpoint_labels_key: labels,
             "input_dim": data.input_dim, "num_params": n_params}
    hook = None
    if data.selection is None and int(t.get("average_best", 0) or 0) > 1:
        log.warning("trainer.average_best=%s has no effect: model.pt is chosen by validation accuracy "
                    "(trainer.select_by=valid_acc keeps no best-N weights to average)", t.get("average_best"))
    if data.selection is not None:  # the task's own dev metric chooses model.pt (e.g. dev EER)
        from speechattn.training.epoch_selection import build_epoch_selection
        average = int(t.get("average_best", 0) or 0)
        keep = int(t.get("keep_best", 1)) if dist_info.is_main else 0  # only the main rank writes weights
        hook = build_epoch_selection(data.selection, exp_dir, keep, average if dist_info.is_main else 0, device,
                                     int(t.valid_max_frames_per_batch))
    return build_trainer(cfg, raw_model, task.make_step(cfg), train_loader, valid_loader, exp_dir, device, dist_info,
                         extra, epoch_hook=hook)
