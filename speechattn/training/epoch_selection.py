"""The training loop's model-selection hook: a task metric judges each epoch, the best epochs are kept,
and the best ``average`` of them can be averaged into ``model.pt`` after training (issue #14).

:class:`EpochSelection` joins a :class:`~speechattn.training.selection.ValidationMetric` (dev EER, dev
top-1) and a :class:`~speechattn.training.selection.ModelSelector` (``exp/checkpoints/best``). The
:class:`~speechattn.training.loop.Trainer` calls :meth:`EpochSelection.on_epoch_end` after validation (the
epoch is the new best -> ``model.pt``), stores :meth:`state_dict` in every checkpoint (resume is exact:
the selector knows every epoch's value) and calls :meth:`on_fit_end` once after the last epoch.

:func:`build_epoch_selection` turns a task's :class:`~speechattn.tasks.base.DevSelection` into one.

Example:
    >>> class Fixed:                       # a metric that returns pre-set values, one per epoch
    ...     name, mode = "dev_eer", "min"
    ...     def __init__(self): self.values = iter([5.0, 3.0, 4.0])
    ...     def __call__(self, model, validation=None): return {"dev_eer": next(self.values)}
    >>> hook = EpochSelection(Fixed(), ModelSelector("dev_eer", "min", keep=0))
    >>> [hook.on_epoch_end(e, torch.nn.Linear(1, 1))[0] for e in (1, 2, 3)]
    [True, True, False]
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from speechattn.tasks.base import DevSelection
from speechattn.training.average import average_best
from speechattn.training.selection import ModelSelector, ValidationMetric
from speechattn.training.speaker_validation import VerificationEER, ValidationTop1

log = logging.getLogger(__name__)

__all__ = ["EpochSelection", "build_epoch_selection"]


class EpochSelection:
    """Selection of epochs by ``metric`` (see the module docstring).

    Args:
        metric: the dev metric (``name``, ``mode``, ``metric(model) -> {name: value, ...}``).
        selector: ranks the epochs and keeps the best ones' weights.
        average: after training, average the weights of this many best epochs into ``model.pt`` (the single
            best stays as ``model_best.pt``); 0 or 1: no averaging.
    """

    def __init__(self, metric: ValidationMetric, selector: ModelSelector, average: int = 0) -> None:
        if average > 1 and selector.keep < average:
            raise ValueError(f"averaging the best {average} epochs needs keep >= {average}, got {selector.keep}")
        self.metric, self.selector, self.average = metric, selector, average

    def on_epoch_end(self, epoch: int, raw_model: nn.Module,
                     validation: Mapping[str, float] | None = None) -> tuple[bool, dict[str, float]]:
        """Judge ``raw_model`` after ``epoch`` (1-based; ``validation``: the loop's validation values of that
        epoch); ``(is the new best, the dev metrics)``."""
        values = self.metric(raw_model, validation)
        improved = self.selector.update(epoch, values[self.metric.name],
                                        lambda: {k: v.detach().cpu().clone() for k, v in raw_model.state_dict().items()})
        log.info("epoch %d: %s%s", epoch, ", ".join(f"{k} {v:.4g}" for k, v in values.items()),
                 " (best so far)" if improved else f" (best: epoch {self.selector.best_epoch}, "
                 f"{self.selector.best_value:.4g})")
        return improved, values

    def state_dict(self) -> dict[str, Any]:
        return self.selector.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.selector.load_state_dict(state)

    def on_fit_end(self, exp_dir: Path, extra_state: Mapping[str, Any]) -> None:
        """Average the best ``average`` epochs into ``exp_dir/model.pt`` (the best alone -> ``model_best.pt``)."""
        self.selector.prune()
        if self.average <= 1 or self.selector.directory is None:
            return
        kept = len(self.selector.ranking(self.average))
        if kept < self.average:
            log.warning("only %d epochs ranked: no averaging of the best %d", kept, self.average)
            return
        model_pt = exp_dir / "model.pt"
        if model_pt.is_file():
            model_pt.replace(exp_dir / "model_best.pt")
        _, epochs = average_best(self.selector.directory, self.average, model_pt,
                                 extra={**extra_state, "epoch": self.selector.best_epoch,
                                        self.selector.metric: self.selector.best_value})
        log.info("model.pt: average of the best %d epochs %s by %s (the best alone: model_best.pt)",
                 self.average, epochs, self.selector.metric)


def build_epoch_selection(selection: DevSelection, exp_dir: Path, keep: int, average: int,
                          device: torch.device | str = "cpu", max_frames_per_batch: int = 24000) -> EpochSelection:
    """:class:`EpochSelection` for a task's :class:`DevSelection` (weights kept in ``exp_dir/checkpoints/best``)."""
    metric: ValidationMetric
    if selection.metric == "dev_eer":
        if selection.trials is None:
            raise ValueError("dev_eer selection needs dev trials")
        metric = VerificationEER(selection.feats, selection.trials, max_frames_per_batch, device)
    elif selection.metric == "dev_top1":
        if selection.targets is None:
            raise ValueError("dev_top1 selection needs dev targets")
        # The loop's validation pass already predicts every whole dev utterance with the head, among the
        # original-speed classes: its accuracy is dev top-1, so a second pass over dev is not needed.
        metric = ValidationTop1()
    else:
        raise ValueError(f"unknown selection metric {selection.metric!r} (dev_eer | dev_top1)")
    keep = max(keep, average)
    selector = ModelSelector(metric.name, metric.mode, keep=keep, directory=exp_dir / "checkpoints" / "best")
    return EpochSelection(metric, selector, average)
