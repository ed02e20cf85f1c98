"""Model selection by the task's own metric, and the best epochs' weights kept for averaging.

A :class:`ValidationMetric` is what a task gives the training loop to judge an epoch: speaker
verification by the EER on a dev trial list of held-back training speakers (lower is better),
identification by dev top-1 (higher is better), phones by frame accuracy. The loop calls it after each
epoch's validation and hands the value to a :class:`ModelSelector`, which

- says whether the epoch is the new best (the loop then writes ``model.pt``),
- keeps the weights of the ``keep`` best epochs as ``<dir>/epoch-N.pt`` (weights only, atomic) and
  their ranking in ``<dir>/best.json`` (a file that drops out is deleted only after the next checkpoint:
  :meth:`ModelSelector.prune`), so :func:`speechattn.training.average.average_best` can average
  them after training (Kaldi ``nnet3-average``, ESPnet ``average_nbest_models``, WeNet ``average_model``),
- saves and restores its state with the loop's checkpoints (``state_dict`` / ``load_state_dict``),
  removing weight files that a resumed run no longer accounts for.

Ties: an epoch replaces the best only when strictly better; among equal values the earlier epoch ranks
first (it was reached with less training).

Example:
    >>> selector = ModelSelector("dev_eer", mode="min", keep=2)
    >>> [selector.update(epoch, eer) for epoch, eer in [(1, 5.0), (2, 4.0), (3, 4.5), (4, 4.0)]]
    [True, True, False, False]
    >>> selector.best_epoch, selector.ranking(2)
    (2, [(2, 4.0), (4, 4.0)])
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from speechattn.utils.checkpoint import save_checkpoint
from speechattn.utils.atomic import atomic_write_text

log = logging.getLogger(__name__)

__all__ = ["ValidationMetric", "ModelSelector"]

Weights = Mapping[str, torch.Tensor]


class ValidationMetric(Protocol):
    """``metric(model, validation) -> {name: value, ...}``: the task's dev metrics of ``model`` (the unwrapped
    model; a metric that evaluates it switches it to eval mode and back). ``validation``: what the training
    loop's validation pass of this epoch measured (``valid_loss``, ``valid_acc``; None outside the loop),
    for a metric that is one of those. ``name`` is the key that selects models and ``mode`` says whether
    higher (``"max"``) or lower (``"min"``) is better. The other keys are logged with it."""

    name: str
    mode: str

    def __call__(self, model: nn.Module, validation: Mapping[str, float] | None = None) -> dict[str, float]: ...


class ModelSelector:
    """Best epoch by one metric, and the ``keep`` best epochs' weights in ``directory`` (see module doc).

    Args:
        metric: name of the value (``"dev_eer"``, ``"dev_top1"``, ``"valid_acc"``).
        mode: ``"min"`` or ``"max"``.
        keep: how many best epochs to keep weights of (1 = only the best; 0 = none, just track).
        directory: where the weights go (``exp/checkpoints/best``); required when ``keep > 0`` and weights
            are given to :meth:`update`.
    """

    def __init__(self, metric: str, mode: str = "max", keep: int = 1, directory: str | os.PathLike | None = None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if keep < 0:
            raise ValueError(f"keep must be >= 0, got {keep}")
        self.metric, self.mode, self.keep = metric, mode, keep
        self.directory = Path(directory) if directory is not None else None
        self.values: dict[int, float] = {}  # epoch -> metric value, every epoch seen
        self.best_epoch: int = -1
        self.best_value: float = math.nan

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _sort_key(self, item: tuple[int, float]) -> tuple[float, int]:
        epoch, value = item
        return (value if self.mode == "min" else -value, epoch)

    def ranking(self, n: int | None = None) -> list[tuple[int, float]]:
        """``[(epoch, value), ...]`` best first (``n`` of them, default all seen); NaN values rank last."""
        finite = sorted(((e, v) for e, v in self.values.items() if not math.isnan(v)), key=self._sort_key)
        ranked = finite + [(e, v) for e, v in sorted(self.values.items()) if math.isnan(v)]
        return ranked[:n] if n is not None else ranked

    def weight_path(self, epoch: int) -> Path:
        if self.directory is None:
            raise ValueError("ModelSelector has no directory for weights")
        return self.directory / f"epoch-{epoch}.pt"

    def update(self, epoch: int, value: float, weights: Weights | Callable[[], Weights] | None = None) -> bool:
        """Record ``epoch``'s ``value``; True when it is the new best. With ``weights`` (a state dict or a
        function returning one, called only when needed) and ``keep > 0``, the epoch's weights are written
        when it ranks among the ``keep`` best.

        The file of an epoch that drops out of the ``keep`` best is deleted by :meth:`prune` (the loop
        calls it once the epoch's checkpoint is saved) or at the next update, never before: a run killed
        between this update and its checkpoint resumes from a state that still needs that file.
        """
        value = float(value)
        self.prune()
        self.values[epoch] = value
        improved = not math.isnan(value) and (self.best_epoch < 0 or math.isnan(self.best_value)
                                               or self._better(value, self.best_value))
        if improved:
            self.best_epoch, self.best_value = epoch, value
        if weights is not None and self.keep > 0:
            kept = self._kept()
            if epoch in kept:
                state = weights() if callable(weights) else weights
                save_checkpoint(self.weight_path(epoch), {"model": dict(state), "epoch": epoch, self.metric: value})
            self._write_index()
        return improved

    def _kept(self) -> list[int]:
        """Epochs whose weights are kept: the ``keep`` best with a real (non-NaN) value."""
        return [e for e, v in self.ranking(self.keep) if not math.isnan(v)]

    def prune(self) -> None:
        """Delete the weight files of epochs that are no longer among the ``keep`` best."""
        if self.directory is None or not self.directory.is_dir():
            return
        kept = self._kept()
        for path in self.directory.glob("epoch-*.pt"):
            try:
                epoch = int(path.stem.split("-", 1)[1])
            except ValueError:
                continue
            if epoch not in kept:
                path.unlink()

    def _write_index(self) -> None:
        if self.directory is None:
            return
        ranked = [{"epoch": e, self.metric: self.values[e], "weights": self.weight_path(e).name} for e in self._kept()]
        atomic_write_text(self.directory / "best.json",
                          json.dumps({"metric": self.metric, "mode": self.mode, "best": ranked}, indent=1) + "\n")

    def state_dict(self) -> dict[str, Any]:
        """Plain data for the training checkpoint."""
        return {"metric": self.metric, "mode": self.mode, "keep": self.keep,
                "values": {str(e): v for e, v in self.values.items()},
                "best_epoch": self.best_epoch, "best_value": self.best_value}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`; weight files of epochs the state does not rank are removed (an
        interrupted run may have written one after its last checkpoint)."""
        if state.get("metric") != self.metric or state.get("mode") != self.mode:
            raise ValueError(f"checkpoint selected by {state.get('metric')!r} ({state.get('mode')}), this run by "
                             f"{self.metric!r} ({self.mode}): start a new experiment directory")
        self.values = {int(e): float(v) for e, v in state["values"].items()}
        self.best_epoch, self.best_value = int(state["best_epoch"]), float(state["best_value"])
        if self.keep > 0 and self.directory is not None:
            self.prune()
            self._write_index()
