"""Checkpoint averaging: the element-wise mean of several epochs' weights (Kaldi ``nnet3-average``,
ESPnet ``average_nbest_models``, WeNet ``average_model.py``).

Floating-point tensors are averaged in float64 and cast back; integer tensors (BatchNorm's
``num_batches_tracked``) get the floor of their mean, as ESPnet does. Every checkpoint must have the same
keys, shapes and dtypes (an error names the checkpoint and key otherwise). Checkpoints are read with
``weights_only=True`` (:func:`speechattn.utils.checkpoint.load_checkpoint`).

:func:`average_best` averages the ``n`` best epochs kept by a
:class:`~speechattn.training.selection.ModelSelector` (``<dir>/best.json`` + ``epoch-N.pt``).

Example:
    >>> a, b = {"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(3)}, {"w": torch.tensor([2.0, 5.0]), "n": torch.tensor(4)}
    >>> average_state_dicts([a, b])
    {'w': tensor([1.5000, 4.0000]), 'n': tensor(3)}
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import torch

from speechattn.utils.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

__all__ = ["average_state_dicts", "average_checkpoints", "average_best"]


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]], names: Sequence[str] | None = None
                        ) -> dict[str, torch.Tensor]:
    """Element-wise mean of ``states`` (see module doc); ``names`` label them in errors."""
    if not states:
        raise ValueError("nothing to average")
    names = list(names) if names is not None else [f"state {i}" for i in range(len(states))]
    reference = states[0]
    for name, state in zip(names[1:], states[1:]):
        if set(state) != set(reference):
            extra, missing = sorted(set(state) - set(reference)), sorted(set(reference) - set(state))
            raise ValueError(f"{name}: parameters differ from {names[0]} (extra {extra[:3]}, missing {missing[:3]})")
        for key, tensor in state.items():
            if tensor.shape != reference[key].shape or tensor.dtype != reference[key].dtype:
                raise ValueError(f"{name}: '{key}' is {tuple(tensor.shape)} {tensor.dtype}, {names[0]} has "
                                 f"{tuple(reference[key].shape)} {reference[key].dtype}")
    averaged: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        if tensor.is_floating_point() or tensor.is_complex():
            total = sum(s[key].detach().to("cpu", torch.float64) for s in states)
            averaged[key] = (total / len(states)).to(tensor.dtype)
        else:
            total = sum(s[key].detach().to("cpu", torch.int64) for s in states)
            averaged[key] = torch.div(total, len(states), rounding_mode="floor").to(tensor.dtype)
    return averaged


def average_checkpoints(paths: Sequence[str | os.PathLike], key: str = "model") -> dict[str, torch.Tensor]:
    """Average the ``key`` state dicts of the checkpoint files ``paths``."""
    states = []
    for path in paths:
        ckpt = load_checkpoint(path)
        if key not in ckpt:
            raise KeyError(f"{path}: checkpoint has no '{key}' entry (keys: {sorted(ckpt)[:8]})")
        states.append(ckpt[key])
    return average_state_dicts(states, [str(p) for p in paths])


def average_best(best_dir: str | os.PathLike, n: int, output: str | os.PathLike | None = None,
                 extra: Mapping | None = None) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Average the ``n`` best epochs listed in ``best_dir/best.json``; returns ``(weights, epochs)``.

    With ``output``, writes ``{"model": weights, "averaged_epochs": epochs, **extra}`` there atomically
    (``extra``: what inference needs besides the weights, e.g. model.pt's config and speaker list).
    Fewer than ``n`` kept epochs is an error naming the index (the selector's ``keep`` was smaller).
    """
    best_dir = Path(best_dir)
    index = best_dir / "best.json"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no ranking of the best epochs (kept by ModelSelector during training)")
    ranked = json.loads(index.read_text(encoding="utf-8"))["best"]
    if n < 1 or len(ranked) < n:
        raise ValueError(f"{index}: {len(ranked)} epochs kept, cannot average the best {n}")
    chosen = ranked[:n]
    epochs = [int(r["epoch"]) for r in chosen]
    weights = average_checkpoints([best_dir / r["weights"] for r in chosen])
    log.info("averaged the %d best epochs %s (%s: %s)", n, epochs, next(k for k in chosen[0] if k not in
             ("epoch", "weights")), [round(r[k], 4) for r in chosen for k in r if k not in ("epoch", "weights")])
    if output is not None:
        save_checkpoint(output, {"model": weights, "averaged_epochs": epochs, **dict(extra or {})})
    return weights, epochs
